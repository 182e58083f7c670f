// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// deniable is a server of one partition with users "admin", who may do
// anything, and "worker", whose writes of crm's park records can be
// refused and allowed again while it runs (a configuration reload: the
// connected workers' permissions change in place).
type deniable struct {
	t         testing.TB
	s         *server.Server
	opts      *server.Options
	js        jetstream.JetStream // as admin
	workerURL string
}

func deniableServer(t testing.TB) *deniable {
	t.Helper()
	d := &deniable{t: t}
	d.s = eventstest.RunServerWith(t, t.TempDir(), -1, func(o *server.Options) {
		o.Users = workerUsers(false)
		d.opts = o
	})
	address := strings.TrimPrefix(d.s.ClientURL(), "nats://")
	_, d.js = eventstest.Connect(t, "nats://admin:admin@"+address)
	if _, err := events.EnsureStream(ctx, d.js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Partitions: 1}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	d.workerURL = "nats://worker:worker@" + address
	return d
}

func workerUsers(denyParking bool) []*server.User {
	var deny []string
	if denyParking {
		deny = []string{"$KV." + parkingBucketName("crm") + ".*.*.*.*"} // not its claims
	}
	return []*server.User{
		{Username: "admin", Password: "admin"},
		{Username: "worker", Password: "worker", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: deny},
		}},
	}
}

// denyParking refuses (true) or allows (false) the workers' park writes.
func (d *deniable) denyParking(deny bool) {
	d.t.Helper()
	o := d.opts.Clone()
	o.Users = workerUsers(deny)
	if err := d.s.ReloadOptions(o); err != nil {
		d.t.Fatalf("changing the workers' permissions: %v", err)
	}
	d.opts = o
}

// worker runs a worker of o as "worker" and waits until it consumes the
// partition.
func (d *deniable) worker(o Options) (*Manager, func()) {
	d.t.Helper()
	_, o.JS = eventstest.Connect(d.t, d.workerURL)
	m, stop := runManager(d.t, o)
	eventstest.CheckFor(d.t, 20*time.Second, 20*time.Millisecond, func() error {
		for _, p := range m.sinks["crm"].worker.ownedPartitions() {
			if p.state.Load() == stateRunning {
				return nil
			}
		}
		return fmt.Errorf("the worker does not consume the partition yet")
	})
	return m, stop
}

// record reads crm's park record of resource key (tenant.kind.id) on
// partition 0, as admin.
func (d *deniable) record(key string) (parkRecord, error) {
	kv, err := d.js.KeyValue(ctx, parkingBucketName("crm"))
	if err != nil {
		return parkRecord{}, err
	}
	e, err := kv.Get(ctx, "0."+key)
	if err != nil {
		return parkRecord{}, err
	}
	var r parkRecord
	err = json.Unmarshal(e.Value(), &r)
	return r, err
}

// TestOverflowWhileASliceIsOutLosesNothing: a resource's first event is
// out for delivery when its later ones outgrow the lane, which parks the
// resource from enqueue. The first event then fails, and its own park
// write is refused, so the worker holds it in memory, unacknowledged; the
// worker stops, and another takes the partition over from the ack floor
// and the record in the bucket. The record must start at the event that
// was out: one starting after it made the next owner acknowledge that
// event unread (the resource parked) and deliver the rest without it.
func TestOverflowWhileASliceIsOutLosesNothing(t *testing.T) {
	d := deniableServer(t)
	l := newLedger()
	out := make(chan struct{})
	release := make(chan struct{})
	var broken, first atomic.Bool
	broken.Store(true)
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		return l.admit(r, func(subject string, seq uint64) int {
			if subject != "Users/x" || seq != 1 || !broken.Load() {
				return 204
			}
			if first.CompareAndSwap(false, true) {
				close(out)
				<-release // the slice stays out while the lane overflows
			}
			return 503
		})
	})
	// One retry, ten minutes later: the held event is not tried again here.
	cfg := sinkConfig("crm", rc.URL, func(c *Config) { c.Timeout = 30 * time.Second; c.Retry = Schedule{10 * time.Minute} })
	logs := &eventstest.Log{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	o := Options{Sinks: []Config{cfg}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat, LaneLimit: 3,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	m, stop := d.worker(o)

	p := newPublisher(t, d.js)
	p.publish("acme", events.UserCreated, "x")
	select {
	case <-out:
	case <-time.After(10 * time.Second):
		t.Fatal("the first event never reached the receiver")
	}
	for range 5 {
		p.publish("acme", events.UserUpdated, "x")
	}
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		_, err := d.record("acme.user.x")
		return err // the burst's park, written while the first event is out
	})
	d.denyParking(true)
	close(release)
	// The failed event's park is refused (no answer: its 5 s timeout), so
	// the worker holds it in memory.
	eventstest.CheckFor(t, 15*time.Second, 5*time.Millisecond, func() error {
		if !holding(m, "acme.user.x") {
			return fmt.Errorf("the worker does not hold the resource in memory")
		}
		return nil
	})
	st, err := d.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := st.GetLastMsgForSubject(ctx, "scimrelay.acme.user.created.x.0")
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := d.record("acme.user.x"); err != nil || rec.From != e1.Sequence {
		// Said, not fatal: what follows shows what becomes of it.
		t.Errorf("the record in the bucket: %+v (%v); want it from the event that was out, %d", rec, err, e1.Sequence)
	}
	stop()
	d.denyParking(false)
	broken.Store(false)
	d.worker(o)
	l.wantDelivered(t, expect{"Users/x": 6}, 30*time.Second, false)
}

// TestOverflowWhileASliceIsOutRepeatsNothing: as above, but the event that
// was out is delivered, and the worker stops while the resource's next
// event, read back, is out. The record was moved past the delivered event
// when it was delivered: the next owner starts at the one that was out,
// and nothing arrives twice.
func TestOverflowWhileASliceIsOutRepeatsNothing(t *testing.T) {
	d := deniableServer(t)
	l := newLedger()
	out1, out2 := make(chan struct{}), make(chan struct{})
	release1, release2 := make(chan struct{}), make(chan struct{})
	var first1, first2 atomic.Bool
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		return l.admit(r, func(subject string, seq uint64) int {
			switch {
			case subject == "Users/x" && seq == 1 && first1.CompareAndSwap(false, true):
				close(out1)
				<-release1 // out while the lane overflows, then delivered
			case subject == "Users/x" && seq == 2 && first2.CompareAndSwap(false, true):
				close(out2)
				<-release2 // out while the worker stops: not delivered
				return 503
			}
			return 204
		})
	})
	cfg := sinkConfig("crm", rc.URL, func(c *Config) { c.Timeout = 30 * time.Second })
	o := Options{Sinks: []Config{cfg}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat, LaneLimit: 3}
	_, stop := d.worker(o)

	p := newPublisher(t, d.js)
	p.publish("acme", events.UserCreated, "x")
	wait := func(c <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never reached the receiver", what)
		}
	}
	wait(out1, "the first event")
	for range 5 {
		p.publish("acme", events.UserUpdated, "x")
	}
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		_, err := d.record("acme.user.x")
		return err
	})
	close(release1)
	wait(out2, "the second event")
	st, err := d.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := st.GetLastMsgForSubject(ctx, "scimrelay.acme.user.updated.x.0")
	if err != nil {
		t.Fatal(err)
	}
	// The last update is the sixth event: the second is four before it.
	if rec, err := d.record("acme.user.x"); err != nil || rec.From != e2.Sequence-4 {
		t.Errorf("the record in the bucket: %+v (%v); want it past the delivered event, from %d", rec, err, e2.Sequence-4)
	}
	stop() // a hand-over: the request in flight is abandoned after its time
	close(release2)
	d.worker(o)
	l.wantDelivered(t, expect{"Users/x": 6}, 30*time.Second, false)
}

// queued returns how many of resource key's messages m's partitions hold
// in its lane's queue.
func queued(m *Manager, key string) int {
	n := 0
	for _, p := range m.sinks["crm"].worker.ownedPartitions() {
		p.mu.Lock()
		if l, ok := p.lanes[key]; ok {
			n += len(l.queue)
		}
		p.mu.Unlock()
	}
	return n
}

// TestHeldLaneTakesNoRedeliveredCopy: a batching worker holds a
// resource's events in memory (its park cannot be written) when the
// consumer is reset to its ack floor under it, so that copies of the held
// events queue behind them. The next batch carries each event once.
func TestHeldLaneTakesNoRedeliveredCopy(t *testing.T) {
	d := deniableServer(t)
	l := newLedger()
	var broken atomic.Bool
	broken.Store(true)
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		return l.admitBatch(t, r, func(es []event.Event) int {
			if broken.Load() {
				for _, e := range es {
					if e.Subject() == "Users/x" {
						return 503
					}
				}
			}
			return 204
		})
	})
	retry := make(Schedule, 60)
	for i := range retry {
		retry[i] = 300 * time.Millisecond
	}
	cfg := sinkConfig("crm", rc.URL, func(c *Config) {
		c.Retry = retry
		c.Format = ""
		c.Batch = &Batch{MaxEvents: 50, MaxWait: 20 * time.Millisecond}
	})
	o := Options{Sinks: []Config{cfg}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat}
	d.denyParking(true)
	m, _ := d.worker(o)
	p := newPublisher(t, d.js)
	p.publish("acme", events.UserCreated, "x")
	p.publish("acme", events.UserUpdated, "x")
	eventstest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if !holding(m, "acme.user.x") || queued(m, "acme.user.x") != 2 {
			return fmt.Errorf("the worker does not hold both events in memory (%d queued)", queued(m, "acme.user.x"))
		}
		return nil
	})
	if _, err := d.js.ResetConsumer(ctx, events.StreamName, consumerName("crm", 0)); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if n := queued(m, "acme.user.x"); n < 4 {
			return fmt.Errorf("%d of the resource's messages queued, want the copies too", n)
		}
		return nil
	})
	broken.Store(false)
	l.wantDelivered(t, expect{"Users/x": 2}, 20*time.Second, false)
}
