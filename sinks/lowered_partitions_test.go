// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// supervised is a delivery worker run as Compose or Kubernetes runs it:
// when Run returns (the stream's partitions changed) it is started again,
// on a connection of its own.
type supervised struct {
	mu       sync.Mutex
	m        *Manager
	restarts int
}

func superviseWorker(t testing.TB, o Options, url string) *supervised {
	s := &supervised{}
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for runCtx.Err() == nil {
			o := o
			_, o.JS = eventstest.Connect(t, url)
			o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
			m, err := NewManager(o)
			if err == nil {
				err = m.Setup(runCtx)
			}
			if err != nil {
				if runCtx.Err() == nil {
					t.Error(err)
				}
				return
			}
			s.mu.Lock()
			s.m = m
			s.mu.Unlock()
			err = m.Run(runCtx)
			s.mu.Lock()
			if err != nil {
				s.restarts++
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

func (s *supervised) state() (*Manager, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m, s.restarts
}

// waitDividing waits until the workers consume n partitions between them.
func waitDividing(t testing.TB, n int, ws ...*supervised) {
	t.Helper()
	eventstest.CheckFor(t, 40*time.Second, 20*time.Millisecond, func() error {
		total := 0
		for i, w := range ws {
			m, _ := w.state()
			if m == nil {
				return fmt.Errorf("worker %d not set up", i)
			}
			m.mu.RLock()
			wk := m.sinks["crm"].worker
			m.mu.RUnlock()
			if wk.partitions != n {
				return fmt.Errorf("worker %d divides %d partitions", i, wk.partitions)
			}
			for _, p := range wk.ownedPartitions() {
				if p.state.Load() == stateRunning {
					total++
				}
			}
		}
		if total != n {
			return fmt.Errorf("the workers consume %d partitions, want %d", total, n)
		}
		return nil
	})
}

// frontEndStartsWith does what a SCIM front end started with
// nats.stream.partitions n does before it publishes: it sets the stream's
// partitions, then sets up the sinks (their consumers, and the removal of
// those beyond n).
func frontEndStartsWith(t testing.TB, url string, n int, cfg Config) {
	t.Helper()
	_, js := eventstest.Connect(t, url)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Partitions: n}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	fe, err := NewManager(Options{Sinks: []Config{cfg}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
	if err != nil {
		t.Fatal(err)
	}
	if err := fe.Setup(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLoweredPartitionsWhileAWorkerJoinsRepeatNothing: one delivery worker
// (role sinks) has delivered every event; a second joins (a rolling
// update, a scale-up), and meanwhile the front end is started again with
// nats.stream.partitions lowered from 16 to 8, the backlog drained as
// README asks, which removes crm's consumers P8…P15. No event is delivered
// twice, and once the workers divide 8 partitions crm has no consumer
// beyond them.
func TestLoweredPartitionsWhileAWorkerJoinsRepeatNothing(t *testing.T) {
	s := eventstest.RunServer(t)
	url := eventstest.URL(s)
	_, js := eventstest.Connect(t, url)
	l := newLedger()
	rc := slowReceiver(t, l, time.Millisecond, nil)
	cfg := sinkConfig("crm", rc.URL, nil)
	frontEndStartsWith(t, url, 16, cfg)
	o := Options{Sinks: []Config{cfg}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat, OpenOnly: true}
	w1 := superviseWorker(t, o, url)
	waitDividing(t, 16, w1)
	p := newPublisher(t, js)
	want := provision(p, "a", 200, 2, 0, 0)
	l.wantDelivered(t, want, 30*time.Second, false) // the backlog drained

	w2 := superviseWorker(t, o, url)
	eventstest.CheckFor(t, 20*time.Second, time.Millisecond, func() error {
		if m, _ := w2.state(); m == nil {
			return errors.New("the second worker has not started")
		}
		return nil
	})
	frontEndStartsWith(t, url, 8, cfg)
	// Each worker sees the change within 10 s, stops and is started again.
	eventstest.CheckFor(t, 40*time.Second, 50*time.Millisecond, func() error {
		_, r1 := w1.state()
		_, r2 := w2.state()
		if r1 == 0 || r2 == 0 {
			return fmt.Errorf("restarts: %d, %d", r1, r2)
		}
		return nil
	})
	waitDividing(t, 8, w1, w2)
	for k, v := range provision(p, "b", 50, 2, 0, 0) {
		want[k] += v
	}
	l.wantDelivered(t, want, 30*time.Second, true)
	if r := l.repeats(); len(r) > 0 {
		t.Errorf("%d events delivered twice after a graceful hand-over, e.g. %s", len(r), r[0])
	}

	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var stale []string
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		if n, ok := consumerOf("crm", name); ok && n >= 8 {
			stale = append(stale, name)
		}
	}
	if len(stale) > 0 {
		t.Errorf("the stream has 8 partitions, and crm has consumers beyond them again: %v", stale)
	}
}
