// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestGaugesKeepTheirValuesWhileNATSIsAway: while NATS is away the
// backlog, oldest age and dead-letter gauges keep the values last read,
// before and after the worker's lease lapses and it lets its partitions
// go, instead of reading 0 (an alert on a growing backlog would clear
// just when delivery stops); the read timestamp stays at the last read
// that succeeded, so that its age says how stale they are, and moves on
// once NATS is back.
func TestGaugesKeepTheirValuesWhileNATSIsAway(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns, js := natsStreamAt(t, dir, port)
	// "gone" is refused for good (a dead letter), "down-*" fail until a
	// retry ten minutes later (parked), "slow" is held while the test runs (in
	// flight, and its later events wait in the consumer: pending).
	held := make(chan struct{})
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		switch subject := r.Header.Get("ce-subject"); {
		case strings.HasSuffix(subject, "/gone"):
			return http.StatusGone
		case strings.HasSuffix(subject, "/slow"):
			select {
			case <-held:
			case <-r.Context().Done():
			}
			return http.StatusServiceUnavailable
		}
		return http.StatusServiceUnavailable
	})
	reg := prometheus.NewRegistry()
	m, stop := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) {
		c.Retry, c.Timeout = Schedule{10 * time.Minute}, 5*time.Minute
	})}, JS: js, Registerer: reg, Heartbeat: fastHeartbeat, MaxAckPending: 2})
	release := sync.OnceFunc(func() { close(held) })
	t.Cleanup(release) // before the manager stops
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "gone")
	for i := range 3 {
		p.publish("acme", events.UserCreated, fmt.Sprint("down-", i))
	}
	gauges := []struct {
		name string
		g    prometheus.Gauge
	}{
		{"pending", m.metrics.backlog.WithLabelValues("crm", "pending")},
		{"in_flight", m.metrics.backlog.WithLabelValues("crm", "in_flight")},
		{"parked", m.metrics.backlog.WithLabelValues("crm", "parked")},
		{"oldest undelivered age", m.metrics.oldest.WithLabelValues("crm")},
		{"dead letters", m.metrics.deadLetters.WithLabelValues("crm")},
	}
	read := m.metrics.stateRead.WithLabelValues("crm")
	allSet := func(when string) error {
		var zero []string
		for _, g := range gauges {
			if testutil.ToFloat64(g.g) == 0 {
				zero = append(zero, g.name)
			}
		}
		if len(zero) > 0 {
			return fmt.Errorf("%s: %v read 0", when, zero)
		}
		return nil
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got := testutil.ToFloat64(m.metrics.backlog.WithLabelValues("crm", "parked")); got < 3 {
			m.observeBacklog(ctx, m.runtimes())
			return fmt.Errorf("%v resources parked, want 3", got)
		}
		return nil
	})
	for range 3 {
		p.publish("acme", events.UserCreated, "slow")
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		m.observeBacklog(ctx, m.runtimes())
		return allSet("before the outage")
	})
	lastRead := testutil.ToFloat64(read)
	if lastRead == 0 {
		t.Fatal("the gauges were read, but the read timestamp was not set")
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	w := m.sinks["crm"].worker
	passes := []struct {
		when  string
		ready func() error
	}{
		{"NATS away, partitions still owned", func() error { return nil }},
		{"NATS away, the lease lapsed and the partitions let go", func() error {
			if n := w.ownedCount(); n > 0 {
				return fmt.Errorf("the worker still owns %d partitions", n)
			}
			return nil
		}},
	}
	for _, pass := range passes {
		eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, pass.ready)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		m.observeBacklog(pctx, m.runtimes())
		cancel()
		if err := allSet(pass.when); err != nil {
			t.Error(err)
		}
		if got := testutil.ToFloat64(read); got != lastRead {
			t.Errorf("%s: read timestamp %v, want %v, the last read that succeeded", pass.when, got, lastRead)
		}
	}

	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		m.observeBacklog(pctx, m.runtimes())
		if got := testutil.ToFloat64(read); got <= lastRead {
			return errors.New("NATS is back, and the read timestamp has not moved")
		}
		return nil
	})
	// While NATS is up: the restarted server's cleanup runs before the
	// manager's, which would then hand over through an outage.
	release()
	stop()
}

// TestPartitionsGaugeFollowsALapsedLease: scimrelay_sink_partitions is
// "partitions the worker owns". A worker cut off from NATS past its lease
// lets every partition go (another worker takes them over), and the gauge
// must say 0, not the count it owned before.
func TestPartitionsGaugeFollowsALapsedLease(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns, js := natsStreamAt(t, dir, port)
	rc := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	m, stop := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, Registerer: reg, Heartbeat: fastHeartbeat})
	g := m.metrics.partitions.WithLabelValues("crm")
	w := m.sinks["crm"].worker
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := testutil.ToFloat64(g); got == 0 || int(got) != w.ownedCount() {
			return fmt.Errorf("partitions gauge %v, owned %d", got, w.ownedCount())
		}
		return nil
	})
	before := testutil.ToFloat64(g)

	ns.Shutdown()
	ns.WaitForShutdown()
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := w.ownedCount(); n > 0 {
			return fmt.Errorf("the worker still owns %d partitions", n)
		}
		return nil
	})
	// The gauge is set at each heartbeat (every 100 ms here): a few of
	// them after the worker let its partitions go.
	eventstest.CheckFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if got := testutil.ToFloat64(g); got != 0 {
			return fmt.Errorf("the lease lapsed and the worker owns %d partitions; scimrelay_sink_partitions says %v (it said %v before)", w.ownedCount(), got, before)
		}
		return nil
	})
	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if w.ownedCount() == 0 {
			return errors.New("not taken back")
		}
		return nil
	})
	stop()
}

// TestIdleAddedSinkIsSeenByTheStateAlert: a reload that adds a sink whose
// setup fails (a worker's reload before the front end's: README, "a reload
// that adds a sink waits ... then fails, leaving the sink idle until the
// next reload") leaves a configured sink that delivers nothing while its
// events age in the stream. ScimrelaySinkStateStale (time() -
// scimrelay_sink_state_read_timestamp_seconds > 60) is the alert for a
// sink whose state is not read; it fires for a changed sink left idle (its
// last read stays), and must fire for an added one too: the series must
// exist for the expression to match.
func TestIdleAddedSinkIsSeenByTheStateAlert(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(int, *http.Request) int { return 200 })
	crm, erp := sinkConfig("crm", rc.URL, nil), sinkConfig("erp", rc.URL, nil)
	front, err := NewManager(Options{Sinks: []Config{crm}, JS: js})
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	worker, _ := runManager(t, Options{Sinks: []Config{crm}, JS: js, OpenOnly: true, Registerer: reg, Heartbeat: fastHeartbeat})
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := worker.Apply(short, []Config{crm, erp}); err == nil || !strings.Contains(err.Error(), "sink erp") {
		t.Fatalf("the worker's reload adding erp before the front end's: %v, want erp's setup failed", err)
	}
	if err := worker.Ready(ctx); err == nil || !strings.Contains(err.Error(), "erp") {
		t.Fatalf("Ready: %v, want erp not set up", err)
	}
	// Its status (sinks list, the console's sink page) says so, and not
	// that nothing waits for it (it said 0 events waiting while the
	// front end's consumers held them: a review of the console on a worker).
	if st, err := worker.Status(ctx, "erp"); err != nil || !st.NotSetUp {
		t.Errorf("the worker's status of erp, which it has not set up: %+v, %v; want it marked not set up", st, err)
	}
	if st, err := worker.Status(ctx, "crm"); err != nil || st.NotSetUp {
		t.Errorf("the worker's status of crm, which it delivers: %+v, %v", st, err)
	}
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		worker.observeBacklog(ctx, worker.runtimes())
		if got := seriesOf(t, reg, "crm"); !slices.Contains(got, "scimrelay_sink_state_read_timestamp_seconds{}") {
			return fmt.Errorf("crm's series: %v", got)
		}
		return nil
	})
	worker.observeBacklog(ctx, worker.runtimes())
	if got := seriesOf(t, reg, "erp"); !slices.Contains(got, "scimrelay_sink_state_read_timestamp_seconds{}") {
		t.Errorf("sink erp is configured and idle (its setup failed); ScimrelaySinkStateStale cannot fire for it: it has no scimrelay_sink_state_read_timestamp_seconds, only %v", got)
	}
}
