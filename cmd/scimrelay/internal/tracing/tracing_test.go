// SPDX-License-Identifier: Apache-2.0

package tracing

import (
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestMiddlewareReadsEveryHeaderLine: "An incoming tracestate travels with
// the traceparent into the event" (README, Tracing), in however many
// header lines it came (a soak hunt: the second line was lost); a
// traceparent given twice starts a trace of its own, as W3C's test suite
// asks, where the first line was continued.
func TestMiddlewareReadsEveryHeaderLine(t *testing.T) {
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tr := &Tracing{tracer: sdktrace.NewTracerProvider().Tracer(ScopeName)}
	for _, c := range []struct {
		name                 string
		lines                [][2]string
		wantTrace, wantState string // wantTrace "": any trace but the caller's
	}{
		{"one line each", [][2]string{{"traceparent", "00-" + traceID + "-" + parent + "-01"}, {"tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}},
			traceID, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{"tracestate in two lines", [][2]string{{"traceparent", "00-" + traceID + "-" + parent + "-01"}, {"tracestate", "congo=t61rcWkgMzE"}, {"Tracestate", "rojo=00f067aa0ba902b7"}},
			traceID, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"},
		{"traceparent twice", [][2]string{{"traceparent", "00-" + traceID + "-" + parent + "-01"}, {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
			"", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got trace.SpanContext
			h := tr.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = trace.SpanContextFromContext(r.Context())
			}))
			req := httptest.NewRequest("GET", "/scim/v2/acme/Users", nil)
			for _, l := range c.lines {
				req.Header.Add(l[0], l[1])
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			switch {
			case !got.IsValid():
				t.Fatal("the handler ran without a span")
			case c.wantTrace != "" && got.TraceID().String() != c.wantTrace:
				t.Errorf("trace %s, want the caller's %s", got.TraceID(), c.wantTrace)
			case c.wantTrace == "" && (got.TraceID().String() == traceID || got.TraceID().String() == "0af7651916cd43dd8448eb211c80319c"):
				t.Errorf("trace %s continues one of the two traceparents, want a trace of its own", got.TraceID())
			}
			if s := got.TraceState().String(); s != c.wantState {
				t.Errorf("tracestate %q, want %q", s, c.wantState)
			}
		})
	}
}
