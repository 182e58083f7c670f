// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// outage is a receiver that is down (503 without Retry-After) until up is
// set; then it accepts every event but those of a resource it fails alone
// (500), and records what it accepted.
type outage struct {
	*receiver
	js    jetstream.JetStream
	logs  *eventstest.Log // the sinks' log, where wakeSetup made them
	up    atomic.Bool
	alone string // a ce-subject the receiver fails even when up; "": none

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
// failed try of a receiver that was down, due again in about half an hour
// (the stream keeps events an hour), and returns the records.
func parkedForLong(t *testing.T, o *outage, keys ...string) map[string]parkRecord {
	t.Helper()
	recs := map[string]parkRecord{}
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		for _, k := range keys {
			r, err := parkedFrom(o.js, k)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if r.Attempts != 1 || !r.Down || time.Until(r.Due) < 20*time.Minute {
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
// again, not half an hour later; the worker says so at Info.
func TestParkedResourcesAreTriedWhenTheReceiverAnswersAgain(t *testing.T) {
	o, _, p := wakeSetup(t, "", time.Hour)
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserUpdated, "u1")
	p.publish("acme", events.UserCreated, "u2")
	p.publish("acme", events.GroupCreated, "g1")
	parkedForLong(t, o, "acme.user.u1", "acme.user.u2", "acme.group.g1")

	o.up.Store(true)
	p.publish("acme", events.UserCreated, "u3")
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		return errors.Join(o.hasAccepted("Users/u3#1"), o.hasAccepted("Users/u1#1", "Users/u1#2"),
			o.hasAccepted("Users/u2#1"), o.hasAccepted("Groups/g1#1"))
	})
	if logs := o.logs.String(); !strings.Contains(logs, `level=INFO msg="the receiver answers again: resources parked while it was down are tried now, not on their schedule" sink=crm resources=3`) {
		t.Errorf("the wake is not said at Info with its count:\n%s", grepLines(logs, "receiver answers"))
	}
}

// TestAQuietSinkProbesForItsReceiver: with nothing new to deliver, a
// worker tries one parked resource before its time once its sink has made
// no request for a while (the probe); while the receiver is still down,
// the probe's failure leaves the resource's record as the schedule set
// it, and once the receiver is back the probe's success brings the other
// parked resources with it.
func TestAQuietSinkProbesForItsReceiver(t *testing.T) {
	o, _, p := wakeSetup(t, "", 300*time.Millisecond)
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
// later successes do not wake it again.
func TestAResourceFailingAloneKeepsItsSchedule(t *testing.T) {
	o, m, p := wakeSetup(t, "Users/bad", time.Hour)
	p.publish("acme", events.UserCreated, "bad")
	before := parkedForLong(t, o, "acme.user.bad")["acme.user.bad"]
	triedWhileDown := o.triesOf("Users/bad")

	o.up.Store(true)
	p.publish("acme", events.UserCreated, "u1")
	var woken int
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		r, err := parkedFrom(o.js, "acme.user.bad")
		if err != nil {
			return err
		}
		if woken = o.triesOf("Users/bad"); woken == triedWhileDown || r.Status != http.StatusInternalServerError {
			return fmt.Errorf("the early try of Users/bad has not failed yet: %+v", r)
		}
		if r.Attempts != before.Attempts || !r.Due.Equal(before.Due) || !r.Down {
			return fmt.Errorf("after an early try: %+v, want tries and due time as scheduled (%+v)", r, before)
		}
		return nil
	})
	// More successes, and a look for resources to wake after each: bad
	// is not tried again.
	m.mu.RLock()
	w := m.sinks["crm"].worker
	m.mu.RUnlock()
	looked := w.wakes.looked.Load()
	for i := 0; w.wakes.looked.Load() == looked || i < 3; i++ {
		id := fmt.Sprint("more", i)
		p.publish("acme", events.UserCreated, id)
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return o.hasAccepted("Users/" + id + "#1") })
		if i > 100 {
			t.Fatal("no look for parked resources after 100 successes")
		}
	}
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

// TestDowns: only a failure like a receiver being down has its resource
// tried early when the receiver answers again; a receiver that asked for
// time (Retry-After, 429) or refused the event keeps its schedule.
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

// parkedIn counts the resources m's worker of crm has parked.
func parkedIn(m *Manager) int {
	m.mu.RLock()
	w := m.sinks["crm"].worker
	m.mu.RUnlock()
	n := 0
	for _, p := range w.ownedPartitions() {
		n += p.parkedCount()
	}
	return n
}
