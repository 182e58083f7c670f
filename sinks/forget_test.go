// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// sinkState is what a sink has in NATS, as a test reads it.
type sinkState struct {
	consumers   int
	bucket      bool
	deadLetters uint64
	attempts    uint64
}

func stateOf(t testing.TB, m *Manager, sink string) sinkState {
	t.Helper()
	var st sinkState
	names := m.shared.stream.ConsumerNames(ctx)
	for c := range names.Name() {
		if _, ok := consumerOf(sink, c); ok {
			st.consumers++
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	_, err := m.o.JS.KeyValue(ctx, parkingBucketName(sink))
	switch {
	case err == nil:
		st.bucket = true
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		t.Fatal(err)
	}
	if st.deadLetters, err = m.dlq.count(ctx, sink); err != nil {
		t.Fatal(err)
	}
	if st.attempts, err = countAttempts(ctx, m.o.JS, sink, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	return st
}

// stuckParked fails unless crm has parked Users/stuck.
func stuckParked(js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, parkingBucketName("crm"))
	if err != nil {
		return err
	}
	keys, err := kv.ListKeysFiltered(ctx, "*.acme.user.stuck")
	if err != nil {
		return err
	}
	defer func() { _ = keys.Stop() }()
	for range keys.Keys() {
		return nil
	}
	return errors.New("Users/stuck is not parked")
}

// TestForgetDeletesWhatARemovedSinkLeft: a removed sink's consumers (and
// the events they held for it), its parking bucket (a parked resource's
// record, its claims), its dead letters and delivery attempts are deleted
// and counted; the other sink's are not touched; a configured sink, or a
// name with nothing stored, is refused and nothing deleted.
func TestForgetDeletesWhatARemovedSinkLeft(t *testing.T) {
	js := natsStream(t)
	respond := func(stuck bool) func(int, *http.Request) int {
		return func(_ int, r *http.Request) int {
			switch {
			case strings.HasSuffix(r.Header.Get("ce-subject"), "/dead"):
				return http.StatusGone // dead-lettered at once
			case stuck && strings.HasSuffix(r.Header.Get("ce-subject"), "/stuck"):
				return http.StatusServiceUnavailable // parked
			}
			return http.StatusNoContent
		}
	}
	crm, erp := newReceiver(t, respond(true)), newReceiver(t, respond(false))
	erpCfg := sinkConfig("erp", erp.URL, nil)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", crm.URL, func(c *Config) { c.Retry = Schedule{10 * time.Minute} }), erpCfg},
		JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
	p := newPublisher(t, js)
	for _, id := range []string{"u1", "dead", "stuck", "u2"} {
		p.publish("acme", events.UserCreated, id)
	}
	// (Polled without counting attempts: each count makes a consumer.)
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, sink := range []string{"crm", "erp"} {
			if n, err := m.dlq.count(ctx, sink); err != nil || n != 1 {
				return fmt.Errorf("%s has %d dead letters (%v), want 1", sink, n, err)
			}
		}
		if parked := stuckParked(js); parked != nil {
			return parked
		}
		return nil
	})
	if _, err := m.Apply(ctx, []Config{erpCfg}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u1", "u3", "u4"} { // kept for crm by its consumers
		p.publish("acme", events.UserUpdated, id)
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := len(erp.requests()); got != 7 {
			return fmt.Errorf("erp received %d requests, want 7", got)
		}
		return nil
	})
	// A delivery's attempt is written once the receiver has answered, and
	// without waiting for NATS: the receiver has its request before the
	// attempt is stored. Wait for erp's seven before taking the states the
	// rest compares with (erp's last ones landed after, and it "changed").
	var crmBefore, erpBefore sinkState
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		crmBefore, erpBefore = stateOf(t, m, "crm"), stateOf(t, m, "erp")
		if erpBefore.attempts != 7 || crmBefore.attempts < 3 {
			return fmt.Errorf("%d attempts of erp stored, want its 7; crm %d, want at least 3", erpBefore.attempts, crmBefore.attempts)
		}
		return nil
	})
	if want := (sinkState{consumers: m.shared.partitions, bucket: true, deadLetters: 1, attempts: crmBefore.attempts}); crmBefore != want || crmBefore.attempts < 3 {
		t.Fatalf("crm, removed, has %+v; want %+v and at least 3 attempts", crmBefore, want)
	}

	for _, refused := range []struct {
		name string
		want error
	}{{"erp", ErrSinkConfigured}, {"nope", ErrUnknownSink}, {"Crm", ErrUnknownSink}} {
		if _, err := m.Forget(ctx, refused.name); !errors.Is(err, refused.want) {
			t.Errorf("Forget(%s): %v, want %v", refused.name, err, refused.want)
		}
	}
	if now := stateOf(t, m, "erp"); now != erpBefore {
		t.Fatalf("erp has %+v after a refused Forget, had %+v", now, erpBefore)
	}
	if now := stateOf(t, m, "crm"); now != crmBefore {
		t.Fatalf("crm has %+v after a refused Forget, had %+v", now, crmBefore)
	}

	got, err := m.Forget(ctx, "crm")
	if err != nil {
		t.Fatal(err)
	}
	want := Forgotten{Sink: "crm", Consumers: m.shared.partitions, Undelivered: 3, Buckets: 1, Parked: 1, DeadLetters: 1, Attempts: crmBefore.attempts}
	if got != want {
		t.Errorf("Forget(crm) = %+v, want %+v", got, want)
	}
	if now := stateOf(t, m, "crm"); now != (sinkState{}) {
		t.Errorf("crm has %+v after Forget, want nothing", now)
	}
	if now := stateOf(t, m, "erp"); now != erpBefore {
		t.Errorf("erp has %+v after crm's Forget, had %+v", now, erpBefore)
	}
	if _, err := m.Forget(ctx, "crm"); !errors.Is(err, ErrUnknownSink) {
		t.Errorf("Forget(crm) again: %v, want %v", err, ErrUnknownSink)
	}
}

// TestForgottenSinkAddedBackStartsAfresh: a sink added back after Forget
// gets the events from the reload that added it, not those its removed
// namesake's consumers kept (without Forget it would resume where it
// stopped: TestRemovedSinkAddedBackResumesWhereItStopped).
func TestForgottenSinkAddedBackStartsAfresh(t *testing.T) {
	js := natsStream(t)
	before, after, erp := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	erpCfg := sinkConfig("erp", erp.URL, nil)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", before.URL, nil), erpCfg}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
	p := newPublisher(t, js)
	first := p.publish("acme", events.UserCreated, "u1")
	wantIDs(t, "crm", before, first)
	if _, err := m.Apply(ctx, []Config{erpCfg}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u2", "u3", "u4"} {
		p.publish("acme", events.UserCreated, id)
	}
	if _, err := m.Forget(ctx, "crm"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, []Config{erpCfg, sinkConfig("crm", after.URL, nil)}); err != nil {
		t.Fatal(err)
	}
	later := p.publish("acme", events.UserCreated, "u5")
	wantIDs(t, "crm added back", after, later)
	// Its consumers have nothing more for it: anything kept would have
	// been delivered by now.
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		for n := range m.shared.partitions {
			c, err := js.Consumer(ctx, events.StreamName, consumerName("crm", n))
			if err != nil {
				return err
			}
			if info := c.CachedInfo(); info.NumPending+uint64(info.NumAckPending) > 0 {
				return fmt.Errorf("partition %d holds %d events for crm", n, info.NumPending+uint64(info.NumAckPending))
			}
		}
		return nil
	})
	if got := ids(after); !slices.Equal(got, []string{later}) {
		t.Errorf("crm, forgotten and added back, received %v; want only %v, published after", got, later)
	}
}

// TestForgetRefusesASinkAWorkerStillRuns: a process not yet reloaded
// without the sink still delivers it, and would make its consumers again:
// Forget through another process is refused and deletes nothing, until
// that process is reloaded too.
func TestForgetRefusesASinkAWorkerStillRuns(t *testing.T) {
	s, _, _ := natsServer(t)
	rc := newReceiver(t, nil)
	crm, erp := sinkConfig("crm", rc.URL, nil), sinkConfig("erp", rc.URL, nil)
	ms, _ := startWorkers(t, Options{Sinks: []Config{crm, erp}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat}, eventstest.URL(s), 2)
	if _, err := ms[0].Apply(ctx, []Config{erp}); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, ms[0], "crm")
	if !before.bucket || before.consumers != ms[0].shared.partitions {
		t.Fatalf("crm has %+v", before)
	}
	_, err := ms[0].Forget(ctx, "crm")
	if !errors.Is(err, ErrSinkRunning) || !strings.Contains(err.Error(), ms[1].o.WorkerID) {
		t.Fatalf("Forget(crm) while the other process runs it: %v; want %v naming %s", err, ErrSinkRunning, ms[1].o.WorkerID)
	}
	if now := stateOf(t, ms[0], "crm"); now != before {
		t.Fatalf("crm has %+v after a refused Forget, had %+v", now, before)
	}
	if _, err := ms[1].Apply(ctx, []Config{erp}); err != nil {
		t.Fatal(err)
	}
	if _, err := ms[0].Forget(ctx, "crm"); err != nil {
		t.Fatalf("Forget(crm) once no process runs it: %v", err)
	}
	if now := stateOf(t, ms[0], "crm"); now != (sinkState{}) {
		t.Errorf("crm has %+v after Forget, want nothing", now)
	}
}
