// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/scimrelay/scimrelay/relay/events"
)

// TestTraceContext: the trace context of a request's span goes into the
// event as the distributed-tracing extension, survives the NATS binding,
// and comes back out as the parent of the spans that handle the event; an
// event made without one carries none.
func TestTraceContext(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("vendor=x")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	parent, state := events.TraceHeaders(ctx)
	if parent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || state != "vendor=x" {
		t.Fatalf("TraceHeaders = %q, %q", parent, state)
	}
	if p, s := events.TraceHeaders(context.Background()); p != "" || s != "" {
		t.Errorf("TraceHeaders without a span = %q, %q", p, s)
	}
	for _, c := range []struct {
		name          string
		parent, state string
		want          trace.SpanContext
	}{
		{"traced", parent, state, sc.WithRemote(true)},
		{"not traced", "", "", trace.SpanContext{}},
	} {
		meta := events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: "u1", Sequence: 1, SubjectSeq: 1, Time: time.Now(), TraceParent: c.parent, TraceState: c.state}
		e, err := events.New(meta, events.Data{Tenant: "acme", ResourceType: "User", ID: "u1", Resource: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := events.ToMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		back, err := events.FromMsg(msg.Subject, msg.Header, msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		got := trace.SpanContextFromContext(events.TraceContext(context.Background(), back))
		if !got.Equal(c.want) {
			t.Errorf("%s: the event's trace context is %+v, want %+v", c.name, got, c.want)
		}
	}
}
