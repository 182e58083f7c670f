// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// The tests of this file hold promises of the README's "Webhooks" section
// that no other test held: each would fail if its sentence stopped being
// true.

// TestDefaultRetrySchedule: "through JetStream redelivery after 5 s, 1 m,
// 5 m, 30 m, 2 h, 5 h, 10 h and 14 h, each ±20% (31 h 36 m 5 s in all), then
// dead-lettered", and a sink that sets no retry: gets that schedule.
func TestDefaultRetrySchedule(t *testing.T) {
	want := []time.Duration{5 * time.Second, time.Minute, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 14 * time.Hour}
	if !slices.Equal(DefaultSchedule, want) {
		t.Fatalf("DefaultSchedule = %v, the README says %v", DefaultSchedule, want)
	}
	if h := DefaultSchedule.Horizon(); h != 31*time.Hour+36*time.Minute+5*time.Second {
		t.Fatalf("the schedule adds up to %s, the README says 31h36m5s", h)
	}
	for i, base := range want {
		lo, _ := DefaultSchedule.Delay(i+1, Result{}, func() float64 { return 0 })
		hi, ok := DefaultSchedule.Delay(i+1, Result{}, func() float64 { return 0.9999999 })
		if !ok || lo != base*8/10 || hi < base*119/100 || hi > base*12/10 {
			t.Errorf("retry %d: between %s and %s, want %s ±20%%", i+1, lo, hi, base)
		}
	}
	if _, ok := DefaultSchedule.Delay(len(want)+1, Result{}, func() float64 { return 0 }); ok {
		t.Error("a ninth retry after the schedule's eight: it should be dead-lettered")
	}
	m, err := NewManager(Options{Sinks: []Config{{Name: "crm", URL: "https://crm.example.com/h", Secret: testSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.sinks["crm"].cfg.Retry; !slices.Equal(got, DefaultSchedule) {
		t.Fatalf("a sink without retry: retries on %v, want the default schedule", got)
	}
}

// TestQuickRetriesAreSpaced: "twice within the delivery (100 ms–1 s apart)".
func TestQuickRetriesAreSpaced(t *testing.T) {
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusBadGateway })
	w, err := NewWebhook(WebhookOptions{Name: "x", URL: rc.URL, Secret: testSecret, AllowPrivate: true}, nil) // MaxRetries as a sink has it
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Attempts != 3 || res.Permanent {
		t.Fatalf("Deliver: %+v, want 3 tries (two quick retries)", res)
	}
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < retryWaitMin {
			t.Errorf("retry %d came %s after the try before, want at least 100ms", i, gap)
		}
	}
	// The upper bound, on every retry a sink may be configured for.
	for i := range 20 {
		if d := backoff(retryWaitMin, retryWaitMax, i, nil); d < 100*time.Millisecond || d > time.Second {
			t.Errorf("quick retry %d waits %s, want 100ms–1s", i+1, d)
		}
	}
}

// retryAfterReceiver answers the first request with status and
// Retry-After: after, the next ones 204.
func retryAfterReceiver(t *testing.T, status int, after string) *receiver {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n == 1 {
			return status
		}
		return http.StatusNoContent
	})
	var n atomic.Int32
	inner := rc.Config.Handler
	rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", after)
		}
		inner.ServeHTTP(w, r)
	})
	return rc
}

// TestShortRetryAfterIsHonouredWithinTheDelivery: "429 and 503 honour
// Retry-After": a short one (here 1 s) is waited for before the quick retry.
func TestShortRetryAfterIsHonouredWithinTheDelivery(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		rc := retryAfterReceiver(t, status, "1")
		if res := webhook(t, rc.URL, nil).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Err != nil || res.Attempts != 2 {
			t.Fatalf("%d then 204: %+v", status, res)
		}
		reqs := rc.requests()
		if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
			t.Fatalf("%d with Retry-After: 1: retried after %s", status, gap)
		}
	}
}

// TestLongRetryAfterHoldsTheScheduledRetry: a Retry-After longer than the
// quick retries wait is honoured by the sink's schedule: the next try comes
// no sooner, though the schedule's own delay is 20 ms.
func TestLongRetryAfterHoldsTheScheduledRetry(t *testing.T) {
	js := natsStream(t)
	rc := retryAfterReceiver(t, http.StatusTooManyRequests, "3")
	runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 2 {
			return fmt.Errorf("%d requests, want 2", n)
		}
		return nil
	})
	reqs := rc.requests()
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 3*time.Second {
		t.Fatalf("429 with Retry-After: 3: tried again after %s", gap)
	}
}

// TestAnswersAreReadUpTo64KiB: "answers are read up to 64 KiB": of a
// receiver's 1 MiB answer the relay reads (and logs, at Debug) 64 KiB.
func TestAnswersAreReadUpTo64KiB(t *testing.T) {
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	}))
	defer huge.Close()
	var out eventstest.Log
	w, err := NewWebhook(WebhookOptions{Name: "x", URL: huge.URL, Secret: testSecret, AllowPrivate: true, MaxRetries: -1},
		slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Status != http.StatusInternalServerError {
		t.Fatalf("Deliver: %+v", res)
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var rec struct{ Msg, Body string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Msg == "delivery refused" {
			if len(rec.Body) != 64<<10 {
				t.Fatalf("read %d bytes of the answer, want 64 KiB", len(rec.Body))
			}
			return
		}
	}
	t.Fatalf("no refused delivery logged: %s", out.String())
}

// TestBatchWebhookID: "webhook-id is batch_ and 32 hex digits derived from
// the ids of the events in the batch, in order: the quick retries of a
// batch resend it unchanged, with the same id".
func TestBatchWebhookID(t *testing.T) {
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	w := webhook(t, rc.URL, func(o *WebhookOptions) { o.Batch = true })
	es := []*event.Event{testEvent(t, events.UserCreated, "u1", 1), testEvent(t, events.GroupCreated, "g1", 1)}
	ids, parts := encodeBatch(t, w, es...)
	if res := w.sendBatch(ctx, ids, parts); res.Err != nil || res.Attempts != 3 {
		t.Fatalf("a batch refused twice, then taken: %+v", res)
	}
	reqs := rc.requests()
	id := reqs[0].header.Get("Webhook-Id")
	if !regexp.MustCompile(`^batch_[0-9a-f]{32}$`).MatchString(id) {
		t.Fatalf("webhook-id %q, want batch_ and 32 hex digits", id)
	}
	for i, r := range reqs[1:] {
		verify(t, r)
		if r.header.Get("Webhook-Id") != id || string(r.body) != string(reqs[0].body) {
			t.Fatalf("quick retry %d: webhook-id %q, body changed %v; want the batch unchanged", i+1, r.header.Get("Webhook-Id"), string(r.body) != string(reqs[0].body))
		}
	}
	// Derived from the ids in order: the same events the other way round
	// are another batch.
	slices.Reverse(ids)
	slices.Reverse(parts)
	if res := w.sendBatch(ctx, ids, parts); res.Err != nil {
		t.Fatal(res.Err)
	}
	if other := rc.requests()[3].header.Get("Webhook-Id"); other == id || !strings.HasPrefix(other, "batch_") {
		t.Fatalf("the same events in another order: webhook-id %q (the first order's: %q)", other, id)
	}
}

// TestBatchWaitsAtMostMaxWait: "An event waits at most max_wait for others
// to fill its batch (longer only while all concurrency requests are in
// flight, its batch filling meanwhile)".
func TestBatchWaitsAtMostMaxWait(t *testing.T) {
	const maxWait = 200 * time.Millisecond
	release := make(chan struct{})
	rc := newReceiver(t, func(n int, r *http.Request) int {
		if n == 2 { // the second batch holds the only request slot
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return http.StatusNoContent
	})
	w := webhook(t, rc.URL, func(o *WebhookOptions) { o.Batch = true; o.Timeout = time.Minute })
	b := newBatcher(w, Batch{MaxEvents: 100, MaxWait: maxWait}, make(chan struct{}, 1)) // concurrency 1
	// Bounded, so that a batcher that never sends fails the test.
	bounded, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	// Alone, an event goes out once max_wait has passed, though its batch
	// could take 99 more.
	start := time.Now()
	if res := b.submit(bounded, nil, []*event.Event{testEvent(t, events.UserCreated, "alone", 1)}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if took := rc.requests()[0].at.Sub(start); took < maxWait || took > maxWait+5*time.Second {
		t.Fatalf("a lone event went out after %s, want max_wait (%s)", took, maxWait)
	}

	// While the only slot is taken, a batch waits past max_wait and
	// gathers meanwhile: what comes then goes out with it.
	results := make(chan Result, 3)
	submit := func(id string) {
		e := testEvent(t, events.UserCreated, id, 1) // on the test goroutine: it may call t.Fatal
		go func() { results <- b.submit(bounded, nil, []*event.Event{e}) }()
	}
	submit("held")
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 2 {
			return fmt.Errorf("%d requests, want the held one in flight", n)
		}
		return nil
	})
	submit("waiting")
	opened := time.Now()
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.open == nil || len(b.open.ids) != 1 {
			return fmt.Errorf("the waiting event's batch is not open (%v)", b.open)
		}
		if time.Since(opened) < 3*maxWait {
			return fmt.Errorf("max_wait has not passed long enough yet")
		}
		return nil
	})
	submit("late")
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.open == nil || len(b.open.ids) != 2 {
			return fmt.Errorf("the late event did not join the waiting batch")
		}
		return nil
	})
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("%d requests while the only slot was taken, want 2", n)
	}
	close(release)
	for range 3 {
		if res := <-results; res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	reqs := rc.requests()
	if len(reqs) != 3 || !slices.Equal(subjectsOf(t, reqs[2]), []string{"Users/waiting", "Users/late"}) {
		t.Fatalf("%d requests, the last with %v; want the waiting and the late event in one", len(reqs), subjectsOf(t, reqs[len(reqs)-1]))
	}
}

// TestRedriveAndReplaySendOneEventPerRequest: "Redrive and replay send one
// event per request (a batch of one)", on a batching sink.
func TestRedriveAndReplaySendOneEventPerRequest(t *testing.T) {
	js := natsStream(t)
	var status atomic.Int32
	status.Store(http.StatusGone)
	rc := newReceiver(t, func(int, *http.Request) int { return int(status.Load()) })
	m, _ := runSinks(t, js, 5*time.Second, batchConfig(rc.URL, func(c *Config) { c.Batch.MaxWait = 200 * time.Millisecond }))
	const n = 4
	deadLetterAll(t, m, js, n)
	status.Store(http.StatusNoContent)

	singles := func(what string, from int, want int) {
		t.Helper()
		reqs := rc.requests()[from:]
		if len(reqs) != want {
			t.Fatalf("%s: %d requests, want %d", what, len(reqs), want)
		}
		for _, r := range reqs {
			verify(t, r)
			es, err := ReadDelivery(r.header, r.body)
			if err != nil || len(es) != 1 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/cloudevents-batch+json") {
				t.Fatalf("%s: a request of %d events (%v), Content-Type %q; want a batch of one", what, len(es), err, r.header.Get("Content-Type"))
			}
		}
	}
	mark := len(rc.requests())
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != n {
		t.Fatalf("redrive: %+v %v", res, err)
	}
	singles("redrive", mark, n)
	mark = len(rc.requests())
	if res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil); err != nil || res.Delivered != n {
		t.Fatalf("replay: %+v %v", res, err)
	}
	singles("replay", mark, n)
}

// TestHTTPProxy: "Deliveries honour HTTPS_PROXY, HTTP_PROXY and NO_PROXY":
// an http:// sink goes through HTTP_PROXY, its target checked by the guard.
func TestHTTPProxy(t *testing.T) {
	rc := newReceiver(t, nil)
	var asked atomic.Value
	asked.Store("")
	forward := httputil.NewSingleHostReverseProxy(mustURL(t, rc.URL))
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.Host) // a proxy is asked in absolute form
		forward.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("HTTPS_PROXY", "")
	build := func(target string) *Webhook {
		w, err := NewWebhook(WebhookOptions{Name: "x", URL: target, Secret: testSecret, AllowPrivateProxy: true, MaxRetries: -1, lookup: fakeDNS}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if res := build("http://example.com/hook").Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Err != nil || res.Status != http.StatusNoContent {
		t.Fatalf("through HTTP_PROXY: %+v", res)
	}
	if got := asked.Load(); got != "example.com" {
		t.Fatalf("the proxy was asked for %q, want example.com", got)
	}
	verify(t, rc.requests()[0])
	res := build("http://internal.example/hook").Deliver(ctx, testEvent(t, events.UserCreated, "u2", 1))
	if res.Err == nil || res.Permanent || !strings.Contains(res.Err.Error(), "10.0.0.7") || len(rc.requests()) != 1 {
		t.Fatalf("a private target through HTTP_PROXY: %+v, %d requests received", res, len(rc.requests()))
	}
}

// TestProxyLeavesUnknownNamesAndAllowPrivate: through a proxy "a name the
// relay's DNS does not know is left to the proxy and its own egress rules",
// and a proxy on a private address "is refused unless the sink sets
// allow_private_proxy: true (or allow_private)".
func TestProxyLeavesUnknownNamesAndAllowPrivate(t *testing.T) {
	rc, proxy, pool := behindProxy(t)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")
	deliver := func(target string, edit func(*WebhookOptions)) Result {
		o := WebhookOptions{Name: "x", URL: target, Secret: testSecret, MaxRetries: -1, lookup: fakeDNS, rootCAs: pool}
		edit(&o)
		w, err := NewWebhook(o, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	}
	if res := deliver("https://unknown.example.com/hook", func(o *WebhookOptions) { o.AllowPrivateProxy = true }); res.Err != nil || res.Status != http.StatusNoContent {
		t.Fatalf("a name only the proxy knows: %+v", res)
	}
	if res := deliver("https://example.com/hook", func(o *WebhookOptions) { o.AllowPrivate = true }); res.Err != nil || res.Status != http.StatusNoContent {
		t.Fatalf("a proxy on loopback with allow_private: %+v", res)
	}
	if got := proxy.hosts(); !slices.Equal(got, []string{"unknown.example.com:443", "example.com:443"}) {
		t.Fatalf("the proxy was asked for %v", got)
	}
	if reqs := rc.requests(); len(reqs) != 2 {
		t.Fatalf("the receiver got %d requests through the proxy, want 2", len(reqs))
	}
	for _, r := range rc.requests() {
		verify(t, r)
	}
}

// TestRequestsInFlightAreBoundedByConcurrency: README, Webhooks, Retries:
// "Each worker of a sink has at most `concurrency` requests in flight (16
// by default), whatever the number of resources". Many resources, some of
// which fail (quick retries, parking, read-back on a short schedule), a
// receiver that counts the requests it is answering at once; binary and
// batching sinks.
func TestRequestsInFlightAreBoundedByConcurrency(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(map[bool]string{false: "binary", true: "batch"}[batch], func(t *testing.T) {
			const concurrency, users = 3, 120
			js := natsStream(t)
			var now, peak atomic.Int64
			var failed sync.Map // subject -> failed once
			l := newLedger()
			rc := newReceiver(t, func(_ int, r *http.Request) int {
				n := now.Add(1)
				defer now.Add(-1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				fail := func(subject string) int {
					time.Sleep(3 * time.Millisecond) // the receiver's own latency
					if strings.HasSuffix(subject, "7") {
						if _, again := failed.LoadOrStore(subject, true); !again {
							return http.StatusServiceUnavailable
						}
					}
					return http.StatusNoContent
				}
				if batch {
					return l.admitBatch(t, r, func(es []event.Event) int { return fail(es[0].Subject()) })
				}
				return l.admit(r, func(subject string, _ uint64) int { return fail(subject) })
			})
			runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, func(c *Config) {
				c.Concurrency = concurrency
				if batch {
					c.Format = ""
					c.Batch = &Batch{MaxEvents: 1, MaxWait: time.Millisecond}
				}
			}))
			p := newPublisher(t, js)
			want := provision(p, "c", users, 2, 0, 0)
			l.wantDelivered(t, want, 60*time.Second, true)
			if got := peak.Load(); got > concurrency {
				t.Fatalf("%d requests in flight at once, want at most concurrency %d", got, concurrency)
			}
			t.Logf("peak %d requests in flight", peak.Load())
		})
	}
}
