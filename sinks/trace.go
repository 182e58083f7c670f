// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"net/http"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/scimrelay/scimrelay/relay/events"
)

// startAttempt starts the span of one delivery attempt of es (one event,
// or a lane's slice of a batch): a child of the trace the first event
// carries (the SCIM request that made it), linked to the others' when they
// differ, so that the attempt joins the request's trace and a single
// event's webhook request, whose traceparent header names this span, too.
// Without a tracer, or when the first event carries no trace context, it
// returns ctx and a nil span, and costs nothing.
func startAttempt(ctx context.Context, tracer trace.Tracer, sink string, es []*event.Event) (context.Context, trace.Span) {
	if tracer == nil || len(es) == 0 {
		return ctx, nil
	}
	parent := trace.SpanContextFromContext(events.TraceContext(ctx, *es[0]))
	if !parent.IsValid() {
		return ctx, nil
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("scimrelay.sink", sink),
		attribute.String("scimrelay.tenant", events.Tenant(*es[0])),
		attribute.String("cloudevents.event_id", es[0].ID()),
		attribute.String("cloudevents.event_type", es[0].Type()),
		attribute.Int("scimrelay.delivery.events", len(es)),
		attribute.String("http.request.method", http.MethodPost),
	)}
	for _, e := range es[1:] {
		if sc := trace.SpanContextFromContext(events.TraceContext(ctx, *e)); sc.IsValid() && sc.TraceID() != parent.TraceID() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	return tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), "deliver "+sink, opts...)
}

// deliverTraced is one delivery attempt of e outside a worker's lanes (a
// redrive, a replay), traced as the workers' are: a child of the request
// that made the event, whose traceparent the webhook request carries.
func deliverTraced(ctx context.Context, tracer trace.Tracer, sink string, d Sink, e *event.Event) Result {
	ctx, span := startAttempt(ctx, tracer, sink, []*event.Event{e})
	r := d.Deliver(ctx, e)
	if span != nil {
		endAttempt(span, r)
	}
	return r
}

// endAttempt records a delivery attempt's outcome on its span and ends it.
func endAttempt(span trace.Span, res Result) {
	span.SetAttributes(attribute.Int("scimrelay.delivery.attempts", res.Attempts))
	if res.Status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", res.Status))
	}
	if res.Err != nil {
		span.SetStatus(codes.Error, outcomeOf(res))
	}
	span.End()
}

// outcomeOf names a failed delivery without its error text, which can
// carry a receiver's answer.
func outcomeOf(res Result) string {
	switch {
	case res.Permanent && res.Status != 0:
		return "refused permanently with " + strconv.Itoa(res.Status)
	case res.Permanent:
		return "refused permanently"
	case res.Status != 0:
		return "failed with " + strconv.Itoa(res.Status) + "; will retry"
	}
	return "failed without an answer; will retry"
}

// injectTrace sets the W3C traceparent (and tracestate) of the span in
// ctx on an outgoing request, so that the receiver can join the trace;
// nothing when ctx carries no span.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
	}
}
