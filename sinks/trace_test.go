// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestBatchTraceContext: in batch mode every event in a request carries
// the traceparent and tracestate of the SCIM request that made it; a
// request of several events carries no traceparent header of its own
// (its events come from different traces); after a batch is refused for
// good, the events sent one per request (batches of one) each carry the
// traceparent header of their delivery attempt, a "deliver" span that is
// a child of the event's trace.
func TestBatchTraceContext(t *testing.T) {
	js := natsStream(t)
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	t.Cleanup(func() { _ = provider.Shutdown(ctx) })

	// The receiver refuses every request of several events for good, and
	// takes every batch of one.
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		body, _ := io.ReadAll(r.Body)
		es, err := ReadDelivery(r.Header, body)
		if err != nil || len(es) > 1 {
			return http.StatusUnprocessableEntity
		}
		return http.StatusNoContent
	})
	runManager(t, Options{Sinks: []Config{batchConfig(rc.URL, func(c *Config) { c.Batch.MaxWait = 300 * time.Millisecond })},
		JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat, Tracer: provider.Tracer("test")})

	// Two events for each of three users, each from a trace of its own,
	// published at once: the first batch holds several.
	traceparent := map[string]string{} // event id → the traceparent it was published with
	tracestate := map[string]string{}  // and its tracestate
	for u := range 3 {
		for seq := range 2 {
			n := 2*u + seq + 1
			e := eventstest.Event(t, "acme", events.UserUpdated, fmt.Sprintf("u%d", u), uint64(n), uint64(seq+1))
			tp := fmt.Sprintf("00-%032x-%016x-01", n, n)
			e.SetExtension(events.ExtTraceParent, tp)
			e.SetExtension(events.ExtTraceState, fmt.Sprintf("vendor=%d", n))
			traceparent[e.ID()], tracestate[e.ID()] = tp, fmt.Sprintf("vendor=%d", n)
			msg, err := events.ToMsg(e)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
				t.Fatal(err)
			}
		}
	}
	accepted := map[string]received{} // event id → the request that delivered it
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, r := range rc.requests() {
			if es, err := ReadDelivery(r.header, r.body); err == nil && len(es) == 1 {
				accepted[es[0].ID()] = r
			}
		}
		if len(accepted) != len(traceparent) {
			return fmt.Errorf("%d of %d events delivered", len(accepted), len(traceparent))
		}
		return nil
	})

	// A delivery attempt's span ends once its answer is read, a moment
	// after the receiver has the request: wait for those the requests name.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		ended := map[string]bool{}
		for _, s := range recorder.Ended() {
			ended[s.SpanContext().SpanID().String()] = true
		}
		for id, r := range accepted {
			if parts := strings.Split(r.header.Get("traceparent"), "-"); len(parts) == 4 && !ended[parts[2]] {
				return fmt.Errorf("the span of event %s's delivery has not ended", id)
			}
		}
		return nil
	})
	spans := map[string]sdktrace.ReadOnlySpan{} // span id → ended span
	for _, s := range recorder.Ended() {
		spans[s.SpanContext().SpanID().String()] = s
	}
	several := 0
	for _, r := range rc.requests() {
		es, err := ReadDelivery(r.header, r.body)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if got := e.Extensions()[events.ExtTraceParent]; got != traceparent[e.ID()] {
				t.Errorf("event %s in a batch carries traceparent %v, want the one it was published with, %s", e.ID(), got, traceparent[e.ID()])
			}
			if got := e.Extensions()[events.ExtTraceState]; got != tracestate[e.ID()] {
				t.Errorf("event %s in a batch carries tracestate %v, want %s", e.ID(), got, tracestate[e.ID()])
			}
		}
		if len(es) > 1 {
			several++
			if tp := r.header.Get("traceparent"); tp != "" {
				t.Errorf("a request of %d events carries a traceparent header of its own: %s", len(es), tp)
			}
		}
	}
	if several == 0 {
		t.Fatal("no request held several events: the test did not refuse a batch")
	}
	for id, r := range accepted {
		got, want := strings.Split(r.header.Get("traceparent"), "-"), strings.Split(traceparent[id], "-")
		if len(got) != 4 {
			t.Errorf("event %s, sent alone after its batch was refused, without a traceparent header: %q", id, r.header.Get("traceparent"))
			continue
		}
		traceID, spanID, wantTrace, wantParent := got[1], got[2], want[1], want[2]
		span, ok := spans[spanID]
		switch {
		case traceID != wantTrace:
			t.Errorf("event %s alone: traceparent header in trace %s, want the event's %s", id, traceID, wantTrace)
		case !ok:
			t.Errorf("event %s alone: traceparent header names span %s, which is no delivery attempt", id, spanID)
		case span.Name() != "deliver crm" || span.Parent().SpanID().String() != wantParent:
			t.Errorf("event %s alone: traceparent header names span %q, child of %s; want the delivery attempt, child of the event's %s", id, span.Name(), span.Parent().SpanID(), wantParent)
		}
	}
}
