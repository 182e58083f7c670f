// SPDX-License-Identifier: Apache-2.0

package events

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The CloudEvents distributed-tracing extension: the W3C Trace Context of
// the request that caused the event, so that whoever handles it (the
// publisher, a sink worker, a webhook receiver, a NATS subscriber) can join
// that trace. Both are absent when the relay does not trace.
const (
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
)

// traceContext is the one W3C Trace Context codec of the event contract.
var traceContext propagation.TraceContext

// TraceExtensions returns the W3C traceparent and tracestate of the span in
// ctx as the event's extension attributes (Meta.Extensions), or nil when
// ctx carries no valid span (tracing is off).
func TraceExtensions(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c
}

// TraceContext returns ctx carrying the trace the event belongs to (its
// traceparent and tracestate extensions) as the remote parent of spans
// started from it; ctx unchanged when the event carries none.
func TraceContext(ctx context.Context, e event.Event) context.Context {
	parent, _ := e.Extensions()[ExtTraceParent].(string)
	state, _ := e.Extensions()[ExtTraceState].(string)
	return withTrace(ctx, parent, state)
}

// MessageTraceContext is TraceContext for an event as a NATS message: its
// ce-traceparent and ce-tracestate headers.
func MessageTraceContext(ctx context.Context, h nats.Header) context.Context {
	return withTrace(ctx, MessageAttribute(h, ExtTraceParent), MessageAttribute(h, ExtTraceState))
}

func withTrace(ctx context.Context, parent, state string) context.Context {
	if parent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{ExtTraceParent: parent, ExtTraceState: state})
}
