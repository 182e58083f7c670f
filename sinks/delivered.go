// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"bytes"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// What a partition completed of each resource, by which it tells a repeat
// from an event numbered again after a restore (deliveredMark).

// renumbered says, once per partition, that it met an event numbered
// again (deliveredMark), which it delivers.
func (p *partition) renumbered(e event.Event, seq, done uint64) {
	if p.renumberSaid.Swap(true) {
		return
	}
	p.w.log.Warn("an event is numbered at or below one this worker delivered for its resource, and was made after it: the relay's data file was restored from a backup, and its events reuse numbers; they are delivered (receivers that order by subjectseq must take the restore as a new start). Said once per partition",
		"partition", p.n, "event_id", e.ID(), "subject", e.Subject(), "subjectseq", seq, "delivered_subjectseq", done)
}

// deliveredMark is what a partition completed of a resource: the highest
// subjectseq, and the id of the event that set it.
//
// An event numbered at or below it is a repeat (a redelivery after a lost
// acknowledgement, or a copy the outbox published again), unless it was
// made after that event: the relay's ids are UUIDv7, made in commit order
// and ordered by time, so an event with a later id and a number already
// used is one numbered again, by a relay whose data file was restored
// from a backup (README, Backup and recovery). That one is new, and is
// delivered. Ids that are not UUIDv7 (another publisher's) are never
// taken as new: the number alone decides, as before.
type deliveredMark struct {
	seq uint64
	id  uuid.UUID
}

// covers reports whether the event numbered seq, with id, was completed
// already.
func (d deliveredMark) covers(seq uint64, id string) bool {
	return seq <= d.seq && !madeAfter(id, d.id)
}

// after returns the mark once the event numbered seq, with id, is
// completed: numbered again (seq at or below the mark, id later), the
// mark starts again from it.
func (d deliveredMark) after(seq uint64, id string) deliveredMark {
	u, err := uuid.Parse(id)
	switch {
	case seq > d.seq:
		if err != nil {
			u = uuid.Nil
		}
		return deliveredMark{seq: seq, id: u}
	case madeAfter(id, d.id):
		return deliveredMark{seq: seq, id: u}
	}
	return d
}

// resourceMarks is a resource's mark, and the mark it had before it moved
// down or back.
//
// The mark moves down when an event numbered again is completed, and back
// when the next event has an earlier id (a clock stepped back across a
// relay restart). Either way it stops covering events it covered: after a
// restore, old events numbered above the new mark with earlier ids, and
// after a step back, old events with ids later than the new mark's. Those
// still reach the partition again (a late acknowledgement, a reset of the
// consumer) and are repeats, so the mark from before is kept as earlier:
// an event is covered when either mark covers it. A second move merges
// the two marks from before into one, with the higher number and the
// later id. It covers more than they did only events numbered between
// their numbers with ids between their ids, and no event this worker did
// not complete was made so: a relay's numbers and ids follow commit order
// within each run.
//
// Only resources whose mark moved so hold an earlier mark (partition's
// earlier map), and it is dropped once the mark covers it again. Covered
// events are never above the highest number completed: ids only deliver
// what the number alone would drop, never drop what it would deliver.
type resourceMarks struct {
	mark, earlier deliveredMark
}

// covers reports whether the event numbered seq, with id, was completed
// already.
func (m resourceMarks) covers(seq uint64, id string) bool {
	return m.mark.covers(seq, id) || m.earlier.covers(seq, id)
}

// seq is the highest subjectseq completed.
func (m resourceMarks) seq() uint64 {
	return max(m.mark.seq, m.earlier.seq)
}

// after returns the marks once the event numbered seq, with id, is
// completed.
func (m resourceMarks) after(seq uint64, id string) resourceMarks {
	next := m.mark.after(seq, id)
	if !next.coversAll(m.mark) {
		// Moved down or back: keep what the mark covered.
		m.earlier = m.earlier.merge(m.mark)
	}
	m.mark = next
	if m.mark.coversAll(m.earlier) {
		m.earlier = deliveredMark{}
	}
	return m
}

// coversAll reports whether d covers every event o covers. A mark whose
// id is not a UUIDv7 covers every id up to its number.
func (d deliveredMark) coversAll(o deliveredMark) bool {
	switch {
	case o.seq == 0:
		return true
	case o.seq > d.seq:
		return false
	case d.id.Version() != 7:
		return true
	}
	return o.id.Version() == 7 && bytes.Compare(o.id[:], d.id[:]) <= 0
}

// merge returns the least mark that covers what d and o cover: the higher
// number and the later id.
func (d deliveredMark) merge(o deliveredMark) deliveredMark {
	switch {
	case d.coversAll(o):
		return d
	case o.coversAll(d):
		return o
	case d.id.Version() != 7 || o.id.Version() != 7:
		return deliveredMark{seq: max(d.seq, o.seq)}
	case bytes.Compare(o.id[:], d.id[:]) > 0:
		d.id = o.id
	}
	d.seq = max(d.seq, o.seq)
	return d
}

// madeAfter reports whether id is a UUIDv7 made after the UUIDv7 than.
func madeAfter(id string, than uuid.UUID) bool {
	if than.Version() != 7 {
		return false
	}
	u, err := uuid.Parse(id)
	return err == nil && u.Version() == 7 && bytes.Compare(u[:], than[:]) > 0
}

// marksLocked returns what the partition completed of the resource key.
func (p *partition) marksLocked(key string) resourceMarks {
	if mark, ok := p.delivered[key]; ok {
		return resourceMarks{mark: mark, earlier: p.earlier[key]}
	}
	return resourceMarks{mark: p.olderDelivered[key], earlier: p.olderEarlier[key]}
}

// marksPerGeneration bounds the marks a partition keeps while its
// consumer's acknowledgements keep up: once delivered holds this many, it
// becomes the older generation, and the one before is dropped if the
// consumer's ack floor has passed everything it completed (nothing of it
// can be delivered again by the consumer, even after a reset, which
// redelivers from the floor). Otherwise the marks are kept, up to
// maxMarks, as they all were before generations. A mark only saves a
// repeat of what this run completed. Marks used to be kept up to 100,000
// a partition and then dropped all at once: a sink of 16 partitions kept
// a mark of every user of a million-user initial cycle (some 106 MB) until
// a restart (a soak review); a held lane holds the floor back, and a
// reset then sends again what lies above it (a review of the first
// version, which dropped the older generation whatever the floor).
const (
	marksPerGeneration = 10_000
	maxMarks           = 100_000
)

// completed records that the event numbered seq (stream sequence sseq,
// id) of the resource key is done.
func (p *partition) completed(key string, seq, sseq uint64, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.delivered); (n >= marksPerGeneration && p.olderSeq <= p.ackFloor) || n+len(p.olderDelivered) >= maxMarks {
		// earlier holds no key that delivered does not. Past maxMarks
		// the older generation goes, floor or not: a bound on memory.
		p.olderDelivered, p.olderEarlier, p.olderSeq = p.delivered, p.earlier, p.newestSeq
		p.delivered, p.earlier, p.newestSeq = make(map[string]deliveredMark), make(map[string]deliveredMark), 0
	}
	p.newestSeq = max(p.newestSeq, sseq)
	m := p.marksLocked(key).after(seq, id)
	p.delivered[key] = m.mark
	if m.earlier == (deliveredMark{}) {
		delete(p.earlier, key)
	} else {
		p.earlier[key] = m.earlier
	}
}
