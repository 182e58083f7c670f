// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	// reconnects is the connection's reconnect count when the partition
	// last found that the stream had not lost its events (lostUnderway),
	// which lookMu serializes; recovered is the creation time (in
	// nanoseconds) of the consumer it found so, from which nothing more is
	// taken (take).
	reconnects atomic.Uint64
	// disturbed is set when consuming reported trouble without the
	// connection being made again (no heartbeats: the stream's node of a
	// cluster away, perhaps restarted on a damaged store while this
	// worker stayed connected to another node); the partition then looks
	// as after a reconnection (lostUnderway).
	disturbed atomic.Bool
	lookMu    sync.Mutex
	recovered atomic.Int64

	mu        sync.Mutex
	lanes     map[string]*lane
	recovery  int64                      // when the recovery whose resources this partition wakes began, a clock reading (0: none): set by a look, kept while it does not consume, cleared when none is left (wake.go)
	delivered map[string]deliveredMark   // resource key → what was completed of it while owned, this generation (marksPerGeneration)
	earlier   map[string]deliveredMark   // resource key → what delivered had before the mark moved down or back (resourceMarks)
	inFlight  map[jetstream.Msg]struct{} // consumer messages being delivered
	highest   uint64                     // highest stream sequence received from the consumer
	floor     uint64                     // the consumer's ack floor when this worker took it
	made      time.Time                  // when the consumer this worker took was created (a stream made after it is another stream)
	pin       string                     // the pin id of the messages last received
	claimRev  uint64                     // the revision of the claim this run wrote; 0: none
	marked    uint64                     // the ack floor the partition's mark last written holds (markReached)
	markedAt  time.Time                  // when it was written
	markedFor time.Time                  // the creation time of the consumer it is of
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
		if drop, ok := p.w.dropTime(rec.Stored); ok && !rec.Stored.IsZero() && rec.Due.After(drop) {
			// max_age was lowered since the record was written: its next
			// try would come after the stream drops the event. It is tried
			// then, and dead-lettered if it fails, rather than lost.
			rec.Due = drop
		}
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
			p.made = info.Created
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
// says so twice, a moment apart, while the stream is there and still has
// the partition. A server that has just restarted answers "not found" for
// a consumer it has not recovered yet, and recreating it then would lose
// its position. A partition the stream no longer has (a front end started
// with fewer removed its consumers) is not brought back: the worker stops
// within watchStream's interval and starts again with the stream's
// count; brought back by a worker taking it over, it was read from the
// stream's first event, delivering its history again.
func (p *partition) gone() bool {
	for i := range 2 {
		if i > 0 && !p.pause(2*time.Second) {
			return false
		}
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		n, serr := events.Partitions(ctx, p.w.js)
		_, cerr := p.w.js.Consumer(ctx, events.StreamName, p.name)
		cancel()
		if serr != nil || p.n >= n || !errors.Is(cerr, jetstream.ErrConsumerNotFound) {
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
//
// A stream made anew since the consumer was (an operator deleted and
// made it again, or a front end made it after the NATS store was lost)
// numbers its events from 1 again: starting after the last event received
// from the old one would skip every event the new one stores up to there,
// so the consumer starts at its first event.
func (p *partition) recreate(ctx context.Context) (jetstream.Consumer, error) {
	cfg := p.w.consumerConfig(p.n)
	st, err := p.w.js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if info := st.CachedInfo(); info != nil && (!p.made.IsZero() && info.Created.After(p.made) || info.State.LastSeq < max(p.highest, p.floor)) {
		p.w.log.Error("the event stream was made anew since this partition's consumer was: recreating the consumer from the new stream's first event (the events the old stream held and this sink had not delivered are gone)",
			"consumer", p.name, "received_up_to", max(p.highest, p.floor), "stream_created", info.Created, "stream_last_seq", info.State.LastSeq)
		p.highest, p.floor, p.consumed = 0, 0, 0
	}
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
	made := cons.CachedInfo().Created.UnixNano()
	cc, err := cons.Consume(func(m jetstream.Msg) { p.take(cons, made, m) },
		jetstream.PullMaxMessages(w.pullBatch()),
		jetstream.PullExpiry(w.t.pullExpiry),
		jetstream.PullPriorityGroup(priorityGroup),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.disturbed.Store(true)
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
				p.endConsume(err)
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// NATS was away or slow: consuming carries on by itself
				// unless the consumer itself is gone.
				go func() {
					if p.gone() {
						p.endConsume(jetstream.ErrConsumerNotFound)
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
			p.endConsume(errDeliveryGap)
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
	if p.lostUnderway(info) {
		return // the consumer deleted: consume returns and acquire takes the new one
	}
	p.findLostTail(info, pin)
	p.findLostAcks(info, pin)
	p.markReached(info, pin)
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

// poison dead-letters a message taken from the consumer that is not a
// scimrelay event.
func (p *partition) poison(m jetstream.Msg, cause error) {
	p.w.poison(p.ctx, m, cause)
	p.settled.Add(1)
}

// errKeyWaitStopped: the partition stopped while an event waited for the
// stream to name its key (orderedEvent).
var errKeyWaitStopped = errors.New("the partition stopped while the event waited for its signing key")

// keyClockSkew is how far in the future a stored time may be, by this
// worker's clock, and still be waited from (NATS's clock and this one
// differ a little).
const keyClockSkew = 2 * time.Second

// Test hooks, nil in a relay: overflowParkWritten is called once a park
// from enqueue (parkOverflowLocked) is written, before the lane learns
// so; pastSettledBegun when a settled slice comes to pastSettled.
var overflowParkWritten, pastSettledBegun func()

// errParkBackoff says why a lane whose park writes failed lately is held
// without writing.
var errParkBackoff = errors.New("parking this resource failed lately; not tried again yet")

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
