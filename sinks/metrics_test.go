// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
