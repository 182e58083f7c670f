// SPDX-License-Identifier: Apache-2.0

// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and traces the SCIM listener's requests. It is
// off, at no cost, unless the environment asks for it: no exporter, no
// provider, and a nil Tracer that every component checks.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span the relay makes.
const ScopeName = "github.com/scimrelay/scimrelay"

// DefaultServiceName is the service.name when OTEL_SERVICE_NAME is unset.
const DefaultServiceName = "scimrelay"

// Tracing is the process's tracer provider, exporting spans over OTLP/HTTP.
type Tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// Enabled reports whether the environment asks for traces: an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// or OTEL_TRACES_EXPORTER=otlp, and neither OTEL_SDK_DISABLED=true nor
// OTEL_TRACES_EXPORTER=none. It refuses what the relay cannot do: another
// exporter than otlp, another OTLP protocol than http/protobuf.
func Enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	var errs []error
	// Enumerations are read in any case (the OpenTelemetry specification,
	// "Configuration: Environment Variable Specification").
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch exporter {
	case "", "otlp", "none":
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER: scimrelay exports traces with otlp (or none), got %q", exporter))
	}
	// The traces' own protocol wins over the generic one, as the
	// specification says: a generic grpc set for a sidecar's other
	// signals is no matter when the traces' is http/protobuf.
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(name)); p != "" {
			if !strings.EqualFold(p, "http/protobuf") {
				errs = append(errs, fmt.Errorf("%s: scimrelay speaks OTLP over HTTP (http/protobuf), got %q", name, p))
			}
			break
		}
	}
	if len(errs) > 0 {
		return false, errors.Join(errs...)
	}
	if exporter == "none" {
		return false, nil
	}
	return exporter == "otlp" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// FromEnv returns the tracing the environment asks for, or nil when it
// asks for none. version is the relay's (service.version). The exporter
// reads the rest of OTEL_EXPORTER_OTLP_* (headers, timeout, TLS), the
// provider OTEL_TRACES_SAMPLER and OTEL_BSP_*, and the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
func FromEnv(ctx context.Context, version string, log *slog.Logger) (*Tracing, error) {
	on, err := Enabled(os.Getenv)
	if err != nil || !on {
		return nil, err
	}
	// The SDK reports a failed export to its global error handler, by
	// default the standard library's log: a line of its own format on
	// stderr, beside the relay's slog text or JSON.
	if log != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("tracing: exporting spans failed", "err", err)
		}))
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("setting up the OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(DefaultServiceName), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithTelemetrySDK(),
		resource.WithSchemaURL(semconv.SchemaURL),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("describing the service for traces: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{provider: tp, tracer: tp.Tracer(ScopeName)}, nil
}

// Tracer is what components start spans with; nil on a nil Tracing, which
// components take as "not tracing".
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	return t.tracer
}

// Shutdown exports the spans still buffered and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Middleware starts a server span for every request, continuing the trace
// of an incoming W3C traceparent header. The handler's observer names it
// and adds what the request was (Annotate).
func (t *Tracing) Middleware(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagation.TraceContext{}.Extract(r.Context(), fieldLines(r.Header))
		ctx, span := t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(semconv.HTTPRequestMethodKey.String(r.Method)))
		defer span.End()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// fieldLines reads a request's W3C Trace Context headers whole: the lines
// of a header sent in several (a proxy or a client library adding its
// tracestate entry as a line of its own) are one comma-separated list
// (RFC 9110 §5.3), where propagation.HeaderCarrier read the first line
// alone and lost the rest of the tracestate. Two traceparent lines so
// joined do not parse, and the request starts a trace of its own, as
// W3C's test suite asks of a duplicated traceparent.
type fieldLines http.Header

func (h fieldLines) Get(key string) string { return strings.Join(http.Header(h).Values(key), ",") }

func (h fieldLines) Set(key, value string) { http.Header(h).Set(key, value) }

func (h fieldLines) Keys() []string { return propagation.HeaderCarrier(h).Keys() }

// Request is what a span of a SCIM or token request says: never a
// userName, an email, a filter or a credential.
type Request struct {
	Tenant       string
	Operation    string // one of scim.Operations(), or token
	ResourceType string // User, Group, or empty
	Route        string // the path's template, e.g. /scim/v2/{tenant}/Users/{id}
	RequestID    string
	Status       int
	// ClientRequestID is the X-Request-Id the client sent, when kept.
	ClientRequestID string
}

// Annotate names the request's span ("SCIM create User") and records what
// the request was; it does nothing when ctx has no recording span.
func Annotate(ctx context.Context, r Request) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	name := "SCIM " + r.Operation
	if r.ResourceType != "" {
		name += " " + r.ResourceType
	}
	if r.Operation == "" {
		name = "SCIM request"
	}
	span.SetName(name)
	attrs := []attribute.KeyValue{
		attribute.String("scimrelay.tenant", r.Tenant),
		attribute.String("scimrelay.operation", r.Operation),
		attribute.String("scimrelay.request_id", r.RequestID),
		semconv.HTTPResponseStatusCode(r.Status),
	}
	if r.ResourceType != "" {
		attrs = append(attrs, attribute.String("scimrelay.resource_type", r.ResourceType))
	}
	if r.Route != "" {
		attrs = append(attrs, semconv.HTTPRoute(r.Route))
	}
	if r.ClientRequestID != "" {
		attrs = append(attrs, attribute.String("scimrelay.client_request_id", r.ClientRequestID))
	}
	span.SetAttributes(attrs...)
	if r.Status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(r.Status))
	}
}
