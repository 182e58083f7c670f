// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/tracing"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// otlpReceiver is an OTLP/HTTP trace receiver, as a collector runs it: it
// decodes every export (protobuf) and keeps the spans.
type otlpReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	spans   []*tracepb.Span
	exports [][]byte // every export as received: every string a span holds is in one
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP export to %s as %s", req.URL.Path, req.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var export coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &export); err != nil {
			t.Errorf("decoding an OTLP export: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.exports = append(r.exports, body)
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, s)
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// count is how many spans named name arrived.
func (r *otlpReceiver) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.spans {
		if s.Name == name {
			n++
		}
	}
	return n
}

// span returns the first span named name, nil when none arrived yet.
func (r *otlpReceiver) span(name string) *tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// holding says which exported spans hold one of texts anywhere (their
// names, attributes, events, links, status) and whether the resource does.
func (r *otlpReceiver) holding(texts ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, body := range r.exports {
		for _, text := range texts {
			if !strings.Contains(string(body), text) {
				continue
			}
			where := "an export (undecoded)"
			var export coltracepb.ExportTraceServiceRequest
			_ = proto.Unmarshal(body, &export)
			for _, rs := range export.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						if strings.Contains(prototext.Format(s), text) {
							where = fmt.Sprintf("span %q", s.Name)
						}
					}
				}
				if strings.Contains(prototext.Format(rs.Resource), text) {
					where = "the resource"
				}
			}
			out = append(out, fmt.Sprintf("%s holds %q", where, text))
		}
	}
	return out
}

// TestTracing sends one SCIM create carrying a W3C traceparent to a relay
// whose environment asks for OTLP traces, and checks what an OTLP receiver
// gets: spans for the request, the commit, the publish and the delivery,
// all in the caller's trace, each the child it should be; the webhook
// request carries the trace on (traceparent naming the delivery span) and
// the event carries the request's (ce-traceparent, and the caller's
// tracestate as ce-tracestate). Then a filtered list, a token request and
// requests with an access token and with Basic credentials: no span says a
// userName, an email, a filter or a credential, anywhere.
func TestTracing(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: export soon after each span ends
	t.Setenv("OTEL_SERVICE_NAME", "scimrelay-test")

	type delivery struct{ traceparent, ceTraceparent, ceTracestate string }
	got := make(chan delivery, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- delivery{r.Header.Get("traceparent"), r.Header.Get("ce-traceparent"), r.Header.Get("ce-tracestate")}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", hook.URL, nil)
	p := startRelay(t, cfg, roleAll)
	if p.srv.tracing == nil {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT is set but the relay does not trace")
	}

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const userName, email = "ann.secret@acme.example", "ann.private@acme.example"
	const traceState = "vendor=opaque-1,other=x"
	created := p.scim("acme", acmeToken, "POST", "/Users",
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+userName+`","emails":[{"value":"`+email+`","type":"work"}]}`,
		"traceparent", "00-"+traceID+"-"+callerSpan+"-01", "tracestate", traceState, "X-Request-Id", "idp-trace-1").want(t, 201)

	var d delivery
	select {
	case d = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook delivery within 20 s")
	}

	var request, commit, publish, deliver *tracepb.Span
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		request, commit, publish, deliver = otlp.span("SCIM create User"), otlp.span("commit"), otlp.span("publish SCIMRELAY"), otlp.span("deliver crm")
		if request == nil || commit == nil || publish == nil || deliver == nil {
			return fmt.Errorf("spans so far: request %v, commit %v, publish %v, deliver %v", request != nil, commit != nil, publish != nil, deliver != nil)
		}
		return nil
	})
	id := func(b []byte) string { return hex.EncodeToString(b) }
	for _, s := range []*tracepb.Span{request, commit, publish, deliver} {
		if id(s.TraceId) != traceID {
			t.Errorf("span %q is in trace %s, not the caller's %s", s.Name, id(s.TraceId), traceID)
		}
	}
	parents := []struct {
		child  *tracepb.Span
		parent string
	}{
		{request, callerSpan},         // the incoming traceparent is honoured
		{commit, id(request.SpanId)},  // the commit within the request
		{publish, id(request.SpanId)}, // the event carries the request's context
		{deliver, id(request.SpanId)}, // and so does each delivery attempt
	}
	for _, c := range parents {
		if id(c.child.ParentSpanId) != c.parent {
			t.Errorf("span %q has parent %s, want %s", c.child.Name, id(c.child.ParentSpanId), c.parent)
		}
	}
	if want := "00-" + traceID + "-" + id(request.SpanId) + "-01"; d.ceTraceparent != want {
		t.Errorf("the event's ce-traceparent is %q, want the request's %q", d.ceTraceparent, want)
	}
	if d.ceTracestate != traceState {
		t.Errorf("the event's ce-tracestate is %q, want the caller's %q", d.ceTracestate, traceState)
	}
	if want := "00-" + traceID + "-" + id(deliver.SpanId) + "-01"; d.traceparent != want {
		t.Errorf("the webhook's traceparent is %q, want the delivery span's %q", d.traceparent, want)
	}
	if request.Kind != tracepb.Span_SPAN_KIND_SERVER || publish.Kind != tracepb.Span_SPAN_KIND_PRODUCER || deliver.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("span kinds: request %v, publish %v, deliver %v", request.Kind, publish.Kind, deliver.Kind)
	}
	want := map[string]string{"scimrelay.tenant": "acme", "scimrelay.operation": "create", "http.response.status_code": "201", "http.route": "/scim/v2/{tenant}/Users",
		"scimrelay.request_id": created.header.Get("X-Request-Id"), "scimrelay.client_request_id": "idp-trace-1"}
	if want["scimrelay.request_id"] == "" {
		t.Error("the SCIM answer has no X-Request-Id")
	}
	for _, kv := range request.Attributes {
		if w, ok := want[kv.Key]; ok {
			if v := anyValue(kv.Value); v != w {
				t.Errorf("request span %s = %s, want %s", kv.Key, v, w)
			}
			delete(want, kv.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("request span lacks %v", want)
	}

	// A filter, an OAuth client's secret, its access token and its Basic
	// credentials, each in a request of its own.
	filter := `userName eq "` + userName + `"`
	if r := p.scim("acme", acmeToken, "GET", "/Users?"+q(filter), "").want(t, 200); r.body["totalResults"] != float64(1) {
		t.Fatalf("the filter found %v users", r.body["totalResults"])
	}
	client := createClient(t, p, "acme")
	basic := base64.StdEncoding.EncodeToString([]byte(client.id + ":" + client.secret))
	access := p.tokenRequest("acme", grant(), client.id+":"+client.secret).accessToken(t)
	p.scim("acme", access, "GET", "/Users", "").want(t, 200)
	p.scim("acme", "", "GET", "/Users?"+q(filter), "", "Authorization", "Basic "+basic).want(t, 200)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if otlp.count("SCIM list User") < 3 || otlp.count("SCIM token") < 1 {
			return fmt.Errorf("spans of the list (%d of 3) and token (%d of 1) requests not exported yet", otlp.count("SCIM list User"), otlp.count("SCIM token"))
		}
		return nil
	})
	var secrets []string
	for _, s := range []string{userName, email, filter, "userName eq", acmeToken, client.secret, access, basic, sinkSecret, adminSecret} {
		secrets = append(secrets, s, url.QueryEscape(s), url.PathEscape(s))
	}
	slices.Sort(secrets)
	secrets = slices.Compact(secrets)
	for _, found := range otlp.holding(secrets...) {
		t.Error(found)
	}
}

// TestTracingOff: with no OTEL_* variable the relay makes no tracer, and
// neither the event nor the webhook request carries a trace context, even
// when the SCIM request came with one.
func TestTracingOff(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	got := make(chan http.Header, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", hook.URL, nil)
	p := startRelay(t, cfg, roleAll)
	if p.srv.tracing != nil || p.srv.tracing.Tracer() != nil {
		t.Fatal("the relay traces with no OTEL_* variable set")
	}
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`,
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").want(t, 201)
	select {
	case h := <-got:
		if h.Get("traceparent") != "" || h.Get("ce-traceparent") != "" {
			t.Errorf("tracing is off but the webhook got traceparent %q, ce-traceparent %q", h.Get("traceparent"), h.Get("ce-traceparent"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook delivery within 20 s")
	}
}

// TestTracingEnvironment: which OTEL_* settings turn tracing on, and the
// ones the relay cannot honour are refused rather than ignored.
func TestTracingEnvironment(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		on      bool
		problem string
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_SERVICE_NAME": "relay"}, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: false},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, problem: "OTEL_TRACES_EXPORTER"},
		// Enumerations in any case: OTLP was refused.
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "OTLP", "OTEL_EXPORTER_OTLP_PROTOCOL": "HTTP/Protobuf"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "None", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, problem: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, problem: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		// The traces' own protocol wins over the generic one (it was
		// refused for the generic one).
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, problem: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
	} {
		on, err := tracing.Enabled(func(k string) string { return c.env[k] })
		switch {
		case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
			t.Errorf("%v: error %v, want one naming %s", c.env, err, c.problem)
		case c.problem == "" && err != nil:
			t.Errorf("%v: %v", c.env, err)
		case on != c.on:
			t.Errorf("%v: tracing on = %v, want %v", c.env, on, c.on)
		}
	}
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return v.String()
}

// TestTracingKeepsNoUnroutedPath: a request whose path the router does
// not match keeps nothing of the path in its span: the path is as anyone
// sent it, with or without a credential, and may hold an email.
func TestTracingKeepsNoUnroutedPath(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll)
	const email = "ann.secret@acme.example"
	paths := []string{"/Users/" + email + "/x", "/Userz/" + email, "/Users/.search/" + email, "/Schemas/" + email}
	for _, path := range paths {
		p.scim("acme", acmeToken, "GET", path, "")
	}
	// Unauthenticated, and the token endpoint.
	for _, path := range []string{"/scim/v2/acme/Users/" + email + "/x", "/oauth2/acme/token/" + email, "/oauth2/acme/" + email} {
		resp, err := http.Post(p.scimURL+path, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		otlp.mu.Lock()
		defer otlp.mu.Unlock()
		if len(otlp.spans) < len(paths)+3 {
			return fmt.Errorf("%d spans so far", len(otlp.spans))
		}
		return nil
	})
	for _, found := range otlp.holding(email) {
		t.Error(found)
	}
	otlp.mu.Lock()
	for _, s := range otlp.spans {
		for _, kv := range s.Attributes {
			if strings.Contains(anyValue(kv.Value), email) {
				t.Logf("span %q %s = %s", s.Name, kv.Key, anyValue(kv.Value))
			}
		}
	}
	otlp.mu.Unlock()
}

// TestTracingAcrossAFrontEndAndAWorker: a front end and a separate sinks worker; the
// delivery span is a child of the SCIM request.
func TestTracingAcrossAFrontEndAndAWorker(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	got := make(chan string, 8)
	inner := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent") + " " + r.Header.Get("ce-traceparent")
		inner.ServeHTTP(w, r)
	})
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM)
	startRelay(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks)
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	front.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`,
		"traceparent", "00-"+traceID+"-"+callerSpan+"-01").want(t, 201)
	var hdrs string
	select {
	case hdrs = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery")
	}
	var request, deliver *tracepb.Span
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		request, deliver = otlp.span("SCIM create User"), otlp.span("deliver crm")
		if request == nil || deliver == nil {
			return fmt.Errorf("request %v deliver %v", request != nil, deliver != nil)
		}
		return nil
	})
	if hex.EncodeToString(deliver.TraceId) != traceID || hex.EncodeToString(deliver.ParentSpanId) != hex.EncodeToString(request.SpanId) {
		t.Errorf("deliver span trace %x parent %x; request span %x", deliver.TraceId, deliver.ParentSpanId, request.SpanId)
	}
	t.Logf("webhook headers: %s", hdrs)
}

var w3c = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// TestTracingIncomingContext: malformed, unsampled and oversized incoming trace
// context.
func TestTracingIncomingContext(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	got := make(chan http.Header, 16)
	hook := newHook(t)
	inner := hook.Config.Handler
	hook.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		inner.ServeHTTP(w, r)
	})
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", hook.URL, nil)
	p := startRelay(t, cfg, roleAll)
	var big []string
	for i := 0; i < 32; i++ {
		big = append(big, fmt.Sprintf("k%d=%s", i, strings.Repeat("v", 250)))
	}
	for i, c := range []struct{ tp, ts string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "evil=1"},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "evil=1"},
		{"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "evil=1"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "a=b"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", strings.Join(big, ",")},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x=y"},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", "x=y"},
	} {
		p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d"}`, i),
			"traceparent", c.tp, "tracestate", c.ts)
		select {
		case h := <-got:
			t.Logf("case %d: traceparent %q ce-traceparent %q ce-tracestate len %d %.40q", i, h.Get("traceparent"), h.Get("ce-traceparent"), len(h.Get("ce-tracestate")), h.Get("ce-tracestate"))
			if v := h.Get("ce-traceparent"); v != "" && !w3c.MatchString(v) {
				t.Errorf("case %d: ce-traceparent %q", i, v)
			}
			if strings.Contains(h.Get("ce-tracestate"), "evil") {
				t.Errorf("case %d: tracestate of a refused traceparent kept", i)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("case %d: no delivery", i)
		}
	}
}

// TestTracingExportFailureIsLoggedAsTheRelayLogs: with log.format json,
// every line serve writes is a JSON object (README "Logs": log/slog, text
// or JSON); an OTLP collector refusing exports must not add lines of
// another format.
func TestTracingExportFailureIsLoggedAsTheRelayLogs(t *testing.T) {
	var refused atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused.Add(1)
		w.WriteHeader(http.StatusBadRequest) // not retryable: the export fails at once
	}))
	defer collector.Close()
	bin := binary(t)
	path, addrs := processConfig(t, t.TempDir())
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("log:\n  format: json\n")
	f.Close()
	p := startProcess(t, bin, path, "OTEL_EXPORTER_OTLP_ENDPOINT="+collector.URL, "OTEL_BSP_SCHEDULE_DELAY=20")
	waitReady(t, p, addrs.admin)
	req, _ := http.NewRequest("POST", "http://"+addrs.scim+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if refused.Load() == 0 {
			return fmt.Errorf("no export yet")
		}
		if !strings.Contains(p.stderr.String(), "traces export") {
			return fmt.Errorf("export failure not logged yet")
		}
		return nil
	})
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("not a JSON log line: %s", line)
		}
	}
}

// TestTracingBulkAndGroupsHoldNoPII: a Bulk with failing operations (a duplicate
// userName, a bad filter-like path) and a group PATCH with members; no
// span holds the userName, and every span is in the caller's trace.
func TestTracingBulkAndGroupsHoldNoPII(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	const userName, email = "ann.secret@acme.example", "ann.private@acme.example"
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp := "00-" + traceID + "-00f067aa0ba902b7-01"
	user := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"` + userName + `","emails":[{"value":"` + email + `"}]}`
	bulk := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[
{"method":"POST","bulkId":"a","path":"/Users","data":` + user + `},
{"method":"POST","bulkId":"b","path":"/Users","data":` + user + `},
{"method":"POST","bulkId":"g","path":"/Groups","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"` + email + `","members":[{"value":"bulkId:a"}]}},
{"method":"PATCH","path":"/Users/bulkId:a","data":{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[value eq \"` + email + `\"].value","value":"x` + email + `"}]}}]}`
	r := p.scim("acme", acmeToken, "POST", "/Bulk", bulk, "traceparent", tp)
	t.Logf("bulk %d %v", r.status, r.body)
	// Errors that quote: a duplicate, a bad filter.
	p.scim("acme", acmeToken, "POST", "/Users", user, "traceparent", tp)
	p.scim("acme", acmeToken, "GET", "/Users?filter="+q(`userName eq "`+userName+`" and`), "", "traceparent", tp)
	p.scim("acme", acmeToken, "GET", "/Users?filter="+q(`userName zz "`+userName+`"`), "", "traceparent", tp)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if otlp.count("SCIM bulk") < 1 || otlp.count("deliver crm") < 3 || otlp.count("SCIM list User") < 2 {
			return fmt.Errorf("bulk %d deliver %d list %d", otlp.count("SCIM bulk"), otlp.count("deliver crm"), otlp.count("SCIM list User"))
		}
		return nil
	})
	for _, found := range otlp.holding(userName, email, "userName eq", "userName zz") {
		t.Error(found)
	}
	otlp.mu.Lock()
	for _, s := range otlp.spans {
		if hex.EncodeToString(s.TraceId) != traceID {
			t.Errorf("span %q in trace %x", s.Name, s.TraceId)
		}
		if s.Status != nil && s.Status.Message != "" {
			t.Logf("span %q status %v %q", s.Name, s.Status.Code, s.Status.Message)
		}
	}
	t.Logf("%d spans", len(otlp.spans))
	otlp.mu.Unlock()
}

// TestTracingRedriveAndReplay: a dead-lettered event redriven is delivered with
// its request's trace: ce-traceparent, and a delivery span child of it.
func TestTracingRedriveAndReplay(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	h, gone := goneHook(t)
	got := make(chan http.Header, 8)
	inner := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gone.Load() {
			got <- r.Header.Clone()
		}
		inner.ServeHTTP(w, r)
	})
	c := testConfig(t, t.TempDir())
	withSink(c, "crm", h.URL, nil)
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`,
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01").want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := metric(t, p, "scimrelay_sink_dead_letters", "sink", "crm"); n != 1 {
			return fmt.Errorf("%v dead letters", n)
		}
		return nil
	})
	gone.Store(false)
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg); code != 0 {
		t.Fatalf("redrive: %d %s %s", code, out, stderr)
	}
	var hdr http.Header
	select {
	case hdr = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no redelivery")
	}
	t.Logf("redelivery traceparent %q ce-traceparent %q", hdr.Get("traceparent"), hdr.Get("ce-traceparent"))
	if !strings.Contains(hdr.Get("ce-traceparent"), traceID) || !strings.Contains(hdr.Get("traceparent"), traceID) {
		t.Errorf("redelivery lost the request's trace")
	}
	// A replay of the past: the same.
	if code, out, stderr := cli(t, "sinks", "replay", "--sink", "crm", "--since", "1h", "--config", cfg); code != 0 {
		t.Fatalf("replay: %d %s %s", code, out, stderr)
	}
	select {
	case hdr = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no replayed delivery")
	}
	t.Logf("replay traceparent %q ce-traceparent %q", hdr.Get("traceparent"), hdr.Get("ce-traceparent"))
	if !strings.Contains(hdr.Get("traceparent"), traceID) {
		t.Errorf("replayed delivery carries no traceparent of a delivery span")
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := otlp.count("deliver crm"); n < 3 {
			return fmt.Errorf("%d delivery spans (the dead-lettered attempt, the redrive, the replay)", n)
		}
		return nil
	})
}

// TestTracingSamplerOff: OTEL_TRACES_SAMPLER=always_off exports nothing
// and the relay still delivers.
func TestTracingSamplerOff(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`,
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").want(t, 201)
	waitDelivered(t, h, 1)
	p.stop() // flushes
	otlp.mu.Lock()
	defer otlp.mu.Unlock()
	if len(otlp.spans) != 0 {
		t.Errorf("always_off exported %d spans", len(otlp.spans))
	}
}

// TestTracingRouteOfRoutedPaths: every path the handler routes has its
// template as http.route, as sent by the IdPs the README names (Entra's
// Tenant URL with a trailing slash: //Users; a trailing slash; a
// lowercase endpoint, which the handler routes as the canonical one).
func TestTracingRouteOfRoutedPaths(t *testing.T) {
	otlp := newOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll)
	cases := []struct{ method, path, body, want string }{
		{"GET", "/Users?aadOptscim062020", "", "/scim/v2/{tenant}/Users"},
		{"GET", "//Users", "", "/scim/v2/{tenant}/Users"},
		{"GET", "//Users/0b5f7a0e-0000-4000-8000-000000000000", "", "/scim/v2/{tenant}/Users/{id}"},
		{"GET", "/Users/", "", "/scim/v2/{tenant}/Users"},
		{"GET", "/users", "", "/scim/v2/{tenant}/Users"},
		{"POST", "/Users/.SEARCH", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}`, "/scim/v2/{tenant}/Users/.search"},
		{"GET", "/Users/a%2Fb", "", "/scim/v2/{tenant}/Users/{id}"},
	}
	ids := map[string]int{}
	for i, c := range cases {
		r := p.scim("acme", acmeToken, c.method, c.path, c.body)
		t.Logf("%s %s: %d", c.method, c.path, r.status)
		if r.status == 404 && r.body["scimType"] == nil && c.path != "/Users/a%2Fb" && c.path != "//Users/0b5f7a0e-0000-4000-8000-000000000000" {
			t.Errorf("%s %s: not routed (%d)", c.method, c.path, r.status)
		}
		ids[r.header.Get("X-Request-Id")] = i
	}
	got := map[int]string{}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		otlp.mu.Lock()
		defer otlp.mu.Unlock()
		for _, s := range otlp.spans {
			var id, route string
			for _, kv := range s.Attributes {
				switch kv.Key {
				case "scimrelay.request_id":
					id = anyValue(kv.Value)
				case "http.route":
					route = anyValue(kv.Value)
				}
			}
			if i, ok := ids[id]; ok {
				got[i] = route
			}
		}
		if len(got) < len(cases) {
			return fmt.Errorf("%d of %d request spans", len(got), len(cases))
		}
		return nil
	})
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s %s: http.route %q, want %q", c.method, c.path, got[i], c.want)
		}
	}
}
