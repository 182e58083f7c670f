// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// outage is a receiver that is down (503 without Retry-After, or 429 for
// the resource it asks to wait) until up is set; then it accepts every
// event but those of a resource it fails alone (500), and records what it
// accepted.
type outage struct {
	*receiver
	js    jetstream.JetStream
	logs  *eventstest.Log // the sinks' log, where wakeSetup made them
	up    atomic.Bool
	alone string // a ce-subject the receiver fails even when up; "": none
	wait  string // a ce-subject answered 429 while down; "": none

	mu       sync.Mutex
	accepted []string       // ce-subject#subjectseq, as accepted
	tries    map[string]int // requests per ce-subject
}

func newOutage(t *testing.T, alone string) *outage {
	o := &outage{alone: alone, tries: map[string]int{}, logs: &eventstest.Log{}}
	o.receiver = newReceiver(t, func(_ int, r *http.Request) int {
		subject := r.Header.Get("ce-subject")
		o.mu.Lock()
		defer o.mu.Unlock()
		o.tries[subject]++
		if !o.up.Load() {
			if subject == o.wait {
				return http.StatusTooManyRequests
			}
			return http.StatusServiceUnavailable
		}
		if subject == o.alone {
			return http.StatusInternalServerError
		}
		o.accepted = append(o.accepted, subject+"#"+strings.TrimLeft(r.Header.Get("ce-subjectseq"), "0"))
		return http.StatusNoContent
	})
	return o
}

// hasAccepted reports an error until the receiver has accepted want, in
// that order among what it accepted.
func (o *outage) hasAccepted(want ...string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	at := -1
	for _, w := range want {
		i := slices.Index(o.accepted, w)
		switch {
		case i < 0:
			return fmt.Errorf("%s not delivered (delivered: %v)", w, o.accepted)
		case i < at:
			return fmt.Errorf("%s delivered out of order: %v", w, o.accepted)
		}
		at = i
	}
	return nil
}

func (o *outage) triesOf(subject string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.tries[subject]
}

// parkedForLong waits until crm has parked each resource key after one
// failed try of a receiver that was down (or, for o.wait, asked to
// wait), due again in about half an hour (the stream keeps events an
// hour), and returns the records.
func parkedForLong(t *testing.T, o *outage, keys ...string) map[string]parkRecord {
	t.Helper()
	recs := map[string]parkRecord{}
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		for _, k := range keys {
			r, err := parkedFrom(o.js, k)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			down := "Users/"+strings.TrimPrefix(k, "acme.user.") != o.wait
			if r.Attempts != 1 || r.Down != down || time.Until(r.Due) < 20*time.Minute {
				return fmt.Errorf("%s: %+v, want parked after a try, down, for about half an hour", k, r)
			}
			recs[k] = r
		}
		return nil
	})
	return recs
}

// wakeSetup runs crm on one partition with a single retry half an hour
// after a first failure, and the probe every probeEvery; its log goes to
// o.logs.
func wakeSetup(t *testing.T, alone string, probeEvery time.Duration) (*outage, *Manager, *publisher) {
	js := onePartition(t)
	o := newOutage(t, alone)
	o.js = js
	m, _ := runManager(t, Options{JS: js, probeEvery: probeEvery, Logger: slog.New(slog.NewTextHandler(o.logs, nil)),
		Sinks: []Config{sinkConfig("crm", o.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })}})
	return o, m, newPublisher(t, js)
}

// TestParkedResourcesAreTriedWhenTheReceiverAnswersAgain: resources
// parked while the receiver was down, each due again half an hour later,
// are delivered, in order, as soon as a request to the receiver succeeds
// again, not half an hour later; the worker says so at Info. One the
// receiver asked to wait (429) keeps its schedule.
func TestParkedResourcesAreTriedWhenTheReceiverAnswersAgain(t *testing.T) {
	o, m, p := wakeSetup(t, "", time.Hour)
	o.wait = "Users/patient"
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserUpdated, "u1")
	p.publish("acme", events.UserCreated, "u2")
	p.publish("acme", events.GroupCreated, "g1")
	p.publish("acme", events.UserCreated, "patient")
	parkedForLong(t, o, "acme.user.u1", "acme.user.u2", "acme.group.g1", "acme.user.patient")
	asked := o.triesOf("Users/patient")

	o.up.Store(true)
	p.publish("acme", events.UserCreated, "u3")
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		return errors.Join(o.hasAccepted("Users/u3#1"), o.hasAccepted("Users/u1#1", "Users/u1#2"),
			o.hasAccepted("Users/u2#1"), o.hasAccepted("Groups/g1#1"))
	})
	if logs := o.logs.String(); !strings.Contains(logs, `level=INFO msg="the receiver answers again: resources parked while it was down are tried now, not on their schedule" sink=crm resources=3 down_for=`) {
		t.Errorf("the wake is not said at Info with its count and how long the receiver was down:\n%s", eventstest.GrepLines(logs, "receiver answers"))
	}
	// And its end, once every woken resource has been tried.
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(o.logs.String(), `level=INFO msg="the receiver has caught up: every resource parked while it was down has been tried again (one that failed again keeps its schedule)" sink=crm took=`) {
			return fmt.Errorf("the recovery's end is not said at Info:\n%s", eventstest.GrepLines(o.logs.String(), "receiver"))
		}
		return nil
	})
	if n := o.triesOf("Users/patient"); n != asked {
		t.Errorf("the resource the receiver asked to wait was tried %d more times", n-asked)
	}
	if n := testutil.ToFloat64(m.metrics.earlyTries.WithLabelValues("crm", "recovery")); n != 3 {
		t.Errorf("scimrelay_sink_early_tries_total{reason=\"recovery\"} %v, want 3", n)
	}
}

// TestAQuietSinkProbesForItsReceiver: with nothing new to deliver, a
// worker tries one parked resource before its time once its sink has made
// no request for a while (the probe); while the receiver is still down,
// the probe's failure leaves the resource's record as the schedule set
// it, and once the receiver is back the probe's success brings the other
// parked resources with it, though the outage was shorter than outageMin.
func TestAQuietSinkProbesForItsReceiver(t *testing.T) {
	o, m, p := wakeSetup(t, "", 300*time.Millisecond)
	o.up.Store(true) // a success first: the probe's is not the worker's first
	p.publish("acme", events.UserCreated, "before")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return o.hasAccepted("Users/before#1") })
	o.up.Store(false)
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserUpdated, "u1")
	p.publish("acme", events.UserCreated, "u2")
	before := parkedForLong(t, o, "acme.user.u1", "acme.user.u2")

	// Probes fail while the receiver is down: each resource tried again
	// (a delivery makes several requests: its quick retries).
	u1, u2 := o.triesOf("Users/u1"), o.triesOf("Users/u2")
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if o.triesOf("Users/u1") == u1 || o.triesOf("Users/u2") == u2 {
			return fmt.Errorf("not both probed yet: u1 tried %d more times, u2 %d", o.triesOf("Users/u1")-u1, o.triesOf("Users/u2")-u2)
		}
		return nil
	})
	if n := testutil.ToFloat64(m.metrics.earlyTries.WithLabelValues("crm", "probe")); n < 2 {
		t.Errorf("scimrelay_sink_early_tries_total{reason=\"probe\"} %v after two probes", n)
	}
	for k, was := range before {
		r, err := parkedFrom(o.js, k)
		if err != nil {
			t.Fatal(err)
		}
		if r.Attempts != was.Attempts || !r.Due.Equal(was.Due) {
			t.Errorf("%s after a failed probe: %+v, want tries and due time as scheduled (%+v)", k, r, was)
		}
	}

	o.up.Store(true)
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		return errors.Join(o.hasAccepted("Users/u1#1", "Users/u1#2"), o.hasAccepted("Users/u2#1"))
	})
}

// TestAResourceFailingAloneKeepsItsSchedule: a resource the receiver fails
// on its own, once the receiver is back, is tried early once; that try
// does not count (with one retry in the schedule, counting it would
// dead-letter the event), its record keeps its scheduled due time, and
// neither later successes nor the probe of a quiet sink wake it again.
func TestAResourceFailingAloneKeepsItsSchedule(t *testing.T) {
	o, m, p := wakeSetup(t, "Users/bad", time.Second)
	p.publish("acme", events.UserCreated, "bad")
	before := parkedForLong(t, o, "acme.user.bad")["acme.user.bad"]
	triedWhileDown := o.triesOf("Users/bad")

	w := crmWorker(m)
	o.up.Store(true)
	p.publish("acme", events.UserCreated, "u1")
	var woken int
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if woken = o.triesOf("Users/bad"); woken == triedWhileDown || wokenIn(w) > 0 {
			return errors.New("the early try of Users/bad has not failed yet")
		}
		return nil
	})
	if r, err := parkedFrom(o.js, "acme.user.bad"); err != nil || r.Attempts != before.Attempts || !r.Due.Equal(before.Due) || !r.Down {
		t.Fatalf("after an early try: %+v (%v), want tries and due time as scheduled (%+v)", r, err, before)
	}
	// More successes, and a look for resources to wake after each: bad
	// is not tried again.
	looked := w.wakes.looked.Load()
	for i := 0; w.wakes.looked.Load() == looked || i < 3; i++ {
		id := fmt.Sprint("more", i)
		p.publish("acme", events.UserCreated, id)
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return o.hasAccepted("Users/" + id + "#1") })
		if i > 100 {
			t.Fatal("no look for parked resources after 100 successes")
		}
	}
	// Then the sink is quiet for a probe's while: bad, answered by
	// successes since it failed, is not probed.
	quiet := clock(time.Now())
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if w.wakes.probed.Load() < quiet {
			return errors.New("no probe yet")
		}
		if n := wokenIn(w); n > 0 {
			return fmt.Errorf("%d resources being probed", n)
		}
		return nil
	})
	if n := o.triesOf("Users/bad"); n != woken {
		t.Errorf("Users/bad was tried %d more times after its early try failed", n-woken)
	}
	page, err := m.DeadLetters(ctx, "crm", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.DeadLetters) != 0 {
		t.Errorf("the early try was counted: %+v", page.DeadLetters)
	}
}

// TestDowns: only a failure like a receiver being down, or refusing the
// sink's credentials, has its resource tried early when the receiver
// answers again; a receiver that asked for time (Retry-After, 429) or
// refused the event keeps its schedule.
func TestDowns(t *testing.T) {
	for _, c := range []struct {
		name string
		res  Result
		want bool
	}{
		{"no answer", Result{Err: errors.New("connection refused")}, true},
		{"503", Result{Status: 503, Err: errors.New("503")}, true},
		{"500", Result{Status: 500, Err: errors.New("500")}, true},
		{"503 with Retry-After", Result{Status: 503, Err: errors.New("503"), RetryAfter: time.Minute}, false},
		{"429", Result{Status: 429, Err: errors.New("429")}, false},
		{"408", Result{Status: 408, Err: errors.New("408")}, false},
		{"410", Result{Status: 410, Err: errors.New("410"), Permanent: true}, false},
		{"401", Result{Status: 401, Err: errors.New("401")}, true},
		{"403", Result{Status: 403, Err: errors.New("403")}, true},
		{"404", Result{Status: 404, Err: errors.New("404"), Permanent: true}, false},
	} {
		if got := downs(c.res); got != c.want {
			t.Errorf("%s: downs = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestTwoWorkersWakeTheirParkedResources: in the shape the relay is
// deployed in, two workers each parking some of the resources while the
// receiver is down, every parked resource is delivered, in order, soon
// after the receiver is back, though only one worker's request succeeds
// first: that worker wakes its own parked resources, the other finds the
// receiver back with its probe.
func TestTwoWorkersWakeTheirParkedResources(t *testing.T) {
	s, _, js := natsServer(t)
	o := newOutage(t, "")
	o.js = js
	cfg := sinkConfig("crm", o.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })
	ms, _ := startWorkers(t, Options{Sinks: []Config{cfg}, Heartbeat: fastHeartbeat, probeEvery: 500 * time.Millisecond}, eventstest.URL(s), 2)
	p := newPublisher(t, js)
	var want [][]string
	for i := range 10 {
		id := fmt.Sprint("u", i)
		p.publish("acme", events.UserCreated, id)
		p.publish("acme", events.UserUpdated, id)
		want = append(want, []string{"Users/" + id + "#1", "Users/" + id + "#2"})
	}
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		for i, m := range ms {
			if n := parkedIn(m); n == 0 {
				return fmt.Errorf("worker %d has parked nothing yet", i+1)
			}
		}
		if n := parkedIn(ms[0]) + parkedIn(ms[1]); n != len(want) {
			return fmt.Errorf("%d of %d resources parked", n, len(want))
		}
		return nil
	})

	o.up.Store(true)
	p.publish("acme", events.UserCreated, "new")
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		errs := []error{o.hasAccepted("Users/new#1")}
		for _, w := range want {
			errs = append(errs, o.hasAccepted(w...))
		}
		return errors.Join(errs...)
	})
}

// crmWorker is m's worker of sink crm.
func crmWorker(m *Manager) *worker {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.sinks["crm"].worker
}

// waitParked waits until m holds want parked resources.
func waitParked(t testing.TB, m *Manager, want int) {
	t.Helper()
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if n := parkedIn(m); n != want {
			return fmt.Errorf("%d resources parked, want %d", n, want)
		}
		return nil
	})
}

// parkedIn counts the resources m's worker of crm has parked.
func parkedIn(m *Manager) int {
	n := 0
	for _, p := range crmWorker(m).ownedPartitions() {
		n += p.parkedCount()
	}
	return n
}

// BenchmarkWakeAfterOutage: resources parked while the receiver was down,
// each due again half an hour later, delivered once it is back, from the
// first success to the last delivery.
func BenchmarkWakeAfterOutage(b *testing.B) {
	_, _, js := natsServer(b)
	var up atomic.Bool
	var got atomic.Int64
	rc := newReceiver(b, func(int, *http.Request) int {
		if !up.Load() {
			return http.StatusServiceUnavailable
		}
		got.Add(1)
		return http.StatusNoContent
	})
	cfg := sinkConfig("crm", rc.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })
	m, _ := runManager(b, Options{Sinks: []Config{cfg}, JS: js, Logger: slog.New(slog.DiscardHandler), Heartbeat: fastHeartbeat, probeEvery: time.Hour})
	waitBalanced(b, m)
	const resources = 2000
	p := newPublisher(b, js)
	for i := range resources {
		p.publishAsync("acme", events.UserCreated, "u"+fmt.Sprint(i))
	}
	<-js.PublishAsyncComplete()
	eventstest.CheckFor(b, 2*time.Minute, 10*time.Millisecond, func() error {
		if n := parkedIn(m); n < resources {
			return fmt.Errorf("%d of %d parked", n, resources)
		}
		return nil
	})
	b.ResetTimer()
	start := time.Now()
	up.Store(true)
	p.publish("acme", events.UserCreated, "first")
	eventstest.CheckFor(b, 5*time.Minute, 5*time.Millisecond, func() error {
		if n := got.Load(); n < resources+1 {
			return fmt.Errorf("%d of %d delivered", n, resources+1)
		}
		return nil
	})
	b.ReportMetric(float64(resources)/time.Since(start).Seconds(), "resources/s")
}

// TestAFailureAmongSuccessesKeepsItsSchedule: a resource that fails while
// the receiver answers the others is not a receiver that was down: the
// successes around it do not wake it, so an overloaded receiver is not
// sent its retries early. Once the receiver was down for a while
// (outageMin without a success) and answers again, the resources parked
// before are tried at once, that one included.
func TestAFailureAmongSuccessesKeepsItsSchedule(t *testing.T) {
	js := onePartition(t)
	var down, flaky atomic.Bool
	var mu sync.Mutex
	tries := map[string]int{}
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		subject := r.Header.Get("ce-subject")
		mu.Lock()
		tries[subject]++
		mu.Unlock()
		if down.Load() || flaky.Load() && subject == "Users/flaky" {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	triesOf := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		return tries[s]
	}
	const outage = 2 * time.Second
	m, _ := runManager(t, Options{JS: js, probeEvery: time.Hour, outageMin: outage,
		Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })}})
	w := crmWorker(m)
	p := newPublisher(t, js)
	i := 0
	deliverOne := func() { // a resource of its own, delivered
		t.Helper()
		i++
		id := fmt.Sprint("ok", i)
		p.publish("acme", events.UserCreated, id)
		eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if triesOf("Users/"+id) == 0 {
				return fmt.Errorf("%s not delivered", id)
			}
			return nil
		})
	}

	flaky.Store(true)
	deliverOne()
	p.publish("acme", events.UserCreated, "flaky")
	for {
		deliverOne()
		if r, err := parkedFrom(js, "acme.user.flaky"); err == nil && r.Attempts == 1 && r.Down {
			break
		}
	}
	flaky.Store(false)
	refused := triesOf("Users/flaky")
	for range 20 {
		deliverOne()
	}
	if n := triesOf("Users/flaky"); n != refused {
		t.Fatalf("a failure among successes was tried %d more times within its backoff", n-refused)
	}

	// The receiver down for longer than outageMin, its failures with it,
	// then back.
	down.Store(true)
	var gone []string
	for len(gone) == 0 || time.Duration(w.wakes.down.Load()-w.wakes.firstDown.Load()) < outage {
		id := fmt.Sprint("gone", len(gone))
		p.publish("acme", events.UserCreated, id)
		eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
			_, err := parkedFrom(js, "acme.user."+id)
			return err
		})
		gone = append(gone, id)
	}
	down.Store(false)
	deliverOne()
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if triesOf("Users/flaky") == refused {
			return errors.New("Users/flaky was not tried again after the outage")
		}
		for _, id := range append(gone, "flaky") {
			if _, err := parkedFrom(js, "acme.user."+id); err == nil {
				return fmt.Errorf("Users/%s still parked", id)
			}
		}
		return nil
	})
}

// TestWokenResourcesAreBounded: however many resources are parked, a
// worker keeps at most twice its concurrency of them out at once, each
// that delivers handing its place to the next at once: with looks for
// more an hour apart, all of them are delivered after the first look.
func TestWokenResourcesAreBounded(t *testing.T) {
	js := onePartition(t)
	var up atomic.Bool
	gate := make(chan struct{})
	var got atomic.Int32
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if !up.Load() {
			return http.StatusServiceUnavailable
		}
		<-gate
		got.Add(1)
		return http.StatusNoContent
	})
	m, _ := runManager(t, Options{JS: js, probeEvery: time.Hour, wakeEvery: time.Hour,
		Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Concurrency = 1; c.Retry = Schedule{30 * time.Minute} })}})
	w := crmWorker(m)
	const parked = 6
	p := newPublisher(t, js)
	for i := range parked {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	waitParked(t, m, parked)
	up.Store(true)
	p.publish("acme", events.UserCreated, "first")
	t.Cleanup(func() { close(gate) }) // before the receiver closes
	for delivered := int32(0); delivered < parked+1; delivered++ {
		select {
		case gate <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d delivered, and no request for more: the delivered ones did not hand their places on", delivered, parked+1)
		}
		eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if got.Load() <= delivered {
				return errors.New("not answered yet")
			}
			return nil
		})
		if n := wokenIn(w); n > 2 {
			t.Fatalf("%d resources woken at once, want at most 2 (twice concurrency 1)", n)
		}
	}
	waitParked(t, m, 0)
}

// TestProbeGap: each probe that finds the receiver still down doubles the
// wait before the next, up to ten times probeEvery.
func TestProbeGap(t *testing.T) {
	for probes, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute} {
		if got := probeGap(time.Minute, probes); got != want {
			t.Errorf("after %d probes: %s, want %s", probes, got, want)
		}
	}
	if got := probeGap(time.Minute, 1000); got != 10*time.Minute {
		t.Errorf("after 1000 probes: %s", got)
	}
}

// wokenIn counts the resources w tries before their time.
func wokenIn(w *worker) int {
	n := 0
	for _, p := range w.ownedPartitions() {
		n += p.wokenOut()
	}
	return n
}

// TestALoneFailureBetweenSparseSuccessesIsNoOutage: on a sink whose
// requests come seconds apart, a resource the receiver fails on its own
// between two successes is no outage, however long the gap: the
// successes do not wake it.
func TestALoneFailureBetweenSparseSuccessesIsNoOutage(t *testing.T) {
	js := onePartition(t)
	o := newOutage(t, "Users/bad")
	o.js = js
	o.up.Store(true)
	const outage = 300 * time.Millisecond
	m, _ := runManager(t, Options{JS: js, probeEvery: time.Hour, outageMin: outage,
		Sinks: []Config{sinkConfig("crm", o.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })}})
	w := crmWorker(m)
	p := newPublisher(t, js)
	sparse := func(id string) { // a success, a while after the last
		t.Helper()
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if since := time.Duration(clock(time.Now()) - w.wakes.answered.Load()); since < 2*outage {
				return fmt.Errorf("the last success was %s ago", since)
			}
			return nil
		})
		p.publish("acme", events.UserCreated, id)
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return o.hasAccepted("Users/" + id + "#1") })
	}
	sparse("first")
	p.publish("acme", events.UserCreated, "bad")
	parked := parkedForLong(t, o, "acme.user.bad")["acme.user.bad"]
	refused := o.triesOf("Users/bad")
	for i := range 4 {
		sparse(fmt.Sprint("later", i))
	}
	if n := o.triesOf("Users/bad"); n != refused {
		t.Errorf("Users/bad, failing alone, was tried %d more times by sparse successes", n-refused)
	}
	if r, err := parkedFrom(js, "acme.user.bad"); err != nil || r.Attempts != parked.Attempts || !r.Due.Equal(parked.Due) {
		t.Errorf("Users/bad's record %+v (%v), want it as parked: %+v", r, err, parked)
	}
}

// TestARecoveryWaitsForPartitionsNotConsuming: a partition of the worker
// taking its consumer (again) during a recovery keeps it: once that
// partition runs, its parked resources are woken too.
func TestARecoveryWaitsForPartitionsNotConsuming(t *testing.T) {
	s, _, js := natsServer(t)
	o := newOutage(t, "")
	o.js = js
	cfg := sinkConfig("crm", o.URL, func(c *Config) { c.Retry = Schedule{30 * time.Minute} })
	ms, _ := startWorkers(t, Options{Sinks: []Config{cfg}, Heartbeat: fastHeartbeat, probeEvery: time.Hour}, eventstest.URL(s), 1)
	m := ms[0]
	w := crmWorker(m)
	p := newPublisher(t, js)
	for i := range 20 {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	waitParked(t, m, 20)
	// The partition holding the most of them is taking its consumer
	// again when the receiver comes back.
	var held *partition
	for _, pt := range w.ownedPartitions() {
		if held == nil || pt.parkedCount() > held.parkedCount() {
			held = pt
		}
	}
	waiting := held.parkedCount()
	held.state.Store(stateFailing)
	o.up.Store(true)
	p.publish("acme", events.UserCreated, "first")
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if n := parkedIn(m); n != waiting {
			return fmt.Errorf("%d parked, want only the %d of the partition not consuming", n, waiting)
		}
		if w.wakes.looking.Load() || wokenIn(w) > 0 {
			return errors.New("a look or a woken resource is still under way")
		}
		return nil
	})
	held.mu.Lock()
	kept := held.recovery
	held.mu.Unlock()
	if kept == 0 {
		t.Fatal("the partition not consuming does not keep the recovery for its resources")
	}
	held.running()
	waitParked(t, m, 0)
}

// TestARecoveryIsSaidAtInfoOnce: a recovery is said at Info when it
// begins, with the count of the resources its first look woke, and at
// Debug while it goes on: the looks after it that wake more (here those
// of partitions the first look, two resources at most, did not reach)
// are not said at Info.
func TestARecoveryIsSaidAtInfoOnce(t *testing.T) {
	s, _, js := natsServer(t)
	o := newOutage(t, "")
	o.js = js
	cfg := sinkConfig("crm", o.URL, func(c *Config) { c.Concurrency = 1; c.Retry = Schedule{30 * time.Minute} })
	debug := slog.New(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ms, _ := startWorkers(t, Options{Sinks: []Config{cfg}, Heartbeat: fastHeartbeat, probeEvery: time.Hour, Logger: debug}, eventstest.URL(s), 1)
	m := ms[0]
	p := newPublisher(t, js)
	const parked = 20
	for i := range parked {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	waitParked(t, m, parked)
	holding := 0
	for _, pt := range crmWorker(m).ownedPartitions() {
		if pt.parkedCount() > 0 {
			holding++
		}
	}
	if holding < 3 {
		t.Fatalf("the parked resources are in %d partitions; the test needs three or more", holding)
	}
	o.up.Store(true)
	p.publish("acme", events.UserCreated, "first")
	waitParked(t, m, 0)
	said := eventstest.GrepLines(o.logs.String(), "the receiver answers again")
	if info, debug := strings.Count(said, "level=INFO"), strings.Count(said, "level=DEBUG"); info != 1 || debug == 0 {
		t.Errorf("the recovery said %d times at Info and %d at Debug, want once at Info, then at Debug:\n%s", info, debug, said)
	}
}

// TestAReceiverWithAnotherSecretHoldsItsEvents: a receiver whose secret is
// not the sink's refuses every delivery with 401, as NewReceiver (and the
// official library everywhere) does. Nothing is dead-lettered: each
// resource is parked on its schedule (here half an hour), and the failures
// say what to check. Once the receiver has the sink's secret, the parked
// resources are delivered, each in order, as soon as the receiver takes a
// request: on a quiet sink the probe finds it, not the schedule half an
// hour later. One event per request and batched.
func TestAReceiverWithAnotherSecretHoldsItsEvents(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			var mu sync.Mutex
			var got []string // subject#subjectseq, as handed over
			take := func(e event.Event) {
				seq, _ := events.SubjectSeq(e)
				mu.Lock()
				got = append(got, fmt.Sprint(e.Subject(), "#", seq))
				mu.Unlock()
			}
			other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the-receivers-secret-of-32-bytes"))
			wrong, err := NewReceiver(other, take)
			if err != nil {
				t.Fatal(err)
			}
			right, err := NewReceiver(testSecret, take)
			if err != nil {
				t.Fatal(err)
			}
			var serving atomic.Pointer[http.Handler]
			serving.Store(&wrong)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*serving.Load()).ServeHTTP(w, r) }))
			t.Cleanup(srv.Close)

			js := onePartition(t)
			var logs eventstest.Log
			m, _ := runManager(t, Options{JS: js, probeEvery: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
				Sinks: []Config{sinkConfig("crm", srv.URL, func(c *Config) {
					c.Retry = Schedule{30 * time.Minute}
					if batch {
						c.Format, c.Batch = "", &Batch{MaxEvents: 50, MaxWait: 20 * time.Millisecond}
					}
				})}})
			p := newPublisher(t, js)
			p.publish("acme", events.UserCreated, "u1")
			p.publish("acme", events.UserUpdated, "u1")
			p.publish("acme", events.UserCreated, "u2")
			p.publish("acme", events.GroupCreated, "g1")
			eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
				for _, k := range []string{"acme.user.u1", "acme.user.u2", "acme.group.g1"} {
					r, err := parkedFrom(js, k)
					if err != nil {
						return fmt.Errorf("%s: %w", k, err)
					}
					if !r.Down || time.Until(r.Due) < 20*time.Minute {
						return fmt.Errorf("%s: %+v, want parked as if the receiver were down, for about half an hour", k, r)
					}
				}
				return nil
			})
			if page, err := m.DeadLetters(ctx, "crm", "", 0); err != nil || len(page.DeadLetters) != 0 {
				t.Fatalf("dead letters while the secrets disagree: %+v, %v", page.DeadLetters, err)
			}
			if !strings.Contains(logs.String(), "401 Unauthorized: the receiver refused the request's credentials; check that its secret is the sink's") {
				t.Errorf("the failures do not say what to check:\n%s", eventstest.GrepLines(logs.String(), "level=WARN"))
			}

			serving.Store(&right)
			want := []string{"Users/u1#1", "Users/u1#2", "Users/u2#1", "Groups/g1#1"}
			eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(got) != len(want) || !slices.Contains(got, "Users/u2#1") || !slices.Contains(got, "Groups/g1#1") ||
					slices.Index(got, "Users/u1#1") < 0 || slices.Index(got, "Users/u1#1") > slices.Index(got, "Users/u1#2") {
					return fmt.Errorf("handed over %v, want each of %v once, u1's in order", got, want)
				}
				return nil
			})
			if page, err := m.DeadLetters(ctx, "crm", "", 0); err != nil || len(page.DeadLetters) != 0 {
				t.Fatalf("dead letters: %+v, %v", page.DeadLetters, err)
			}
		})
	}
}
