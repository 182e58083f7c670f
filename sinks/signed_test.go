// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestReadBackTakesUnsignedOnlyAsStored: on a stream a release that did
// not sign made, a parked resource's events are read back by direct get,
// whose answer gives the sequence as a header; a message stored with a
// header block of its own that hides the server's (an empty line after a
// bare LF, which nats.go stops at and nats-server does not) can say it
// was stored before the relay signed. Such a message is taken unsigned
// only as what the stream holds at that sequence: the forged event is
// not delivered, and the resource's signed events around it are, in
// order.
func TestReadBackTakesUnsignedOnlyAsStored(t *testing.T) {
	srv, nc, js := natsServer(t) // as an older release made the stream: unsigned
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := events.NewSigner(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	// A front end that signs starts: signing begins at 2.
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, SigningKey: signer.PublicKey()}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	refuse.Store(true)
	var mu sync.Mutex
	var tried int
	var delivered []string // event ids answered 2xx, in order
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		mu.Lock()
		defer mu.Unlock()
		tried++
		if refuse.Load() {
			return http.StatusServiceUnavailable
		}
		delivered = append(delivered, r.Header.Get("ce-id"))
		return http.StatusNoContent
	})
	// One event waits in the worker at most: the rest are read back from the
	// stream, by direct get.
	runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, Trust: trust, LaneLimit: 1})
	signed := func(a events.Action) string {
		t.Helper()
		msg, id := p.next("acme", a, "ann")
		if err := signer.Sign(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	second := signed(events.UserUpdated) // refused: ann is parked
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if tried == 0 {
			return errors.New("no delivery tried yet")
		}
		return nil
	})
	// The forgery, as an answer aimed at the stream stores it.
	forged, id := p.next("acme", events.UserDeleted, "ann")
	header := "NATS/1.0\r\nX-A: a\n" +
		jetstream.ExpectedStreamHeader + ": " + events.StreamName + "\n" +
		jetstream.StreamHeader + ": " + events.StreamName + "\n" +
		jetstream.SequenceHeader + ": 1\n" +
		jetstream.SubjectHeader + ": " + strings.Replace(first.Subject, ".created.", ".deleted.", 1) + "\n" +
		jetstream.TimeStampHeaer + ": " + first.Time.Format(time.RFC3339Nano) + "\n"
	for k, v := range forged.Header {
		header += k + ": " + v[0] + "\n"
	}
	header += "\nX-B: b\r\n\r\n"
	eventstest.RawPublish(t, srv.Addr().String(), "", "", forged.Subject, header, forged.Data)
	third := signed(events.UserUpdated)
	refuse.Store(false)
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if slices.Contains(delivered, id) {
			t.Fatalf("the forged event %s was delivered: %v", id, delivered)
		}
		if !slices.Equal(delivered, []string{second, third}) {
			return fmt.Errorf("delivered %v; want ann's signed events %s and %s, in order", delivered, second, third)
		}
		return nil
	})
}
