// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A lane's work: its events taken from the consumer (or read back, for a
// parked resource: readback.go) go out in order, a slice at a time, each
// read as an event with its place in its resource's order (orderedEvent);
// a slice delivered is acknowledged and marked delivered; one that failed
// is dead-lettered, or its resource held or parked until its retry, as
// the sink's retry policy says (failure.go); and a held or parked lane is
// started when due (scheduleLocked).

// startLocked starts working lane l in its own goroutine.
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

// orderedEvent reads a message stored at stream sequence sseq as an event
// with its place in its resource's order (subjectseq), from the consumer
// or read back alike: an event without one cannot be delivered in order,
// and is refused, as is one the relay did not publish (events.Published).
//
// An event signed by a key the stream does not name (not one it retired)
// is read again, the stream's keys with it (at most once a second:
// events.Trust), until
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
	if waitsForKey := func() bool {
		// A retired key's event stored after its bound is refused at
		// once: no reading of the keys makes it verify.
		return errors.Is(err, events.ErrUnknownKey) && !errors.Is(err, events.ErrRetiredKey) && w.waitsForKey(storedAt)
	}; waitsForKey() {
		w.keyWaits.failed(time.Now(), 0, err.Error(), "subject", subject, "stream_seq", sseq, "wait_until", storedAt.Add(w.keyWait))
		if w.batches == nil {
			// The lane's request slot (work) serves other resources
			// meanwhile: waiting lanes must not pause the whole sink.
			<-w.sem
			defer func() { w.sem <- struct{}{} }()
		}
		for waitsForKey() {
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
		first := false
		if md, err := m.Metadata(); err == nil {
			first = prev == nil && md.NumDelivered == 1
		}
		skip, purged := p.skips(e, sseq, first)
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
	rec.From, rec.Attempts, rec.Status, rec.Error, rec.Stored = last+1, 0, 0, "", time.Time{}
	l.park = &rec
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if err := p.w.parked.put(ctx, p.n, l.subject, rec); err != nil {
		p.w.log.Warn("recording a parked resource's progress failed", "resource", l.subject.Key(), "err", err)
	}
}

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
		res = w.batches.submit(ctx, p.stopping, out)
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
