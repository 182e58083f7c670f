// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// TestNATSAway: the errors that come from NATS being unreachable or not
// answering are answered 503 "NATS is away" with Retry-After; a deadline
// exceeded is one of them only when the NATS call ran out of its own time
// (fromNATS with a live context). A handler's own deadline, or a deadline
// from anywhere else, is the relay's failure: 500, "internal error".
func TestNATSAway(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithDeadline(live, time.Now().Add(-time.Second)) // a handler's own deadline, passed
	defer cancel()
	const (
		notConnected = "the relay is not connected to NATS"
		noJetStream  = "no JetStream answered"
		noAnswer     = "JetStream did not answer in time"
	)
	for _, tt := range []struct {
		name   string
		err    error
		reason string // natsAway's; "" is the relay's own failure
	}{
		{"disconnected", fmt.Errorf("reading stream SCIMRELAY: %w", nats.ErrDisconnected), notConnected},
		{"connection closed", nats.ErrConnectionClosed, notConnected},
		{"jetstream connection closed", jetstream.ErrConnectionClosed, notConnected},
		{"server shut down during a pull", jetstream.ErrServerShutdown, notConnected},
		{"reconnecting", nats.ErrConnectionReconnecting, notConnected},
		{"no responders", nats.ErrNoResponders, noJetStream},
		{"jetstream not enabled", jetstream.ErrJetStreamNotEnabled, noJetStream},
		{"nats timeout", nats.ErrTimeout, noAnswer},
		{"no heartbeat", jetstream.ErrNoHeartbeat, noAnswer},
		{"a NATS call's own deadline", fmt.Errorf("opening stream SCIMRELAY: %w", fromNATS(live, context.DeadlineExceeded)), noAnswer},
		{"a NATS call that ran into the handler's deadline", fromNATS(ended, context.DeadlineExceeded), ""},
		{"a deadline not from NATS", context.DeadlineExceeded, ""},
		{"a deadline not from NATS, wrapped", fmt.Errorf("checking the receiver: %w", context.DeadlineExceeded), ""},
		{"not a deadline, from NATS", fromNATS(live, errors.New("stream not found")), ""},
		{"the relay's own failure", errors.New("disk full"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := natsAway(tt.err); got != tt.reason {
				t.Fatalf("natsAway(%v) = %q, want %q", tt.err, got, tt.reason)
			}
			h := NewHandler(Options{})
			req := httptest.NewRequestWithContext(context.WithValue(live, requestIDKey{}, "r1"), "GET", "/admin/v1/sinks", nil)
			rec := httptest.NewRecorder()
			h.writeError(&responseWriter{ResponseWriter: rec}, req, tt.err)
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			want, retry, says := http.StatusInternalServerError, "", "internal error"
			if tt.reason != "" {
				want, retry, says = http.StatusServiceUnavailable, "5", "NATS is away ("+tt.reason+")"
			}
			if rec.Code != want || rec.Header().Get("Retry-After") != retry || !strings.Contains(body.Error, says) {
				t.Fatalf("answered %d, Retry-After %q: %s; want %d, %q, saying %q", rec.Code, rec.Header().Get("Retry-After"), body.Error, want, retry, says)
			}
		})
	}
}

// TestJetStreamThatDoesNotAnswerIsSaid: with NATS connected but JetStream
// not answering (its API requests taken and left unanswered, as a NATS
// that hangs does), what needs it is answered 503 "NATS is away (JetStream
// did not answer in time)" once nats.go's request timeout runs out: the
// deadline its requests exceed is marked as theirs where the handlers call
// NATS.
func TestJetStreamThatDoesNotAnswerIsSaid(t *testing.T) {
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *server.Options) { o.JetStream = false })
	silent, _ := eventstest.Connect(t, eventstest.URL(ns))
	if _, err := silent.Subscribe("$JS.API.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, _ := eventstest.Connect(t, eventstest.URL(ns))
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken, Events: js,
		Attempts: func(ctx context.Context, q sinks.AttemptQuery) ([]sinks.Attempt, error) {
			return sinks.Attempts(ctx, js, q)
		}}))
	defer srv.Close()
	f := &fixture{t: t, url: srv.URL}
	for _, path := range []string{"/admin/v1/events?follow=false", "/admin/v1/deliveries"} {
		a := f.request("GET", path, "")
		a.wantError(t, http.StatusServiceUnavailable, "NATS is away (JetStream did not answer in time)")
		if a.header.Get("Retry-After") != "5" {
			t.Errorf("GET %s: Retry-After %q, want 5", path, a.header.Get("Retry-After"))
		}
	}
}
