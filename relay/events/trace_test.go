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

	ext := events.TraceExtensions(ctx)
	if ext[events.ExtTraceParent] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || ext[events.ExtTraceState] != "vendor=x" || len(ext) != 2 {
		t.Fatalf("TraceExtensions = %v", ext)
	}
	if got := events.TraceExtensions(context.Background()); got != nil {
		t.Errorf("TraceExtensions without a span = %v", got)
	}
	for _, c := range []struct {
		name string
		ext  map[string]string
		want trace.SpanContext
	}{
		{"traced", ext, sc.WithRemote(true)},
		{"not traced", nil, trace.SpanContext{}},
	} {
		meta := events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: "u1", Sequence: 1, SubjectSeq: 1, Time: time.Now(), Extensions: c.ext}
		data := events.Data{Tenant: "acme", ResourceType: "User", ID: "u1", Resource: []byte(`{}`)}

		// As the relay writes it: encoded once, published as stored.
		d, err := events.Encode(meta, data)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := events.ParseMessage(d.Row())
		if err != nil {
			t.Fatal(err)
		}
		published, err := stored.NATS()
		if err != nil {
			t.Fatal(err)
		}
		if got := trace.SpanContextFromContext(events.MessageTraceContext(context.Background(), published.Header)); !got.Equal(c.want) {
			t.Errorf("%s: the published message's trace context is %+v, want %+v", c.name, got, c.want)
		}

		// As a sink worker reads it: a CloudEvent.
		e, err := events.New(meta, data)
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
