// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestMessagesAimedAtAWorkersInboxAreDropped: a NATS client that may pull
// from a consumer of its own on the event stream, and has learnt a
// worker's inbox (from a pull it saw on _INBOX.>), aims a pull of its
// consumer at that inbox, and the answer of a JetStream API request. The
// worker takes neither as its partition's: it does not acknowledge the
// other consumer's message (which would take it from that consumer's
// reader) nor deliver it, dead-letters nothing, and counts both as
// not_published, saying so at Warn.
func TestMessagesAimedAtAWorkersInboxAreDropped(t *testing.T) {
	js := onePartition(t)
	nc := js.Conn()
	pulls, err := nc.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY." + consumerName("crm", 0))
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusNoContent })
	var logs eventstest.Log
	m, _ := runManager(t, Options{JS: js, Sinks: []Config{sinkConfig("crm", rc.URL, nil)},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	pull, err := pulls.NextMsg(15 * time.Second)
	if err != nil || pull.Reply == "" {
		t.Fatalf("no pull of the worker's seen: %v", err)
	}
	inbox := pull.Reply

	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 1 {
			return fmt.Errorf("%d deliveries, want 1", n)
		}
		return nil
	})

	audit, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+".audit", inbox, []byte(`{"batch":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.STREAM.INFO."+events.StreamName, inbox, nil); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", "not_published")); n != 2 {
			return fmt.Errorf("scimrelay_sink_events_total{outcome=\"not_published\"} %v, want 2", n)
		}
		return nil
	})
	info, err := audit.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Stream != 1 || info.NumAckPending != 1 || info.AckFloor.Stream != 0 {
		t.Errorf("the other consumer's message was settled by the worker: delivered %d, %d unacknowledged, ack floor %d; want 1, 1, 0",
			info.Delivered.Stream, info.NumAckPending, info.AckFloor.Stream)
	}
	if page, err := m.DeadLetters(ctx, "crm", "", 0); err != nil || len(page.DeadLetters) != 0 {
		t.Errorf("dead letters: %+v, %v", page.DeadLetters, err)
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("%d deliveries, want the one", n)
	}
	if said := strings.Count(logs.String(), `level=WARN msg="a message that is not from a partition's consumer reached its inbox`); said != 2 {
		t.Errorf("said at Warn %d times, want 2:\n%s", said, logs.String())
	}
	// The partition goes on delivering.
	p.publish("acme", events.UserUpdated, "u1")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 2 {
			return errors.New("the next event is not delivered")
		}
		return nil
	})
}
