// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestPartitionClaim: a free claim is taken, taking it again is a no-op,
// a claim whose holder holds is refused and one whose holder does not is
// taken over, a release by a holder that was taken over leaves the new
// claim, and of workers taking a free claim at once exactly one gets it.
func TestPartitionClaim(t *testing.T) {
	_, _, js := natsServer(t)
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, b := claim{Worker: "a", Run: 1}, claim{Worker: "b", Run: 1}
	holds := func(v bool) func(context.Context, claim) (bool, error) {
		return func(context.Context, claim) (bool, error) { return v, nil }
	}

	revA, prev, err := pk.claim(ctx, 0, a, holds(true))
	if err != nil || revA == 0 || prev != (claim{}) {
		t.Fatalf("taking a free claim: revision %d, previous holder %+v, %v", revA, prev, err)
	}
	if again, _, err := pk.claim(ctx, 0, a, holds(true)); err != nil || again != revA {
		t.Fatalf("taking one's own claim again: revision %d (want %d), %v", again, revA, err)
	}
	if _, holder, err := pk.claim(ctx, 0, b, holds(true)); !errors.Is(err, errClaimHeld) || holder != a {
		t.Fatalf("b took a claim a holds: holder %+v, %v", holder, err)
	}
	// A run of the same worker is another holder.
	if _, _, err := pk.claim(ctx, 0, claim{Worker: "a", Run: 2}, holds(true)); !errors.Is(err, errClaimHeld) {
		t.Fatalf("a's second run took the claim of its first, which still runs: %v", err)
	}
	revB, prev, err := pk.claim(ctx, 0, b, holds(false))
	if err != nil || revB == 0 || prev != a {
		t.Fatalf("b did not take over a's claim, whose holder is gone: previous holder %+v, %v", prev, err)
	}
	if err := pk.unclaim(ctx, 0, revA); err != nil {
		t.Fatalf("a stale release: %v", err)
	}
	if held := readClaim(t, pk, 0); held != b {
		t.Fatalf("after a's stale release the claim is %+v, want b's", held)
	}
	if err := pk.unclaim(ctx, 0, revB); err != nil {
		t.Fatal(err)
	}
	if _, err := pk.kv.Get(ctx, claimKey(0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the claim stays after its release: %v", err)
	}

	// Eight workers at once, on a free claim and on one whose holder is
	// gone: one each.
	if _, _, err := pk.claim(ctx, 1, claim{Worker: "dead"}, holds(true)); err != nil {
		t.Fatal(err)
	}
	for n := range 2 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []string
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := claim{Worker: fmt.Sprintf("w%d", i), Run: 1}
				_, _, err := pk.claim(ctx, n, c, func(_ context.Context, h claim) (bool, error) { return h.Worker != "dead", nil })
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, c.Worker)
					mu.Unlock()
				case !errors.Is(err, errClaimHeld):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("partition %d: %d workers took its claim at once (%v), want 1", n, len(won), won)
		}
		if held := readClaim(t, pk, n); held.Worker != won[0] {
			t.Fatalf("partition %d: the claim names %+v, but %s took it", n, held, won[0])
		}
	}

	// Claims are not parked resources.
	if parked, err := pk.load(ctx, 0); err != nil || len(parked) != 0 {
		t.Fatalf("loading partition 0's parked resources: %v, %v", parked, err)
	}
}

func readClaim(t testing.TB, pk *parking, n int) claim {
	t.Helper()
	e, err := pk.kv.Get(ctx, claimKey(n))
	if err != nil {
		t.Fatal(err)
	}
	var c claim
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestLeavingWorkerIsAlive: a worker that withdrew from the assignment is
// no member any more, but its claims stand until it is gone; a worker that
// announced itself after the last listing is found.
func TestLeavingWorkerIsAlive(t *testing.T) {
	_, _, js := natsServer(t)
	tm := timingFor(fastHeartbeat)
	st, err := ensureWorkersStream(ctx, js, tm, 1)
	if err != nil {
		t.Fatal(err)
	}
	member := func(id string) *membership { return &membership{js: js, stream: st, sink: "crm", id: id, t: tm} }
	a, b := member("a"), member("b")
	if _, _, err := a.beat(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// b announces itself after a's listing: a finds it all the same.
	if _, _, err := b.beat(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wantAlive := func(who string, want bool) {
		t.Helper()
		if got, err := a.alive(ctx, who); err != nil || got != want {
			t.Fatalf("a says %s alive: %v (%v), want %v", who, got, err, want)
		}
	}
	wantAlive("b", true)
	wantAlive("nobody", false)

	if err := b.leave(ctx); err != nil {
		t.Fatal(err)
	}
	live, _, err := a.beat(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(live, ",") != "a" {
		t.Fatalf("members after b left: %v, want a alone", live)
	}
	wantAlive("b", true) // handing over: its claims stand
	if err := b.gone(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.beat(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wantAlive("b", false)
}

// TestHandOverWhileReadingBackRepeatsNothing: a worker reading a parked
// resource back, on a partition from which it received no event since it
// took it, holds no pin. When it hands the partition over, the next owner
// waits for its claim: it reads the resource on from where the first one
// stopped, and no event goes out twice.
func TestHandOverWhileReadingBackRepeatsNothing(t *testing.T) {
	js := onePartition(t)
	const n = 6
	l := newLedger()
	inFlight, release := make(chan struct{}), make(chan struct{})
	var inFlightOnce, releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		subject, seq := l.arrive(r)
		if seq == 3 {
			// Event 3 stays in flight until the next owner is waiting.
			inFlightOnce.Do(func() { close(inFlight) })
			select {
			case <-release:
			case <-r.Context().Done(): // the worker gave up on it
			}
		}
		l.answer(r, subject, seq, http.StatusNoContent)
		return http.StatusNoContent
	})
	o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second, Heartbeat: 500 * time.Millisecond}
	// A worker that comes and goes sets up the consumer and the bucket.
	_, stop := runManager(t, o)
	stop()

	// An earlier owner parked the resource from its first event and
	// acknowledged them all, as a hand-over does.
	handedOverParked(t, js, n)

	// The first worker takes the partition, with no event from its
	// consumer, and reads the resource back.
	a, stopA := runManager(t, o)
	select {
	case <-inFlight:
	case <-time.After(20 * time.Second):
		t.Fatal("the first worker did not read the parked resource back")
	}
	// A second worker comes, and the first leaves while event 3 is in
	// flight: the partition is the second's, but not before the first
	// let go of its claim.
	logs := &eventstest.Log{}
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	second, _ := runManager(t, o)
	t.Cleanup(unblock) // before the workers stop, when the test fails
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stopA()
	}()
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "waiting for a partition's claim") {
			return errors.New("the second worker has not found the partition claimed")
		}
		return nil
	})
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if held := readClaim(t, pk, 0); held.Worker != a.o.WorkerID {
		t.Fatalf("while the first worker hands over, the claim names %+v, want %s", held, a.o.WorkerID)
	}
	unblock()
	<-stopped
	l.wantDelivered(t, expect{"Users/parked": n}, 20*time.Second, false)
	// The receiver's ledger has the last event before the second worker
	// has its answer and counts it: wait for the count.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := deliveredBy(second); got != n-3 {
			return fmt.Errorf("the second worker delivered %v events, want the %d after the first worker's last", got, n-3)
		}
		return nil
	})
}

// TestLeavingWorkerKeepsItsClaims: a worker's hand-over may outlast its
// announcement's lifetime (here its release waits 5 s for an
// acknowledgement that never lands, its account being refused every
// acknowledgement; announcements live 1.1 s). It renews its leaving
// announcement meanwhile, so that the other worker takes each of its
// partitions' claims only after it let go of it: the claim is deleted
// first, never overwritten while the leaving worker holds it.
func TestLeavingWorkerKeepsItsClaims(t *testing.T) {
	u := runAckless(t)
	pk, err := parkingBucket(ctx, u.js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := pk.kv.Watch(ctx, "claim.*", jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watcher.Stop() }()
	type change struct {
		deleted bool
		worker  string
	}
	var mu sync.Mutex
	changes := map[string][]change{}
	go func() {
		for e := range watcher.Updates() {
			if e == nil {
				continue // the end of what was there
			}
			var c claim
			_ = json.Unmarshal(e.Value(), &c)
			mu.Lock()
			changes[e.Key()] = append(changes[e.Key()], change{deleted: e.Operation() != jetstream.KeyValuePut, worker: c.Worker})
			mu.Unlock()
		}
	}()

	p := newPublisher(t, u.js)
	p.publish("acme", events.UserCreated, "stuck")
	owner := u.unacknowledged(t)
	leaving, staying := u.ms[owner].o.WorkerID, u.ms[1-owner].o.WorkerID
	started := time.Now()
	u.stops[owner]()
	if took := time.Since(started); took < 2*u.ms[owner].sinks["crm"].worker.t.memberTTL {
		t.Fatalf("the hand-over took %s, too short to outlast an announcement (%s)", took, u.ms[owner].sinks["crm"].worker.t.memberTTL)
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		for n := range 16 {
			cs := changes[claimKey(n)]
			if len(cs) == 0 || cs[len(cs)-1].deleted || cs[len(cs)-1].worker != staying {
				return fmt.Errorf("partition %d's claim is not the staying worker's: %+v", n, cs)
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	handed := 0
	for key, cs := range changes {
		for i := 1; i < len(cs); i++ {
			if cs[i].worker == staying && !cs[i].deleted && cs[i-1].worker == leaving && !cs[i-1].deleted {
				t.Errorf("%s: the staying worker overwrote the leaving worker's claim (changes %+v)", key, cs)
			}
			if cs[i].worker == staying && !cs[i].deleted && cs[i-1].deleted && i >= 2 && cs[i-2].worker == leaving {
				handed++
			}
		}
	}
	if handed == 0 {
		t.Fatalf("no claim went from the leaving worker to the staying one: %+v", changes)
	}
}

// TestClaimIsRenewedAndReleased: a worker writes its partition's claim
// again while it runs (the bucket's age limit would remove a claim written
// once), and still lets go of it at its release, at the revision it
// renewed to.
func TestClaimIsRenewedAndReleased(t *testing.T) {
	js := onePartition(t)
	rc := slowReceiver(t, newLedger(), 0, nil)
	m, stop := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second,
		Heartbeat: fastHeartbeat, claimRenew: 50 * time.Millisecond})
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revision := func() uint64 {
		e, err := pk.kv.Get(ctx, claimKey(0))
		if err != nil {
			return 0
		}
		var c claim
		if json.Unmarshal(e.Value(), &c) != nil || c.Worker != m.o.WorkerID {
			return 0
		}
		return e.Revision()
	}
	var first uint64
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if first = revision(); first == 0 {
			return errors.New("the worker has not claimed partition 0")
		}
		return nil
	})
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r := revision(); r <= first {
			return fmt.Errorf("the claim is at revision %d, as first written (%d)", r, first)
		}
		return nil
	})
	stop()
	if _, err := pk.kv.Get(ctx, claimKey(0)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("after the worker stopped, its renewed claim stays: %v", err)
	}
}

// TestClaimsOfEndedRunsAreReleased: a claim this worker wrote in a run
// that has ended, which it did not let go of (the write's answer was
// lost, or the release failed), is deleted by the run's end or at the
// next try; a claim of a run still going, or of another worker, stays.
func TestClaimsOfEndedRunsAreReleased(t *testing.T) {
	js := onePartition(t)
	rc := slowReceiver(t, newLedger(), 0, nil)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
	w := m.sinks["crm"].worker
	pk := w.parked
	var running claim
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		e, err := pk.kv.Get(ctx, claimKey(0))
		if err != nil {
			return err
		}
		return json.Unmarshal(e.Value(), &running)
	})
	put := func(n int, c claim) {
		t.Helper()
		b, _ := json.Marshal(c)
		if _, err := pk.kv.Put(ctx, claimKey(n), b); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(n int) bool {
		_, err := pk.kv.Get(ctx, claimKey(n))
		return err == nil
	}

	// A run whose claim write it saw fail, which the server applied.
	p := newPartition(w, 3)
	put(3, claim{Worker: w.members.id, Run: p.runID})
	p.dropClaim()
	if exists(3) {
		t.Error("a run's end left the claim it did not know it had written")
	}

	// Releases that failed, tried again.
	put(4, claim{Worker: w.members.id, Run: 1 << 40}) // ended
	put(5, running)                                   // this worker's running run of partition 0
	put(6, claim{Worker: "another", Run: 1})
	w.mu.Lock()
	for _, n := range []int{4, 5, 6} {
		w.unreleased[n] = struct{}{}
	}
	w.mu.Unlock()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.unreleased) > 0 {
			return fmt.Errorf("%d releases still to try", len(w.unreleased))
		}
		return nil
	})
	if exists(4) {
		t.Error("the claim of an ended run stays")
	}
	if !exists(5) || !exists(6) {
		t.Errorf("a running run's claim (%v) or another worker's (%v) was released", exists(5), exists(6))
	}
}

// ackless is two workers whose account may not acknowledge anything.
type ackless struct {
	js    jetstream.JetStream // an account that may do anything
	ms    []*Manager
	stops []func()
}

// runAckless starts a server with users "admin", who may do anything, and
// "worker", whose acknowledgements the server refuses, and two workers of
// sink crm as "worker".
func runAckless(t testing.TB) *ackless {
	t.Helper()
	u := &ackless{}
	var workerURL string
	u.js, workerURL = serverDenyingWorkers(t, "$JS.ACK.>")
	rc := newReceiver(t, nil)
	o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat}
	u.ms, u.stops = startWorkers(t, o, workerURL, 2)
	return u
}

// unacknowledged waits until a partition of crm has an event delivered,
// acknowledged by its worker and not by JetStream (the account refuses
// it), and returns which worker owns it.
func (u *ackless) unacknowledged(t testing.TB) int {
	t.Helper()
	owner := -1
	eventstest.CheckFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		for n := range events.DefaultPartitions {
			cons, err := u.js.Consumer(ctx, events.StreamName, consumerName("crm", n))
			if err != nil {
				return err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumAckPending == 0 {
				continue
			}
			for i, m := range u.ms {
				for _, p := range m.sinks["crm"].worker.ownedPartitions() {
					// Its acknowledgement sent (and refused), not a
					// delivery still under way: a release leaves an event
					// taken and not settled on purpose, and does not wait.
					if p.n == n && p.taken.Load() > 0 && p.settled.Load() == p.taken.Load() {
						owner = i
						return nil
					}
				}
			}
		}
		return errors.New("no partition has an unacknowledged event whose worker has acknowledged it yet")
	})
	return owner
}

// TestStaleClaimOfALiveWorkerIdIsLetGo: a sink's worker that a reload
// replaced may leave claims behind when their release failed. Its process
// stays alive, so another process assigned such a partition would wait for
// the claim forever, and nothing else would let it go: a new worker lets
// go, at its first heartbeat, of every claim of its worker id whose run is
// not one of its own, and leaves other workers' claims alone. (Partition
// runs are numbered across the process, so the new worker's runs never
// take the old one's numbers.)
func TestStaleClaimOfALiveWorkerIdIsLetGo(t *testing.T) {
	js := onePartition(t)
	rc := newReceiver(t, nil)
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	never := func(context.Context, claim) (bool, error) { return false, nil }
	stale := claim{Worker: "worker-a", Run: 1 << 40}
	if _, _, err := pk.claim(ctx, 0, stale, never); err != nil {
		t.Fatal(err)
	}
	o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second, Heartbeat: 500 * time.Millisecond}
	// Another worker's claim stays.
	o.WorkerID = "worker-b"
	b, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	b.sinks["crm"].worker.retryUnclaims(ctx)
	if c := readClaim(t, pk, 0); c != stale {
		t.Fatalf("another worker's first heartbeat changed the claim to %+v", c)
	}
	// The same worker id's new worker lets it go.
	o.WorkerID = "worker-a"
	a, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	a.sinks["crm"].worker.retryUnclaims(ctx)
	if _, err := pk.kv.Get(ctx, claimKey(0)); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Fatalf("the claim its earlier worker left is still there: %v", err)
	}
}

// TestStopWithNATSSilentKeepsItsBound: a worker whose NATS stops answering
// is stopped. Each request of its end (its withdrawal, its partition's
// claim's release, the releases tried again, its last word to the other
// workers) runs out its time, together within the stop's bound
// (worker.stopRequest), which the grace periods of the chart, Compose and
// the systemd unit count on. Before, each ran out its own 5 s, one after
// another.
func TestStopWithNATSSilentKeepsItsBound(t *testing.T) {
	_, url := onePartitionServer(t)
	proxy := eventstest.NewSilencingProxy(t, strings.TrimPrefix(url, "nats://"))
	rc := newReceiver(t, nil)
	m, stop := startWorker(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, Heartbeat: fastHeartbeat}, "nats://"+proxy.Addr)
	// The withdrawal, the hand-over, the release, and a second at least
	// for each of the two requests after it.
	bound := apiTimeout + m.sinks["crm"].worker.t.handOver + stopRelease + 2*time.Second
	proxy.Lose()
	began := time.Now()
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(bound + time.Second):
		<-stopped
		t.Fatalf("with NATS silent the worker stopped in %s, past its bound of %s", time.Since(began).Round(100*time.Millisecond), bound)
	}
}
