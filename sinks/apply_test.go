// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// ids returns the webhook-ids a receiver got, in order.
func ids(rc *receiver) []string {
	var out []string
	for _, r := range rc.requests() {
		out = append(out, r.header.Get("webhook-id"))
	}
	return out
}

// TestApply changes the sinks of a running manager: an unchanged sink keeps
// its worker and delivers on; a changed one delivers with its new
// configuration from then on; an added one receives the events after it;
// a removed one receives nothing more; a configuration Check refuses
// changes nothing.
func TestApply(t *testing.T) {
	js := natsStream(t)
	a, b, b2, c := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	m, _ := runSinks(t, js, 0, sinkConfig("a", a.URL, nil), sinkConfig("b", b.URL, nil))
	pub := newPublisher(t, js)
	want := func(what string, r *receiver, want ...string) {
		t.Helper()
		eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
			if got := ids(r); !slices.Equal(got, want) {
				return fmt.Errorf("%s received %v, want %v", what, got, want)
			}
			return nil
		})
	}
	e1 := pub.publish("acme", events.UserCreated, "u1")
	want("a", a, e1)
	want("b", b, e1)
	wa := m.sinks["a"].worker

	ch, err := m.Apply(ctx, []Config{sinkConfig("a", a.URL, nil), sinkConfig("b", b2.URL, nil), sinkConfig("c", c.URL, nil)})
	if err != nil || !slices.Equal(ch.Added, []string{"c"}) || !slices.Equal(ch.Changed, []string{"b"}) || len(ch.Removed) != 0 {
		t.Fatalf("Apply: %+v, %v", ch, err)
	}
	if m.sinks["a"].worker != wa {
		t.Error("sink a did not change, but its worker was replaced")
	}
	e2 := pub.publish("acme", events.UserCreated, "u2")
	want("a", a, e1, e2)
	want("b at its new URL", b2, e2)
	want("c, added", c, e2)
	if got := ids(b); len(got) != 1 {
		t.Errorf("b's old URL received %v after the change", got)
	}

	ch, err = m.Apply(ctx, []Config{sinkConfig("c", c.URL, nil)})
	if err != nil || !slices.Equal(ch.Removed, []string{"a", "b"}) {
		t.Fatalf("Apply: %+v, %v", ch, err)
	}
	e3 := pub.publish("acme", events.UserCreated, "u3")
	want("c", c, e2, e3)
	if got := ids(a); len(got) != 2 {
		t.Errorf("removed sink a received %v", got)
	}
	if _, err := m.Status(ctx, "a"); err == nil {
		t.Error("a removed sink still has a status")
	}

	if _, err := m.Apply(ctx, []Config{sinkConfig("c", "ftp://nowhere", nil)}); err == nil {
		t.Fatal("Apply took a configuration Check refuses")
	}
	e4 := pub.publish("acme", events.UserCreated, "u4")
	want("c, after a refused Apply", c, e2, e3, e4)
	if err := m.Ready(ctx); err != nil {
		t.Errorf("not ready after the changes: %v", err)
	}

	// A sink whose setup fails stays configured and idle; the next Apply
	// of the same list sets it up, and says so. It starts with the events
	// stored from the Apply that added it, not from the one that set it
	// up, nor from one that changed it while idle: those stored in
	// between reach it too, an event made before that Apply but stored
	// after it included (an outbox's backlog, published when NATS came
	// back: docs/decisions.md, Delivery).
	d := newReceiver(t, nil)
	e5 := pub.publish("acme", events.UserCreated, "u5")
	want("c", c, e2, e3, e4, e5)
	backlog, e6 := pub.next("acme", events.UserCreated, "u6")
	gone, cancel := context.WithCancel(ctx)
	cancel()
	list := []Config{sinkConfig("c", c.URL, nil), sinkConfig("d", d.URL, nil)}
	if ch, err := m.Apply(gone, list); err == nil || !slices.Equal(ch.Added, []string{"d"}) {
		t.Fatalf("Apply with its context ended: %+v, %v; want d added and its setup failed", ch, err)
	}
	if _, err := js.PublishMsg(ctx, backlog, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	list[1].Concurrency = 4
	if ch, err := m.Apply(gone, list); err == nil || !slices.Equal(ch.Changed, []string{"d"}) {
		t.Fatalf("Apply changing idle d with its context ended: %+v, %v; want d changed and its setup failed", ch, err)
	}
	e7 := pub.publish("acme", events.UserUpdated, "u6")
	want("c", c, e2, e3, e4, e5, e6, e7)
	if ch, err := m.Apply(ctx, list); err != nil || !slices.Equal(ch.Restarted, []string{"d"}) || len(ch.Added)+len(ch.Changed)+len(ch.Removed) != 0 {
		t.Fatalf("Apply of the same list: %+v, %v; want d started again and nothing else", ch, err)
	}
	want("d, set up again, the events since it was added", d, e6, e7)
	e8 := pub.publish("acme", events.UserCreated, "u8")
	want("d", d, e6, e7, e8)
	want("c, untouched", c, e2, e3, e4, e5, e6, e7, e8)
}

// seriesOf returns the series reg holds for a sink, as name{state} (or
// name{outcome}).
func seriesOf(t *testing.T, reg *prometheus.Registry, sink string) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["sink"] == sink {
				out = append(out, f.GetName()+"{"+labels["state"]+labels["outcome"]+"}")
			}
		}
	}
	return out
}

// TestRemovedSinkGaugesStayGone: a removed sink's series go, its
// counters and histogram too (a soak review found them kept for the life
// of the process), and a backlog pass that took its list of sinks before
// Apply removed one does not bring the removed sink's series back, and
// still sets the others'.
func TestRemovedSinkGaugesStayGone(t *testing.T) {
	js := natsStream(t)
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("a", a.URL, nil), sinkConfig("b", b.URL, nil)}, JS: js, Registerer: reg})
	before := m.runtimes() // what a pass under way works from
	// A worker not yet among its sink's workers has no figures to show.
	deliverOne(t, m, js, a)
	m.observeBacklog(ctx, before)
	if got := seriesOf(t, reg, "a"); !slices.Contains(got, "scimrelay_sink_backlog{pending}") ||
		!slices.Contains(got, "scimrelay_sink_events_total{delivered}") || !slices.Contains(got, "scimrelay_sink_delivery_duration_seconds{}") {
		t.Fatalf("sink a's series before its removal: %v", got)
	}
	// Every outcome is exported from 0, so that increase() sees the first
	// dead letter or foreign message.
	for _, o := range []string{"delivered", "retry", "dead_lettered", "filtered", "purged", "duplicate", "redriven", "replayed", "not_published"} {
		if got := seriesOf(t, reg, "b"); !slices.Contains(got, "scimrelay_sink_events_total{"+o+"}") {
			t.Fatalf("sink b's outcome %s is not exported before it happens: %v", o, got)
		}
	}

	if _, err := m.Apply(ctx, []Config{sinkConfig("b", b.URL, nil)}); err != nil {
		t.Fatal(err)
	}
	if got := seriesOf(t, reg, "a"); len(got) > 0 {
		t.Fatalf("Apply removed sink a but left its series %v", got)
	}
	m.metrics.backlog.DeletePartialMatch(prometheus.Labels{"sink": "b"})
	m.observeBacklog(ctx, before)
	if got := seriesOf(t, reg, "a"); len(got) > 0 {
		t.Errorf("removed sink a's series came back: %v", got)
	}
	if got := seriesOf(t, reg, "b"); !slices.Contains(got, "scimrelay_sink_backlog{pending}") {
		t.Errorf("the pass did not set kept sink b's backlog: %v", got)
	}
}

// TestOldestStoredLooksUpOnlyWhatCanBeOldest: the oldest waiting event is
// found among places whose first message may lie past them (a parked
// resource whose record moved on), and no place from the oldest found
// sequence on is looked up: with thousands of resources parked, the
// backlog gauge costs a lookup or two, not one per resource.
func TestOldestStoredLooksUpOnlyWhatCanBeOldest(t *testing.T) {
	base := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	// The first message at or after each place, by filter.
	next := map[string]uint64{"a": 50, "b": 20, "c": 30, "d": 0}
	var asked []string
	first := func(at parkedAt) (uint64, time.Time, error) {
		asked = append(asked, at.filter)
		seq := next[at.filter]
		if seq == 0 {
			return 0, time.Time{}, nil
		}
		return seq, base.Add(time.Duration(seq) * time.Second), nil
	}
	waiting := []parkedAt{{from: 25, filter: "c"}, {from: 5, filter: "d"}, {from: 10, filter: "a"}, {from: 20, filter: "b"}}
	for i := range 1000 {
		waiting = append(waiting, parkedAt{from: 100 + uint64(i), filter: "many"})
	}
	if got, err := oldestStored(waiting, first); err != nil || !got.Equal(base.Add(20*time.Second)) {
		t.Fatalf("oldest %v, %v; want %v (sequence 20)", got, err, base.Add(20*time.Second))
	}
	if !slices.Equal(asked, []string{"d", "a", "b"}) {
		t.Fatalf("looked up %v, want d (nothing there), a (50), b (20), and nothing from 20 on", asked)
	}
	if got, err := oldestStored(nil, first); err != nil || !got.IsZero() {
		t.Fatalf("nothing waiting: oldest %v, %v", got, err)
	}
}

// TestApplyClosesTheConnectionsOfSinksItStops: the connections a removed
// sink kept to its receiver, and those of a changed sink's previous
// configuration, are closed once it stops, not left until they idle out.
func TestApplyClosesTheConnectionsOfSinksItStops(t *testing.T) {
	js := natsStream(t)
	var open, got [2]atomic.Int64 // per receiver: a, b
	receiverAt := func(i int) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			got[i].Add(1)
			w.WriteHeader(http.StatusNoContent)
		}))
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open[i].Add(1)
			case http.StateClosed, http.StateHijacked:
				open[i].Add(-1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		return srv.URL
	}
	a, b := receiverAt(0), receiverAt(1)
	m, _ := runSinks(t, js, 0, sinkConfig("a", a, nil), sinkConfig("b", b, nil))
	pub := newPublisher(t, js)
	for i := range 20 {
		pub.publish("acme", events.UserCreated, "u"+strconv.Itoa(i))
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got[0].Load() < 20 || got[1].Load() < 20 {
			return fmt.Errorf("a received %d events of 20, b %d", got[0].Load(), got[1].Load())
		}
		return nil
	})
	if open[0].Load() == 0 || open[1].Load() == 0 {
		t.Fatalf("no connection kept to the receivers (a %d, b %d)", open[0].Load(), open[1].Load())
	}

	// a removed; b changed (its concurrency), so it runs with a new client.
	if _, err := m.Apply(ctx, []Config{sinkConfig("b", b, func(c *Config) { c.Concurrency = 3 })}); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := open[0].Load(); n != 0 {
			return fmt.Errorf("the removed sink still holds %d connections to its receiver", n)
		}
		if n := open[1].Load(); n != 0 {
			return fmt.Errorf("the changed sink's previous client still holds %d connections", n)
		}
		return nil
	})
}

// TestRemovedSinkAddedBackResumesWhereItStopped: a sink removed from two
// workers keeps its consumers, so that added back it delivers the events
// made meanwhile, each once and every resource's in order, after those it
// had delivered, none of which comes again; a group's burst of member
// events among them, past what a lane holds, is read back from the stream.
func TestRemovedSinkAddedBackResumesWhereItStopped(t *testing.T) {
	s, _, js := natsServer(t)
	l := newLedger()
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		return l.admit(r, func(string, uint64) int { return 204 })
	})
	cfg := sinkConfig("crm", rc.URL, nil)
	logs := &eventstest.Log{}
	ms, _ := startWorkers(t, Options{Sinks: []Config{cfg}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}, eventstest.URL(s), 2)
	p := newPublisher(t, js)
	want := provision(p, "t", 30, 2, 2, 10)
	l.wantDelivered(t, want, 30*time.Second, false)

	apply := func(list []Config, check func(Changes) bool) {
		t.Helper()
		for i, m := range ms {
			if ch, err := m.Apply(ctx, list); err != nil || !check(ch) {
				t.Fatalf("worker %d: Apply: %+v, %v", i, ch, err)
			}
		}
	}
	apply(nil, func(ch Changes) bool { return slices.Equal(ch.Removed, []string{"crm"}) })
	before := len(rc.requests())
	for i := range 30 {
		id := fmt.Sprintf("t-u%04d", i)
		for _, a := range []events.Action{events.UserUpdated, events.UserDeactivated, events.UserReactivated} {
			p.publish("acme", a, id)
			want["Users/"+id]++
		}
	}
	for range 100 {
		p.publish("acme", events.GroupMemberAdded, "t-g00")
		want["Groups/t-g00"]++
	}
	if n := len(rc.requests()); n != before {
		t.Fatalf("the removed sink's receiver got %d requests after its removal", n-before)
	}

	apply([]Config{cfg}, func(ch Changes) bool { return slices.Equal(ch.Added, []string{"crm"}) })
	waitBalanced(t, ms...)
	l.wantDelivered(t, want, 60*time.Second, handOverCut(logs.String()))
}

// TestRemovingASinkWithDeadLettersWarns: a sink removed (or renamed) while
// its dead-letter queue holds events is named in a warning with their
// count and the redrive that delivers them to a configured sink, since
// nothing delivers them otherwise; a sink removed with none is not.
func TestRemovingASinkWithDeadLettersWarns(t *testing.T) {
	js := natsStream(t)
	logs := &eventstest.Log{}
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("a", a.URL, nil), sinkConfig("b", b.URL, nil)}, JS: js,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	for i := range 2 {
		id := fmt.Sprint("u", i)
		e, err := events.New(events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: id, Sequence: uint64(i + 1), SubjectSeq: 1, Time: time.Now()},
			events.Data{Tenant: "acme", ResourceType: "User", ID: id, Resource: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.dlq.put(ctx, "a", &e, origin{}, Result{Status: http.StatusGone}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Apply(ctx, []Config{sinkConfig("a2", a.URL, nil)}); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "a removed sink keeps dead letters") || !strings.Contains(out, "sink=a ") || !strings.Contains(out, "dead_letters=2") ||
		!strings.Contains(out, "scimrelay dlq redrive --sink a --to SINK --all") {
		t.Errorf("removing sink a with 2 dead letters logged:\n%s", out)
	}
	if strings.Contains(out, "sink=b ") {
		t.Errorf("removing sink b, which has no dead letters, warned:\n%s", out)
	}
}

// TestRemovingASinkWithABacklogWarns: a sink removed while events wait
// for it (its receiver down, its resources parked) is named in a warning
// with how many events and parked resources it keeps and how to get them
// delivered, since its metrics go with it; a sink removed with nothing
// waiting is not.
func TestRemovingASinkWithABacklogWarns(t *testing.T) {
	js := natsStream(t)
	logs := &eventstest.Log{}
	down := newReceiver(t, func(int, *http.Request) int { return http.StatusServiceUnavailable })
	up := newReceiver(t, nil)
	later := func(c *Config) { c.Retry = []time.Duration{30 * time.Minute} }
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("a", down.URL, later), sinkConfig("b", up.URL, nil)}, JS: js,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserCreated, "u2")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		a, err := m.Status(ctx, "a")
		if err != nil || a.Parked != 2 {
			return fmt.Errorf("sink a: %+v, %v", a, err)
		}
		if b, err := m.Status(ctx, "b"); err != nil || b.Pending+uint64(b.InFlight) > 0 || b.Attempts5m != 2 {
			return fmt.Errorf("sink b: %+v, %v", b, err)
		}
		return nil
	})
	if _, err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "a removed sink keeps undelivered events") || !strings.Contains(out, "sink=a ") || !strings.Contains(out, "parked_resources=2") ||
		!strings.Contains(out, "scimrelay sinks forget a --yes") {
		t.Errorf("removing sink a with 2 parked resources logged:\n%s", out)
	}
	if strings.Contains(out, "sink=b ") {
		t.Errorf("removing sink b, which has nothing waiting, warned:\n%s", out)
	}
}

// TestReplayOfARemovedSinkLeavesNoSeries: a replay under way when a reload
// removes its sink does not bring the sink's counters back once it
// delivers (a review: they came back for the life of the process).
func TestReplayOfARemovedSinkLeavesNoSeries(t *testing.T) {
	js := natsStream(t)
	inReplay, release := make(chan struct{}), make(chan struct{})
	a := newReceiver(t, func(n int, r *http.Request) int {
		if n >= 2 { // the replay's delivery, after the first one
			select {
			case inReplay <- struct{}{}:
			default:
			}
			<-release
		}
		return 200
	})
	b := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("a", a.URL, nil), sinkConfig("b", b.URL, nil)}, JS: js, Registerer: reg})
	deliverOne(t, m, js, a)
	done := make(chan error, 1)
	go func() {
		_, err := m.Replay(ctx, "a", time.Now().Add(-time.Hour), nil)
		done <- err
	}()
	<-inReplay
	if _, err := m.Apply(ctx, []Config{sinkConfig("b", b.URL, nil)}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := seriesOf(t, reg, "a"); len(got) > 0 {
		t.Errorf("removed sink a's series came back after its replay: %v", got)
	}
}

// deliverOne waits for m to be ready, publishes an event and waits for rc
// to receive it, so that its sink's series exist.
func deliverOne(t *testing.T, m *Manager, js jetstream.JetStream, rc *receiver) {
	t.Helper()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m.Ready(ctx) })
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(rc.requests()) == 0 {
			return fmt.Errorf("nothing delivered")
		}
		return nil
	})
}

// TestRunAfterAFailedApply: a reload can come between Setup and Run (the
// relay serves its admin API before the sinks' Run has its turn). A sink
// it added and could not set up stays idle: Run starts the others and
// does not fail, and the Apply that sets it up starts it.
func TestRunAfterAFailedApply(t *testing.T) {
	js := natsStream(t)
	d, e := newReceiver(t, nil), newReceiver(t, nil)
	m, err := NewManager(Options{Sinks: []Config{sinkConfig("d", d.URL, nil)}, JS: js,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	list := []Config{sinkConfig("d", d.URL, nil), sinkConfig("e", e.URL, nil)}
	if ch, err := m.Apply(gone, list); err == nil || !slices.Equal(ch.Added, []string{"e"}) {
		t.Fatalf("Apply with its context ended: %+v, %v; want e added and its setup failed", ch, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	e1 := newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	wantIDs(t, "d, started by Run", d, e1)
	if _, err := m.Apply(ctx, list); err != nil {
		t.Fatalf("Apply once it can set e up: %v", err)
	}
	wantIDs(t, "e, from the Apply that added it", e, e1)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestPlainHTTPSinkIsSaidOnceWhenSetUp: a sink whose url is plain http to
// a public host is said at Warn when it is set up (README, Plain http:
// "serve says it once at Warn when it sets the sink up"): at the start,
// and by a reload that adds it or gives it a new url; not by reloads that
// leave it as it was (each said it again) or change only another setting.
func TestPlainHTTPSinkIsSaidOnceWhenSetUp(t *testing.T) {
	js := natsStream(t)
	logs := &eventstest.Log{}
	said := func() int { return strings.Count(logs.String(), "cross the network unencrypted") }
	public := func(name, url string) Config {
		return sinkConfig(name, url, func(c *Config) { c.AllowPrivate = false })
	}
	list := []Config{public("crm", "http://crm.example.com/hooks")}
	m, _ := runManager(t, Options{Sinks: list, JS: js,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	apply := func(list []Config) {
		t.Helper()
		if _, err := m.Apply(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		apply(list)
	}
	if n := said(); n != 1 {
		t.Fatalf("said %d times over a start and three reloads that left the sink as it was, want once:\n%s", n, logs)
	}
	list[0].Timeout = 3 * time.Second
	apply(list)
	list = append(list, public("erp", "http://erp.example.com/hooks"))
	apply(list)
	list[0].URL = "http://crm2.example.com/hooks"
	apply(list)
	if n := said(); n != 3 || !strings.Contains(logs.String(), "sink=erp") || !strings.Contains(logs.String(), "host=crm2.example.com") {
		t.Fatalf("said %d times, want 3: at the start, for the sink added, for the new url:\n%s", n, logs)
	}
}

// TestWideningASinkByReload: a reload that widens a sink's filters (a
// tenant added to its tenants, a type to its events) sends it what they
// newly take from the reload on; the events the sink passed over before
// are not sent (a replay sends the past: README, Webhooks, Filters). What
// the sink took before goes on as it did.
func TestWideningASinkByReload(t *testing.T) {
	for _, c := range []struct {
		name            string
		narrow, widened func(*Config)
		tenant          string        // of the resource the sink newly takes
		first, next     events.Action // its events before and after the reload
	}{
		{"tenants", func(c *Config) { c.Tenants = []string{"acme"} }, func(c *Config) { c.Tenants = []string{"acme", "globex"} },
			"globex", events.UserCreated, events.UserUpdated},
		{"events", func(c *Config) { c.Events = []string{"user.created", "user.updated"} }, func(c *Config) { c.Events = []string{"user.*", "group.*"} },
			"acme", events.GroupCreated, events.GroupUpdated},
	} {
		t.Run(c.name, func(t *testing.T) {
			js := onePartition(t) // one partition: the event after the passed-over one shows the consumer passed it
			rc := newReceiver(t, nil)
			m, _ := runSinks(t, js, 0, sinkConfig("crm", rc.URL, c.narrow))
			pub := newPublisher(t, js)
			a1 := pub.publish("acme", events.UserCreated, "a")
			pub.publish(c.tenant, c.first, "g") // not the sink's yet
			a2 := pub.publish("acme", events.UserUpdated, "a")
			eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
				if got := ids(rc); !slices.Equal(got, []string{a1, a2}) {
					return fmt.Errorf("the sink received %v, want %v", got, []string{a1, a2})
				}
				return nil
			})

			if ch, err := m.Apply(ctx, []Config{sinkConfig("crm", rc.URL, c.widened)}); err != nil || !slices.Equal(ch.Changed, []string{"crm"}) {
				t.Fatalf("Apply: %+v, %v", ch, err)
			}
			// The resource's next event comes after the one passed over:
			// had that one been sent now, it would come first (per-resource
			// order), where the next is looked for.
			g2 := pub.publish(c.tenant, c.next, "g")
			a3 := pub.publish("acme", events.UserUpdated, "a")
			eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
				if got := ids(rc); len(got) < 4 {
					return fmt.Errorf("the sink received %v, want %v then %v and %v", got, []string{a1, a2}, g2, a3)
				}
				return nil
			})
			got := ids(rc)
			if !slices.Equal(got[:2], []string{a1, a2}) || len(got) != 4 || !slices.Contains(got[2:], g2) || !slices.Contains(got[2:], a3) {
				t.Fatalf("the sink received %v, want %v then %v and %v (in either order: two resources), and not the event it passed over before the reload", got, []string{a1, a2}, g2, a3)
			}
		})
	}
}

// TestWideningASinkThatIsBehind: a sink whose consumer has not reached
// the events of the tenant a reload adds (it is behind: a delivery held,
// its ack pending full) sends them after the reload: it had not passed
// them over (README, Webhooks, Filters; a review of widening). One
// partition, its ack pending full: the consumer cannot look past what it
// holds. On an idle partition, whether its consumer had passed over an
// event stored just before the reload is a matter of timing (README).
func TestWideningASinkThatIsBehind(t *testing.T) {
	js := onePartition(t)
	gate := make(chan struct{})
	first := make(chan struct{}, 1)
	rc := newReceiver(t, func(n int, r *http.Request) int {
		if n == 1 {
			first <- struct{}{}
			<-gate
		}
		return http.StatusNoContent
	})
	// The held delivery must stay held until the Apply: with the sink's
	// 2 s timeout, had the ten publishes below taken longer (a loaded
	// machine; shown by stretching them 2.5 s), it was given up, sent
	// again and answered, the ack pending freed and the globex events
	// passed over before the reload: "missing" the first of them. The
	// gate, not the timeout, ends it.
	narrow := func(c *Config) { c.Tenants = []string{"acme"}; c.Concurrency = 1; c.Timeout = time.Minute }
	widened := func(c *Config) { c.Tenants = []string{"acme", "globex"}; c.Concurrency = 1; c.Timeout = time.Minute }
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, narrow)}, JS: js, MaxAckPending: 2, Heartbeat: fastHeartbeat})
	pub := newPublisher(t, js)
	a1 := pub.publish("acme", events.UserCreated, "a")
	<-first // held: a1 and a2 fill the ack pending
	a2 := pub.publish("acme", events.UserUpdated, "a")
	a3 := pub.publish("acme", events.UserUpdated, "a")
	var gs []string
	for i := range 8 {
		gs = append(gs, pub.publish("globex", events.UserCreated, fmt.Sprintf("g%d", i)))
	}
	if ch, err := m.Apply(ctx, []Config{sinkConfig("crm", rc.URL, widened)}); err != nil || !slices.Equal(ch.Changed, []string{"crm"}) {
		t.Fatalf("Apply: %+v, %v", ch, err)
	}
	close(gate)
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		got := ids(rc)
		for _, id := range append([]string{a1, a2, a3}, gs...) {
			if !slices.Contains(got, id) {
				return fmt.Errorf("missing %s; got %v", id, got)
			}
		}
		return nil
	})
}

// otherProcess is another process of the deployment sharing the worker's
// stream (a front end: it sets the sinks up, delivers nothing), whose
// reloads (Apply) change the sinks' consumers for every process.
func otherProcess(t *testing.T, url string, sinks ...Config) *Manager {
	t.Helper()
	_, js := eventstest.Connect(t, url)
	m, err := NewManager(Options{Sinks: sinks, JS: js, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFrontEndsOfOtherTenantsKeepEachOthersInASink: a sink of acme and
// globex, whose worker configures every tenant, is set up again by a front
// end of acme alone (its relay.yaml can give the sink acme alone) and by
// one of globex and initech (which gives it globex): each writes the
// consumers' filter for its own tenants and keeps the other's, so the
// sink's consumers take acme and globex, and not initech, and the worker
// delivers globex's event. Before, each front end's start wrote its own
// tenants alone: the other's were passed over for every worker, never
// sent. A reload that gives the process a tenant (SetTenants) makes the
// filter of that tenant its own to write: a sink it now leaves out is
// narrowed.
func TestFrontEndsOfOtherTenantsKeepEachOthersInASink(t *testing.T) {
	js, url := onePartitionServer(t)
	rc := newReceiver(t, nil)
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	startWorker(t, Options{Sinks: []Config{cfg("acme", "globex")}, Tenants: []string{"acme", "globex", "initech"}, Heartbeat: fastHeartbeat}, url)
	frontEnd := func(tenants []string, sink Config) *Manager { return frontEndSinks(t, url, tenants, sink) }
	filterTenants := func() []string { return consumerTenants(t, js, "crm") }
	frontEnd([]string{"acme"}, cfg("acme"))
	b := frontEnd([]string{"globex", "initech"}, cfg("globex"))
	if got := filterTenants(); !slices.Equal(got, []string{"acme", "globex"}) {
		t.Fatalf("after both front ends' starts the sink's consumer takes %v, want [acme globex]", got)
	}
	g := newPublisher(t, js).publish("globex", events.UserCreated, "g")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !slices.Contains(ids(rc), g) {
			return fmt.Errorf("globex's event not delivered; got %v", ids(rc))
		}
		return nil
	})
	// Front end B takes acme over (a reload), and its sink leaves acme out.
	b.SetTenants([]string{"acme", "globex", "initech"})
	if _, err := b.Apply(ctx, []Config{cfg("globex", "initech")}); err != nil {
		t.Fatal(err)
	}
	if got := filterTenants(); !slices.Equal(got, []string{"globex", "initech"}) {
		t.Fatalf("after B's reload the sink's consumer takes %v, want [globex initech]", got)
	}
}

// frontEndSinks is a front end's sinks manager (role scim: it sets the
// sinks up and runs no worker), of these tenants, on the NATS at url.
func frontEndSinks(t *testing.T, url string, tenants []string, sink Config) *Manager {
	t.Helper()
	_, js := eventstest.Connect(t, url)
	m, err := NewManager(Options{Sinks: []Config{sink}, JS: js, Tenants: tenants, SetupOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// consumerTenants returns the tenants whose events sink's consumer of
// partition 0 takes, sorted.
func consumerTenants(t *testing.T, js jetstream.JetStream, sink string) []string {
	t.Helper()
	cons, err := js.Consumer(ctx, events.StreamName, consumerName(sink, 0))
	if err != nil {
		t.Fatal(err)
	}
	var tenants []string
	for _, f := range cons.CachedInfo().Config.FilterSubjects {
		tenants = append(tenants, events.PatternTenant(f))
	}
	slices.Sort(tenants)
	return tenants
}

// TestNarrowFailedThenRetriedNarrows: a reload giving a tenant's name back
// while NATS is away fails "with the running configuration kept"; the
// operator's next reload, NATS back, must still take the tenant out of the
// consumers of the sink that does not list it.
func TestNarrowFailedThenRetriedNarrows(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	s := eventstest.RunServerAt(t, dir, port)
	url := eventstest.URL(s)
	_, js := eventstest.Connect(t, url)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Partitions: 1}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, nil)
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	_, fjs := eventstest.Connect(t, url)
	m, err := NewManager(Options{Sinks: []Config{cfg("acme", "globex")}, JS: fjs, Tenants: []string{"acme", "globex"}, SetupOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	filterTenants := func() []string {
		_, js := eventstest.Connect(t, url) // the server may have been restarted
		return consumerTenants(t, js, "crm")
	}
	// A reload takes globex out: the filter keeps it (othersKept).
	m.SetTenants([]string{"acme"})
	if _, err := m.Apply(ctx, []Config{cfg("acme")}); err != nil {
		t.Fatal(err)
	}
	if got := filterTenants(); !slices.Equal(got, []string{"acme", "globex"}) {
		t.Fatalf("after globex's removal the filter is %v, want [acme globex]", got)
	}
	// A reload gives globex back while NATS is away: it fails.
	s.Shutdown()
	s.WaitForShutdown()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = m.Narrow(short, []string{"acme", "globex"}, []Config{cfg("acme")})
	cancel()
	if err == nil {
		t.Fatal("Narrow with NATS away succeeded")
	}
	// NATS back; the operator reloads again.
	s = eventstest.RunServerAt(t, dir, port)
	if err := m.Narrow(ctx, []string{"acme", "globex"}, []Config{cfg("acme")}); err != nil {
		t.Fatal(err)
	}
	if got := filterTenants(); !slices.Equal(got, []string{"acme"}) {
		t.Fatalf("after the retried reload gave globex back, sink crm (tenants [acme]) still takes %v: the new customer's events reach it", got)
	}
}

// TestReaddedTenantAfterAnotherFrontEndHadItReachesNoSinkThatDoesNotListIt:
// front end A gives globex up (its sink crm, [acme], unchanged: its
// worker keeps its scope), front end B takes globex, lists it in crm and
// gives it up again (globex stays in the filter, kept as another's); A
// then gives the name to a new customer. README: "until a process
// configures it again: that reload first takes it out of the consumers of
// each sink that does not list it".
func TestReaddedTenantAfterAnotherFrontEndHadItReachesNoSinkThatDoesNotListIt(t *testing.T) {
	js, url := onePartitionServer(t)
	rc := newReceiver(t, nil)
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	// reload is what reloadOnce does with the sinks.
	reload := func(m *Manager, tenants []string, sink Config) {
		if err := m.Narrow(ctx, tenants, []Config{sink}); err != nil {
			t.Fatal(err)
		}
		m.SetTenants(tenants)
		if _, err := m.Apply(ctx, []Config{sink}); err != nil {
			t.Fatal(err)
		}
	}
	filterTenants := func() []string { return consumerTenants(t, js, "crm") }
	a := frontEndSinks(t, url, []string{"acme", "globex"}, cfg("acme"))
	b := frontEndSinks(t, url, []string{"initech"}, cfg("initech"))
	reload(a, []string{"acme"}, cfg("acme"))                           // A gives globex up
	reload(b, []string{"globex", "initech"}, cfg("globex", "initech")) // B takes it, crm lists it
	reload(b, []string{"initech"}, cfg("initech"))                     // B gives it up: kept
	if got := filterTenants(); !slices.Equal(got, []string{"acme", "globex", "initech"}) {
		t.Fatalf("before A gives globex back the filter is %v, want [acme globex initech]", got)
	}
	reload(a, []string{"acme", "globex"}, cfg("acme")) // a new customer named globex on A
	if got := filterTenants(); slices.Contains(got, "globex") {
		t.Fatalf("after A gave globex to a new customer, sink crm (A lists [acme], B [initech]) takes %v: the new customer's events reach it", got)
	}
}

// TestRetriedEventOfAWideningIsTakenWhenTheFilterCannotBeRead: a worker
// not reloaded, whose sink another process widened to globex, tries
// globex's event again after a 503, and its look at the consumer's filter
// goes unanswered (a consumer's leader lost): the event is taken and
// delivered. Before, it was passed over, neither sent nor dead-lettered,
// and its resource's later events were sent without it.
func TestRetriedEventOfAWideningIsTakenWhenTheFilterCannotBeRead(t *testing.T) {
	js, url := onePartitionServer(t)
	var looks, delivered atomic.Bool
	var unanswered atomic.Int64
	rc := newReceiver(t, func(int, *http.Request) int {
		if unanswered.Load() == 0 { // refused until a retry's look went unanswered
			return http.StatusServiceUnavailable
		}
		delivered.Store(true)
		return http.StatusNoContent
	})
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	proxy := eventstest.Proxy(t, strings.TrimPrefix(url, "nats://"), func(c, up net.Conn) {
		go func() {
			eventstest.PassProtocol(up, c, func(f []string, _ []byte) bool {
				if looks.Load() && len(f) > 1 && strings.HasPrefix(f[1], "$JS.API.CONSUMER.INFO."+events.StreamName+"."+consumerName("crm", 0)) {
					unanswered.Add(1)
					return true
				}
				return false
			})
			up.Close()
		}()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	})
	startWorker(t, Options{Sinks: []Config{cfg("acme")}, Heartbeat: fastHeartbeat}, "nats://"+proxy) // not reloaded
	if _, err := otherProcess(t, url, cfg("acme")).Apply(ctx, []Config{cfg("acme", "globex")}); err != nil {
		t.Fatal(err)
	}
	looks.Store(true)
	g := newPublisher(t, js).publish("globex", events.UserCreated, "g")
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got := ids(rc); !delivered.Load() || slices.ContainsFunc(got, func(id string) bool { return id != g }) {
			return fmt.Errorf("globex's event not delivered once a retry's look at the consumer went unanswered; sent %v, %d looks unanswered", got, unanswered.Load())
		}
		return nil
	})
}

// TestTwoWideningsAcrossProcesses: a worker not reloaded delivers the
// events of the tenants another process's reloads added to the sink,
// two reloads in quick succession too: the consumer, widened, has just
// delivered the second tenant's event, which it takes whatever a read of
// its filter a moment before said (a first version kept a read for a
// second, and passed the event over, acknowledged and never sent;
// TestWideningAcrossProcesses in cmd/scimrelay is the deployed shape).
func TestTwoWideningsAcrossProcesses(t *testing.T) {
	js, url := onePartitionServer(t)
	rc := newReceiver(t, nil)
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	startWorker(t, Options{Sinks: []Config{cfg("acme")}, Heartbeat: fastHeartbeat}, url) // not reloaded
	other := otherProcess(t, url, cfg("acme"))
	pub := newPublisher(t, js)
	delivered := func(id string) func() error {
		return func() error {
			if !slices.Contains(ids(rc), id) {
				return fmt.Errorf("%s not delivered; got %v", id, ids(rc))
			}
			return nil
		}
	}
	if _, err := other.Apply(ctx, []Config{cfg("acme", "globex")}); err != nil {
		t.Fatal(err)
	}
	g := pub.publish("globex", events.UserCreated, "g")
	eventstest.CheckFor(t, 20*time.Second, 5*time.Millisecond, delivered(g))
	if _, err := other.Apply(ctx, []Config{cfg("acme", "globex", "initech")}); err != nil {
		t.Fatal(err)
	}
	i := pub.publish("initech", events.UserCreated, "i")
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, delivered(i))
}

// TestReloadChangingManySlowSinksStopsThemAtOnce: a reload that changes 16
// sinks (a header added to each) whose receivers hold a delivery each,
// within cmd/scimrelay's maxReload of 2 minutes. Each hand-over waits its
// 8 s for the delivery in flight; one sink after another, that was 128 s,
// the setups that followed found the reload's time spent, and every
// changed sink was left idle ("not set up") until the next reload.
func TestReloadChangingManySlowSinksStopsThemAtOnce(t *testing.T) {
	s := eventstest.RunServer(t)
	url := eventstest.URL(s)
	_, js := eventstest.Connect(t, url)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	const n = 16
	rcs := make([]*receiver, n)
	cfgs := make([]Config, n)
	changed := make([]Config, n)
	for i := range n {
		rcs[i] = newReceiver(t, func(_ int, r *http.Request) int {
			select { // the receiver's own latency
			case <-r.Context().Done():
			case <-time.After(5 * time.Minute):
			}
			return 204
		})
		edit := func(c *Config) { c.Timeout = 5 * time.Minute; c.Retry = DefaultSchedule }
		cfgs[i] = sinkConfig(fmt.Sprintf("s%02d", i), rcs[i].URL, edit)
		changed[i] = sinkConfig(fmt.Sprintf("s%02d", i), rcs[i].URL, func(c *Config) {
			edit(c)
			c.Headers = map[string]string{"X-Environment": "production"}
		})
	}
	_, wjs := eventstest.Connect(t, url)
	m, _ := runManager(t, Options{Sinks: cfgs, JS: wjs}) // the default heartbeat: 8 s hand-overs
	eventstest.CheckFor(t, time.Minute, 20*time.Millisecond, func() error { return m.Ready(ctx) })
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for i, rc := range rcs {
			if len(rc.requests()) == 0 {
				return fmt.Errorf("sink s%02d has no delivery in flight yet", i)
			}
		}
		return nil
	})
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // cmd/scimrelay's maxReload
	defer cancel()
	start := time.Now()
	ch, err := m.Apply(rctx, changed)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the reload failed after %v: %v", took, err)
	}
	if len(ch.Changed) != n {
		t.Fatalf("changed %v", ch.Changed)
	}
	t.Logf("the reload took %v", took) // 8 s, one hand-over; one after another, 128 s, past the 2 minutes
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error { return m.Ready(ctx) })
	// The event abandoned at the hand-over goes out again, with the header.
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		for i, rc := range rcs {
			got := rc.requests()
			if got[len(got)-1].header.Get("X-Environment") != "production" {
				return fmt.Errorf("sink s%02d: not sent again by its changed worker", i)
			}
		}
		return nil
	})
}

// TestFrontEndAfterLostStreamKeepsOthersTenants: the sink crm takes acme
// and globex (the workers' relay.yaml). The NATS store loses its messages
// (a damaged block, nats-server restarted), and front end A, of acme alone,
// is the first to set the sink up after it: streamRenumbered deletes the
// consumer and makes it again with globex kept (README, Filters: "the
// start of one front end leaves the other's tenants in the sink"); before
// (a review), it was made with A's filter alone.
func TestFrontEndAfterLostStreamKeepsOthersTenants(t *testing.T) {
	s, dir, port, js := storedStream(t, 1)
	url := eventstest.URL(s)
	rc := newReceiver(t, nil)
	cfg := func(tenants ...string) Config {
		return sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = tenants })
	}
	_, stop := startWorker(t, Options{Sinks: []Config{cfg("acme", "globex")}, Tenants: []string{"acme", "globex"}, Heartbeat: fastHeartbeat}, url)
	publishDelivered(t, newPublisher(t, js), rc, 20, "a")
	stop()
	s = eventstest.RestartLosingEvents(t, s, dir, port)
	_, js = eventstest.Connect(t, eventstest.URL(s))
	// Front end A, of acme alone, starts first.
	m, err := NewManager(Options{Sinks: []Config{cfg("acme")}, JS: js, Tenants: []string{"acme"}, SetupOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, events.StreamName, consumerName("crm", 0))
	if err != nil {
		t.Fatal(err)
	}
	var tenants []string
	for _, f := range append(cons.CachedInfo().Config.FilterSubjects, cons.CachedInfo().Config.FilterSubject) {
		if f != "" {
			tenants = append(tenants, events.PatternTenant(f))
		}
	}
	slices.Sort(tenants)
	if !slices.Equal(tenants, []string{"acme", "globex"}) {
		t.Fatalf("after front end A's start on the stream that lost its events, the sink's consumer takes %v, want [acme globex]", tenants)
	}
}
