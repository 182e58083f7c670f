// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/scimrelay/scimrelay/relay/events"
)

// worker delivers one sink's events in this process: it announces itself
// among the sink's workers, takes the partitions that fall to it and lets
// go of the others.
type worker struct {
	name     string
	sink     Sink
	patterns events.Patterns
	tenants  []string
	// scope is the tenants this process's relay.yaml configures
	// (Options.Tenants): its consumers' filter keeps the others' (othersKept).
	// A reload's narrow writes it while a running partition's lost-stream
	// recovery may read it.
	scope    atomic.Pointer[[]string]
	schedule Schedule
	// keepFor is how long the stream keeps an event (its max_age when the
	// worker was set up; 0: for ever): a retry is not put off past it.
	keepFor time.Duration
	// since, when set, is when a reload added the sink: a partition
	// consumer created from scratch starts with the events stored from
	// then on, however late its setup succeeds, a restart in between
	// included (Options.AddedFile). Zero (a sink configured at start):
	// with the events after the consumer is created.
	since   time.Time
	js      jetstream.JetStream
	stream  jetstream.Stream
	parked  *parking
	members *membership
	// purged is what the worker last read of the purge notices (purged.go).
	purged   atomic.Pointer[purgedTenants]
	dlq      *deadLetters
	attempts *attemptLog
	metrics  *metrics
	log      *slog.Logger
	// retries says failed attempts, deadLettered events dead-lettered: a
	// few a minute each.
	retries, deadLettered *failureLog
	partitions            int
	ackWait               time.Duration
	maxPending            int
	laneLimit             int
	t                     timing
	now                   func() time.Time
	rnd                   func() float64
	tracer                trace.Tracer  // nil: no tracing
	trust                 *events.Trust // which events the relay published (nil: NATS embedded)
	keyWait               time.Duration // Options.KeyWait

	// keyWaits says events that wait for their signing key, a few a minute.
	keyWaits *failureLog
	// ackFailures says acknowledgements that failed; lostAcks keeps them
	// to be sent again (lostacks.go).
	ackFailures *failureLog
	lostAcks    lostAcks
	// foreigners says messages dropped as not the partitions' own, a few
	// a minute.
	foreigners *failureLog
	// wakes times the tries of parked resources before their time (wake.go).
	wakes wakes

	sem chan struct{} // requests in flight, across the worker's partitions
	// batches gathers lanes' events into batched requests; nil when the
	// sink sends one event per request.
	batches *batcher
	wg      sync.WaitGroup // partitions running or handing over

	mu     sync.Mutex
	owned  map[int]*partition
	joined bool // announced at least once
	// running holds the runs of partitions not ended (a run's claim stands
	// while it runs: claim.go); unreleased the partitions whose claim's
	// release failed.
	running    map[uint64]struct{}
	unreleased map[int]struct{}

	// renumberSeen is set once streamRenumbered found the stream behind a
	// consumer twice, a moment apart: the setup's later partitions (set
	// up one after another) are not asked twice again.
	renumberSeen bool

	// stopBy, once shutdown began, is when the stop's requests to NATS
	// end (stopRequest): unix nanoseconds, 0 before.
	stopBy atomic.Int64

	// sweepFailing is set while removing the parking bucket's old markers
	// fails (sweepMarkers), so that it is said once.
	sweepFailing atomic.Bool
}

// consumerName is the durable consumer of one partition of a sink. Sink
// names have no capital letters, so no sink's consumers collide with
// another's.
func consumerName(sink string, partition int) string {
	return "scimrelay-sink-" + sink + "-P" + strconv.Itoa(partition)
}

// consumerConfig is a partition consumer's configuration: explicit acks, no
// delivery limit (the sink's schedule decides), a pinned priority group so
// that one worker at a time receives the partition, and where a new one
// starts (new events, or those since the reload that added the sink).
func (w *worker) consumerConfig(partition int) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:        consumerName(w.name, partition),
		Description:    fmt.Sprintf("scimrelay sink %s, partition %d of %d", w.name, partition, w.partitions),
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  w.maxPending,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      w.t.pinnedTTL,
		PriorityGroups: []string{priorityGroup},
	}
	if !w.since.IsZero() {
		since := w.since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	if len(w.tenants) == 0 {
		cfg.FilterSubject = events.PartitionSubjects("", partition)
	}
	for _, t := range w.tenants {
		cfg.FilterSubjects = append(cfg.FilterSubjects, events.PartitionSubjects(t, partition))
	}
	return cfg
}

// setupConsumer creates a partition's consumer, or brings an existing one
// to the sink's configuration. Where it starts is kept as it is: JetStream
// cannot change a consumer's deliver policy, and one a worker recreated
// (partition.recreate) starts at a stream sequence, so asking for
// DeliverNew again would fail every later start and reload of the sink.
//
// Another process may make the consumer between the look and the create
// (the processes of a deployment reloaded at once, each adding the sink
// with the time of its own reload): the create then fails, and the
// consumer is looked at again, so that the first to make it sets where it
// starts. Created or updated regardless, JetStream refused to change the
// start time ("start time can not be updated"): the reload failed, and a
// front end that lost left the sink's bucket unmade, so the workers'
// reloads failed too and the sink delivered nothing until the next
// (TestConcurrentReloadsAddingASink).
func (w *worker) setupConsumer(ctx context.Context, partition int) error {
	cfg := w.consumerConfig(partition)
	for range 3 { // a renumbered stream's consumer made again, or another's recovery waited for
		cons, err := w.js.Consumer(ctx, events.StreamName, cfg.Durable)
		switch {
		case err == nil:
			if renumbered, err := w.streamRenumbered(ctx, partition, cons.CachedInfo()); err != nil {
				return err
			} else if renumbered {
				// Made again from the stream's first event, as
				// partition.recreate does ("deliver new" would skip what
				// was published since the stream lost its events), by
				// whoever holds the partition's recovery; the filter of
				// the tenants this process does not configure is kept
				// as for a consumer updated.
				if err := w.recoverConsumer(ctx, partition, cons.CachedInfo(), w.fromFirstEvent(partition, cons.CachedInfo().Config)); err != nil {
					return err
				}
				continue // looked at again: this one's, or another's
			}
			was := cons.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = was.DeliverPolicy, was.OptStartSeq, was.OptStartTime
			cfg.FilterSubjects = w.othersKept(cfg.FilterSubjects, was)
			_, err = w.js.CreateOrUpdateConsumer(ctx, events.StreamName, cfg)
			return err
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			return err
		}
		// Not there: perhaps deleted by another process that is making it
		// again from the stream's first event. Made here with "deliver
		// new" meanwhile, it would win that process's create and skip
		// every event stored since the stream lost its events.
		waited, interrupted, err := w.awaitRecovery(ctx, partition)
		if err != nil {
			return err
		}
		if interrupted {
			// Its holder stopped between its delete and its create: made
			// here as it would have made it.
			cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverAllPolicy, 0, nil
		} else if waited {
			continue
		}
		if _, err = w.js.CreateConsumer(ctx, events.StreamName, cfg); !errors.Is(err, jetstream.ErrConsumerExists) {
			return err
		}
		// Made meanwhile by another process: looked at again, its start kept.
	}
	return fmt.Errorf("consumer %s: made or deleted by another process each time this one looked", cfg.Durable)
}

// othersKept is filter, a partition consumer's filter subjects of the
// tenants this process's sink takes, with those of was, the consumer as
// found, whose tenant this process does not configure (scope): a front
// end serves its own tenants (README, Deploying: one per set of
// tenants), and its relay.yaml can give a sink no tenant of another's,
// so the front ends' relay.yaml and the workers' cannot agree on a sink
// that takes tenants of two front ends. Before, each start of one front
// end wrote its own tenants alone: the other front end's were passed
// over for every worker, never sent, with nothing said
// (TestFrontEndsOfOtherTenantsKeepEachOthersInASink).
//
// A sink that takes every tenant (no tenants) is written as such, and
// one that takes some narrows consumers that took every tenant: the
// processes that configure a tenant must agree on the sink.
func (w *worker) othersKept(filter []string, was jetstream.ConsumerConfig) []string {
	var scope []string
	if p := w.scope.Load(); p != nil {
		scope = *p
	}
	if len(w.tenants) == 0 || len(scope) == 0 {
		return filter
	}
	for _, f := range append(slices.Clone(was.FilterSubjects), was.FilterSubject) {
		if t := events.PatternTenant(f); t != "" && !slices.Contains(scope, t) && !slices.Contains(filter, f) {
			filter = append(filter, f)
		}
	}
	return filter
}

// partitionRuns numbers the runs of partitions across the process, from 1:
// a sink's worker that a reload starts anew never reuses a number of the
// one before it, whose claims (named by worker id and run) may outlive it
// when their release failed.
var partitionRuns atomic.Uint64

// keepAliveEvery is how often a message a worker holds is said to be in
// progress, so that its ack wait does not run out meanwhile.
func (w *worker) keepAliveEvery() time.Duration { return max(w.ackWait/3, 100*time.Millisecond) }

// pullBatch is how many messages a partition asks for at a time, so that
// the next request's events are there when one goes out: two per request
// slot for a sink that sends one event per request, two batches' worth for
// a batching sink (with two per slot, 32, a busy partition's events waited
// a second on average to be pulled in the README's Entra cycle:
// docs/decisions.md, Delivery).
func (w *worker) pullBatch() int {
	want := 2 * cap(w.sem)
	if w.batches != nil {
		want = 2 * w.batches.maxEvents
	}
	return min(w.maxPending, max(16, min(256, want)))
}

// sliceMax is how many of a resource's events go out in one request.
func (w *worker) sliceMax() int {
	if w.batches == nil {
		return 1
	}
	return w.batches.maxEvents
}

// skips reports whether the sink passes over e: not one of its types or
// tenants, or of a tenant purged (purged says so, purged.go). first says
// the partition's consumer has just delivered e for the first time.
//
// The processes of a deployment reload one after another, and the first
// to reload with a tenant added changes the consumers' filter for all: an
// event the consumer has just delivered passed that filter, so it is of a
// tenant the sink takes, whatever this worker's tenants, perhaps not
// reloaded yet, say (TestWideningAcrossProcesses); before, such a worker
// passed over (acknowledged, never sent) the added tenant's events. An
// event tried again (held after a failure, delivered again, read back from
// the stream, which no filter passes) of a tenant this worker leaves out
// is held to the filter as read now, since passing it over loses it; where
// the filter cannot be read (a look at the consumer that timed out: its
// leader lost), it is taken, for the same reason: at worst it was due to
// the sink before a narrowing, which a worker not reloaded sends anyway
// (README, Filters). Before, it was passed over, never sent nor
// dead-lettered, and its resource's later events sent
// (TestRetriedEventOfAWideningIsTakenWhenTheFilterCannotBeRead). An event of a
// tenant this worker takes is taken: a tenant another process removed is
// sent from what this worker holds or has parked until its own reload
// (README, Filters). Types are not in the filter: an event of a type the
// sink leaves out is passed over.
func (p *partition) skips(e event.Event, sseq uint64, first bool) (skip, purged bool) {
	w := p.w
	if purged = w.purgedCovers(e, sseq); purged {
		return true, true
	}
	tenant := events.Tenant(e)
	switch {
	case !selects(nil, w.patterns, e):
		return true, false
	case first, len(w.tenants) == 0, slices.Contains(w.tenants, tenant):
		return false, false
	}
	filter, err := p.consumerFilter()
	return err == nil && !filterTakes(filter, tenant), false
}

// consumerFilter reads the partition consumer's filter subjects.
func (p *partition) consumerFilter() ([]string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	cons, err := p.w.js.Consumer(ctx, events.StreamName, consumerName(p.w.name, p.n))
	if err != nil {
		return nil, err
	}
	cfg := cons.CachedInfo().Config
	return append(slices.Clone(cfg.FilterSubjects), cfg.FilterSubject), nil
}

// filterTakes reports whether a partition consumer of these filter
// subjects takes the events of tenant.
func filterTakes(filter []string, tenant string) bool {
	return slices.ContainsFunc(filter, func(f string) bool {
		t := events.PatternTenant(f)
		return f != "" && (t == "" || t == tenant)
	})
}

// selects reports whether a sink of these tenants (empty: all) and event
// patterns takes e.
func selects(tenants []string, patterns events.Patterns, e event.Event) bool {
	if len(tenants) > 0 && !slices.Contains(tenants, events.Tenant(e)) {
		return false
	}
	a, _ := events.ActionOf(e)
	return patterns.Match(a)
}

// run takes part in delivery until ctx ends, then hands its partitions over.
func (w *worker) run(ctx context.Context) error {
	tick := time.NewTicker(w.t.heartbeat)
	defer tick.Stop()
	failing := false
	for {
		if err := w.reconcile(ctx); err != nil {
			if ctx.Err() != nil {
				// Stopping (a reload removed the sink, or shutdown): not
				// a fault of NATS, and nothing to warn about.
				w.shutdown()
				return nil
			}
			if !failing {
				w.log.Warn("delivery workers cannot coordinate through NATS; retrying", "err", err)
			}
			failing = true
		} else if failing {
			w.log.Info("delivery workers coordinate again")
			failing = false
		}
		select {
		case <-ctx.Done():
			w.shutdown()
			return nil
		case now := <-tick.C:
			w.resendAcks()
			w.probe(now)
		}
	}
}

// reconcile announces the worker and starts and stops partitions to match
// the assignment.
func (w *worker) reconcile(ctx context.Context) error {
	if !w.members.leaseValid() && w.ownedCount() > 0 {
		// The lease lapsed: another worker may take these partitions over
		// at any moment. Stop at once, abandoning in-flight deliveries.
		w.log.Warn("this worker lost contact for too long; stopping its deliveries")
		// It owns none from now on (another worker may have them), said
		// before the wait for its deliveries to end, long with NATS away.
		w.metrics.partitions.WithLabelValues(w.name).Set(0)
		w.releaseAll(false)
	}
	began := time.Now()
	bctx, cancel := context.WithTimeout(ctx, w.beatTimeout())
	live, notices, err := w.members.beat(bctx, w.ownedList())
	cancel()
	if err != nil {
		return err
	}
	// The lease is renewed only by a heartbeat that read which tenants
	// were purged: a worker that cannot read them stops delivering when
	// its lease runs out, before a purge's wait for the workers is over
	// (AnnouncePurge).
	w.takePurged(notices)
	w.members.renew(began)
	w.mu.Lock()
	w.joined = true
	unreleased := len(w.unreleased) > 0
	w.mu.Unlock()
	if unreleased {
		// Within a heartbeat: the lease check above must come round again.
		rctx, cancel := context.WithTimeout(ctx, w.t.heartbeat)
		w.retryUnclaims(rctx)
		cancel()
	}
	owner := assign(w.name, w.partitions, live)
	for n, id := range owner {
		mine := id == w.members.id
		w.mu.Lock()
		p, running := w.owned[n]
		w.mu.Unlock()
		switch {
		case mine && !running:
			w.start(n)
		case !mine && running:
			w.mu.Lock()
			delete(w.owned, n)
			w.mu.Unlock()
			p.stop(true) // it hands over in the background
		}
	}
	w.metrics.partitions.WithLabelValues(w.name).Set(float64(w.ownedCount()))
	return nil
}

// beatTimeout is how long a heartbeat (two round trips: the announcement,
// then the listing) may take: half the lease, at least 2 s and a
// heartbeat, but no longer than the lease has left to run, so that a
// worker cut off from NATS is back at its lease check about when the
// lease runs out. With 2 s, a NATS that answered each request a second
// late (slow, not silent) failed every heartbeat: every lease lapsed and
// delivery stopped for as long as NATS stayed slow
// (TestSlowNATSKeepsTheLease). The lease is renewed from when the beat
// began, so a long one gives it no more time.
func (w *worker) beatTimeout() time.Duration {
	floor := max(2*time.Second, w.t.heartbeat)
	d := max(floor, w.t.lease/2)
	if left := time.Duration(w.members.leaseUntil.Load() - clock(time.Now())); left > 0 && left < d {
		d = max(floor, left)
	}
	return d
}

func (w *worker) start(n int) {
	p := newPartition(w, n)
	w.mu.Lock()
	w.owned[n] = p
	w.running[p.runID] = struct{}{}
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		p.run()
		w.mu.Lock()
		delete(w.running, p.runID)
		w.mu.Unlock()
	}()
}

func (w *worker) ownedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.owned)
}

func (w *worker) ownedPartitions() []*partition {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*partition, 0, len(w.owned))
	for _, p := range w.owned {
		out = append(out, p)
	}
	return out
}

func (w *worker) ownedList() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int, 0, len(w.owned))
	for n := range w.owned {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// releaseAll stops every partition and waits for them.
func (w *worker) releaseAll(graceful bool) {
	w.mu.Lock()
	owned := w.owned
	w.owned = map[int]*partition{}
	w.mu.Unlock()
	for _, p := range owned {
		p.stop(graceful)
	}
	for _, p := range owned {
		<-p.done
	}
}

// shutdown withdraws the worker, so that the others take its partitions,
// and hands them over. It stays announced as leaving until every
// partition's claim is released, so that nobody takes one before.
func (w *worker) shutdown() {
	w.stopBy.Store(time.Now().Add(apiTimeout + w.t.handOver + stopRelease).UnixNano())
	ctx, cancel := w.stopRequest()
	defer cancel()
	if err := w.members.leave(ctx); err != nil {
		w.log.Debug("withdrawing the worker", "err", err)
	}
	handedOver := make(chan struct{})
	go repeat(handedOver, w.t.heartbeat, func() {
		ctx, cancel := context.WithTimeout(context.Background(), w.t.heartbeat)
		defer cancel()
		_ = w.members.stillLeaving(ctx)
	})
	w.releaseAll(true)
	w.wg.Wait() // partitions handed over earlier
	close(handedOver)
	rctx, rcancel := w.stopRequest()
	defer rcancel()
	w.retryUnclaims(rctx)
	gctx, gcancel := w.stopRequest()
	defer gcancel()
	if err := w.members.gone(gctx); err != nil {
		w.log.Debug("withdrawing the worker", "err", err)
	}
}

// stopRelease is what a worker's stop gives its partitions' claims'
// release after their hand-over (stopRequest).
const stopRelease = 7 * time.Second

// stopRequest is the context of one request to NATS of the worker's
// end: apiTimeout, and once shutdown began no later than its bound (its
// withdrawal, the hand-over, stopRelease), yet a second at least. With
// NATS silent each step ran out its own 5 s one after another, and a
// worker's stop took 27 to 35 s, past the "about 25 s" that the grace
// periods of the chart, Compose and the systemd unit count on (README,
// Docker Compose; from a shutdown hunt).
func (w *worker) stopRequest() (context.Context, context.CancelFunc) {
	d := apiTimeout
	if by := w.stopBy.Load(); by != 0 {
		d = min(d, max(time.Until(time.Unix(0, by)), time.Second))
	}
	return context.WithTimeout(context.Background(), d)
}

// backlog reads what the sink has not delivered yet, in every partition,
// whoever owns it: the events waiting in the stream and those taken by a
// worker (from the partition consumers), the resources parked (from the
// parking bucket: their events were taken from the consumers and are read
// back from the stream), and when the oldest of all these was stored.
// The partitions are read statusReads at a time: each is a few JetStream
// requests, and one after another, with NATS answering a second late,
// the default 16 partitions took a minute (the sinks status's "within
// 5 s" in README).
func (w *worker) backlog(ctx context.Context) (b backlog, err error) {
	type read struct {
		info   *jetstream.ConsumerInfo
		parked []parked
	}
	reads := make([]read, w.partitions)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statusReads)
	for p := range w.partitions {
		g.Go(func() error {
			c, err := w.js.Consumer(gctx, events.StreamName, consumerName(w.name, p))
			if err != nil {
				return fmt.Errorf("reading consumer %s: %w", consumerName(w.name, p), err)
			}
			reads[p].info = c.CachedInfo() // Consumer has just read it
			reads[p].parked, err = w.parked.load(gctx, p)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return backlog{}, err
	}
	var waiting []parkedAt // where undelivered events start
	for _, r := range reads {
		b.pending += r.info.NumPending
		b.inFlight += r.info.NumAckPending
		waiting = append(waiting, consumerWaiting(r.info)...)
		b.parked += len(r.parked)
		for _, pr := range r.parked {
			waiting = append(waiting, parkedAt{from: pr.record.From, filter: pr.subject.ResourceSubjects()})
		}
	}
	b.oldest, err = oldestStored(waiting, w.firstStored(ctx))
	return b, err
}

// statusReads is how many JetStream reads a sink's status makes at once.
const statusReads = 16

// backlog is what a sink has not delivered yet (worker.backlog).
type backlog struct {
	pending  uint64
	inFlight int
	parked   int       // resources
	oldest   time.Time // when the oldest undelivered event was stored; zero: none waits
}

// consumerWaiting is where a partition consumer's undelivered events
// start: past its ack floor, when it has any.
func consumerWaiting(info *jetstream.ConsumerInfo) []parkedAt {
	if info.NumPending+uint64(info.NumAckPending) == 0 {
		return nil
	}
	var out []parkedAt
	for _, f := range append([]string{info.Config.FilterSubject}, info.Config.FilterSubjects...) {
		if f != "" {
			out = append(out, parkedAt{from: info.AckFloor.Stream + 1, filter: f})
		}
	}
	return out
}

// ready reports whether the worker delivers: it is a member, and each of
// its partitions is consuming or waiting for the previous owner's pin.
func (w *worker) ready() error {
	w.mu.Lock()
	joined := w.joined
	var failing []int
	for n, p := range w.owned {
		if p.state.Load() == stateFailing {
			failing = append(failing, n)
		}
	}
	w.mu.Unlock()
	switch {
	case !joined:
		return errors.New("not yet a member of the sink's workers")
	case !w.members.leaseValid():
		return errors.New("cannot reach the other workers through NATS")
	case len(failing) > 0:
		slices.Sort(failing)
		return fmt.Errorf("cannot consume partitions %v", failing)
	}
	return nil
}

// deadLetter gives up on an event, which came from from.
func (w *worker) deadLetter(ctx context.Context, e *event.Event, from origin, res Result, tries int) error {
	already, err := w.dlq.put(ctx, w.name, e, from, res, tries)
	if err != nil {
		return fmt.Errorf("dead-lettering: %w", err)
	}
	if already {
		// The event came again (an acknowledgement lost, a hand-over) and
		// failed as before: counted and logged the first time.
		w.log.Debug("event dead-lettered again; the queue had it", "event_id", e.ID(), "attempt", tries)
		return nil
	}
	w.metrics.outcome(w.name, "dead_lettered")
	w.attempts.record(w.name, []*event.Event{e}, res, tries, "dead_lettered")
	w.deadLettered.failed(w.now(), res.Status, truncate(errText(res.Err), maxErrorInQueue), "event_id", e.ID(), "attempt", tries, "latency", res.Latency,
		"redrive", "scimrelay dlq redrive --sink "+w.name+" --all, once the receiver takes it")
	return nil
}

// retrying records a failed try of events (one request) that will be
// repeated at next.
func (w *worker) retrying(es []*event.Event, res Result, tries int, next time.Time) {
	for range es {
		w.metrics.outcome(w.name, "retry")
	}
	w.attempts.recordRetry(w.name, es, res, tries, next)
	w.retries.failed(w.now(), res.Status, truncate(errText(res.Err), maxErrorInQueue),
		"event_id", es[0].ID(), "events", len(es), "attempt", tries, "latency", res.Latency, "retry_in", time.Until(next).Round(time.Millisecond))
}

// poison dead-letters a message that is not a scimrelay event, so that it
// does not block its consumer.
func (w *worker) poison(ctx context.Context, m jetstream.Msg, cause error) {
	w.deadLetterRaw(ctx, m, cause)
	_ = m.Term()
}

// foreign drops a message that reached a partition's inbox from anything
// but that partition's consumer on the event stream (meta nil, err set,
// when it carries no JetStream metadata at all). NATS checks a request's
// subject against a client's permissions, not its reply subject: a client
// that may pull from a consumer of its own, and knows a worker's inbox,
// can have JetStream deliver that consumer's messages there (events of
// the relay's own signing, which would then be taken as the partition's:
// repeats, or later events that make the earlier ones look delivered), or
// the answer of any API request. Neither acknowledged nor dead-lettered:
// it is not this worker's to settle. Said at Warn a few a minute and
// counted as not_published.
func (w *worker) foreign(m jetstream.Msg, meta *jetstream.MsgMetadata, err error) {
	from := "no JetStream message"
	if err == nil {
		from = "stream " + meta.Stream + ", consumer " + meta.Consumer
	}
	w.foreigners.failed(time.Now(), 0, from, "subject", m.Subject())
	w.metrics.outcome(w.name, "not_published")
}

// poisonRaw dead-letters a malformed message read back from the stream.
func (w *worker) poisonRaw(ctx context.Context, raw *jetstream.RawStreamMsg, cause error) {
	w.deadLetterRaw(ctx, storedMsg{raw: raw}, cause)
}

// deadLetterRaw gives up on a message that is not a scimrelay event. One
// the queue does not take is dropped, said at Error; unlike an event's
// dead letter it is not tried again. Like deadLetter, it counts and logs a
// dead letter only when the queue did not have it.
func (w *worker) deadLetterRaw(ctx context.Context, m jetstream.Msg, cause error) {
	if errors.Is(cause, events.ErrNotPublished) {
		// Not dead-lettered: a redrive would deliver it.
		w.log.Error("a message in the event stream was not published by the relay (a NATS client that may not publish there had JetStream answer a request onto it); it is dropped, not delivered: see README, Who can reach what",
			"subject", m.Subject(), "err", cause)
		w.metrics.outcome(w.name, "not_published")
		return
	}
	already, err := w.dlq.putRaw(ctx, w.name, m, cause)
	switch {
	case err != nil:
		w.log.Error("message is not a scimrelay event, and dead-lettering it failed; it is dropped", "subject", m.Subject(), "cause", cause, "err", err)
	case already:
		w.log.Debug("malformed message dead-lettered again; the queue had it", "subject", m.Subject())
	case errors.Is(cause, events.ErrRetiredKey):
		w.log.Error("an event is signed by a key the event stream retired, and was stored after its retirement: a forgery with a leaked key (scimrelay keys rotate events retired it); dead-lettered, and never delivered",
			"subject", m.Subject(), "err", cause)
		w.metrics.outcome(w.name, "dead_lettered")
	case errors.Is(cause, events.ErrUnknownKey):
		w.log.Error("an event is signed by a key the event stream does not name: a forgery, or the relay's own signed by a key its front end began to use since (its data file was replaced, or another front end wrote over its key and it has not written it back in time); dead-lettered, and a redrive delivers it once the stream names the key",
			"subject", m.Subject(), "err", cause)
		w.metrics.outcome(w.name, "dead_lettered")
	default:
		w.log.Error("message is not a scimrelay event; dead-lettered", "subject", m.Subject(), "err", cause)
		w.metrics.outcome(w.name, "dead_lettered")
	}
}

// storedMsg presents a message read from the stream the way the
// dead-letter queue takes a consumer's: by its subject, headers and data.
// It is never acknowledged, so the embedded interface stays nil.
type storedMsg struct {
	jetstream.Msg
	raw *jetstream.RawStreamMsg
}

func (s storedMsg) Subject() string      { return s.raw.Subject }
func (s storedMsg) Headers() nats.Header { return s.raw.Header }
func (s storedMsg) Data() []byte         { return s.raw.Data }

// defaultRand is the jitter source.
func defaultRand() float64 { return rand.Float64() }
