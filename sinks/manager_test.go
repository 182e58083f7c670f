// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// fastRetry is a schedule for tests: quick, and long enough that nothing
// is dead-lettered by accident.
var fastRetry = Schedule{
	20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond,
	100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
	100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
	100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
}

func sinkConfig(name, url string, edit func(*Config)) Config {
	s := Config{Name: name, URL: url, Secret: testSecret, Format: "binary",
		Timeout: 2 * time.Second, AllowPrivate: true, Concurrency: 16, Retry: fastRetry}
	if edit != nil {
		edit(&s)
	}
	return s
}

// natsStream starts a JetStream server with the SCIMRELAY stream.
func natsStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := natsStreamAt(t, t.TempDir(), -1)
	return js
}

// natsStreamAt is natsStream storing in dir on port, so that a test can
// stop the server and start it again (eventstest.RunServerAt).
func natsStreamAt(t testing.TB, dir string, port int) (*server.Server, jetstream.JetStream) {
	t.Helper()
	s := eventstest.RunServerAt(t, dir, port)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return s, js
}

// runSinks sets the sinks up and runs them until stop is called (or the test ends).
func runSinks(t testing.TB, js jetstream.JetStream, ackWait time.Duration, cfgs ...Config) (*Manager, func()) {
	t.Helper()
	return runManager(t, Options{Sinks: cfgs, JS: js, AckWait: ackWait})
}

// runManager is runSinks with every option: one delivery worker of each sink.
func runManager(t testing.TB, o Options) (*Manager, func()) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Run(runCtx); err != nil {
			t.Errorf("sinks: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return m, stop
}

// publisher numbers events per resource the way the relay does.
type publisher struct {
	t   testing.TB
	js  jetstream.JetStream
	mu  sync.Mutex
	seq map[string]uint64
	n   uint64
}

func newPublisher(t testing.TB, js jetstream.JetStream) *publisher {
	return &publisher{t: t, js: js, seq: map[string]uint64{}}
}

func (p *publisher) publish(tenant string, a events.Action, id string) string {
	p.t.Helper()
	msg, id := p.next(tenant, a, id)
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		p.t.Fatal(err)
	}
	return id
}

// publishAsync publishes without waiting for the acknowledgement, for
// benchmarks that must not be limited by the publisher.
func (p *publisher) publishAsync(tenant string, a events.Action, id string) {
	p.t.Helper()
	msg, _ := p.next(tenant, a, id)
	if _, err := p.js.PublishMsgAsync(msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		p.t.Fatal(err)
	}
}

// next numbers the resource's next event and returns it as a message, with
// the event's id.
func (p *publisher) next(tenant string, a events.Action, id string) (*nats.Msg, string) {
	p.t.Helper()
	p.mu.Lock()
	p.seq[tenant+id]++
	p.n++
	sseq, seq := p.seq[tenant+id], p.n
	p.mu.Unlock()
	e := eventstest.Event(p.t, tenant, a, id, seq, sseq)
	msg, err := events.ToMsg(e)
	if err != nil {
		p.t.Fatal(err)
	}
	return msg, e.ID()
}

// ledger checks, in arrival order, that no event of a resource is tried
// before its predecessor was delivered.
type ledger struct {
	mu        sync.Mutex
	delivered map[string]uint64 // subject → highest subjectseq answered 2xx
	count     map[string]int    // "subject seq" → 2xx deliveries
	ids       map[string]string // "subject seq" → webhook-id (a batch's: event id)
	batches   []int             // events per batch received
	violation string
}

func newLedger() *ledger {
	return &ledger{delivered: map[string]uint64{}, count: map[string]int{}, ids: map[string]string{}}
}

// admit records an attempt and decides its status with fail.
func (l *ledger) admit(r *http.Request, fail func(subject string, seq uint64) int) int {
	subject, seq := l.arrive(r)
	status := fail(subject, seq)
	l.answer(r, subject, seq, status)
	return status
}

// admitBatch is admit for a batch: the events of a resource in it must
// follow on from the last one delivered, in order, and a 2xx delivers them
// all. fail decides the status from the batch's events.
func (l *ledger) admitBatch(t testing.TB, r *http.Request, fail func(es []event.Event) int) int {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
		return 400
	}
	es, err := ReadDelivery(r.Header, body)
	if err != nil {
		t.Errorf("reading a batch: %v", err)
		return 400
	}
	l.mu.Lock()
	l.batches = append(l.batches, len(es))
	next := map[string]uint64{}
	for _, e := range es {
		seq, _ := events.SubjectSeq(e)
		cur, ok := next[e.Subject()]
		if !ok {
			cur = l.delivered[e.Subject()]
		}
		if seq > cur+1 && l.violation == "" {
			l.violation = fmt.Sprintf("%s: event %d sent before %d was delivered", e.Subject(), seq, cur+1)
		}
		next[e.Subject()] = max(cur, seq)
	}
	l.mu.Unlock()
	status := 204
	if fail != nil {
		status = fail(es)
	}
	if status < 300 {
		l.mu.Lock()
		for _, e := range es {
			seq, _ := events.SubjectSeq(e)
			l.delivered[e.Subject()] = max(l.delivered[e.Subject()], seq)
			key := e.Subject() + " " + strconv.FormatUint(seq, 10)
			l.count[key]++
			if id, ok := l.ids[key]; ok && id != e.ID() {
				l.violation = fmt.Sprintf("%s delivered twice with different event ids", key)
			}
			l.ids[key] = e.ID()
		}
		l.mu.Unlock()
	}
	return status
}

// arrive records that an attempt came in: a violation if the resource's
// previous event has not been answered with a 2xx yet.
func (l *ledger) arrive(r *http.Request) (string, uint64) {
	subject := r.Header.Get("Ce-Subject")
	seq, _ := strconv.ParseUint(r.Header.Get("Ce-Subjectseq"), 10, 64)
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq > l.delivered[subject]+1 && l.violation == "" {
		l.violation = fmt.Sprintf("%s: event %d tried before %d was delivered", subject, seq, l.delivered[subject]+1)
	}
	return subject, seq
}

// answer records the status an attempt got.
func (l *ledger) answer(r *http.Request, subject string, seq uint64, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if status < 300 {
		l.delivered[subject] = max(l.delivered[subject], seq)
		key := subject + " " + strconv.FormatUint(seq, 10)
		l.count[key]++
		if id, ok := l.ids[key]; ok && id != r.Header.Get("Webhook-Id") {
			l.violation = fmt.Sprintf("%s delivered twice with different webhook-ids", key)
		}
		l.ids[key] = r.Header.Get("Webhook-Id")
	}
}

// repeats returns the events delivered more than once.
func (l *ledger) repeats() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, n := range l.count {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	return out
}

func (l *ledger) failure() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.violation
}

func (l *ledger) deliveredAll(subjects, perSubject int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.violation != "" {
		return nil // reported by the caller
	}
	done := 0
	for _, n := range l.delivered {
		if int(n) == perSubject {
			done++
		}
	}
	if done != subjects {
		return fmt.Errorf("%d of %d resources have all %d events delivered", done, subjects, perSubject)
	}
	return nil
}

// TestOrderPerResourceUnderRandomFailures sends 1,000 resources × 5 events
// through a receiver that fails a fifth of the requests at random: every
// event arrives, and no event is tried before its predecessor was delivered.
func TestOrderPerResourceUnderRandomFailures(t *testing.T) {
	js := natsStream(t)
	l := newLedger()
	var seed atomic.Uint64
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		return l.admit(r, func(string, uint64) int {
			if rand.New(rand.NewPCG(seed.Add(1), 7)).IntN(5) == 0 {
				return []int{500, 502, 503, 429}[seed.Load()%4]
			}
			return 204
		})
	})
	runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, func(s *Config) { s.Concurrency = 64 }))
	p := newPublisher(t, js)
	const resources, perResource = 1000, 5
	for round := 0; round < perResource; round++ {
		for i := 0; i < resources; i++ {
			a := events.UserUpdated
			if round == 0 {
				a = events.UserCreated
			}
			p.publish("acme", a, fmt.Sprintf("u%04d", i))
		}
	}
	eventstest.CheckFor(t, 90*time.Second, 50*time.Millisecond, func() error { return l.deliveredAll(resources, perResource) })
	if v := l.failure(); v != "" {
		t.Fatal(v)
	}
}

// TestFailThreeTimesThenSucceed: three refusals (one delivery with its two
// quick retries), then the scheduled retry succeeds, every request signed.
func TestFailThreeTimesThenSucceed(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 3 {
			return 500
		}
		return 200
	})
	runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	id := newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 4 {
			return fmt.Errorf("%d requests, want 4", n)
		}
		return nil
	})
	for _, r := range rc.requests() {
		verify(t, r)
		if r.header.Get("Webhook-Id") != id {
			t.Fatalf("webhook-id %s, want the event id %s", r.header.Get("Webhook-Id"), id)
		}
	}
}

// TestGoneIsDeadLetteredThenRedriven: a 410 dead-letters at once and does not
// hold back the resource's next event; redrive delivers it once fixed.
func TestGoneIsDeadLetteredThenRedriven(t *testing.T) {
	js := natsStream(t)
	var gone atomic.Bool
	gone.Store(true)
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if gone.Load() && r.Header.Get("Ce-Type") == "io.scimrelay.user.created" {
			return 410
		}
		return 204
	})
	m, _ := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	created := p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserUpdated, "u1")
	var dls []DeadLetter
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		page, err := m.DeadLetters(ctx, "crm", "", 0)
		if err != nil {
			return err
		}
		if dls = page.DeadLetters; len(dls) != 1 || len(rc.requests()) != 2 {
			return fmt.Errorf("%d dead letters, %d requests", len(dls), len(rc.requests()))
		}
		return nil
	})
	if dl := dls[0]; dl.ID != created || dl.Status != 410 || dl.Attempts != 1 || dl.Type != "io.scimrelay.user.created" || dl.Tenant != "acme" || dl.Subject != "Users/u1" {
		t.Fatalf("dead letter: %+v", dl)
	}
	// Dead letters stay 30 days (README): the stream that keeps them says so.
	st, err := js.Stream(ctx, dlqStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 30*24*time.Hour || c.Storage != jetstream.FileStorage {
		t.Fatalf("the dead-letter stream keeps them %v on %v, want 30 days on disk", c.MaxAge, c.Storage)
	}
	if _, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", ID: "nope"}, nil); err == nil {
		t.Fatal("redrive of an unknown id succeeded")
	}
	gone.Store(false)
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", ID: created}, nil)
	if err != nil || res.Delivered != 1 || res.Failed != 0 {
		t.Fatalf("redrive: %+v %v", res, err)
	}
	if page, _ := m.DeadLetters(ctx, "crm", "", 0); len(page.DeadLetters) != 0 {
		t.Fatalf("still dead-lettered after redrive: %+v", page)
	}
	last := rc.requests()[len(rc.requests())-1]
	verify(t, last)
	if last.header.Get("Webhook-Id") != created {
		t.Fatal("redrive sent a different event")
	}
	if _, err := m.DeadLetters(ctx, "nope", "", 0); err == nil {
		t.Fatal("dead letters of an unknown sink")
	}
}

// TestHangingReceivers: a receiver that never answers slows neither another
// sink nor, within its own sink, other resources.
func TestHangingReceivers(t *testing.T) {
	js := natsStream(t)
	release := make(chan struct{})
	defer close(release)
	var stuck atomic.Int32
	hanging := newReceiver(t, func(_ int, r *http.Request) int {
		if r.Header.Get("Ce-Subject") == "Users/stuck" {
			stuck.Add(1)
			<-release
		}
		return 204
	})
	fast := newReceiver(t, nil)
	runSinks(t, js, 5*time.Second,
		sinkConfig("slow", hanging.URL, func(s *Config) { s.Timeout = time.Minute; s.Concurrency = 4 }),
		sinkConfig("fast", fast.URL, nil))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "stuck")
	for i := 0; i < 200; i++ {
		p.publish("acme", events.UserCreated, fmt.Sprintf("u%d", i))
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if f, h := len(fast.requests()), len(hanging.requests()); f != 201 || h != 201 {
			return fmt.Errorf("fast sink got %d, slow sink got %d of 201", f, h)
		}
		return nil
	})
	if stuck.Load() != 1 {
		t.Fatalf("the stuck resource was tried %d times", stuck.Load())
	}
}

// TestRestartMidDelivery stops the delivery workers mid-way and starts new
// ones on the same consumer: every event arrives, repeats carry the same
// webhook-id, and order per resource holds.
func TestRestartMidDelivery(t *testing.T) {
	js := natsStream(t)
	l := newLedger()
	var slow atomic.Bool
	slow.Store(true)
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if slow.Load() {
			time.Sleep(time.Millisecond) // a receiver with some latency, so the stop finds work in flight
		}
		return l.admit(r, func(string, uint64) int { return 204 })
	})
	cfg := sinkConfig("crm", rc.URL, func(s *Config) { s.Concurrency = 8 })
	_, stop := runSinks(t, js, 2*time.Second, cfg)
	p := newPublisher(t, js)
	const resources, perResource = 100, 4
	for round := 0; round < perResource; round++ {
		for i := 0; i < resources; i++ {
			p.publish("acme", events.UserUpdated, fmt.Sprintf("u%03d", i))
		}
	}
	eventstest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		if n := len(rc.requests()); n < 100 {
			return fmt.Errorf("%d delivered so far", n)
		}
		return nil
	})
	stop()
	slow.Store(false)
	runSinks(t, js, 2*time.Second, cfg)
	eventstest.CheckFor(t, 60*time.Second, 20*time.Millisecond, func() error { return l.deliveredAll(resources, perResource) })
	if v := l.failure(); v != "" {
		t.Fatal(v)
	}
}

// TestFiltersAndReplay: a sink gets only its tenants and event types, and a
// replay sends them again.
func TestFiltersAndReplay(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, nil)
	m, _ := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, func(s *Config) {
		s.Events = []string{"user.*", "group.member_added"}
		s.Tenants = []string{"acme"}
	}))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.GroupCreated, "g1")     // filtered out by type
	p.publish("acme", events.GroupMemberAdded, "g1") // wanted, after a filtered event of its resource
	p.publish("globex", events.UserCreated, "u2")    // other tenant
	p.publish("acme", events.UserDeactivated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 3 {
			return fmt.Errorf("%d requests, want 3", n)
		}
		return nil
	})
	// Order holds per resource; different resources go out in parallel.
	bySubject := map[string][]string{}
	for _, r := range rc.requests() {
		bySubject[r.header.Get("Ce-Subject")] = append(bySubject[r.header.Get("Ce-Subject")], r.header.Get("Ce-Type"))
	}
	if fmt.Sprint(bySubject["Users/u1"]) != "[io.scimrelay.user.created io.scimrelay.user.deactivated]" ||
		fmt.Sprint(bySubject["Groups/g1"]) != "[io.scimrelay.group.member_added]" || len(bySubject) != 2 {
		t.Fatalf("delivered %v", bySubject)
	}
	res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil)
	if err != nil || res.Matched != 3 || res.Delivered != 3 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if n := len(rc.requests()); n != 6 {
		t.Fatalf("%d requests after the replay, want 6", n)
	}
}

// TestExhaustedScheduleDeadLetters: an event still failing after the last
// retry is dead-lettered with its attempt count.
func TestExhaustedScheduleDeadLetters(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(int, *http.Request) int { return 503 })
	m, _ := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, func(s *Config) {
		s.Retry = Schedule{10 * time.Millisecond, 10 * time.Millisecond}
	}))
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		page, err := m.DeadLetters(ctx, "crm", "", 0)
		if err != nil {
			return err
		}
		if dls := page.DeadLetters; len(dls) != 1 || dls[0].Attempts != 3 || dls[0].Status != 503 {
			return fmt.Errorf("dead letters %+v", page)
		}
		return nil
	})
	if n := len(rc.requests()); n != 9 {
		t.Fatalf("%d requests, want 9 (3 tries × 3 requests each)", n)
	}
}

// BenchmarkDeliveryThroughput measures events/s from the stream to a fast
// local receiver with one and with two delivery workers (each its own
// Manager and NATS connection, as two processes would be), one event per
// request and in batches of 100: the workers run and share the partitions,
// then 20,000 events are published and delivered; the clock runs from the
// first publish to the last delivery. Shapes: users (20,000 users, an event
// each) and members (40 groups with 500 member events each, published in
// bursts of 100 as a member PATCH commits them).
func BenchmarkDeliveryThroughput(b *testing.B) {
	for _, shape := range []string{"users", "members"} {
		for _, batch := range []int{0, 100} {
			for _, workers := range []int{1, 2} {
				b.Run(fmt.Sprintf("shape=%s/batch=%d/workers=%d", shape, batch, workers), func(b *testing.B) {
					benchmarkDelivery(b, shape, batch, workers)
				})
			}
		}
	}
}

func benchmarkDelivery(b *testing.B, shape string, batch, workers int) {
	s, _, js := natsServer(b)
	var got atomic.Int64
	rc := newReceiver(b, nil)
	rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if batch == 0 {
			got.Add(1)
		} else {
			body, _ := io.ReadAll(r.Body)
			es, err := ReadDelivery(r.Header, body)
			if err != nil {
				b.Error(err)
			}
			got.Add(int64(len(es)))
		}
		w.WriteHeader(204)
	})
	cfg := sinkConfig("crm", rc.URL, func(s *Config) { s.Concurrency = 64 })
	if batch > 0 {
		cfg = batchConfig(rc.URL, func(c *Config) {
			c.Concurrency = 16
			c.Batch = &Batch{MaxEvents: batch, MaxWait: 50 * time.Millisecond}
		})
	}
	var ms []*Manager
	for range workers {
		_, wjs := eventstest.Connect(b, eventstest.URL(s))
		m, _ := runManager(b, Options{Sinks: []Config{cfg}, JS: wjs, Logger: slog.New(slog.DiscardHandler), Heartbeat: fastHeartbeat})
		ms = append(ms, m)
	}
	waitBalanced(b, ms...)
	const n = 20_000
	b.ResetTimer()
	start := time.Now()
	p := newPublisher(b, js)
	for i := 0; i < n; i++ {
		switch shape {
		case "users":
			p.publishAsync("acme", events.UserCreated, "u"+strconv.Itoa(i))
		case "members":
			// Bursts of 100 events of one group, groups in turn.
			p.publishAsync("acme", events.GroupMemberAdded, "g"+strconv.Itoa((i/100)%40))
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete() // stay within the client's window
		}
	}
	eventstest.CheckFor(b, 5*time.Minute, 5*time.Millisecond, func() error {
		if got.Load() < n {
			return fmt.Errorf("%d of %d delivered", got.Load(), n)
		}
		return nil
	})
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
}

// TestEventWithoutSubjectSeqIsDeadLettered: an event without its place in
// its resource's order (no subjectseq) cannot be delivered in order; it is
// dead-lettered whether it comes from the consumer or, the resource being
// parked, is read back from the stream, by each of two sinks, once each,
// and the resource's other events arrive in order. The queue is one stream
// for every sink: a dead letter that kept the message's own Nats-Msg-Id
// was dropped as a copy for every sink but the first, and one that kept
// its Nats-Expected-Stream (the events stream's) was refused.
func TestEventWithoutSubjectSeqIsDeadLettered(t *testing.T) {
	js := natsStream(t)
	var refuse atomic.Bool
	refuse.Store(true)
	sinks := []string{"crm", "hr"}
	ledgers := map[string]*ledger{}
	receivers := map[string]*receiver{}
	var cfgs []Config
	for _, name := range sinks {
		l := newLedger()
		rc := newReceiver(t, func(_ int, r *http.Request) int {
			return l.admit(r, func(subject string, _ uint64) int {
				if refuse.Load() && subject == "Users/parked" {
					return 503
				}
				return 204
			})
		})
		ledgers[name], receivers[name] = l, rc
		cfgs = append(cfgs, sinkConfig(name, rc.URL, nil))
	}
	m, _ := runSinks(t, js, 5*time.Second, cfgs...)
	p := newPublisher(t, js)
	unnumbered := func(id string) string {
		t.Helper()
		e := eventstest.Event(t, "acme", events.UserUpdated, id, 999, 1)
		msg, err := events.ToMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get("ce-"+events.ExtSubjectSeq) == "" || msg.Header.Get(nats.MsgIdHdr) == "" {
			t.Fatalf("no ce-%s header to take out, or no message id: %v", events.ExtSubjectSeq, msg.Header)
		}
		msg.Header.Del("ce-" + events.ExtSubjectSeq) // as no relay writes it
		msg.Header.Set("Nats-Expected-Stream", events.StreamName)
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
		return e.ID()
	}
	// From the consumer: a resource that is not parked.
	p.publish("acme", events.UserCreated, "flowing")
	fromConsumer := unnumbered("flowing")
	p.publish("acme", events.UserUpdated, "flowing")
	// Read back: the resource is parked behind its refused first event.
	p.publish("acme", events.UserCreated, "parked")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, name := range sinks {
			kv, err := js.KeyValue(ctx, parkingBucketName(name))
			if err != nil {
				return err
			}
			keys, err := kv.Keys(ctx)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(keys, func(k string) bool { return strings.HasSuffix(k, ".acme.user.parked") }) {
				return fmt.Errorf("Users/parked is not parked for sink %s: %v", name, keys)
			}
		}
		return nil
	})
	readBack := unnumbered("parked")
	p.publish("acme", events.UserUpdated, "parked")
	refuse.Store(false)

	want := []string{fromConsumer, readBack}
	slices.Sort(want)
	for _, name := range sinks {
		ledgers[name].wantDelivered(t, expect{"Users/flowing": 2, "Users/parked": 2}, 30*time.Second, false)
		var ids []string
		eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			page, err := m.DeadLetters(ctx, name, "", 0)
			if err != nil {
				return err
			}
			ids = ids[:0]
			for _, dl := range page.DeadLetters {
				ids = append(ids, dl.ID)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, want) {
				return fmt.Errorf("sink %s has dead letters %v, want the two unnumbered events %v", name, ids, want)
			}
			return nil
		})
		if n := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues(name, "dead_lettered")); n != 2 {
			t.Errorf("sink %s counted %v dead letters, want 2", name, n)
		}
		for _, r := range receivers[name].requests() {
			if id := r.header.Get("Ce-Id"); id == fromConsumer || id == readBack {
				t.Fatalf("the unnumbered event %s was delivered to sink %s", id, name)
			}
		}
	}
}

// BenchmarkReadBack measures how fast parked resources are delivered once
// their receiver is back: 40 groups of 500 events each are parked while
// the receiver refuses them, then read back from the stream. It reports
// events/s from the first delivery after the receiver came back to the
// last.
func BenchmarkReadBack(b *testing.B) {
	for _, batch := range []int{0, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchmarkReadBack(b, batch)
		})
	}
}

func benchmarkReadBack(b *testing.B, batch int) {
	_, _, js := natsServer(b)
	var refuse atomic.Bool
	refuse.Store(true)
	var got atomic.Int64
	var first atomic.Int64 // unix nanoseconds of the first delivery after the receiver came back
	rc := newReceiver(b, nil)
	rc.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			w.WriteHeader(503)
			return
		}
		first.CompareAndSwap(0, time.Now().UnixNano())
		n := int64(1)
		if batch > 0 {
			body, _ := io.ReadAll(r.Body)
			es, err := ReadDelivery(r.Header, body)
			if err != nil {
				b.Error(err)
			}
			n = int64(len(es))
		}
		got.Add(n)
		w.WriteHeader(204)
	})
	// Tries every 300 ms, and enough of them that none is dead-lettered
	// while the receiver refuses.
	slow := make(Schedule, 200)
	for i := range slow {
		slow[i] = 300 * time.Millisecond
	}
	cfg := sinkConfig("crm", rc.URL, func(s *Config) { s.Concurrency = 64; s.Retry = slow })
	if batch > 0 {
		cfg = batchConfig(rc.URL, func(c *Config) {
			c.Concurrency = 16
			c.Retry = slow
			c.Batch = &Batch{MaxEvents: batch, MaxWait: 50 * time.Millisecond}
		})
	}
	m, _ := runManager(b, Options{Sinks: []Config{cfg}, JS: js, Logger: slog.New(slog.DiscardHandler), Heartbeat: fastHeartbeat})
	waitBalanced(b, m)
	const groups, each = 40, 500
	p := newPublisher(b, js)
	for i := range groups * each {
		p.publishAsync("acme", events.GroupMemberAdded, "g"+strconv.Itoa(i%groups))
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	// Every event is parked (acknowledged, not delivered) before the
	// receiver comes back.
	eventstest.CheckFor(b, 2*time.Minute, 10*time.Millisecond, func() error {
		st, err := m.Status(ctx, cfg.Name)
		if err != nil {
			return err
		}
		if st.Pending > 0 || st.InFlight > 0 {
			return fmt.Errorf("%d pending, %d in flight", st.Pending, st.InFlight)
		}
		return nil
	})
	b.ResetTimer()
	refuse.Store(false)
	eventstest.CheckFor(b, 5*time.Minute, 5*time.Millisecond, func() error {
		if got.Load() < groups*each {
			return fmt.Errorf("%d of %d delivered", got.Load(), groups*each)
		}
		return nil
	})
	b.ReportMetric(float64(groups*each)/time.Since(time.Unix(0, first.Load())).Seconds(), "events/s")
}

// TestEventsAreDeadLetteredBeforeTheStreamDropsThem: a receiver that keeps
// failing for longer than the stream keeps events (nats.stream.max_age)
// loses none of them: an event whose next try would come after the stream
// dropped it goes to the dead-letter queue then, with why, and the
// resource's later events follow, in order.
func TestEventsAreDeadLetteredBeforeTheStreamDropsThem(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	// Each event is dead-lettered after its second try, once the next
	// (an hour later) would come after the stream drops it; the third
	// event's second try comes after six tries of the others, and must
	// still come before its drop time (keep − keep/10) or it is
	// dead-lettered after one. 10 s, not 3: that is 1.4 s on a quiet
	// machine, far more under -race on two shared cores; a quiet run
	// takes no longer, as nothing waits for keep.
	const keep = 10 * time.Second
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: keep, Duplicates: time.Second}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, func(int, *http.Request) int { return 503 })
	// A quick retry, then one an hour later: past what the stream keeps.
	cfg := sinkConfig("crm", rc.URL, func(c *Config) { c.Retry = Schedule{100 * time.Millisecond, time.Hour} })
	m, _ := runSinks(t, js, 5*time.Second, cfg)
	p := newPublisher(t, js)
	want := []string{p.publish("acme", events.UserCreated, "u1")}
	for range 2 {
		want = append(want, p.publish("acme", events.UserUpdated, "u1"))
	}
	var dls []DeadLetter
	eventstest.CheckFor(t, 3*keep, 20*time.Millisecond, func() error {
		page, err := m.DeadLetters(ctx, "crm", "", 0)
		if err != nil {
			return err
		}
		if dls = page.DeadLetters; len(dls) < len(want) {
			return fmt.Errorf("%d of %d events dead-lettered", len(dls), len(want))
		}
		return nil
	})
	for i, dl := range dls {
		if dl.ID != want[i] || dl.Attempts != 2 || dl.Status != 503 || !strings.Contains(dl.Error, "max_age") {
			t.Errorf("dead letter %d: %+v, want event %s after 2 tries, saying why", i, dl, want[i])
		}
	}
}

// TestALateEventIsTimedFromTheStream: how long the stream still keeps an
// event counts from when the stream stored it, not from the event's own
// time. An event made an hour before it reached the stream (an outbox that
// could not publish for that long), on a stream that keeps events an hour,
// is retried on the schedule and delivered, not dead-lettered at its first
// failure as if the stream were about to drop it.
func TestALateEventIsTimedFromTheStream(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Second}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	// The first delivery fails, its quick retries too (three requests).
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 3 {
			return 503
		}
		return 204
	})
	cfg := sinkConfig("crm", rc.URL, func(c *Config) { c.Retry = Schedule{100 * time.Millisecond} })
	m, _ := runSinks(t, js, 5*time.Second, cfg)
	e := eventstest.Event(t, "acme", events.UserCreated, "u1", 1, 1)
	e.SetTime(time.Now().Add(-time.Hour))
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n < 4 {
			return fmt.Errorf("%d requests, want the failed delivery's three and the retry", n)
		}
		return nil
	})
	page, err := m.DeadLetters(ctx, "crm", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.DeadLetters) != 0 {
		t.Fatalf("the late event was dead-lettered: %+v", page.DeadLetters)
	}
}

// TestOlderNATSIsRefused: the sinks refuse a NATS older than JetStream API
// level 4 at set-up, naming what they need (an older server would ignore
// the partition consumers' priority group and let two workers deliver one
// resource's events out of order); the server the tests run (2.15.2)
// passes.
func TestOlderNATSIsRefused(t *testing.T) {
	if err := checkAPILevel(ctx, natsStream(t)); err != nil {
		t.Fatalf("the tests' nats-server: %v", err)
	}
	for _, level := range []int{0, 1, 3} {
		err := requireAPILevel(level)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("API level %d, and delivery needs 4 (nats-server 2.14 or later)", level)) {
			t.Errorf("level %d: %v", level, err)
		}
	}
	if err := requireAPILevel(4); err != nil {
		t.Errorf("level 4: %v", err)
	}
}

// TestSetupAfterAConsumerWasRecreated: a worker that finds its partition's
// consumer deleted recreates it from a stream sequence; JetStream cannot
// change a consumer's deliver policy, so a later start of the sink (a
// restart, another process, a reload changing the sink) must keep it
// rather than ask for "deliver new" again, which the server refused and
// which stopped the relay from starting.
func TestSetupAfterAConsumerWasRecreated(t *testing.T) {
	_, _, js := natsServer(t)
	l := newLedger()
	rc := newReceiver(t, func(_ int, r *http.Request) int { return l.admit(r, func(string, uint64) int { return 204 }) })
	o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat}
	m, stop := runManager(t, o)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m.Ready(ctx) })
	p := newPublisher(t, js)
	want := provision(p, "before", 20, 1, 0, 0)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return l.deliveredEach(want) })
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for n := range events.DefaultPartitions {
		if err := st.DeleteConsumer(ctx, consumerName("crm", n)); err != nil {
			t.Fatal(err)
		}
	}
	maps.Copy(want, provision(p, "after", 20, 2, 0, 0))
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error { return l.deliveredEach(want) })
	// Every consumer was recreated: from the sequence after the last event
	// its partition received, or from the stream's first for a partition
	// that had received none (the "after" events above reached them all).
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		bySeq := 0
		for n := range events.DefaultPartitions {
			c, err := js.Consumer(ctx, events.StreamName, consumerName("crm", n))
			if err != nil {
				return err
			}
			switch c.CachedInfo().Config.DeliverPolicy {
			case jetstream.DeliverByStartSequencePolicy:
				bySeq++
			case jetstream.DeliverAllPolicy:
			default:
				return fmt.Errorf("partition %d's consumer delivers by %v: not recreated yet", n, c.CachedInfo().Config.DeliverPolicy)
			}
		}
		if bySeq == 0 {
			return errors.New("no consumer was recreated from a sequence")
		}
		return nil
	})
	stop()

	// The sink starts again, changed (its tenants narrowed, as a reload
	// would): the consumers are updated where they start.
	o.Sinks[0].Tenants = []string{"acme"}
	m, _ = runManager(t, o)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m.Ready(ctx) })
	maps.Copy(want, provision(p, "again", 20, 1, 0, 0))
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error { return l.deliveredEach(want) })
	if v := l.failure(); v != "" {
		t.Fatal(v)
	}
}

// TestParkedResourceOfATenantTheSinkNoLongerTakes: a resource parked
// while its tenant was the sink's is read back from the stream, which no
// subject filter narrows; once a reload has taken the tenant off the
// sink's list, none of its events may reach the sink.
func TestParkedResourceOfATenantTheSinkNoLongerTakes(t *testing.T) {
	js := onePartition(t)
	l := newLedger()
	var foreign atomic.Int32
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if r.Header.Get("ce-tenant") != "globex" {
			foreign.Add(1)
		}
		return l.admit(r, func(string, uint64) int { return http.StatusNoContent })
	})
	o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = []string{"acme", "globex"} })},
		JS: js, AckWait: 5 * time.Second, Heartbeat: 500 * time.Millisecond}
	_, stop := runManager(t, o) // sets up the consumers and the bucket
	stop()
	// An acme resource of crm's one partition, parked while acme was one of
	// the sink's tenants; then the sink takes globex alone.
	handedOverParked(t, js, 3)
	o.Sinks[0].Tenants = []string{"globex"}
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := pk.load(ctx, 0); err != nil || len(got) != 1 {
		t.Fatalf("parked before the worker starts: %v %v", got, err)
	}
	runManager(t, o)
	p := newPublisher(t, js)
	want := expect{}
	for i := range 20 {
		id := fmt.Sprintf("g%02d", i)
		p.publish("globex", events.UserCreated, id)
		want["Users/"+id] = 1
	}
	l.wantDelivered(t, want, 20*time.Second, false)
	// The parked resource was read back, and none of it sent.
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		got, err := pk.load(ctx, 0)
		if err != nil || len(got) > 0 {
			return fmt.Errorf("still parked: %v %v", got, err)
		}
		return nil
	})
	if n := foreign.Load(); n > 0 {
		t.Fatalf("the sink received %d events of a tenant it no longer takes", n)
	}
}

// TestLoweredMaxAgeDeadLettersAParkedEventBeforeTheStreamDropsIt: a
// resource parked with its next try due after the time the stream, its
// max_age lowered, drops the event is tried before then, and
// dead-lettered when that try fails: the retry kept its time, the stream
// dropped the event, and it was neither delivered nor dead-lettered (a
// review of restarts during retries). Lowered across a restart, or under
// a running worker (a front end started again alone, as the shipped Helm
// and Compose shapes may, or `nats stream edit`), which stops and is
// started again by its supervisor (a hunt of JetStream's limits).
func TestLoweredMaxAgeDeadLettersAParkedEventBeforeTheStreamDropsIt(t *testing.T) {
	for _, running := range []bool{false, true} {
		t.Run(fmt.Sprintf("running=%t", running), func(t *testing.T) { loweredMaxAge(t, running) })
	}
}

func loweredMaxAge(t *testing.T, running bool) {
	srv, js := natsStreamAt(t, t.TempDir(), -1)
	rc := newReceiver(t, func(int, *http.Request) int { return 503 })
	// The stream keeps events an hour: a retry in 30 minutes is kept.
	cfg := sinkConfig("crm", rc.URL, func(s *Config) { s.Retry = Schedule{100 * time.Millisecond, 30 * time.Minute, 30 * time.Minute} })
	var m func() *Manager
	stop := func() {}
	if running {
		w := superviseWorker(t, Options{Sinks: []Config{cfg}, AckWait: 2 * time.Second, streamCheckEvery: 100 * time.Millisecond}, eventstest.URL(srv))
		m = func() *Manager { m, _ := w.state(); return m }
		waitDividing(t, events.DefaultPartitions, w) // a sink new to the stream takes the events after it
	} else {
		var first *Manager
		first, stop = runSinks(t, js, 2*time.Second, cfg)
		m = func() *Manager { return first }
	}
	p := newPublisher(t, js)
	id := p.publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		kv, err := js.KeyValue(ctx, parkingBucketName("crm")) // a supervised worker makes it as it starts
		if err != nil {
			return err
		}
		keys, err := kv.ListKeysFiltered(ctx, "*.acme.user.u1")
		if err != nil {
			return err
		}
		defer func() { _ = keys.Stop() }()
		var entry jetstream.KeyValueEntry
		for k := range keys.Keys() {
			if entry, err = kv.Get(ctx, k); err != nil {
				return err
			}
		}
		if entry == nil {
			return fmt.Errorf("Users/u1 is not parked")
		}
		var r parkRecord
		if err := json.Unmarshal(entry.Value(), &r); err != nil || time.Until(r.Due) < 20*time.Minute {
			return fmt.Errorf("Users/u1 is not parked for its retry in 30 minutes: %s (%v)", entry.Value(), err)
		}
		return nil
	})
	stop() // when not running
	// The event is tried at keep − keep/10 after it was stored, and must
	// be dead-lettered before the stream drops it at keep: the try (its
	// quick retries up to a second apart) and the dead letter fit in
	// keep/10. 20 s, not 6: on a loaded CI machine under -race the 0.6 s
	// margin of 6 s did not hold them, and the event was a few seconds
	// old already when max_age was lowered.
	const keep = 20 * time.Second
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: keep, Duplicates: time.Second}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if !running {
		again, _ := runSinks(t, js, 2*time.Second, cfg)
		m = func() *Manager { return again }
	}
	eventstest.CheckFor(t, 3*keep, 20*time.Millisecond, func() error {
		page, err := m().DeadLetters(ctx, "crm", "", 0)
		if err != nil {
			return err
		}
		if len(page.DeadLetters) == 1 {
			if dl := page.DeadLetters[0]; dl.ID != id || !strings.Contains(dl.Error, "max_age") {
				t.Fatalf("dead letter %+v, want event %s, saying the stream's max_age is why", dl, id)
			}
			return nil
		}
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if info, err := st.Info(ctx); err == nil && info.State.Msgs == 0 {
			t.Fatal("the stream dropped the parked event: neither delivered nor dead-lettered")
		}
		return fmt.Errorf("%d dead letters", len(page.DeadLetters))
	})
}
