// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A parked resource (parking.go) is delivered from the stream rather than
// from its consumer: when its record is due, the partition's owner reads
// its events back by subject from the record's stream sequence on, a slice
// at a time, until it catches up with what the consumer delivers.

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
			again := w.trust != nil && (raw.Sequence < next || w.trust.SequenceDecides(raw.Sequence, raw.Header))
			if again {
				// A direct get's sequence is a header a stored message can
				// hide (events.Trust.StoredMsg): one behind the reader, or
				// one whose sequence decides whether it is taken (unsigned,
				// or signed by a retired key), is read again where the
				// sequence is the server's, and the batch after it.
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
			skip, purged := p.skips(e, raw.Sequence, false)
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
