// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A partition is one of a sink's partition consumers while this worker
// owns it. Its messages are queued in lanes, one per resource, so that a
// resource's events go out one at a time and in order while different
// resources go out in parallel, up to the sink's concurrency (shared by all
// the partitions a worker owns).

// priorityGroup is the pinned priority group every partition consumer has.
const priorityGroup = "scimrelay"

// Partition states, for readiness.
const (
	stateAcquiring int32 = iota // waiting for the pin, or setting up
	stateRunning                // consuming
	stateFailing                // cannot consume; retrying
)

type partition struct {
	w     *worker
	n     int
	runID uint64 // this run of the partition in this worker (its claim's)
	name  string
	state atomic.Int32

	// ctx ends on a hard stop: in-flight deliveries are abandoned.
	ctx    context.Context
	cancel context.CancelFunc
	// stopping closes on a graceful stop: nothing new is taken, queued
	// events are parked for the next owner.
	stopping chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	// renumberSaid is set once renumbered has logged.
	renumberSaid atomic.Bool

	mu        sync.Mutex
	lanes     map[string]*lane
	recovery  int64                      // when the recovery whose resources this partition wakes began, a clock reading (0: none): set by a look, kept while it does not consume, cleared when none is left (wake.go)
	delivered map[string]deliveredMark   // resource key → what was completed of it while owned, this generation (marksPerGeneration)
	earlier   map[string]deliveredMark   // resource key → what delivered had before the mark moved down or back (resourceMarks)
	inFlight  map[jetstream.Msg]struct{} // consumer messages being delivered
	highest   uint64                     // highest stream sequence received from the consumer
	floor     uint64                     // the consumer's ack floor when this worker took it
	pin       string                     // the pin id of the messages last received
	claimRev  uint64                     // the revision of the claim this run wrote; 0: none
	wg        sync.WaitGroup             // lane goroutines
	released  bool                       // release has begun: no lane starts (enqueue after a Drain or Stop that consume did not wait for)

	// The generation of marks before delivered's (under mu): looked up
	// when delivered has no mark of a resource, dropped when delivered
	// fills again once the consumer's ack floor has passed it. newestSeq
	// and olderSeq are the highest stream sequences each generation
	// completed; ackFloor is the consumer's, as last read (findHandedOver).
	olderDelivered, olderEarlier  map[string]deliveredMark
	newestSeq, olderSeq, ackFloor uint64

	// seenDelivered (under mu) is the consumer's delivered count at the
	// last look that found no other worker holding its pin and nothing
	// left to read (findHandedOver).
	seenDelivered uint64

	// What release needs to tell which of the consumer's unacknowledged
	// messages wait for this worker's acknowledgements (awaitAcks): the
	// messages taken from the consumer since the partition was acquired,
	// those acknowledged or terminated since, and the highest delivery
	// sequence received (lastDelivery, under mu).
	taken, settled atomic.Uint64
	lastDelivery   uint64
	// sentAcks are the latest acknowledgements sent of messages taken
	// from the consumer, for findLostAcks and awaitAcks to send again
	// (lostacks.go).
	sentAcks sentAcks
	// consumed (under mu) is the highest stream sequence received from the
	// consumer since the partition was acquired: a reset there delivers
	// again what was received before.
	consumed uint64

	// The consumer numbers every message it delivers (its delivery
	// sequence, redeliveries included), and this worker, which holds the
	// partition's claim and the consumer's pin, is its only puller: a
	// number skipped is a message the server sent that never reached the
	// worker (lost in transit, as when the NATS server the worker is
	// connected to stops). JetStream sends it again only after the ack
	// wait, and meanwhile the resource's later events would go out before
	// it, and its mark would then drop it as a repeat (followDeliveryLocked).
	// nextDelivery (under mu) is the number the next message should bear
	// (0: not known), and gap is set once a number was skipped: enqueue
	// takes nothing more, and the partition is taken again from the
	// consumer's ack floor. lost ends consume early.
	nextDelivery uint64
	gap          bool
	lost         chan error
	// gapPin (under mu) is the consumer's pin when a gap was found: this
	// worker's, perhaps given anew by a new consumer leader to a pull of
	// which no message was taken (so not p.pin); waitForPin releases it.
	gapPin string
	// A lost message that nothing follows shows in the consumer's info
	// instead: it counts more deliveries than came (findLostTail).
	// tailLooks (under mu) counts the looks in a row that found so with
	// nothing received between them, tailExpected is nextDelivery then,
	// and receiving is set while enqueue runs.
	tailLooks    int
	tailExpected uint64
	receiving    atomic.Bool
	// ackLooks (under mu) counts the looks in a row that found the
	// consumer waiting for acknowledgements this worker sent
	// (findLostAcks); ackResendAt is the count at which they are sent
	// again next.
	ackLooks, ackResendAt int
}

// lane is one resource's queue.
type lane struct {
	subject events.StoredSubject
	queue   []jetstream.Msg // consumer messages not started, in stream order
	busy    bool            // a goroutine works the lane
	park    *parkRecord     // set: the resource is read from the stream, not the consumer
	dropped uint64          // highest stream sequence acknowledged unread while parked
	timer   *time.Timer
	// hold is set while the lane's head failed and its park record could
	// not be written: the head and its followers stay queued,
	// unacknowledged, and the lane waits in memory until hold's Due.
	hold *held
	// parkFails counts the lane's park writes failed in a row; until
	// nextPark a burst does not try again.
	parkFails int
	nextPark  time.Time
	// parking counts park records being written. p.mu is not held across
	// the write (a NATS round trip): meanwhile the lane is not worked, its
	// arrivals wait in queue, and enqueue starts no other park of it.
	parking int
	// written is closed when the lane's latest record write is done: each
	// write waits for the one before, so that writes reach the bucket in
	// the order they were decided under p.mu.
	written chan struct{}
	// catchUp, while the lane is parked and read to its end, is the
	// stream sequence of the last event read: the consumer has yet to
	// pass it, and the lane stays parked until it has.
	catchUp uint64
	// out is the stream sequence of the first message of the slice the
	// lane has out for delivery (taken from queue; 0: none). A park from
	// enqueue meanwhile starts there, not at queue[0]: until the slice
	// settles, its events are neither delivered nor covered by a record.
	out uint64
	// early is set while the parked lane is tried before its record's due
	// time (wake.go); wokeInVain is the due time of the record a try
	// woken by a recovery failed back to: the lane is tried early again
	// only after that scheduled try.
	early      *early
	wokeInVain time.Time
}

// held is the record a lane could not write: where its retry stands.
type held struct {
	rec parkRecord
	// alone: the head goes out in a request of its own (a batch refusal
	// asked to split it).
	alone bool
}

// recordTurn is one write of a lane's park record, in its turn.
type recordTurn struct {
	after <-chan struct{} // the previous write's; nil: none
	done  chan struct{}
}

// turnLocked takes the lane's next turn to write its record.
func (l *lane) turnLocked() recordTurn {
	t := recordTurn{after: l.written, done: make(chan struct{})}
	l.written = t.done
	return t
}

// wait returns once the writes decided before this one are done.
func (t recordTurn) wait() {
	if t.after != nil {
		<-t.after
	}
}

func newPartition(w *worker, n int) *partition {
	ctx, cancel := context.WithCancel(context.Background())
	return &partition{w: w, n: n, runID: partitionRuns.Add(1), name: consumerName(w.name, n), ctx: ctx, cancel: cancel,
		stopping: make(chan struct{}), done: make(chan struct{}),
		lanes: map[string]*lane{}, delivered: map[string]deliveredMark{}, earlier: map[string]deliveredMark{}, inFlight: map[jetstream.Msg]struct{}{},
		lost: make(chan error, 1), ackResendAt: w.t.ackLooks}
}

// stop ends the partition: gracefully (finish what is in flight, park what
// is queued, release the pin) or hard (abandon in-flight deliveries). A
// graceful stop not done within handOver becomes a hard one (timing): the
// next owner then delivers the events this worker left unacknowledged.
func (p *partition) stop(graceful bool) {
	p.stopOnce.Do(func() {
		close(p.stopping)
		time.AfterFunc(p.w.t.handOver, func() {
			select {
			case <-p.done:
			default:
				if p.ctx.Err() == nil {
					p.w.log.Warn("a partition's hand-over outlasted its time; abandoning its deliveries in flight, which the next owner sends again",
						"partition", p.n, "after", p.w.t.handOver)
				}
				p.cancel()
			}
		})
	})
	if !graceful {
		p.cancel()
	}
}

func (p *partition) isStopping() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// run owns the partition until stopped.
func (p *partition) run() {
	defer close(p.done)
	defer p.cancel()
	backoff := 250 * time.Millisecond
	for {
		cons, err := p.acquire()
		if p.isStopping() {
			break
		}
		if err != nil {
			p.state.Store(stateFailing)
			p.w.log.Warn("taking a partition failed; will try again", "partition", p.n, "err", err, "retry_in", backoff)
			if !p.pause(backoff) {
				break
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		p.running()
		err = p.consume(cons)
		if p.isStopping() {
			break
		}
		// The consumer went away under us (deleted, or recreated), or a
		// message it delivered never came (enqueue said so): let the lanes
		// deliver what they took from it, then take the partition again,
		// which brings the consumer back from the next event, or resets
		// it to its ack floor (waitForPin) to deliver the lost message
		// before its resource's later events.
		if !errors.Is(err, errDeliveryGap) {
			p.state.Store(stateFailing)
			p.w.log.Warn("lost the partition's consumer; taking it again", "partition", p.n, "consumer", p.name, "err", err)
		}
		p.wg.Wait()
		if !p.pause(backoff) {
			break
		}
	}
	p.release()
	p.dropClaim()
}

func (p *partition) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stopping:
		return false
	case <-t.C:
		return true
	}
}

// acquire takes the partition's claim, gets its consumer (recreating it
// if it is gone), waits until no other worker holds its pin, takes over
// what a previous owner left unacknowledged, and loads the parked
// resources.
func (p *partition) acquire() (jetstream.Consumer, error) {
	p.state.Store(stateAcquiring)
	w := p.w
	if taken, err := p.takeClaim(); err != nil || !taken {
		return nil, err
	}
	// Short deadlines: a request in flight when the connection drops gets
	// no answer, and waiting long for it would leave the partition idle.
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	defer cancel()
	cons, err := w.js.Consumer(ctx, events.StreamName, p.name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) && p.gone() {
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		defer cancel()
		cons, err = p.recreate(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("opening consumer %s: %w", p.name, err)
	}
	if taken, err := p.waitForPin(cons); err != nil || !taken {
		return nil, err
	}
	if err := p.loadParked(); err != nil {
		return nil, err
	}
	return cons, nil
}

// pinHeader is the header in which JetStream gives the pin id of a pinned
// consumer's messages.
const pinHeader = "Nats-Pin-Id"

// loadParked reads the partition's parked resources and parks those this
// worker holds nothing of. acquire calls it; enqueue again when the pin
// it receives under changes, and findHandedOver when another worker let
// the pin go without an event coming here. Two workers can both acquire
// a partition that nobody had pinned yet: the pin goes to one, and the
// other pulls only once it is released, after that owner's hand-over,
// which may have parked resources (and acknowledged their events) after
// the other one's acquire read the bucket. Without the second read it
// would take a parked resource's later events from the consumer and
// deliver them before the parked ones. Workers that claim partitions (claim.go) never run one two
// at a time; the reads on a pin change and in findHandedOver remain for
// workers of an earlier release, which take no claim, met in a rolling
// upgrade.
func (p *partition) loadParked() error {
	ctx, cancel := context.WithTimeout(p.ctx, 2*apiTimeout)
	defer cancel()
	parked, err := p.w.parked.load(ctx, p.n)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range parked {
		l := p.laneLocked(pr.subject)
		if l.park != nil || l.busy || l.parking > 0 || l.hold != nil || len(l.queue) > 0 {
			continue // this worker has it in hand already
		}
		rec := pr.record
		l.park = &rec
		p.scheduleLocked(l)
	}
	return nil
}

// waitForPin waits until no other worker holds the consumer's pin, then
// takes over what a previous owner left unacknowledged. It reports false
// when the partition stopped meanwhile.
func (p *partition) waitForPin(cons jetstream.Consumer) (bool, error) {
	w := p.w
	for {
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		info, err := cons.Info(ctx)
		if err != nil {
			cancel()
			return false, fmt.Errorf("reading consumer %s: %w", p.name, err)
		}
		pin := pinned(info)
		p.mu.Lock()
		own := pin != "" && (pin == p.pin || pin == p.gapPin)
		p.mu.Unlock()
		if own {
			// The pin of this worker's own consuming, which it ended (a
			// message delivered never came: enqueue, findLostTail): let it
			// go, rather than wait for it to expire (pinnedTTL).
			err := p.unpin(ctx)
			cancel()
			if err != nil {
				return false, fmt.Errorf("releasing consumer %s's pin: %w", p.name, err)
			}
			continue
		}
		if pin == "" {
			defer cancel()
			p.mu.Lock()
			p.floor = max(p.floor, info.AckFloor.Stream)
			p.seenDelivered = info.Delivered.Consumer
			p.lastDelivery, p.consumed = 0, 0
			p.nextDelivery, p.gap, p.gapPin = info.Delivered.Consumer+1, false, ""
			p.tailLooks = 0
			p.taken.Store(0)
			p.settled.Store(0)
			p.mu.Unlock()
			if info.NumAckPending > 0 {
				// A previous owner stopped without finishing, or a message
				// delivered to this worker never came: start again from the
				// ack floor, in stream order. Events delivered after the
				// floor go out again (same webhook-id) unless this worker's
				// marks know them; none overtakes an earlier one of its
				// resource.
				w.log.Info("taking over a partition with unacknowledged events; redelivering from its ack floor",
					"partition", p.n, "unacknowledged", info.NumAckPending, "ack_floor", info.AckFloor.Stream)
				r, err := w.js.ResetConsumer(ctx, events.StreamName, p.name)
				if err != nil {
					return false, fmt.Errorf("resetting consumer %s to its ack floor: %w", p.name, err)
				}
				// A reset numbers deliveries afresh; the answer has the
				// consumer as reset. Without it the first delivery is not
				// checked.
				p.mu.Lock()
				p.nextDelivery = 0
				if r != nil && r.ConsumerInfo != nil {
					p.nextDelivery = r.Delivered.Consumer + 1
				}
				p.mu.Unlock()
			}
			return true, nil
		}
		cancel()
		// Another worker holds it: it releases the pin once it has parked
		// what it held, or the pin expires if that worker is gone.
		if !p.pause(250 * time.Millisecond) {
			return false, nil
		}
	}
}

// apiTimeout bounds one JetStream API call of a partition.
const apiTimeout = 5 * time.Second

// gone reports whether the partition's consumer is really gone: JetStream
// says so twice, a moment apart, while the stream is there. A server that
// has just restarted answers "not found" for a consumer it has not
// recovered yet, and recreating it then would lose its position.
func (p *partition) gone() bool {
	for i := range 2 {
		if i > 0 && !p.pause(2*time.Second) {
			return false
		}
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		_, serr := p.w.js.Stream(ctx, events.StreamName)
		_, cerr := p.w.js.Consumer(ctx, events.StreamName, p.name)
		cancel()
		if serr != nil || !errors.Is(cerr, jetstream.ErrConsumerNotFound) {
			return false
		}
	}
	return true
}

// recreate brings back a consumer someone deleted, starting after the last
// event this partition received, so that nothing published meanwhile is
// skipped. A partition that has received nothing and whose consumer had
// acknowledged nothing when this worker took it starts at the stream's
// first event: "deliver new" would skip what was published between the
// deletion and now.
func (p *partition) recreate(ctx context.Context) (jetstream.Consumer, error) {
	cfg := p.w.consumerConfig(p.n)
	p.mu.Lock()
	if from := max(p.highest, p.floor); from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	} else {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	p.mu.Unlock()
	cons, err := p.w.js.CreateConsumer(ctx, events.StreamName, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return p.w.js.Consumer(ctx, events.StreamName, p.name)
	}
	if err == nil {
		p.w.log.Warn("the partition's consumer was gone; recreated it", "consumer", p.name, "from_stream_seq", cfg.OptStartSeq)
	}
	return cons, err
}

// unpin releases the consumer's pin.
func (p *partition) unpin(ctx context.Context) error {
	st, err := p.w.js.Stream(ctx, events.StreamName)
	if err == nil {
		err = st.UnpinConsumer(ctx, p.name, priorityGroup)
	}
	return err
}

func pinned(info *jetstream.ConsumerInfo) string {
	for _, g := range info.PriorityGroups {
		if g.PinnedClientID != "" {
			return g.PinnedClientID
		}
	}
	return ""
}

// consume takes messages until the partition stops (nil) or the consumer
// fails (the error). It uses Consume, whose subscription buffers what the
// server sends, rather than Messages, whose channel holds one batch: a
// worker starved of CPU for a moment misses heartbeats, re-pulls, and a
// full channel would drop events until their ack wait ran out.
func (p *partition) consume(cons jetstream.Consumer) error {
	w := p.w
	lost := p.lost
	select {
	case <-lost: // from the consuming before, which has ended
	default:
	}
	gone := func(err error) {
		select {
		case lost <- err:
		default:
		}
	}
	cc, err := cons.Consume(p.enqueue,
		jetstream.PullMaxMessages(w.pullBatch()),
		jetstream.PullExpiry(w.t.pullExpiry),
		jetstream.PullPriorityGroup(priorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
				gone(err)
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// NATS was away or slow: consuming carries on by itself
				// unless the consumer itself is gone.
				go func() {
					if p.gone() {
						gone(jetstream.ErrConsumerNotFound)
					}
				}()
			default:
				w.log.Debug("consuming a partition", "partition", p.n, "err", err)
			}
		}),
	)
	if err != nil {
		return fmt.Errorf("consuming %s: %w", p.name, err)
	}
	finished := make(chan struct{})
	defer close(finished)
	go repeat(finished, w.keepAliveEvery(), p.keepQueuedAlive)
	go repeat(finished, w.t.pullExpiry, func() { p.findHandedOver(cons) })
	go repeat(finished, w.t.claimRenew, p.renewClaim)
	go repeat(finished, w.t.markerSweep, p.sweepMarkers)
	select {
	case <-p.stopping:
	case <-p.ctx.Done():
	case err := <-lost:
		cc.Stop()
		<-cc.Closed()
		return err
	}
	// Drain, not Stop: what the client already holds is handed to the
	// lanes, which park it for the next owner.
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-p.ctx.Done(): // the hand-over outlasted its time
		cc.Stop()
	case <-time.After(10 * time.Second):
		cc.Stop()
	}
	return nil
}

// parkedCount is how many of the partition's resources are parked.
func (p *partition) parkedCount() int {
	return p.countLanes(func(l *lane) bool { return l.park != nil })
}

// countLanes counts the partition's lanes for which is holds.
func (p *partition) countLanes(is func(*lane) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lanes {
		if is(l) {
			n++
		}
	}
	return n
}

// parkedAt is where undelivered events start: a parked resource's, or
// (for the backlog gauge) a partition consumer's past its ack floor.
type parkedAt struct {
	from   uint64 // stream sequence
	filter string // the resource's subjects, or the consumer's filter
}

// parkedFrom lists where each parked resource's undelivered events start.
func (p *partition) parkedFrom() []parkedAt {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []parkedAt
	for _, l := range p.lanes {
		if l.park != nil {
			out = append(out, parkedAt{from: l.park.From, filter: l.subject.ResourceSubjects()})
		}
	}
	return out
}

// keepQueuedAlive tells JetStream that the messages the lanes hold, queued
// or being delivered, are still being worked on, so that their ack wait
// does not run out while they wait their turn or a receiver is slow.
func (p *partition) keepQueuedAlive() {
	p.mu.Lock()
	var queued []jetstream.Msg
	for _, l := range p.lanes {
		queued = append(queued, l.queue...)
	}
	for m := range p.inFlight {
		queued = append(queued, m)
	}
	p.mu.Unlock()
	for _, m := range queued {
		_ = m.InProgress()
	}
}

// laneLocked returns a resource's lane, creating it.
func (p *partition) laneLocked(s events.StoredSubject) *lane {
	key := s.Key()
	l, ok := p.lanes[key]
	if !ok {
		s.Action = ""
		l = &lane{subject: s}
		p.lanes[key] = l
	}
	return l
}

func (p *partition) enqueue(m jetstream.Msg) {
	w := p.w
	meta, err := m.Metadata()
	if err != nil || meta.Stream != events.StreamName || meta.Consumer != p.name {
		w.foreign(m, meta, err)
		return
	}
	p.taken.Add(1)
	p.receiving.Store(true)
	defer p.receiving.Store(false)
	p.mu.Lock()
	p.lastDelivery = max(p.lastDelivery, meta.Sequence.Consumer)
	released := p.released
	take, expected := true, uint64(0)
	if !released {
		take, expected = p.followDeliveryLocked(meta.Sequence.Consumer)
		if !take {
			p.gapPin = m.Headers().Get(pinHeader)
		}
	}
	p.mu.Unlock()
	if released {
		return // as below, where release may have begun since
	}
	if !take {
		if expected > 0 {
			w.log.Warn("a message the partition's consumer delivered never reached this worker (NATS lost it in transit); taking nothing more, and taking the partition again from its ack floor once the events taken are delivered, so that none of its resource's later events goes out before it",
				"partition", p.n, "consumer", p.name, "expected_delivery", expected, "delivery", meta.Sequence.Consumer, "stream_seq", meta.Sequence.Stream)
			select {
			case p.lost <- errDeliveryGap:
			default:
			}
		}
		return // unacknowledged: delivered again after the reset
	}
	s, err := events.ParseStoredSubject(m.Subject())
	if err != nil {
		p.poison(m, err)
		return
	}
	seq := meta.Sequence.Stream
	if pin := m.Headers().Get(pinHeader); pin != "" && p.setPin(pin) {
		if err := p.loadParked(); err != nil {
			// Only a worker of an earlier release, which takes no claim,
			// can have parked one of this partition's resources since
			// acquire read them (a rolling upgrade): with claims the read
			// finds nothing new. A chaos review saw this fail 6-10 times a
			// run as NATS nodes stopped, which a Warn saying "out of
			// order" made look like a fault.
			w.log.Info("reading the partition's parked resources again as its consumer's pin changed failed; it matters only in a rolling upgrade from a release whose workers take no partition claims, where a resource such a worker parked may be delivered out of order", "partition", p.n, "err", err)
		}
	}
	p.mu.Lock()
	if p.released {
		// The client still hands over what it buffered after consume
		// returned (a drain cut short, a Stop): release waits for the
		// lanes, and may have returned. Left unacknowledged, the next
		// owner gets it again.
		p.mu.Unlock()
		return
	}
	p.highest = max(p.highest, seq)
	p.consumed = max(p.consumed, seq)
	l := p.laneLocked(s)
	if l.park != nil {
		// The stream read covers it (or delivered it already).
		l.dropped = max(l.dropped, seq)
		if l.catchUp > 0 && seq >= l.catchUp {
			// The consumer has passed what the read delivered: it may
			// unpark.
			l.catchUp = 0
			l.park.Due = w.now()
			p.scheduleLocked(l)
		}
		p.mu.Unlock()
		p.ack(m)
		return
	}
	l.queue = append(l.queue, m)
	if len(l.queue) > w.laneLimit && l.parking == 0 && !time.Now().Before(l.nextPark) {
		// More of this resource's events wait than its share of the
		// pending window: read them from the stream instead.
		p.parkOverflowLocked(l)
	}
	if !l.busy && l.parking == 0 && l.hold == nil && (len(l.queue) > 0 || l.park != nil) {
		p.startLocked(l) // a held lane starts when due (scheduleLocked)
	}
	p.mu.Unlock()
}

// errDeliveryGap ends consume when a message the consumer delivered never
// reached this worker (followDeliveryLocked).
var errDeliveryGap = errors.New("a message delivered by the consumer never reached this worker")

// followDeliveryLocked counts a message of delivery sequence d and
// reports whether enqueue takes it: not once a delivery was skipped (see
// nextDelivery). On the message that shows the gap it returns the
// delivery expected, for the warning; nothing else does.
//
// Only a number past the one expected is a gap. A lower one is the
// consumer numbering afresh (a reset, or a new leader whose replicated
// state is behind what the old one sent, which then sends again): it is
// followed from there. The pin does not matter: a new consumer leader
// pins anew (the client's next pull is refused, "pin ID mismatch", and
// pinned again), and a message the old leader sent then is lost all the
// same (TestScaleOutEarly). The first message after the partition was
// taken is checked against the consumer's count read then (after a
// reset, the reset's answer).
//
// A false gap (a delivery that did reach a puller: one of a worker of an
// earlier release, which takes no claim, in a rolling upgrade) costs a
// pause: the lanes finish what they took, the pin is released and taken
// again, and the consumer is reset to its ack floor; what this worker
// delivered since is known to its marks and acknowledged, not sent again.
func (p *partition) followDeliveryLocked(d uint64) (take bool, expected uint64) {
	if p.gap {
		return false, 0
	}
	if next := p.nextDelivery; next > 0 && d > next {
		p.gap = true
		return false, next
	}
	p.nextDelivery = d + 1
	return true, 0
}

// setPin records the pin id of a message received and reports whether it
// changed.
func (p *partition) setPin(pin string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := pin != p.pin
	p.pin = pin
	return changed
}

// findHandedOver reads the parking bucket again when the consumer
// delivered events to another worker that has since let its pin go, and
// none came to this worker. Two workers can both take a partition nobody
// has pinned yet (see loadParked); the one that got the pin may park a
// resource as it hands the partition over, and enqueue reads the bucket
// when the pin comes here with an event. Without one (the parked
// resource's last event went to that worker) the record would wait for
// the partition's next event, however late. consume calls this every
// pullExpiry: one consumer info a partition, beside its pulls.
func (p *partition) findHandedOver(cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	info, err := cons.Info(ctx)
	cancel()
	if err != nil {
		return // the next look; a consumer that is gone shows in consume
	}
	pin := pinned(info)
	p.findLostTail(info, pin)
	p.findLostAcks(info, pin)
	p.mu.Lock()
	p.ackFloor = max(p.ackFloor, info.AckFloor.Stream)
	if pin != "" && pin != p.pin {
		// Another worker holds it: what it delivers counts at a later look.
		p.mu.Unlock()
		return
	}
	delivered := info.Delivered.Consumer
	if pin != "" || delivered == p.seenDelivered {
		p.seenDelivered = delivered
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if err := p.loadParked(); err != nil {
		// seenDelivered stays: the next look reads the bucket again.
		p.w.log.Info("reading the partition's parked resources failed, after the consumer delivered events under no worker's pin (another worker may have handed the partition over, or a pin lapsed); will look again", "partition", p.n, "err", err)
		return
	}
	p.mu.Lock()
	p.seenDelivered = delivered
	p.mu.Unlock()
}

// tailLooksForGap is how many looks in a row (findLostTail), a pullExpiry
// apart, find the consumer counting more deliveries to this worker than
// came, with nothing coming between, before the missing ones are taken as
// lost: two whole intervals, so that a message still on its way or
// waiting in the client while enqueue is slow is not.
const tailLooksForGap = 3

// findLostTail finds messages delivered to this worker and lost in
// transit when no later one comes to show the gap (followDeliveryLocked):
// the consumer, pinned to this worker (the pin of the messages it last
// took), counts deliveries past those received, and none comes for two
// pullExpiry intervals. JetStream would send them again only after the
// ack wait; the partition is taken again from its ack floor instead, as
// for a gap. A false finding costs what a false gap does.
//
// A pin this worker received nothing under is not taken for its own: it
// may be a worker's of an earlier release (no claim), which must not be
// released under it. A lost message under such a pin, one a new consumer
// leader gave the worker's pull with that very message, is found once the
// pin has expired (pinnedTTL, no pull renewing it): a consumer pinned to
// nobody that counts deliveries past those received holds them in no
// worker's hands, which is what acquire takes for a previous owner's loss
// (waitForPin resets such a consumer). About 20 s instead of the ack
// wait's minute (a chaos run: 53-60 s late).
func (p *partition) findLostTail(info *jetstream.ConsumerInfo, pin string) {
	p.mu.Lock()
	next := p.nextDelivery
	ahead := (pin == "" || pin == p.pin) && !p.gap && next > 0 && info.Delivered.Consumer >= next && !p.receiving.Load()
	switch {
	case !ahead:
		p.tailLooks = 0
	case p.tailLooks > 0 && p.tailExpected == next:
		p.tailLooks++
	default:
		p.tailLooks, p.tailExpected = 1, next
	}
	lost := p.tailLooks >= tailLooksForGap
	if lost {
		p.gap, p.tailLooks, p.gapPin = true, 0, pin
	}
	p.mu.Unlock()
	if !lost {
		return
	}
	p.w.log.Warn("messages the partition's consumer delivered never reached this worker (NATS lost them in transit); taking the partition again from its ack floor once the events taken are delivered",
		"partition", p.n, "consumer", p.name, "expected_delivery", next, "delivered", info.Delivered.Consumer)
	select {
	case p.lost <- errDeliveryGap:
	default:
	}
}

// parkOverflowLocked parks a lane from its first queued event, in the
// background: enqueue is the consumer's callback, and waiting for the
// bucket there would hold up every lane of the partition. The lane is
// not worked until the record is written (or not), then starts again.
func (p *partition) parkOverflowLocked(l *lane) {
	from := streamSeq(l.queue[0])
	if l.out > 0 {
		// A slice is out: if it fails and its own park is not written
		// (held), a record from queue[0] would have its events
		// acknowledged unread by the next owner, which takes the record
		// and gets them again from the ack floor. If it is delivered, the
		// read-back skips it (subjectseq <= delivered).
		from = min(from, l.out)
	}
	rec := parkRecord{From: from, Due: p.w.now()}
	if l.hold != nil {
		rec = l.hold.rec // its retry stands as it was
	}
	t := p.beginParkLocked(l)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := p.writePark(l, t, rec)
		if overflowParkWritten != nil {
			overflowParkWritten()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.endParkLocked(l, t, rec, err, "its events outgrew the lane")
		if !l.busy && l.parking == 0 {
			p.startLocked(l)
		}
	}()
}

// parkQueuedLocked parks a lane with rec and acknowledges its queued
// messages that rec covers; if the record cannot be written, nothing
// changes. It is called and returns with p.mu held, but releases it across
// the write, so that the partition's other lanes go on meanwhile.
func (p *partition) parkQueuedLocked(l *lane, rec parkRecord, why string) bool {
	t := p.beginParkLocked(l)
	p.mu.Unlock()
	err := p.writePark(l, t, rec)
	p.mu.Lock()
	return p.endParkLocked(l, t, rec, err, why)
}

// beginParkLocked stops the lane from being worked, or parked again from
// enqueue, until endParkLocked, and takes the write's turn.
func (p *partition) beginParkLocked(l *lane) recordTurn {
	l.parking++
	return l.turnLocked()
}

// writePark writes a park record in its turn, without p.mu.
func (p *partition) writePark(l *lane, t recordTurn, rec parkRecord) error {
	t.wait()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	return p.w.parked.put(ctx, p.n, l.subject, rec)
}

// endParkLocked applies a park record's write: on success the lane is
// parked at rec, and its queued messages, those that arrived during the
// write included, are acknowledged. While another park of the lane is
// next in turn, a message before rec.From stays for it: it is of a failed
// slice that its lane parks from its first event (handle, while a park
// from enqueue was being written), and only that record covers it; so
// does one the lane holds (hold), for its retry. Otherwise such a message
// is acknowledged as enqueue does while parked: a copy of an event
// delivered already.
func (p *partition) endParkLocked(l *lane, t recordTurn, rec parkRecord, err error, why string) bool {
	w := p.w
	l.parking--
	close(t.done)
	if err != nil {
		l.parkFails++
		backoff := min(parkBackoff<<min(l.parkFails-1, 5), maxParkBackoff)
		l.nextPark = time.Now().Add(backoff)
		w.log.Warn("parking a resource failed; its events stay in the consumer, unacknowledged", "partition", p.n, "err", err, "next_park_in", backoff)
		return false
	}
	w.log.Debug("resource parked", "partition", p.n, "resource", l.subject.Key(), "from", rec.From, "why", why)
	l.park, l.parkFails, l.nextPark = &rec, 0, time.Time{}
	if l.hold != nil && rec.From <= l.hold.rec.From {
		l.hold = nil // the record carries its retry
	}
	kept := l.queue[:0]
	for _, m := range l.queue {
		seq := streamSeq(m)
		if seq < rec.From && (l.parking > 0 || l.hold != nil) {
			kept = append(kept, m)
			continue
		}
		l.dropped = max(l.dropped, seq)
		p.ack(m)
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	return true
}

// A lane whose park write failed is parked again no sooner than
// parkBackoff later, doubling with each failure in a row up to
// maxParkBackoff: a bucket that takes no writes (each may take the write's
// 5 s timeout) is not asked on every arrival or every retry.
const (
	parkBackoff    = time.Second
	maxParkBackoff = 30 * time.Second
)

// stored is where and when the stream stored m; zeros if its metadata is
// unreadable.
func stored(m jetstream.Msg) (seq uint64, at time.Time) {
	return events.StoredAt(m)
}

func streamSeq(m jetstream.Msg) uint64 {
	seq, _ := stored(m)
	return seq
}

func (p *partition) startLocked(l *lane) {
	l.busy = true
	p.wg.Add(1)
	go p.work(l)
}

// scheduleLocked starts a parked or held lane when it is due.
func (p *partition) scheduleLocked(l *lane) {
	if l.busy || l.parking > 0 || p.isStopping() {
		return
	}
	var due time.Time
	switch {
	case l.hold != nil:
		due = l.hold.rec.Due
	case l.park != nil:
		due = l.park.Due
	default:
		return
	}
	wait := time.Until(due)
	if wait <= 0 {
		p.startLocked(l)
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = time.AfterFunc(wait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !l.busy && (l.park != nil || l.hold != nil) && l.parking == 0 && !p.isStopping() {
			p.startLocked(l)
		}
	})
}

// work delivers a lane until it is empty, parked and not due, or the
// partition stops. One event at a time, or in batch mode a slice of the
// lane's waiting events at a time, each after the previous was accepted.
func (p *partition) work(l *lane) {
	defer p.wg.Done()
	w := p.w
	if w.batches == nil {
		// One request per event: the lane holds a request slot. In batch
		// mode the batcher takes the slots for whole batches instead.
		select {
		case w.sem <- struct{}{}:
		case <-p.ctx.Done():
			p.mu.Lock()
			l.busy = false
			p.mu.Unlock()
			return
		}
		defer func() { <-w.sem }()
	}
	for {
		p.mu.Lock()
		l.out = 0 // the last slice is settled, held or parked
		switch {
		case p.ctx.Err() != nil:
			l.busy = false
			p.mu.Unlock()
			return
		case l.parking > 0:
			// A park from enqueue is being written: whoever ends it
			// starts the lane again.
			l.busy = false
			p.mu.Unlock()
			return
		case l.hold != nil && len(l.queue) == 0:
			l.hold = nil // its events were settled or handed over
			p.mu.Unlock()
			continue
		case l.hold != nil && !p.isStopping() && time.Now().Before(l.hold.rec.Due):
			// Its park could not be written: the lane waits in memory,
			// its events queued and unacknowledged, newer ones behind.
			l.busy = false
			p.scheduleLocked(l)
			p.mu.Unlock()
			return
		case l.park != nil && l.hold == nil:
			if l.early != nil && p.isStopping() {
				// Woken, but stopping first: the record as scheduled.
				l.park, l.early = &l.early.rec, nil
			}
			if p.isStopping() || time.Now().Before(l.park.Due) {
				l.busy = false
				p.scheduleLocked(l)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			p.readBack(l)
			continue
		case len(l.queue) == 0:
			l.busy = false
			if l.timer != nil {
				l.timer.Stop()
			}
			delete(p.lanes, l.subject.Key())
			p.mu.Unlock()
			return
		case p.isStopping():
			// Hand over: the next owner reads these from the stream.
			rec := parkRecord{From: streamSeq(l.queue[0]), Due: w.now()}
			if l.hold != nil {
				rec = l.hold.rec
			}
			// A park that failed lately is not tried again: the write
			// would hold up the hand-over for nothing.
			if time.Now().Before(l.nextPark) || !p.parkQueuedLocked(l, rec, "the partition changes hands") {
				// Unacknowledged: the next owner redelivers them from the
				// ack floor.
				l.queue, l.hold = nil, nil
			}
			l.busy = false
			p.mu.Unlock()
			return
		}
		n := min(len(l.queue), w.sliceMax())
		prev := l.hold
		if prev != nil && prev.alone {
			n = 1
		}
		l.hold = nil
		ms := append([]jetstream.Msg(nil), l.queue[:n]...)
		l.queue = l.queue[n:]
		l.out = streamSeq(ms[0])
		p.mu.Unlock()
		p.handle(l, ms, prev)
	}
}

// release ends ownership: lanes finish, the pin is released for the next
// owner once every message this worker took is acknowledged.
func (p *partition) release() {
	w := p.w
	p.mu.Lock()
	p.released = true
	for _, l := range p.lanes {
		if l.timer != nil {
			l.timer.Stop()
		}
		if l.hold != nil && !l.busy && l.parking == 0 && p.ctx.Err() == nil {
			p.startLocked(l) // hands its held events over
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	if p.ctx.Err() != nil {
		// A hard stop (the lease lapsed, or a hand-over outlasted its
		// time): the next owner resets the consumer to its ack floor and
		// sends everything above it again. Acknowledgements lost on the
		// way (a consumer without a leader, a node stopping: the trouble
		// that lapses leases) hold that floor back, so they go once more,
		// without waiting for an answer: one that had landed is ignored.
		p.resendOnHardStop()
		return
	}
	p.awaitAcks()
	// A deadline of its own: the wait above may have used its up, and a
	// pin not released holds the next owner off until it expires.
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := p.unpin(ctx); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		w.log.Warn("releasing a partition's pin failed; the next owner takes the partition when the pin expires", "partition", p.n, "pin_ttl", w.t.pinnedTTL, "err", err)
	}
}

// awaitAcks waits, at most ackSettle, until every acknowledgement this
// worker sent has landed: the next owner, which resets the consumer to its
// ack floor if anything is unacknowledged, would deliver those events
// again. The consumer's unacknowledged messages are then exactly those
// this worker left so on purpose (taken and never acknowledged: a held
// lane's, handed over) and those the server sent after the last one this
// worker received, into the drained subscription, which never reach it.
// Waiting for none at all would wait the whole time whenever the server
// had sent some, holding up the partition's next owner (7 of 15 stops of
// a worker during the Entra cycle took 3-5.5 s so). While more are
// unacknowledged, after firstAckResend and then less and less often, it
// sends again the acknowledgements that failed (resendAcks) and those the
// partition sent of messages above the consumer's ack floor
// (resendSentAcks): an acknowledgement the connection took and lost with
// its NATS node failed nowhere, and would otherwise hold the floor back
// until AckWait. One that is not kept (past maxSentAcks, or a
// termination) or messages lost on the way in make it wait longer, never
// shorter.
func (p *partition) awaitAcks() {
	ctx, cancel := context.WithTimeout(context.Background(), p.w.t.ackSettle)
	defer cancel()
	var pending, kept, unseen int64
	var lastErr error
	resent, every := 0, firstAckResend
	nextResend := time.Now().Add(every)
	for {
		p.w.resendAcks() // those that failed, the connection reconnecting
		cons, err := p.w.js.Consumer(ctx, events.StreamName, p.name)
		if err == nil {
			ci := cons.CachedInfo() // as the lookup read it
			pending, kept, unseen = p.unacknowledged(ci)
			if pending <= kept+unseen {
				if resent > 0 {
					p.w.log.Info("acknowledgements of a partition handed over were sent again, and have landed",
						"partition", p.n, "sent_again", resent)
				}
				return
			}
			if now := time.Now(); !now.Before(nextResend) {
				resent += p.resendSentAcks(ctx, ci.AckFloor.Stream)
				every *= 2
				nextResend = now.Add(every)
			}
		} else if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return // nothing of it to acknowledge any more
		} else if ctx.Err() == nil {
			lastErr = err // tried again until the time is out
		}
		select {
		case <-ctx.Done():
			p.w.log.Warn("acknowledgements of a partition handed over did not all land in time; the next owner may deliver some of its events again",
				"partition", p.n, "unacknowledged", pending, "left_on_purpose", kept, "never_received", unseen, "sent_again", resent, "waited", p.w.t.ackSettle, "err", lastErr)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unacknowledged returns what the consumer ci waits for, and how much of
// it is explained: kept, taken by this worker and not acknowledged yet
// (on purpose, or on its way), and unseen, sent by the server after the
// last message this worker received. More pending than both is
// acknowledgements this worker sent that did not land.
func (p *partition) unacknowledged(ci *jetstream.ConsumerInfo) (pending, kept, unseen int64) {
	p.mu.Lock()
	last := p.lastDelivery
	p.mu.Unlock()
	pending, kept = int64(ci.NumAckPending), max(int64(p.taken.Load())-int64(p.settled.Load()), 0)
	if ci.Delivered.Consumer > last {
		unseen = int64(ci.Delivered.Consumer - last)
	}
	return pending, kept, unseen
}

// ackLooksForResend is how many looks in a row (findLostAcks), a
// pullExpiry apart, find the consumer waiting for acknowledgements this
// worker sent before they are sent again: those on their way land well
// within two intervals.
const ackLooksForResend = 3

// findLostAcks sends again, while the partition runs, the acknowledgements
// it sent that did not land: one sent while the consumer had no leader (a
// NATS node stopping), or taken by the connection and lost with its node,
// fails nowhere, and would hold the consumer's ack floor back until the
// ack wait, when the server sends its event again and whoever then owns
// the partition (after a reset from the floor, anyone) may deliver it a
// second time (a chaos run: 170 events twice, 73 s after their first
// delivery). It sends them after ackLooksForResend looks that found the
// consumer waiting for more than this worker left unacknowledged, and
// again at twice as many looks each time while it still waits, so that a
// consumer held back by an acknowledgement not kept (sentAcks) is not
// sent thousands every few seconds. Only under this worker's pin.
func (p *partition) findLostAcks(info *jetstream.ConsumerInfo, pin string) {
	pending, kept, unseen := p.unacknowledged(info)
	p.mu.Lock()
	waiting := pin != "" && pin == p.pin && !p.gap && pending > kept+unseen
	if !waiting {
		p.ackLooks, p.ackResendAt = 0, p.w.t.ackLooks
		p.mu.Unlock()
		return
	}
	p.ackLooks++
	resend := p.ackLooks >= p.ackResendAt
	if resend {
		p.ackResendAt *= 2
	}
	p.mu.Unlock()
	if !resend {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	defer cancel()
	if n := p.resendSentAcks(ctx, info.AckFloor.Stream); n > 0 {
		p.w.log.Info("the partition's consumer still waited for acknowledgements this worker sent (lost on the way to NATS): sent them again",
			"partition", p.n, "unacknowledged", pending, "left_on_purpose", kept, "never_received", unseen, "sent_again", n, "ack_floor", info.AckFloor.Stream)
	}
}

// ack acknowledges a message taken from the consumer, keeping the
// acknowledgement to send again should it not land (sentAcks).
func (p *partition) ack(m jetstream.Msg) {
	p.sentAcks.add(streamSeq(m), m.Reply())
	p.w.ack(m)
	p.settled.Add(1)
}

// poison dead-letters a message taken from the consumer that is not a
// scimrelay event.
func (p *partition) poison(m jetstream.Msg, cause error) {
	p.w.poison(p.ctx, m, cause)
	p.settled.Add(1)
}

// orderedEvent reads a message stored at stream sequence sseq as an event
// with its place in its resource's order (subjectseq), from the consumer
// or read back alike: an event without one cannot be delivered in order,
// and is refused, as is one the relay did not publish (events.Published).
//
// An event signed by a key the stream does not name is read again, the
// stream's keys with it (at most once a second: events.Trust), until
// keyWait has passed since the event was stored: its front end may be
// writing its key back (events.KeepSigningKey), and its events are then
// delivered in their order rather than dead-lettered. Its resource waits
// meanwhile, without its request slot; one stored longer ago, or whose
// storing time is not known or is later than now (a read-back's time is a
// header a stored message can forge: events.Trust.StoredMsg), fails at
// once. A partition that stops meanwhile gets errKeyWaitStopped: the event
// is handed over, not dead-lettered.
func (p *partition) orderedEvent(sseq uint64, storedAt time.Time, subject string, h nats.Header, data []byte) (event.Event, uint64, error) {
	w := p.w
	e, err := w.trust.Published(sseq, subject, h, data)
	if errors.Is(err, events.ErrUnknownKey) && w.waitsForKey(storedAt) {
		w.keyWaits.failed(time.Now(), 0, err.Error(), "subject", subject, "stream_seq", sseq, "wait_until", storedAt.Add(w.keyWait))
		if w.batches == nil {
			// The lane's request slot (work) serves other resources
			// meanwhile: waiting lanes must not pause the whole sink.
			<-w.sem
			defer func() { w.sem <- struct{}{} }()
		}
		for errors.Is(err, events.ErrUnknownKey) && w.waitsForKey(storedAt) {
			if p.ctx.Err() != nil || p.isStopping() {
				return e, 0, errKeyWaitStopped
			}
			e, err = w.trust.Published(sseq, subject, h, data)
		}
	}
	if err != nil {
		return e, 0, err
	}
	seq, err := events.SubjectSeq(e)
	if err != nil || seq == 0 {
		return e, 0, fmt.Errorf("event %s has no subjectseq", e.ID())
	}
	return e, seq, nil
}

// errKeyWaitStopped: the partition stopped while an event waited for the
// stream to name its key (orderedEvent).
var errKeyWaitStopped = errors.New("the partition stopped while the event waited for its signing key")

// keyClockSkew is how far in the future a stored time may be, by this
// worker's clock, and still be waited from (NATS's clock and this one
// differ a little).
const keyClockSkew = 2 * time.Second

// waitsForKey reports whether an event stored at storedAt, signed by a
// key the stream does not name, still waits for it (orderedEvent).
func (w *worker) waitsForKey(storedAt time.Time) bool {
	age := time.Since(storedAt)
	return !storedAt.IsZero() && age > -keyClockSkew && age < w.keyWait
}

// item is one event of a slice: delivered, or skipped in its place (a
// type the sink does not want), with what settles it.
type item struct {
	e      event.Event
	sig    string        // the relay's signature of e, kept by its dead letter
	seq    uint64        // subjectseq
	sseq   uint64        // stream sequence
	stored time.Time     // when the stream stored it; zero if not known
	m      jetstream.Msg // nil when read back from the stream
	// skip: the sink passes over it (a tenant or type it does not take,
	// or purged: its tenant's purge reached it, purged.go).
	skip, purged bool
}

// origin is where the item's event came from, as its dead letter keeps it.
func (it item) origin() origin { return origin{sig: it.sig, seq: it.sseq} }

// sent returns the first item of a slice that goes out (there is one in
// every slice that failed).
func sent(items []item) item {
	i := slices.IndexFunc(items, func(it item) bool { return !it.skip })
	return items[i]
}

// send returns the events of a slice that go out.
func send(items []item) []*event.Event {
	var out []*event.Event
	for i := range items {
		if !items[i].skip {
			out = append(out, &items[i].e)
		}
	}
	return out
}

// handle delivers a slice of a lane's events taken from the consumer, in
// order: all of them are accepted, or the resource is parked from the first
// one that went out (the whole slice's events are then read back from the
// stream, in order, when the retry is due). prev is the lane's hold when
// the slice is its retry in memory.
func (p *partition) handle(l *lane, ms []jetstream.Msg, prev *held) {
	w := p.w
	key := l.subject.Key()
	p.mu.Lock()
	done := p.marksLocked(key)
	p.mu.Unlock()
	var items []item
	for i, m := range ms {
		sseq, at := stored(m)
		e, seq, err := p.orderedEvent(sseq, at, m.Subject(), m.Headers(), m.Data())
		if errors.Is(err, errKeyWaitStopped) {
			// Nothing of the slice went out: back to the head of the lane,
			// which the stop hands over from its first event (work).
			p.mu.Lock()
			l.queue = append(append(msgsOf(items), ms[i:]...), l.queue...)
			l.hold = prev
			p.mu.Unlock()
			return
		}
		if err != nil {
			p.poison(m, err)
			continue
		}
		if done.covers(seq, e.ID()) {
			// Already delivered by this worker: a redelivery after a lost ack.
			w.metrics.outcome(w.name, "duplicate")
			p.ack(m)
			continue
		}
		if seq <= done.seq() {
			p.renumbered(e, seq, done.seq())
		}
		if sseq > 0 && slices.ContainsFunc(items, func(it item) bool { return it.sseq == sseq }) {
			// A copy of a message of this slice, redelivered after a reset
			// of the consumer while the lane held the original (done is
			// read once a slice): the original settles it. Counted as
			// settled, so that a release waits for the original's
			// acknowledgement rather than taking this one as kept.
			w.metrics.outcome(w.name, "duplicate")
			p.settled.Add(1)
			continue
		}
		skip, purged := w.skips(e)
		items = append(items, item{e: e, sig: m.Headers().Get(events.SignatureHeader), seq: seq, sseq: sseq, stored: at, m: m, skip: skip, purged: purged})
	}
	if len(items) == 0 {
		return
	}
	alone := prev != nil && prev.alone
	var park *parkRecord
	if prev != nil {
		park = &prev.rec
	}
	tries := triesOf(items, park)
	res := p.deliver(items, alone, tries)
	switch {
	case p.ctx.Err() != nil:
		return // hard stop: JetStream redelivers them to the next owner
	case res.Err == nil:
		p.settle(key, items)
		p.pastSettled(l, items)
		return
	}
	// The first event that went out, and all after it, failed. Those
	// before it were skipped: they are settled.
	first := 0
	for items[first].skip {
		first++
	}
	p.settle(key, items[:first])
	failed := items[first:]
	o, rec, err := p.failed(failed, res, tries, nil)
	h := held{rec: rec, alone: o == sendAlone}
	switch {
	case o == deadLettered:
		p.settle(key, failed)
		p.pastSettled(l, items)
		return
	case o == deadLetterFailed, o == sendAlone && alone:
		// The dead-letter queue did not take it (or a request of one
		// event claims to have carried several): as a read-back does,
		// from the same event a little later, in memory.
		h.rec.Due, h.alone = w.now().Add(5*time.Second), alone
		p.mu.Lock()
		l.queue = append(msgsOf(failed), l.queue...)
		p.holdLocked(l, h, err)
		p.mu.Unlock()
		return
	}
	// retryLater, or sendAlone: events taken from the consumer are not
	// split here; the resource is read back at once, and a second refusal
	// sends its events one per request. Either way the resource is parked
	// from its first failed event, so that neither it nor the resource's
	// later events hold the consumer's window; while its park writes fail,
	// it is held in memory and the write is tried again after a backoff.
	p.mu.Lock()
	defer p.mu.Unlock()
	l.queue = append(msgsOf(failed), l.queue...)
	switch {
	case time.Now().Before(l.nextPark):
		p.holdLocked(l, h, errParkBackoff)
	case !p.parkQueuedLocked(l, rec, "its next events failed"):
		p.holdLocked(l, h, errors.New("the resource could not be parked"))
	}
}

// pastSettled moves the lane's record past a slice that settled while
// the resource was parked from it (a burst parked from enqueue while the
// slice was out), and writes it: the read-back would skip the slice, but a
// hand-over before it moves on would have the next owner deliver the
// slice again. A park still being written (parking) is waited for, in
// turn: its record is the one to move (a review of CI saw the slice
// settle between the park's write and its end, the record left at the
// slice, and the slice delivered twice after a hand-over). The lane is
// busy meanwhile, so the read-back starts after this write. A failed
// write only leaves the record behind (repeats).
func (p *partition) pastSettled(l *lane, items []item) {
	if pastSettledBegun != nil {
		pastSettledBegun()
	}
	last := items[len(items)-1].sseq
	p.mu.Lock()
	if (l.park == nil || l.park.From > last) && l.parking == 0 {
		p.mu.Unlock()
		return
	}
	t := l.turnLocked()
	p.mu.Unlock()
	defer close(t.done)
	t.wait()
	p.mu.Lock()
	if l.park == nil || l.park.From > last {
		p.mu.Unlock()
		return // the park failed, or is from later
	}
	rec := *l.park
	rec.From, rec.Attempts, rec.Status, rec.Error = last+1, 0, 0, ""
	l.park = &rec
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if err := p.w.parked.put(ctx, p.n, l.subject, rec); err != nil {
		p.w.log.Warn("recording a parked resource's progress failed", "resource", l.subject.Key(), "err", err)
	}
}

// Test hooks, nil in a relay: overflowParkWritten is called once a park
// from enqueue (parkOverflowLocked) is written, before the lane learns
// so; pastSettledBegun when a settled slice comes to pastSettled.
var overflowParkWritten, pastSettledBegun func()

// errParkBackoff says why a lane whose park writes failed lately is held
// without writing.
var errParkBackoff = errors.New("parking this resource failed lately; not tried again yet")

// holdLocked makes a lane whose failed events are back at the head of its
// queue, unacknowledged, wait in memory until h's Due, when they are tried
// again (and parked again if they fail). Newer events queue behind them,
// so that the resource's order holds; the partition keeps them all alive
// meanwhile (keepQueuedAlive).
func (p *partition) holdLocked(l *lane, h held, cause error) {
	p.w.log.Warn("a resource's events wait in memory for their next try", "partition", p.n, "resource", l.subject.Key(), "err", cause, "retry_at", h.rec.Due)
	l.hold = &h
}

// settle records items as done (delivered, dead-lettered or skipped) and
// acknowledges those taken from the consumer.
func (p *partition) settle(key string, items []item) {
	for _, it := range items {
		switch {
		case it.purged:
			p.w.metrics.outcome(p.w.name, "purged")
		case it.skip:
			p.w.metrics.outcome(p.w.name, "filtered")
		}
		p.completed(key, it.seq, it.sseq, it.e.ID())
		if it.m != nil {
			p.ack(it.m)
		}
	}
}

func msgsOf(items []item) []jetstream.Msg {
	out := make([]jetstream.Msg, 0, len(items))
	for _, it := range items {
		if it.m != nil {
			out = append(out, it.m)
		}
	}
	return out
}

// deliver sends the events of a slice that the sink wants, in one request
// (one event, or a batch with other lanes' slices; alone: a request of its
// own, for a single event), the tries-th try of the first of them; the
// messages among them are kept alive meanwhile (keepQueuedAlive). A slice
// of skipped events alone succeeds at once.
func (p *partition) deliver(items []item, alone bool, tries int) Result {
	w := p.w
	out := send(items)
	if len(out) == 0 {
		return Result{}
	}
	for !w.members.leaseValid() {
		// Cut off from the other workers for too long: another one may own
		// this partition by now. Deliver nothing until this worker has
		// released its partitions (which ends p.ctx).
		select {
		case <-p.ctx.Done():
			return Result{Err: p.ctx.Err()}
		case <-time.After(w.t.heartbeat):
		}
	}
	held := msgsOf(items)
	p.mu.Lock()
	for _, m := range held {
		p.inFlight[m] = struct{}{}
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, m := range held {
			delete(p.inFlight, m)
		}
		p.mu.Unlock()
	}()
	ctx, span := startAttempt(p.ctx, w.tracer, w.name, out)
	var res Result
	switch {
	case w.batches == nil:
		res = w.sink.Deliver(ctx, out[0])
	case alone:
		select {
		case w.sem <- struct{}{}:
		case <-p.ctx.Done():
			res = Result{Err: p.ctx.Err()}
		}
		if res.Err == nil {
			res = w.sink.Deliver(ctx, out[0])
			<-w.sem
		}
	default:
		res = w.batches.submit(ctx, out)
	}
	if span != nil {
		endAttempt(span, res)
	}
	if p.ctx.Err() == nil {
		w.tried(res)
	}
	if res.Err == nil {
		for range out {
			w.metrics.delivered(w.name, res.Latency)
		}
		w.attempts.record(w.name, out, res, tries, "delivered")
		w.log.Debug("delivered", "events", len(out), "first_event_id", out[0].ID(), "status", res.Status, "latency", res.Latency)
	}
	return res
}

// triesOf numbers the try that sends items: the first of them that goes
// out has failed rec.Attempts times before when rec (the resource's park
// record, nil when none) starts from it, and never otherwise. A success is
// numbered as a failure there would be.
func triesOf(items []item, rec *parkRecord) int {
	for _, it := range items {
		if !it.skip {
			if rec != nil && it.sseq == rec.From {
				return rec.Attempts + 1
			}
			return 1
		}
	}
	return 1
}

// readBack delivers a parked resource's events from the stream, from its
// record on, a slice at a time, until it catches up (the lane takes events
// from the consumer again), its head fails (parked until the next try), or
// the partition stops (the record says where the next owner starts).
func (p *partition) readBack(l *lane) {
	w := p.w
	p.mu.Lock()
	r := &reader{p: p, l: l, key: l.subject.Key(), rec: *l.park, early: l.early}
	if r.early != nil && !time.Now().Before(r.early.rec.Due) {
		// Woken, but it waited for a request slot until it was due: a
		// scheduled try, which counts.
		r.early = nil
	}
	if l.early != nil {
		defer func() {
			p.mu.Lock()
			p.wokenDoneLocked(l)
			p.mu.Unlock()
		}()
	}
	// A wait for the consumer ends with this read: it waits again if it
	// finds the resource caught up, but a retry parked after a failure must
	// not be woken early by a copy arriving.
	l.catchUp = 0
	p.mu.Unlock()
	for {
		if p.ctx.Err() != nil {
			return
		}
		if p.isStopping() {
			r.park()
			return
		}
		items, next, err := p.readSlice(l, r.rec.From)
		if err != nil {
			if p.ctx.Err() == nil && !errors.Is(err, errKeyWaitStopped) {
				w.log.Warn("reading a parked resource's events failed; will try again", "resource", r.key, "err", err)
			}
			r.rec.Due = w.now().Add(time.Second)
			if e := r.early; e != nil && r.rec.From == e.rec.From {
				// Woken early and nothing tried: back to the schedule.
				r.rec = e.rec
			}
			r.park()
			return
		}
		if len(items) == 0 {
			if next > r.rec.From {
				// Only malformed or repeated messages: past them.
				r.rec.From, r.rec.Attempts = next, 0
				r.unsaved++
				continue
			}
			// Caught up: the stream has no more of the resource.
			p.mu.Lock()
			if l.dropped >= r.rec.From {
				p.mu.Unlock()
				continue // one arrived meanwhile: read on
			}
			if last := r.rec.From - 1; max(p.consumed, p.floor) < last {
				// The consumer has yet to deliver events read here, which
				// this worker or an earlier owner delivered: they come as
				// copies, which a parked resource drops. Unparked now, they
				// would go out again from a worker that does not know them
				// (the next owner, after a hand-over). The resource stays
				// parked until the consumer has passed them (enqueue wakes
				// it), looking again every catchUpRecheck meanwhile.
				p.mu.Unlock()
				if r.unsaved > 0 {
					r.save() // a hand-over meanwhile starts from here
				}
				p.mu.Lock()
				waiting := max(p.consumed, p.floor) < last && l.dropped < r.rec.From
				if waiting {
					l.catchUp = last
					rec := r.rec
					rec.Due = w.now().Add(w.t.catchUpRecheck)
					l.park = &rec
				}
				p.mu.Unlock()
				if waiting {
					return
				}
				continue // it passed, or an event came, meanwhile: look again
			}
			l.catchUp = 0
			l.park = nil
			// In turn: once the lock is released a burst may park the
			// resource again from enqueue, and that record must not be
			// removed by this write landing after it.
			t := l.turnLocked()
			p.mu.Unlock()
			t.wait()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := w.parked.remove(ctx, p.n, l.subject); err != nil {
				w.log.Warn("a resource caught up but its record stays; its events may be repeated", "resource", r.key, "err", err)
			}
			cancel()
			close(t.done)
			return
		}
		tries := triesOf(items, &r.rec)
		res := p.deliver(items, false, tries)
		if p.ctx.Err() != nil {
			return
		}
		if res.Err == nil {
			r.advance(items)
			r.rec.From = max(r.rec.From, next)
			continue
		}
		first := 0
		for items[first].skip {
			first++
		}
		r.advance(items[:first])
		failed := items[first:]
		if !r.fail(failed, res, tries, false) {
			return
		}
	}
}

// reader is where a parked resource being read back stands.
type reader struct {
	p       *partition
	l       *lane
	key     string
	rec     parkRecord
	unsaved int    // events settled since the record was last written
	early   *early // set: the read is a try before the record's time (wake.go)
}

// save writes the record to the bucket, in its turn.
func (r *reader) save() bool {
	r.p.mu.Lock()
	t := r.l.turnLocked()
	r.p.mu.Unlock()
	defer close(t.done)
	t.wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.p.w.parked.put(ctx, r.p.n, r.l.subject, r.rec); err != nil {
		r.p.w.log.Warn("recording a parked resource's progress failed", "resource", r.key, "err", err)
		return false
	}
	r.unsaved = 0
	return true
}

// park leaves the lane parked at the record (in memory), written first if
// the read has settled events since it was last written: a hand-over
// while the lane waits leaves the record as it is in the bucket, and a
// next owner would read those events again.
func (r *reader) park() {
	if r.unsaved > 0 {
		r.save()
	}
	rec := r.rec
	r.p.mu.Lock()
	r.l.park = &rec
	r.p.mu.Unlock()
}

// advance moves the record past settled items.
func (r *reader) advance(items []item) {
	if len(items) == 0 {
		return
	}
	r.p.settle(r.key, items)
	r.rec = parkRecord{From: items[len(items)-1].sseq + 1, Due: r.rec.Due}
	if r.unsaved += len(items); r.unsaved >= maxUnsaved {
		r.save()
	}
}

// fail carries out the retry policy for read-back events whose request
// failed (failed starts at the first that went out; tries are its failed
// tries, this one included; alone: they went out one per request). It
// reports whether reading goes on (false: parked again, or the partition
// stopped).
func (r *reader) fail(failed []item, res Result, tries int, alone bool) bool {
	early := r.earlyFor(failed[0], tries)
	o, rec, _ := r.p.failed(failed, res, tries, early)
	switch {
	case o == retryLater:
		r.rec = rec
		if early == nil || !rec.Due.Equal(early.rec.Due) || rec.Down != early.rec.Down {
			// An early try's failure leaves the stored record as it was
			// (its place, tries and due time are unchanged), unless a
			// Retry-After put it off.
			r.save()
		}
		r.park()
		if early != nil && !early.probe {
			r.p.mu.Lock()
			r.l.wokeInVain = rec.Due
			r.p.mu.Unlock()
		}
		return false
	case o == deadLettered:
		r.advance(failed)
		return true
	case o == sendAlone && !alone:
		return r.oneByOne(failed, tries)
	default:
		// The dead-letter queue did not take it (or a request of one event
		// claims to have carried several): from the record, a little later.
		r.rec.Due = r.p.w.now().Add(5 * time.Second)
		r.park()
		return false
	}
}

// readSlice reads a parked resource's next events from the stream from
// stream sequence from: one the sink wants, or in batch mode up to a
// batch's worth, with the skipped ones among them. next is the stream
// sequence after the last message read. Without items and without an
// error, next == from means the stream has no more of the resource (caught
// up), and next > from that it read only messages to pass over (malformed,
// or delivered already).
func (p *partition) readSlice(l *lane, from uint64) (items []item, next uint64, err error) {
	w := p.w
	key := l.subject.Key()
	filter := l.subject.ResourceSubjects()
	p.mu.Lock()
	done := p.marksLocked(key)
	p.mu.Unlock()
	next = from
	wanted := 0
	for wanted < w.sliceMax() {
		asked := w.sliceMax() - wanted
		raws, err := readNext(p.ctx, w.js, w.stream, filter, next, asked)
		reread := false
		if err != nil && len(raws) == 0 {
			if len(items) > 0 {
				return items, next, nil // deliver what was read
			}
			return nil, next, err
		}
		for _, raw := range raws {
			again := w.trust != nil && (raw.Sequence < next || w.trust.Unsigned(raw.Sequence))
			if again {
				// A direct get's sequence is a header a stored message can
				// hide (events.Trust.StoredMsg): one behind the reader, or
				// one that would be taken unsigned, is read again where
				// the sequence is the server's, and the batch after it.
				if raw, err = w.trust.StoredMsg(p.ctx, next, filter); err != nil {
					if errors.Is(err, jetstream.ErrMsgNotFound) {
						err = nil
					}
					return items, next, err
				}
			}
			e, seq, err := p.orderedEvent(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data)
			if err != nil {
				if len(items) > 0 {
					return items, next, nil // settle the earlier ones first
				}
				if errors.Is(err, errKeyWaitStopped) {
					return nil, next, err // read again from the record, by the next owner
				}
				w.poisonRaw(p.ctx, raw, err)
				return nil, raw.Sequence + 1, nil
			}
			next = raw.Sequence + 1
			if done.covers(seq, e.ID()) {
				if len(items) > 0 {
					return items, raw.Sequence, nil // read again after these
				}
				// Already delivered by this worker: the record was written
				// by an owner that did not know, or while the events were
				// out for delivery (parkOverflowLocked). Read on past them:
				// a batch's worth of them would cost a request each.
				w.metrics.outcome(w.name, "duplicate")
				if again {
					reread = true
					break
				}
				continue
			}
			if seq <= done.seq() {
				p.renumbered(e, seq, done.seq())
			}
			skip, purged := w.skips(e)
			it := item{e: e, sig: raw.Header.Get(events.SignatureHeader), seq: seq, sseq: raw.Sequence, stored: raw.Time, skip: skip, purged: purged}
			items = append(items, it)
			if !it.skip {
				wanted++
			}
			if again {
				reread = true
				break // the rest of the batch, read again from after it
			}
		}
		if err != nil || (len(raws) < asked && !reread) {
			return items, next, nil // what was read, up to the end of the resource's events
		}
	}
	return items, next, nil
}

// oneByOne delivers a parked resource's failed events one at a time: the
// first with the tries it has had, the others afresh. It reports whether
// the resource goes on (false: parked again, or the partition stopped).
func (r *reader) oneByOne(failed []item, tries int) bool {
	for i := range failed {
		it := failed[i : i+1]
		if it[0].skip {
			r.advance(it)
			continue
		}
		t := 1
		if i == 0 {
			t = tries
		}
		res := r.p.deliver(it, true, t)
		if r.p.ctx.Err() != nil {
			return false
		}
		if res.Err == nil {
			r.advance(it)
			continue
		}
		if !r.fail(it, res, t, true) {
			return false
		}
	}
	return true
}

// repeat calls f every d until stop closes.
func repeat(stop <-chan struct{}, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}

// maxUnsaved bounds how many events a parked resource delivers before its
// record says so: a worker that dies repeats at most that many.
const maxUnsaved = 64
