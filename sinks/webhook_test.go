// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"golang.org/x/net/http/httpproxy"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

var ctx = context.Background()

func testEvent(t testing.TB, a events.Action, id string, subjectSeq uint64) *event.Event {
	t.Helper()
	e := eventstest.Event(t, "acme", a, id, subjectSeq, subjectSeq)
	return &e
}

// received is one request a test receiver got.
type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is an httptest webhook receiver answering from a script.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []received
	respond func(n int, r *http.Request) int // status for the n-th request (1-based)
}

func newReceiver(t testing.TB, respond func(n int, r *http.Request) int) *receiver {
	rc := &receiver{respond: respond}
	schemas := eventstest.Schemas(t) // on the test goroutine: it may call t.Fatal
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		// Every delivery matches the contract's webhook description.
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents-batch+json") {
			es, err := ReadDelivery(r.Header, body)
			if err != nil {
				t.Error(err)
			}
			for _, e := range es {
				if err := schemas.CheckEvent(e); err != nil {
					t.Error(err)
				}
			}
		} else if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents+json") {
			if err := schemas.CheckWebhookHeaders(r.Header); err != nil {
				t.Error(err)
			}
			if a, err := events.ParseType(r.Header.Get("ce-type")); err == nil {
				if err := schemas.CheckData(a, body); err != nil {
					t.Error(err)
				}
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body)) // for respond
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		status := http.StatusNoContent
		if rc.respond != nil {
			status = rc.respond(n, r)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func webhook(t testing.TB, url string, edit func(*WebhookOptions)) *Webhook {
	t.Helper()
	o := WebhookOptions{Name: "test", URL: url, Secret: testSecret, AllowPrivate: true, Timeout: 2 * time.Second}
	if edit != nil {
		edit(&o)
	}
	w, err := NewWebhook(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// verify checks a delivery with the official Standard Webhooks library.
func verify(t testing.TB, r received) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("the Standard Webhooks library rejects the signature: %v (headers %v)", err, r.header)
	}
}

func TestBinaryModeDelivery(t *testing.T) {
	rc := newReceiver(t, nil)
	e := testEvent(t, events.UserCreated, "u1", 3)
	res := webhook(t, rc.URL, func(o *WebhookOptions) { o.Headers = map[string]string{"Authorization": "Bearer crm"} }).Deliver(ctx, e)
	if res.Err != nil || res.Status != 204 || res.Attempts != 1 || res.Latency <= 0 {
		t.Fatalf("Deliver: %+v", res)
	}
	r := rc.requests()[0]
	verify(t, r)
	want := map[string]string{
		"Ce-Id": e.ID(), "Ce-Type": "io.scimrelay.user.created", "Ce-Source": "/scim/v2/acme", "Ce-Subject": "Users/u1",
		"Ce-Specversion": "1.0", "Ce-Tenant": "acme", "Ce-Subjectseq": "00000000000000000003", "Ce-Sequence": "00000000000000000003",
		"Content-Type": "application/json", "Webhook-Id": e.ID(), "Authorization": "Bearer crm", "User-Agent": "scimrelay",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if r.header.Get("Ce-Time") == "" || string(r.body) != string(e.Data()) {
		t.Errorf("ce-time %q, body %s", r.header.Get("Ce-Time"), r.body)
	}
}

// TestBinaryModePercentEncodesCEHeaders: a ce- header's value is the
// attribute percent-encoded (CloudEvents HTTP binding 3.1.3.2: space, '"',
// '%' and everything outside printable ASCII), which sdk-go does not do.
// A public_url with an escaped path or a non-ASCII host puts '%' in every
// event's source, and a W3C tracestate may hold spaces and '%'; sent raw,
// a receiver decoding as the binding says read another source than the
// structured form's, or failed on the tracestate. ReadDelivery (scimrelay
// receive) decodes them back to the event's attributes.
func TestBinaryModePercentEncodesCEHeaders(t *testing.T) {
	rc := newReceiver(t, nil)
	e := testEvent(t, events.UserCreated, "u1", 1)
	e.SetSource("https://rel%C3%A9.example.com/r%C3%A9lais/scim/v2/acme")
	e.SetExtension("tracestate", `congo=t61 rcW%kgMzE,ro="é"`)
	if res := webhook(t, rc.URL, nil).Deliver(ctx, e); res.Err != nil {
		t.Fatal(res.Err)
	}
	r := rc.requests()[0]
	for name, want := range map[string]string{
		"Ce-Source":     "https://rel%25C3%25A9.example.com/r%25C3%25A9lais/scim/v2/acme",
		"Ce-Tracestate": "congo=t61%20rcW%25kgMzE,ro=%22%C3%A9%22",
		"Ce-Subject":    "Users/u1",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s: sent %q, want %q", name, got, want)
		}
	}
	got, err := ReadDelivery(r.header, r.body)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Source() != e.Source() || got[0].Extensions()["tracestate"] != e.Extensions()["tracestate"] {
		t.Errorf("read back: source %q, tracestate %v; sent %q, %v", got[0].Source(), got[0].Extensions()["tracestate"], e.Source(), e.Extensions()["tracestate"])
	}
}

func TestStructuredModeDelivery(t *testing.T) {
	rc := newReceiver(t, nil)
	e := testEvent(t, events.GroupMemberAdded, "g1", 1)
	if res := webhook(t, rc.URL, func(o *WebhookOptions) { o.Format = "structured" }).Deliver(ctx, e); res.Err != nil {
		t.Fatal(res.Err)
	}
	r := rc.requests()[0]
	verify(t, r)
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/cloudevents+json") {
		t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
	}
	var got event.Event
	if err := json.Unmarshal(r.body, &got); err != nil || got.ID() != e.ID() || got.Type() != e.Type() || string(got.Data()) != string(e.Data()) {
		t.Fatalf("structured body does not read back: %v %s", err, r.body)
	}
}

func TestInRequestRetriesAreResigned(t *testing.T) {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n < 3 {
			return 502
		}
		return 200
	})
	res := webhook(t, rc.URL, nil).Deliver(ctx, testEvent(t, events.UserUpdated, "u1", 2))
	if res.Err != nil || res.Attempts != 3 {
		t.Fatalf("Deliver: %+v", res)
	}
	reqs := rc.requests()
	for _, r := range reqs {
		verify(t, r)
		if r.header.Get("Webhook-Id") != reqs[0].header.Get("Webhook-Id") {
			t.Fatal("webhook-id changed between retries")
		}
	}
}

func TestClassification(t *testing.T) {
	later := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		status     int
		retryAfter string
		ok         bool
		permanent  bool
		after      time.Duration // at least
		tries      int
	}{
		{200, "", true, false, 0, 1}, {201, "", true, false, 0, 1}, {204, "", true, false, 0, 1}, {299, "", true, false, 0, 1},
		{301, "", false, false, 0, 1}, {302, "", false, false, 0, 1},
		{400, "", false, true, 0, 1}, {404, "", false, true, 0, 1}, {409, "", false, true, 0, 1},
		{401, "", false, false, 0, 1}, {403, "", false, false, 0, 1}, // the sink's credentials: the schedule's, not the delivery's
		{410, "", false, true, 0, 1}, {413, "", false, true, 0, 1}, {422, "", false, true, 0, 1},
		{408, "", false, false, 0, 2}, {425, "", false, false, 0, 2},
		{429, "", false, false, 0, 2}, {429, "120", false, false, 120 * time.Second, 1}, {429, later, false, false, 80 * time.Second, 1},
		{500, "", false, false, 0, 2}, {502, "", false, false, 0, 2}, {503, "3600", false, false, time.Hour, 1}, {504, "", false, false, 0, 1},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status)+" "+tt.retryAfter, func(t *testing.T) {
			rc := newReceiver(t, func(int, *http.Request) int { return tt.status })
			rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rc.mu.Lock()
				rc.got = append(rc.got, received{})
				rc.mu.Unlock()
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				if tt.status >= 300 && tt.status < 400 {
					w.Header().Set("Location", rc.URL+"/elsewhere")
				}
				w.WriteHeader(tt.status)
			})
			res := webhook(t, rc.URL, func(o *WebhookOptions) { o.MaxRetries = 1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			if (res.Err == nil) != tt.ok || res.Permanent != tt.permanent || res.RetryAfter < tt.after || res.Status != tt.status || res.Attempts != tt.tries {
				t.Fatalf("status %d: %+v (want ok %v permanent %v retry-after ≥ %s, %d tries)", tt.status, res, tt.ok, tt.permanent, tt.after, tt.tries)
			}
		})
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hit atomic.Bool
	target := newReceiver(t, func(int, *http.Request) int { hit.Store(true); return 200 })
	rc := newReceiver(t, nil)
	rc.Config.Handler = http.RedirectHandler(target.URL, http.StatusTemporaryRedirect)
	res := webhook(t, rc.URL, func(o *WebhookOptions) { o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || !strings.Contains(res.Err.Error(), "not followed") || hit.Load() {
		t.Fatalf("redirect: %+v, target hit %v", res, hit.Load())
	}
}

func TestHugeAndHangingReceivers(t *testing.T) {
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(500)
		chunk := strings.Repeat("x", 1<<20)
		for i := 0; i < 100; i++ {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	}))
	defer huge.Close()
	start := time.Now()
	res := webhook(t, huge.URL, func(o *WebhookOptions) { o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Status != 500 || time.Since(start) > 10*time.Second {
		t.Fatalf("a 100 MB answer: %+v after %s", res, time.Since(start))
	}
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	defer hang.Close()
	defer close(release)
	start = time.Now()
	res = webhook(t, hang.URL, func(o *WebhookOptions) { o.Timeout = 200 * time.Millisecond; o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || res.Permanent || time.Since(start) > 5*time.Second {
		t.Fatalf("a hanging receiver: %+v after %s", res, time.Since(start))
	}
}

func TestWebhookOptionsAreChecked(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*WebhookOptions)
		detail string
	}{
		{"bad url", func(o *WebhookOptions) { o.URL = "ftp://x" }, "url"},
		{"bad secret", func(o *WebhookOptions) { o.Secret = "secret" }, "whsec_"},
		{"short secret", func(o *WebhookOptions) { o.Secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("short")) }, "24 to 64"},
		{"bad format", func(o *WebhookOptions) { o.Format = "xml" }, "format"},
		{"reserved header", func(o *WebhookOptions) { o.Headers = map[string]string{"Webhook-Signature": "x"} }, "Webhook-Signature"},
		{"literal private address", func(o *WebhookOptions) { o.URL = "http://10.1.2.3/hook"; o.AllowPrivate = false }, "allow_private"},
		{"metadata address", func(o *WebhookOptions) { o.URL = "http://169.254.169.254/latest"; o.AllowPrivate = false }, "allow_private"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := WebhookOptions{Name: "x", URL: "https://crm.example.com/h", Secret: testSecret}
			tt.edit(&o)
			if _, err := NewWebhook(o, nil); err == nil || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("got %v, want an error containing %q", err, tt.detail)
			}
		})
	}
}

// TestHeaderGivenTwice: one header in two spellings is refused; which one
// went out was map order.
func TestHeaderGivenTwice(t *testing.T) {
	_, err := NewWebhook(WebhookOptions{Name: "x", URL: "https://crm.example.com/h", Secret: testSecret,
		Headers: map[string]string{"Authorization": "a", "authorization": "b"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "header names are case-insensitive") {
		t.Fatalf("a header in two spellings: %v", err)
	}
}

func TestSSRFGuard(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.0.0.1": true, "172.16.5.4": true, "192.168.1.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "0.1.2.3": true, "224.0.0.1": true, "255.255.255.255": true, "fe80::1": true,
		"fc00::1": true, "fd00:ec2::254": true, "::ffff:127.0.0.1": true, "::ffff:10.0.0.1": true, "64:ff9b::a00:1": true,
		"64:ff9b:1::a9fe:a9fe": true, "2002:a9fe:a9fe::1": true, "::a9fe:a9fe": true, "fec0::1": true,
		"168.63.129.16": true, "::ffff:0:7f00:1": true, "::ffff:0:a9fe:a9fe": true,
		"2001:0:4136:e378:8000:63bf:3fff:fdd2": true, "100::1": true, "100::ffff:ffff:ffff:ffff": true,
		"8.8.8.8": false, "93.184.216.34": false, "2606:4700::1111": false, "::ffff:8.8.8.8": false,
		"168.63.129.17": false, "2001:4860:4860::8888": false, "100:0:0:1::1": false,
	} {
		if got := blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("blocked(%s) = %v, want %v", addr, got, want)
		}
	}
	// The guard applies to the address dialled: a receiver on loopback is
	// refused without allow_private, by name as by number, and reached with it.
	rc := newReceiver(t, nil)
	for _, url := range []string{rc.URL, strings.Replace(rc.URL, "127.0.0.1", "localhost", 1)} {
		w, err := NewWebhook(WebhookOptions{Name: "x", URL: strings.Replace(url, "127.0.0.1", "localhost", 1), Secret: testSecret}, nil)
		if err != nil {
			t.Fatal(err)
		}
		res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
		if res.Err == nil || res.Permanent || res.Attempts != 1 || !strings.Contains(res.Err.Error(), "allow_private") {
			t.Fatalf("delivery to %s without allow_private: %+v (want refused, once, retried on the schedule)", url, res)
		}
	}
	if len(rc.requests()) != 0 {
		t.Fatal("the guard let a request through")
	}
	if res := webhook(t, rc.URL, nil).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Err != nil {
		t.Fatalf("with allow_private: %v", res.Err)
	}
}

func TestSchedule(t *testing.T) {
	if DefaultSchedule[0] > 10*time.Second || time.Duration(float64(DefaultSchedule.Horizon())*0.8) < 24*time.Hour {
		t.Fatalf("default schedule: first %s, horizon %s", DefaultSchedule[0], DefaultSchedule.Horizon())
	}
	low, high := func() float64 { return 0 }, func() float64 { return 0.9999999 }
	if d, ok := DefaultSchedule.Delay(1, Result{}, low); !ok || d != 4*time.Second {
		t.Errorf("attempt 1, jitter low: %s %v", d, ok)
	}
	if d, _ := DefaultSchedule.Delay(1, Result{}, high); d < 5999*time.Millisecond || d > 6*time.Second {
		t.Errorf("attempt 1, jitter high: %s", d)
	}
	if d, _ := DefaultSchedule.Delay(2, Result{RetryAfter: 10 * time.Minute}, low); d != 10*time.Minute {
		t.Errorf("a longer Retry-After wins: %s", d)
	}
	if d, _ := DefaultSchedule.Delay(2, Result{RetryAfter: 100 * time.Hour}, low); d != 24*time.Hour {
		t.Errorf("Retry-After is capped at 24h: %s", d)
	}
	if _, ok := DefaultSchedule.Delay(len(DefaultSchedule)+1, Result{}, low); ok {
		t.Error("the schedule never runs out")
	}
	if _, ok := DefaultSchedule.Delay(0, Result{}, low); ok {
		t.Error("attempt 0 has a delay")
	}
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "", "99999999999999999999", "1.5"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d := retryAfter(s, now)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("retryAfter(%q) = %s, outside [0, %s]", s, d, maxRetryAfter)
		}
	})
}

// TestHugeRetryAfterIsCappedNotIgnored: Retry-After's delay-seconds is
// 1*DIGIT, of any length (RFC 9110 10.2.3), and a long one is the least
// the schedule waits, up to 24 h (README). One past int64 was read as no
// Retry-After at all: the receiver that asked for the longest wait was
// sent the request twice more at once and again 5 s later.
func TestHugeRetryAfterIsCappedNotIgnored(t *testing.T) {
	rc := newReceiver(t, nil)
	rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.got = append(rc.got, received{})
		rc.mu.Unlock()
		w.Header().Set("Retry-After", "99999999999999999999")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	res := webhook(t, rc.URL, nil).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.RetryAfter != maxRetryAfter || res.Attempts != 1 || len(rc.requests()) != 1 {
		t.Fatalf("503 with Retry-After 99999999999999999999: RetryAfter %s after %d tries (%d requests); want %s after 1", res.RetryAfter, res.Attempts, len(rc.requests()), maxRetryAfter)
	}
	if d := retryAfter("-99999999999999999999", time.Now()); d != 0 {
		t.Errorf("a negative Retry-After past int64 reads as %s; want none", d)
	}
}

func BenchmarkSign(b *testing.B) {
	s, _ := newSigner(testSecret, "", "")
	body := []byte(strings.Repeat("x", 1024))
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.sign("0198f3c2-6a7e-7b1c-9d2e-3f4a5b6c7d8e", now, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWebhookDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(204)
	}))
	defer srv.Close()
	w := webhook(b, srv.URL, nil)
	e := testEvent(b, events.UserUpdated, "u1", 1)
	b.ReportAllocs()
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := w.Deliver(ctx, e); res.Err != nil {
				b.Error(res.Err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// TestReceiver checks the verifying receiver against our own webhook sink,
// in both modes, and that it refuses a tampered or unsigned delivery.
func TestReceiver(t *testing.T) {
	var mu sync.Mutex
	var got []string
	h, err := NewReceiver(testSecret, func(e event.Event) { mu.Lock(); got = append(got, e.Type()); mu.Unlock() })
	soFar := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, format := range []string{"binary", "structured"} {
		if res := webhook(t, srv.URL, func(o *WebhookOptions) { o.Format = format }).Deliver(ctx, testEvent(t, events.UserDeleted, "u1", 1)); res.Err != nil || res.Status != http.StatusNoContent {
			t.Fatalf("%s: %d %v", format, res.Status, res.Err)
		}
	}
	if got := soFar(); len(got) != 2 || got[0] != "io.scimrelay.user.deleted" {
		t.Fatalf("received %v", got)
	}
	// A batch: each event handed over, in order.
	bw := webhook(t, srv.URL, func(o *WebhookOptions) { o.Batch = true })
	var ids []string
	var parts [][]byte
	for i, a := range []events.Action{events.UserCreated, events.UserUpdated, events.UserDeactivated} {
		p, err := bw.part(testEvent(t, a, "u1", uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		ids, parts = append(ids, strconv.Itoa(i)), append(parts, p)
	}
	if res := bw.sendBatch(ctx, ids, parts); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := soFar(); len(got) != 5 || got[2] != "io.scimrelay.user.created" || got[4] != "io.scimrelay.user.deactivated" {
		t.Fatalf("received %v after a batch", got)
	}
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-32-bytes-long!"))
	if res := webhook(t, srv.URL, func(o *WebhookOptions) { o.Secret = other }).Deliver(ctx, testEvent(t, events.UserDeleted, "u1", 1)); res.Status != 401 {
		t.Fatalf("a delivery signed with another secret: %+v", res)
	}
	res, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("an unsigned post: %v %v", res.StatusCode, err)
	}
	// Signed, but not a CloudEvent: 400, and nothing handed over.
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"not":"an event"}`)
	sent := time.Now()
	sig, err := wh.Sign("msg_1", sent, body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("webhook-id", "msg_1")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(sent.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("a signed body that is not a CloudEvent: %v %v", res.StatusCode, err)
	}
	if res, err := http.Get(srv.URL); err != nil || res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != http.MethodPost {
		t.Fatalf("a GET: %v %v", res.StatusCode, err)
	}
	if got := soFar(); len(got) != 5 {
		t.Fatalf("received %v after refused requests", got)
	}
	// A body over what it takes is 413, not a signature failure on the
	// part it read.
	res, err = http.Post(srv.URL, "application/json", strings.NewReader(strings.Repeat(" ", maxReceived+1)))
	if err != nil || res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over %d bytes: %v %v", maxReceived, res.StatusCode, err)
	}
	if _, err := NewReceiver("nope", nil); err == nil {
		t.Fatal("a receiver with a bad secret")
	}
}

// TestFailuresKeepOtherConnections: a sink whose receiver refuses some
// resources keeps its connections for the others. retryablehttp closes
// every idle connection of its client when a request fails; with several
// deliveries in flight that broke another one that had just taken a kept
// connection ("http: CloseIdleConnections called") and made the healthy
// resources reconnect after every failure.
func TestFailuresKeepOtherConnections(t *testing.T) {
	js := natsStream(t)
	var conns, good atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.HasPrefix(r.Header.Get("Ce-Subject"), "Users/bad") {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		good.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	const concurrency = 4
	runSinks(t, js, 5*time.Second, sinkConfig("crm", srv.URL, func(c *Config) { c.Concurrency = concurrency }))
	p := newPublisher(t, js)
	for i := range 20 {
		p.publish("acme", events.UserCreated, fmt.Sprintf("bad%d", i))
	}
	const n = 400
	for i := range n {
		p.publish("acme", events.UserCreated, fmt.Sprintf("u%d", i))
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if good.Load() < n {
			return fmt.Errorf("%d of %d delivered", good.Load(), n)
		}
		return nil
	})
	// The refused resources failed all along; the others' deliveries
	// reused the sink's connections, at most one per request slot, plus
	// one a failed request's connection may leave closed.
	if c := conns.Load(); c > 2*concurrency {
		t.Fatalf("%d connections for %d deliveries at concurrency %d: failures dropped the kept ones", c, n, concurrency)
	}
	t.Logf("%d connections for %d deliveries and the refused resources' tries", conns.Load(), n)
}

// TestDeliveryErrorsShowNoCredentials checks that a failed delivery's
// error, which reaches the log, the attempts and the console, shows the
// sink's URL without its user information, query values or path past its
// first segment: a receiver's token often travels in one of them (Slack's
// /services/T/B/<token>, Discord's /api/webhooks/<id>/<token>).
func TestDeliveryErrorsShowNoCredentials(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusBadRequest })
	for _, tt := range []struct{ path, shown string }{
		{"/hook?code=abc123secret", "/hook?code=redacted"},
		{"/services/T000/B000/XXXXabc123secretXXXX", "/services/…"},
		{"/api/webhooks/123/abc123secretToken", "/api/…"},
		{"/hook?abc123secretToken", "/hook?redacted"},        // the whole query a token
		{"/hook?abc123secretToken;v=2", "/hook?redacted"},    // ";" in the part
		{"/hook?YWJjMTIzc2VjcmV0VG9rZW4=", "/hook?redacted"}, // base64, padded
	} {
		u := strings.Replace(rc.URL, "http://", "http://tok_user0123456789:pa55word@", 1) + tt.path
		res := webhook(t, u, func(o *WebhookOptions) { o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
		if res.Err == nil {
			t.Fatal("a 400 was not an error")
		}
		msg := res.Err.Error()
		for _, secret := range []string{"tok_user0123456789", "pa55word", "abc123secret", "YWJjMTIzc2VjcmV0VG9rZW4"} {
			if strings.Contains(msg, secret) {
				t.Errorf("the error %q shows %q", msg, secret)
			}
		}
		if !strings.Contains(msg, tt.shown+":") {
			t.Errorf("the error %q does not show the URL as %q", msg, tt.shown)
		}
	}
}

// rawReceiver answers every request with answer, a whole HTTP/1.1 response
// as written (a reason phrase or headers no http.Handler can send), and
// counts the requests.
func rawReceiver(t *testing.T, answer string) (url string, requests *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				requests.Add(1)
				_, _ = io.WriteString(c, answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook", requests
}

// TestReceiverTextInErrorsIsBounded: a delivery error, which goes to the
// log, the attempts and dead letters, quotes at most 256 bytes of a
// redirect's Location (redacted like the sink's URL) and names the status
// as Go does, not with the receiver's reason phrase; and the headers of an
// answer are read up to 64 KiB.
func TestReceiverTextInErrorsIsBounded(t *testing.T) {
	long := strings.Repeat("\x80", 60<<10) // under the header limit; %q makes 4 bytes of each
	for _, tt := range []struct {
		name, answer, want string
	}{
		{"long Location", "HTTP/1.1 302 Found\r\nLocation: https://x.example/" + long + "\r\nContent-Length: 0\r\n\r\n",
			`302 Found: redirect to "https://x.example/`},
		{"Location with credentials", "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://u:tok_secret@x.example/a?sig=sig_secret\r\nContent-Length: 0\r\n\r\n",
			`307 Temporary Redirect: redirect to "https://redacted@x.example/a?sig=redacted" not followed`},
		{"long reason phrase", "HTTP/1.1 500 " + strings.Repeat("A", 60<<10) + "\r\nContent-Length: 0\r\n\r\n",
			": 500 Internal Server Error"},
		{"reason phrase of an unnamed status", "HTTP/1.1 599 " + strings.Repeat("A", 60<<10) + "\r\nContent-Length: 0\r\n\r\n",
			": 599"},
		{"junk header", "HTTP/1.1 400 Bad\r\nX-Junk: " + strings.Repeat("a", 60<<10) + "\r\nContent-Length: 0\r\n\r\n",
			": 400 Bad Request (permanent)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := rawReceiver(t, tt.answer)
			res := webhook(t, u, func(o *WebhookOptions) { o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			if res.Err == nil {
				t.Fatalf("no error: %+v", res)
			}
			msg := res.Err.Error()
			if len(msg) > 1200 {
				t.Fatalf("the error is %d bytes: %.200q...", len(msg), msg)
			}
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "AAAA") || strings.Contains(msg, "secret") {
				t.Fatalf("the error %.300q: want %q in it, and none of the receiver's text", msg, tt.want)
			}
		})
	}
}

// TestOversizedAnswerHeaders: an answer whose headers exceed 64 KiB fails
// the delivery without quick retries (the receiver would answer so again
// a moment later) but not for good: a proxy in front of the receiver may
// have answered, so it is retried on the schedule. Over HTTP/1.1 and
// HTTP/2 alike.
func TestOversizedAnswerHeaders(t *testing.T) {
	check := func(t *testing.T, res Result, tries int64) {
		t.Helper()
		if res.Err == nil || res.Permanent || res.Attempts != 1 || tries != 1 || !errors.Is(res.Err, errHeadersTooLarge) {
			t.Fatalf("status %d, permanent %v, %d tries after %d requests, error %.200q: want one try, failed, not for good, for the headers",
				res.Status, res.Permanent, res.Attempts, tries, errText(res.Err))
		}
		if len(res.Err.Error()) > 256 {
			t.Fatalf("the error is %d bytes", len(res.Err.Error()))
		}
	}
	for _, tt := range []struct{ name, answer string }{
		{"9 MiB header", "HTTP/1.1 204 No Content\r\nX-Junk: " + strings.Repeat("a", 9<<20) + "\r\n\r\n"},
		{"65 KiB header", "HTTP/1.1 204 No Content\r\nX-Junk: " + strings.Repeat("a", 65<<10) + "\r\n\r\n"},
		{"9 MiB Location", "HTTP/1.1 302 Found\r\nLocation: https://x.example/" + strings.Repeat("\x80", 9<<20) + "\r\nContent-Length: 0\r\n\r\n"},
		{"9 MiB reason phrase", "HTTP/1.1 500 " + strings.Repeat("A", 9<<20) + "\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run("HTTP/1.1 "+tt.name, func(t *testing.T) {
			u, requests := rawReceiver(t, tt.answer)
			res := webhook(t, u, nil).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			check(t, res, requests.Load())
		})
	}
	// HTTP/2 reports headers over the limit as such when they come in
	// fields that fit; one field over it, or a frame far over it, is a
	// connection error (COMPRESSION_ERROR, PROTOCOL_ERROR), retried
	// quickly like any other: the answer is not read either way.
	for _, tt := range []struct {
		name    string
		fields  int
		size    int
		exactly bool
	}{
		{"HTTP/2 70 fields of 1000 bytes", 70, 1000, true},
		{"HTTP/2 one field of 65 KiB", 1, 65 << 10, false},
		{"HTTP/2 one field of 9 MiB", 1, 9 << 20, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				for i := range tt.fields {
					w.Header().Set(fmt.Sprintf("X-Junk-%d", i), strings.Repeat("a", tt.size))
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			t.Cleanup(srv.Close)
			pool := x509.NewCertPool()
			pool.AddCert(srv.Certificate())
			res := webhook(t, srv.URL, func(o *WebhookOptions) {
				o.rootCAs = pool
				if tt.exactly {
					// The answer must fail on its headers, not on time: a
					// TLS handshake under -race on a loaded machine can
					// take the helper's 2 s. (The others fail either way;
					// a field far over the limit can leave the try
					// waiting for its timeout.)
					o.Timeout = 30 * time.Second
				}
			}).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			if tt.exactly {
				check(t, res, requests.Load())
			} else if res.Err == nil || res.Permanent || len(res.Err.Error()) > 256 {
				t.Fatalf("status %d, permanent %v, error %.200q: want a failure, not for good, with a short error", res.Status, res.Permanent, errText(res.Err))
			}
		})
	}
	// Under the limit, an answer is read as usual.
	u, _ := rawReceiver(t, "HTTP/1.1 204 No Content\r\nX-Junk: "+strings.Repeat("a", 60<<10)+"\r\n\r\n")
	if res := webhook(t, u, nil).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Err != nil {
		t.Fatalf("an answer with 60 KiB of headers: %v", res.Err)
	}
}

// TestTimedOutTryIsNotRepeatedAtOnce: a receiver that does not answer
// within the sink's timeout gets the request once per delivery, not three
// times in a row (each holding the resource for another timeout); the
// failure is not for good, so the schedule retries it.
func TestTimedOutTryIsNotRepeatedAtOnce(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body) // then the server sees the relay hang up
		<-r.Context().Done()               // answers nothing until the relay gives up
	}))
	t.Cleanup(srv.Close)
	// A second, not 200 ms: CI under -race once timed the try out before
	// the request reached the receiver (0 requests, 2026-12-05).
	res := webhook(t, srv.URL, func(o *WebhookOptions) { o.Timeout = time.Second }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || res.Permanent || res.Attempts != 1 || requests.Load() != 1 || !timedOut(res.Err) {
		t.Fatalf("permanent %v, %d tries after %d requests, error %v: want one request, failed by its timeout, not for good",
			res.Permanent, res.Attempts, requests.Load(), res.Err)
	}
}

// TestTransportErrorsSayWhatToDo: a delivery that got no answer within
// the sink's timeout, or whose receiver's certificate the relay does not
// trust, says what the operator can do, in the error that reaches the
// log, the attempts and the dead letters.
func TestTransportErrorsSayWhatToDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server sees the relay hang up
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	res := webhook(t, srv.URL, func(o *WebhookOptions) { o.Timeout = 200 * time.Millisecond; o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || !timedOut(res.Err) || !strings.Contains(res.Err.Error(), "no answer within the sink's timeout, 200ms") || !strings.Contains(res.Err.Error(), "raise sinks[].timeout") {
		t.Errorf("a receiver past the timeout: %v", res.Err)
	}
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(tlsSrv.Close)
	// Refused at the handshake, not timed out: 30 s, as a loaded machine
	// (CI under -race) took more than the helper's 2 s for the handshake.
	res = webhook(t, tlsSrv.URL, func(o *WebhookOptions) { o.Timeout, o.MaxRetries = 30*time.Second, -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || res.Permanent || !strings.Contains(res.Err.Error(), "certificate signed by unknown authority") || !strings.Contains(res.Err.Error(), "SSL_CERT_FILE") {
		t.Errorf("a receiver with a certificate of its own: permanent %v, %v", res.Permanent, res.Err)
	}
}

// TestErrorClasses: a delivery that got no status is recorded with why, in
// a word (what `sinks list` and the console show), from real failures on
// loopback: nothing listening, a receiver that hangs up or never answers,
// a certificate of its own, a handshake refused (an alert, or plain HTTP
// on an https URL: "network" until 2026-12-07), an address the SSRF guard refuses, headers
// too large; one with a status has none. A failed name lookup, which no
// loopback test can make, is its error as the HTTP client wraps it.
func TestErrorClasses(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	hangUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(hangUp.Close)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then the server sees the relay hang up
		<-r.Context().Done()
	}))
	t.Cleanup(silent.Close)
	ownCert := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(ownCert.Close)
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("x", maxResponseHeader+1))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(huge.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	t.Cleanup(failing.Close)
	// Receivers whose certificate the relay trusts that refuse the
	// handshake (with an alert, which crypto/tls returns as a type of its
	// own: before, these were "network").
	refusing := func(edit func(*tls.Config)) string {
		srv := httptest.NewUnstartedServer(http.NotFoundHandler())
		srv.TLS = &tls.Config{}
		edit(srv.TLS)
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	trusted := x509.NewCertPool()
	trusted.AddCert(ownCert.Certificate()) // every httptest server's
	// Only the silent receiver's case waits for the timeout; the others
	// fail without it, and are given long enough that a loaded machine
	// (CI under -race: a TLS handshake past 2 s, a hang-up seen after
	// 300 ms) does not time them out first.
	const short, long = 300 * time.Millisecond, 30 * time.Second
	for _, tc := range []struct {
		name, url    string
		allowPrivate bool
		timeout      time.Duration
		want         string
		trust        bool // the httptest servers' certificate
	}{
		{"nothing listening", closed.URL, true, long, classRefused, false},
		{"the receiver hangs up", hangUp.URL, true, long, classClosed, false},
		{"no answer in time", silent.URL, true, short, classTimeout, false},
		{"a certificate of its own", ownCert.URL, true, long, classTLS, false},
		{"a client certificate required", refusing(func(c *tls.Config) { c.ClientAuth = tls.RequireAnyClientCert }), true, long, classTLS, true},
		{"TLS 1.1 at most", refusing(func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }), true, long, classTLS, true},
		{"no cipher suite in common", refusing(func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}
		}), true, long, classTLS, true},
		{"plain HTTP on an https URL", "https://" + failing.Listener.Addr().String(), true, long, classTLS, true},
		{"a private address", strings.Replace(failing.URL, "127.0.0.1", "localhost", 1), false, long, classBlocked, false},
		{"headers too large", huge.URL, true, long, classAnswer, false},
		{"a status", failing.URL, true, long, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := webhook(t, tc.url, func(o *WebhookOptions) {
				o.Timeout, o.MaxRetries, o.AllowPrivate = tc.timeout, -1, tc.allowPrivate
				if tc.trust {
					o.rootCAs = trusted
				}
			}).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			if res.Err == nil {
				t.Fatal("delivered")
			}
			if got := errorClass(res); got != tc.want {
				t.Errorf("class %q, want %q (status %d, %v)", got, tc.want, res.Status, res.Err)
			}
		})
	}
	lookup := Result{Err: fmt.Errorf("POST https://crm.example.com/h: %w", &url.Error{Op: "Post", URL: "https://crm.example.com/h",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "crm.example.com", IsNotFound: true}}})}
	if got := errorClass(lookup); got != classDNS {
		t.Errorf("a failed lookup: class %q, want %q", got, classDNS)
	}
	if got := errorClass(Result{}); got != "" {
		t.Errorf("a delivery: class %q", got)
	}
}

// TestOddStatusesAreNotPermanent: README, Retries: "410 and the other 4xx
// (but 401, 403, 408, 425, 429) are permanent: dead-lettered at once ...
// Everything else is retried". A status that is no 4xx (a 101 from a
// proxy that took the POST for an upgrade, a 0xx) must not be dead-lettered
// at once.
func TestOddStatusesAreNotPermanent(t *testing.T) {
	for _, tt := range []struct{ name, answer string }{
		{"101", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"101 without upgrade", "HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n"},
		{"000", "HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n"},
		{"099", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, requests := rawReceiver(t, tt.answer)
			res := webhook(t, u, func(o *WebhookOptions) { o.MaxRetries = -1 }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			if res.Err == nil || res.Permanent {
				t.Fatalf("answer %q: status %d, permanent %v, error %v after %d requests: want a failure retried on the schedule, not dead-lettered at once",
					tt.name, res.Status, res.Permanent, res.Err, requests.Load())
			}
		})
	}
}

// slowConn delays its first Read: a receiver slow to start the TLS
// handshake (a loaded terminator).
type slowConn struct {
	net.Conn
	once  sync.Once
	delay time.Duration
}

func (c *slowConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Read(p)
}

type slowListener struct {
	net.Listener
	delay time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, delay: l.delay}, nil
}

// TestSlowHandshakeWithinTheSinksTimeout: README, Retries: "Each request
// waits for its answer at most the sink's timeout (10 s by default, from
// 100 ms up to 5 m)", and a delivery cut short "says to answer first and
// work after, or to raise timeout". A receiver whose TLS handshake takes
// 12 s, with a timeout of 60 s, is delivered to, or at least not told
// that the 60 s ran out.
func TestSlowHandshakeWithinTheSinksTimeout(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Listener = slowListener{Listener: srv.Listener, delay: 12 * time.Second}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	start := time.Now()
	res := webhook(t, srv.URL, func(o *WebhookOptions) {
		o.rootCAs, o.Timeout, o.MaxRetries = pool, time.Minute, -1
	}).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err != nil {
		t.Fatalf("after %s, with a sink timeout of 1m: %v", time.Since(start).Round(time.Second), res.Err)
	}
}

// TestAnswerCutShortByTheTimeoutIsNotRepeatedAtOnce: README, Retries:
// "Each request waits for its answer at most the sink's timeout ... a
// request that runs out of it is not sent again within the delivery but at
// the schedule's next try (TestTimedOutTryIsNotRepeatedAtOnce)". A
// receiver that sends a 500's status line and then nothing more of its
// answer runs the request out of its timeout as surely as one that sends
// nothing.
func TestAnswerCutShortByTheTimeoutIsNotRepeatedAtOnce(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "working on it")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest of the answer never comes
	}))
	t.Cleanup(srv.Close)
	start := time.Now()
	res := webhook(t, srv.URL, func(o *WebhookOptions) { o.Timeout = time.Second }).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err == nil || res.Permanent || requests.Load() != 1 {
		t.Fatalf("status %d, permanent %v, %d tries after %d requests in %s: want one request, cut short by the 1s timeout, retried on the schedule",
			res.Status, res.Permanent, res.Attempts, requests.Load(), time.Since(start).Round(time.Millisecond))
	}
}

// TestSSRFGuardWithAZone: an IPv6 address written with a zone is the same
// address to the kernel (the zone only picks a link-local address's
// interface), so the guard refuses it as it refuses the address without.
// netip's IsUnspecified and Prefix.Contains are false for a zoned address,
// and Linux dials the unspecified address :: as ::1: "http://[::%25lo]:port"
// reached a receiver on [::1] without allow_private, at setup and at the dial.
func TestSSRFGuardWithAZone(t *testing.T) {
	for _, addr := range []string{"::%lo", "::%1", "64:ff9b::a9fe:a9fe%eth0", "::a9fe:a9fe%eth0", "2002:a9fe:a9fe::1%eth0",
		"fec0::1%eth0", "::ffff:0:a9fe:a9fe%eth0", "2001:0:4136:e378:8000:63bf:3fff:fdd2%eth0", "100::1%eth0", "fd00:ec2::254%eth0"} {
		if !blocked(netip.MustParseAddr(addr)) {
			t.Errorf("blocked(%s) = false", addr)
		}
	}
	if blocked(netip.MustParseAddr("2606:4700::1111%eth0")) {
		t.Error("a public address with a zone is blocked")
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	var hits atomic.Int32
	rc := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); w.WriteHeader(204) }))
	rc.Listener = ln
	rc.Start()
	defer rc.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"[::%25lo]", "[::%251]"} {
		url := "http://" + host + ":" + port + "/hook"
		// Set up, as relay.yaml or the admin API does: before the fix it
		// passed, and its delivery reached the receiver.
		if w, err := NewWebhook(WebhookOptions{Name: "x", URL: url, Secret: testSecret, MaxRetries: -1}, nil); err == nil {
			res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
			t.Errorf("%s set up without allow_private; its delivery: %+v", url, res)
		} else if !strings.Contains(err.Error(), "allow_private") {
			t.Errorf("%s: %v", url, err)
		}
		// Dialled (what a name's answer or a redirect would reach): refused.
		d := newDialer(false, false, 2e9, nil)
		if c, err := d.dial(ctx, "tcp", strings.ReplaceAll(host, "%25", "%")+":"+port); err == nil {
			c.Close()
			t.Errorf("the guard dialled %s", host)
		} else if !strings.Contains(err.Error(), "allow_private") {
			t.Errorf("dialling %s: %v", host, err)
		}
	}
	// Through a proxy, the target is checked before the proxy is asked to
	// reach it: the proxy would dial [::%lo] as ::1 too.
	pd := newDialer(false, true, 2e9, &httpproxy.Config{HTTPSProxy: "http://127.0.0.1:3128"})
	for _, host := range []string{"[::%lo]:443", "[64:ff9b::a9fe:a9fe%eth0]:443"} {
		if u, err := pd.proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: host, Path: "/hook"}}); u != nil || err == nil {
			t.Errorf("a target %s through the proxy: proxy %v, %v; want it refused", host, u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the guard let %d requests through to [::1]", n)
	}
}
