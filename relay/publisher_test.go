// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// ensureStream creates the events stream as serve does, with a 10-minute
// duplicate window.
func ensureStream(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}

// outboxEmpties waits until every event left the outbox.
func outboxEmpties(t testing.TB, s *Store) {
	t.Helper()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n, err := s.OutboxDepth(); err != nil || n != 0 {
			return fmt.Errorf("the outbox still holds %d events (%v)", n, err)
		}
		return nil
	})
}

func startPublisher(t testing.TB, s *Store, js jetstream.JetStream, log *slog.Logger) *Publisher {
	t.Helper()
	ensureStream(t, js)
	return runPublisher(t, s, js, log, PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
}

// streamContents returns the events in the stream, in stream order, once
// there are n of them.
func streamContents(t testing.TB, js jetstream.JetStream, n int) []seen {
	t.Helper()
	ctx := context.Background()
	var st jetstream.Stream
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		var err error
		if st, err = js.Stream(ctx, events.StreamName); err != nil {
			return err // NATS may still be reconnecting
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != uint64(n) {
			return fmt.Errorf("%d events in the stream, want %d", info.State.Msgs, n)
		}
		return nil
	})
	info, _ := st.Info(ctx)
	var out []seen
	ids := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		// A direct get, which a replicated stream's replicas answer once
		// each is set up to: "no responders" for a moment after a write
		// on a cluster just made (seen once in about 25 runs). A node
		// picks the replica at random, its own or another's: one lost
		// whole, its peers' routes to it not yet given up (90 s in a
		// run), never answers, so each try waits 2 s, not the library's 5.
		var m *jetstream.RawStreamMsg
		eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() (err error) {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			m, err = st.GetMsg(ctx, seq)
			return err
		})
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		eventstest.ValidateEvent(t, e)
		eventstest.ValidateNATSHeaders(t, m.Header)
		if ids[e.ID()] {
			t.Fatalf("event %s is in the stream twice", e.ID())
		}
		ids[e.ID()] = true
		a, _ := events.ActionOf(e)
		s, _ := events.Sequence(e)
		ss, _ := events.SubjectSeq(e)
		d, _ := events.DataOf(e)
		out = append(out, seen{a, e.Subject(), s, ss, d, e.Source()})
	}
	return out
}

// checkOrder asserts each tenant's sequence is 1, 2, 3 … in stream order.
func checkOrder(t testing.TB, list []seen) {
	t.Helper()
	next := map[string]uint64{}
	for _, e := range list {
		next[e.data.Tenant]++
		if e.seq != next[e.data.Tenant] {
			t.Fatalf("tenant %s: event with sequence %d where %d was due", e.data.Tenant, e.seq, next[e.data.Tenant])
		}
	}
}

// TestTwoPublishersShareTheStream: two front ends, each with tenants of
// its own, publish into one stream at once. Neither's events are stored
// out of their tenant's order: with each event of a window expecting the
// stream's last sequence to be the one before its own, the other's
// messages in between had some refused and the ones after them stored
// ahead of them (TestTwoFrontEndsPublishIntoOneStream end to end).
func TestTwoPublishersShareTheStream(t *testing.T) {
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	const each = 600
	var stores []*Store
	for _, tenant := range []string{"acme", "globex"} {
		s, _, _ := openStore(t)
		for i := range each {
			create(t, s, tenant, user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
		}
		stores = append(stores, s)
	}
	// Small windows, so that each publisher's come between the other's.
	for _, s := range stores {
		runPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{Window: 16})
	}
	checkOrder(t, streamContents(t, js, 2*each))
}

func TestPublisherDrainsInOrder(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	// Events committed before the publisher starts are published too.
	for i := 0; i < 20; i++ {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"early%d"`, i)))
	}
	startPublisher(t, s, js, slog.New(slog.DiscardHandler))
	for i := 0; i < 100; i++ {
		tenant := []string{"acme", "globex"}[i%2]
		create(t, s, tenant, user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	list := streamContents(t, js, 120)
	checkOrder(t, list)
	outboxEmpties(t, s)
}

// TestPublisherSurvivesNATSOutage stops an external NATS while SCIM writes
// continue, long enough for the publisher's backoff to grow to several
// seconds: every write is acknowledged at once; when NATS returns,
// publishing resumes at the reconnection (not when the backoff runs out),
// and every event arrives, in sequence order, none lost and none
// twice.
func TestPublisherSurvivesNATSOutage(t *testing.T) {
	s, _, _ := openStore(t)
	dir := t.TempDir()
	port := eventstest.FreePort(t)
	ns := eventstest.RunServerAt(t, dir, port)
	logs := &eventstest.Log{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	nc, err := natsbus.Connect(natsbus.Options{URL: ns.ClientURL(), ConnectTimeout: time.Second}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute}, log); err != nil {
		t.Fatal(err)
	}
	p := runPublisher(t, s, js, log, PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: 30 * time.Second})
	for i := 0; i < 50; i++ {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"before%d"`, i)))
	}
	streamContents(t, js, 50)

	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	ns.Shutdown()
	ns.WaitForShutdown()
	// Writes go on through an outage long enough for the backoff to reach
	// 6.4 s (0.1 + 0.2 + … + 3.2 s of waiting).
	during := 0
	for start := time.Now(); time.Since(start) < 7*time.Second; during++ {
		t0 := time.Now()
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"during%d"`, during)))
		if took := time.Since(t0); took > time.Second {
			t.Fatalf("a write took %s with NATS down: SCIM must not wait for NATS", took)
		}
	}
	if p.Healthy() {
		t.Fatal("publisher reports healthy during the outage")
	}
	if n, _ := s.OutboxDepth(); n != during {
		t.Fatalf("outbox holds %d events during the outage, want %d", n, during)
	}

	eventstest.RunServerAt(t, dir, port)
	var back time.Time
	select {
	case <-reconnected:
		back = time.Now()
	case <-time.After(30 * time.Second):
		t.Fatal("the connection did not come back")
	}
	list := streamContents(t, js, 50+during)
	checkOrder(t, list)
	// The reconnection, not the backoff's timer, ended the publisher's
	// wait: it says so (Run). How long after it the publisher published
	// is this machine's figure, logged rather than bounded.
	lag := p.LastPublished().Sub(back)
	if !strings.Contains(logs.String(), "NATS connection is back; publishing again") {
		t.Fatalf("the publisher did not resume at the reconnection (it published %s after it)", lag)
	}
	t.Logf("publishing resumed %s after the reconnection", lag)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !p.Healthy() {
			return fmt.Errorf("publisher not healthy again")
		}
		if n, _ := s.OutboxDepth(); n != 0 {
			return fmt.Errorf("outbox holds %d", n)
		}
		return nil
	})
	out := logs.String()
	if !bytes.Contains([]byte(out), []byte("publishing events to NATS failed")) || !bytes.Contains([]byte(out), []byte("publishing events to NATS again")) {
		t.Errorf("the log does not say what happened:\n%s", out)
	}
}

// BenchmarkPublisherDrain measures how fast the publisher moves a full
// outbox into an embedded JetStream stream (file storage): in atomic
// batches, as into a stream front ends share, and chained, as the sole
// publisher (the relay's embedded server); and both with the server
// writing every message to disk before it answers (sync_always, the
// embedded server's nats.sync_interval: 0), where the relay does not
// chain.
func BenchmarkPublisherDrain(b *testing.B) {
	b.Run("batches", func(b *testing.B) { benchmarkPublisherDrain(b, false, false) })
	b.Run("sole", func(b *testing.B) { benchmarkPublisherDrain(b, true, false) })
	b.Run("batches, sync_always", func(b *testing.B) { benchmarkPublisherDrain(b, false, true) })
	b.Run("sole, sync_always", func(b *testing.B) { benchmarkPublisherDrain(b, true, true) })
}

func benchmarkPublisherDrain(b *testing.B, sole, syncAlways bool) {
	s := openFastStore(b)
	const n = 20_000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Create(ctx, "acme", user(b, `"userName":"u`+strconv.Itoa(i)+`","emails":[{"value":"u`+strconv.Itoa(i)+`@x.com","type":"work"}]`)); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	ns := eventstest.RunServerWith(b, b.TempDir(), -1, func(o *server.Options) { o.SyncAlways = syncAlways })
	_, js := eventstest.Connect(b, eventstest.URL(ns))
	ensureStream(b, js)
	p := newPublisher(b, s, js, slog.New(slog.DiscardHandler), PublisherOptions{Sole: sole})
	b.ResetTimer()
	start := time.Now()
	published, err := p.drain(ctx)
	if err == nil {
		err = p.settleDelete(true) // the last window's delete is part of the drain
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil || published != n {
		b.Fatalf("drained %d of %d: %v", published, n, err)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
}

// BenchmarkAckToStream measures the time from a durable write's
// acknowledgement (Create returning, fsync on) to its event being in the
// stream, at 500 writes/s: in atomic batches, as into a stream front ends
// share, and chained, as the sole publisher (the relay's embedded server).
func BenchmarkAckToStream(b *testing.B) {
	b.Run("batches", func(b *testing.B) { benchmarkAckToStream(b, false) })
	b.Run("sole", func(b *testing.B) { benchmarkAckToStream(b, true) })
}

func benchmarkAckToStream(b *testing.B, sole bool) {
	s, _, _ := openStore(b)
	ns := eventstest.RunServer(b)
	nc, js := eventstest.Connect(b, eventstest.URL(ns))
	ensureStream(b, js)
	runPublisher(b, s, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, Sole: sole})
	var mu sync.Mutex
	acked := map[string]time.Time{}
	arrivals := map[string]time.Time{}
	arrived := make(chan struct{}, 1<<16)
	sub, err := nc.Subscribe("scimrelay.>", func(m *nats.Msg) {
		now := time.Now()
		mu.Lock()
		arrivals[m.Header.Get("ce-subject")] = now
		mu.Unlock()
		arrived <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	const rate, n = 500, 2500
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Create(ctx, "acme", user(b, `"userName":"lat`+strconv.Itoa(i)+`"`))
			if err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			acked["Users/"+r.Resource.ID()] = time.Now()
			mu.Unlock()
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			b.Fatalf("only %d of %d events arrived", i, n)
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	var latencies []time.Duration
	for subject, at := range acked {
		// An event can reach the subscriber before the writer records its
		// acknowledgement; that counts as no delay.
		latencies = append(latencies, max(0, arrivals[subject].Sub(at)))
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "max-ms")
}

// slowDeletes is the store's outbox with deletes that can be held or made
// to fail.
type slowDeletes struct {
	*Store
	entered chan struct{} // a delete began
	release chan struct{} // closed: held deletes go on
	opened  sync.Once
	fail    atomic.Int32 // deletes still to fail

	mu    sync.Mutex
	calls []time.Time // when each delete began
}

// open lets held deletes go on.
func (d *slowDeletes) open() { d.opened.Do(func() { close(d.release) }) }

func (d *slowDeletes) DeleteOutbox(keys []uint64) error {
	d.mu.Lock()
	d.calls = append(d.calls, time.Now())
	d.mu.Unlock()
	select {
	case d.entered <- struct{}{}:
	default:
	}
	<-d.release
	if d.fail.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return d.Store.DeleteOutbox(keys)
}

// began returns when each delete began.
func (d *slowDeletes) began() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.calls...)
}

func newSlowDeletes(s *Store) *slowDeletes {
	return &slowDeletes{Store: s, entered: make(chan struct{}, 1), release: make(chan struct{})}
}

// TestPublisherSendsTheNextWindowWhileTheLastIsDeleted: the delete of a
// published window is a commit, which waits behind the SCIM requests'; the
// next window must not wait for it. With the first delete held, an event
// committed after it still reaches the stream, in order, and once the
// delete goes on the outbox empties.
func TestPublisherSendsTheNextWindowWhileTheLastIsDeleted(t *testing.T) {
	forKeeps(t, func(t *testing.T, keep time.Duration) { sendsTheNextWindowWhileTheLastIsDeleted(t, keep) })
}

// forKeeps runs a test deleting published events at once, and keeping
// them a while first.
func forKeeps(t *testing.T, test func(t *testing.T, keep time.Duration)) {
	for _, keep := range []time.Duration{0, 200 * time.Millisecond} {
		t.Run(fmt.Sprintf("keep=%s", keep), func(t *testing.T) { test(t, keep) })
	}
}

func sendsTheNextWindowWhileTheLastIsDeleted(t *testing.T, keep time.Duration) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	d := newSlowDeletes(s)
	for i := range 2 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"first%d"`, i)))
	}
	ensureStream(t, js)
	runPublisher(t, d, js, slog.New(slog.DiscardHandler), PublisherOptions{Window: 2, AckTimeout: 2 * time.Second, KeepFor: keep})
	t.Cleanup(d.open) // before the publisher's: its stop waits for the delete
	select {
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first window was not deleted")
	}
	create(t, s, "acme", user(t, `"userName":"next"`))
	checkOrder(t, streamContents(t, js, 3)) // while the first delete is held
	d.open()
	outboxEmpties(t, s)
}

// TestPublisherFailedDeletePublishesAgainWithoutCopies: a delete that fails
// leaves published rows in the outbox. They are read again and published
// again, which JetStream drops by their Nats-Msg-Id, and deleted: the
// stream holds every event once, in order, and the outbox empties. Each
// is counted once as published (Observe: scimrelay_outbox_published_total
// and the publish lag), not again for each copy (13 for 7 before).
func TestPublisherFailedDeletePublishesAgainWithoutCopies(t *testing.T) {
	forKeeps(t, func(t *testing.T, keep time.Duration) { failedDeletePublishesAgainWithoutCopies(t, keep) })
}

func failedDeletePublishesAgainWithoutCopies(t *testing.T, keep time.Duration) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	d := newSlowDeletes(s)
	d.open()
	d.fail.Store(2)
	for i := range 7 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	ensureStream(t, js)
	var observed atomic.Int64
	runPublisher(t, d, js, slog.New(slog.DiscardHandler), PublisherOptions{Window: 3, AckTimeout: 2 * time.Second, MaxBackoff: 50 * time.Millisecond, KeepFor: keep,
		Observe: func(time.Time) { observed.Add(1) }})
	outboxEmpties(t, s)
	if d.fail.Load() >= 0 {
		t.Fatalf("%d deletes were still to fail", d.fail.Load()+1)
	}
	checkOrder(t, streamContents(t, js, 7))
	if observed.Load() != 7 {
		t.Fatalf("7 events published, each once in the stream, counted %d times as published", observed.Load())
	}
}

// TestPublisherKeepsPublishedEventsUntilNATSWroteThem: an event JetStream
// acknowledged stays in the outbox for KeepFor (three of the NATS server's
// intervals between writes to disk), so that a crash of the machine before
// the server wrote it cannot lose it; then it is deleted.
func TestPublisherKeepsPublishedEventsUntilNATSWroteThem(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	const keep = 5 * time.Second
	runPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{KeepFor: keep, AckTimeout: 2 * time.Second})
	before := time.Now() // every acknowledgement comes after it
	for i := range 3 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	checkOrder(t, streamContents(t, js, 3))
	// An event gone from the outbox before keep has passed since before
	// was deleted too early. Later, a delete is no proof: on a loaded
	// machine (CI under -race) the three writes and the wait for the
	// stream can outlast keep, and then its kept time has rightly run out.
	n, err := s.OutboxDepth()
	if err != nil {
		t.Fatal(err)
	}
	if checked := time.Since(before); n != 3 && checked < keep {
		t.Fatalf("the outbox holds %d events %s after they were committed, once JetStream has them, want the 3 kept for %s", n, checked.Round(time.Millisecond), keep)
	} else if checked >= keep {
		t.Logf("the outbox was read %s after the commits, past keep: its depth (%d) proves nothing", checked.Round(time.Millisecond), n)
	}
	outboxEmpties(t, s)
	if kept := time.Since(before); kept < keep {
		t.Fatalf("the published events were deleted %s after they were committed, want them kept %s after JetStream had them", kept, keep)
	}
	checkOrder(t, streamContents(t, js, 3)) // none published twice
}

// runStoppable runs p and returns its clean stop: it cancels Run and
// fails the test unless Run returns, without error, within maxStopWait and
// 10 s more. The cleanup stops it too, as boundedly.
func runStoppable(t *testing.T, p *Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		t.Helper()
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Error(err)
				}
			case <-time.After(maxStopWait + 10*time.Second):
				t.Errorf("the publisher did not stop within %s of maxStopWait", 10*time.Second)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestPublisherCleanStopDeletesWhatItKept: a clean stop waits until the
// kept events are due and deletes them, so that the next start publishes
// none of them again (past the stream's duplicate window, JetStream would
// store such a copy).
func TestPublisherCleanStopDeletesWhatItKept(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	d := newSlowDeletes(s)
	d.open()
	const keep = time.Second
	stop := runStoppable(t, newPublisher(t, d, js, slog.New(slog.DiscardHandler), PublisherOptions{KeepFor: keep, AckTimeout: 2 * time.Second}))
	before := time.Now() // every acknowledgement comes after it
	for i := range 3 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	streamContents(t, js, 3)
	stop()
	if n, err := s.OutboxDepth(); err != nil || n != 0 {
		t.Fatalf("the outbox holds %d events after a clean stop (%v), want none", n, err)
	}
	for _, at := range d.began() {
		if early := at.Sub(before); early < keep {
			t.Fatalf("a delete began %s after the first commit, before any event was due (%s after JetStream had it)", early, keep)
		}
	}
}

// TestPublisherCleanStopWaitsAtMostMaxStopWait: with events kept far
// longer than a stop's grace period (an external NATS writing to disk
// every few minutes), a clean stop ends after maxStopWait, and leaves them
// in the outbox to be published again rather than deleting them early.
func TestPublisherCleanStopWaitsAtMostMaxStopWait(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	stop := runStoppable(t, newPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{KeepFor: time.Hour, AckTimeout: 2 * time.Second}))
	create(t, s, "acme", user(t, `"userName":"ann"`))
	streamContents(t, js, 1)
	stop()
	if n, err := s.OutboxDepth(); err != nil || n != 1 {
		t.Fatalf("the outbox holds %d events after the stop (%v), want the one not yet due", n, err)
	}
}

// countingReads is the store's outbox, counting its reads that found rows:
// the publisher also reads once a second when nothing wakes it, and a
// loaded machine's slower test had more of those (CI: 12 reads in all;
// 2 find rows on a quiet one).
type countingReads struct {
	*Store
	reads atomic.Int64
}

func (c *countingReads) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	rows, err := c.Store.ReadOutbox(after, limit)
	if len(rows) > 0 {
		c.reads.Add(1)
	}
	return rows, err
}

// TestRepublishedEventsShareAWindow: events kept in the outbox after they
// were published (a stop before they came due, a crash) are sent again at
// the next start, each answered as a duplicate; they go one by one in a
// window, and the chain of the rest starts at the first one stored. A
// duplicate used to end its window, so each cost an outbox read of a
// window's rows: 6,000 kept events took a minute before a new event went
// out.
func TestRepublishedEventsShareAWindow(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	const n = 500
	for i := range n {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	stop := runStoppable(t, newPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 5 * time.Second, KeepFor: time.Hour}))
	streamContents(t, js, n)
	stop()
	if d, _ := s.OutboxDepth(); d != n {
		t.Fatalf("outbox holds %d, want the %d kept", d, n)
	}
	c := &countingReads{Store: s}
	runPublisher(t, c, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 5 * time.Second})
	create(t, s, "acme", user(t, `"userName":"after-restart"`))
	got := streamContents(t, js, n+1) // each once, the new one last
	checkOrder(t, got)
	if r := c.reads.Load(); r > 10 {
		t.Fatalf("%d kept events sent again took %d reads of the outbox that found rows: a window each", n, r)
	}
}

// TestRestartDoesNotCountKeptEventsAgain: events JetStream acknowledged
// and the outbox kept (nats.sync_interval long enough that a clean stop's
// 5 s do not see them due) are published again at the next start, and
// JetStream drops the copies. The next process does not count them in
// scimrelay_outbox_published_total, nor their commit-to-answer time (the
// whole restart) in the publish lag: it counted each again.
func TestRestartDoesNotCountKeptEventsAgain(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	var first, again atomic.Int64
	stop := runStoppable(t, newPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{KeepFor: 30 * time.Second, AckTimeout: 2 * time.Second,
		Observe: func(time.Time) { first.Add(1) }}))
	for i := range 3 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	streamContents(t, js, 3)
	stop()
	if n, _ := s.OutboxDepth(); n != 3 {
		t.Fatalf("the outbox keeps %d after the stop, want the 3 not yet due", n)
	}
	runStoppable(t, newPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 2 * time.Second,
		Observe: func(time.Time) { again.Add(1) }}))
	create(t, s, "acme", user(t, `"userName":"u3"`))
	outboxEmpties(t, s)
	checkOrder(t, streamContents(t, js, 4)) // JetStream dropped the copies
	if first.Load() != 3 || again.Load() != 1 {
		t.Fatalf("3 events published by a process and 1 by the next, the 3 kept sent again: counted %d and %d times, want 3 and 1", first.Load(), again.Load())
	}
}

// TestAsyncAPINamesEveryHeaderOfAStoredEvent: README, the schema folder
// holds "an AsyncAPI 3.0 document of the NATS subjects, their headers";
// every header of an event as the front end stores it on an external NATS
// (signed) is described there: Scimrelay-Signature was not (a review of
// the event contract). Nats-* headers are JetStream's.
func TestAsyncAPINamesEveryHeaderOfAStoredEvent(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	signer, err := events.NewSigner(newSecret())
	if err != nil {
		t.Fatal(err)
	}
	runPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{Signer: signer, AckTimeout: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
	create(t, s, "acme", user(t, `"userName":"ann"`))
	streamContents(t, js, 1)
	b, err := fs.ReadFile(events.Schemas(), "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
				AllOf      []struct {
					Properties map[string]any `yaml:"properties"`
				} `yaml:"allOf"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for h := range doc.Components.Schemas["ceHeaders"].Properties {
		named[h] = true
	}
	for _, part := range doc.Components.Schemas["natsHeaders"].AllOf {
		for h := range part.Properties {
			named[h] = true
		}
	}
	st, err := js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(events.SignatureHeader) == "" {
		t.Fatal("the stored event is not signed")
	}
	for h := range m.Header {
		if !named[h] && !strings.HasPrefix(h, "Nats-") {
			t.Errorf("the stored event carries the header %s, which asyncapi.yaml's natsHeaders does not describe", h)
		}
	}
}
