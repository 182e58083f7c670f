// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Dead-letter pages: a listing never holds more than one page.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// maxFailures bounds the failures a redrive reports one by one; it
	// counts the rest.
	maxFailures = 100
	// redriveBatch is how many dead letters a redrive reads at a time.
	redriveBatch = 64
)

// ErrInvalidCursor means a page cursor is not one a listing gave.
var ErrInvalidCursor = errors.New("not a cursor of this listing")

// ErrNotConfigured means a redrive would deliver to a sink that is no
// longer configured: the queue it left needs a sink to deliver to.
var ErrNotConfigured = errors.New("no sink to deliver to")

// DeadLetterPage is one page of a sink's dead letters, oldest first.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// Next is the cursor of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

// DeadLetterQueue is the dead-letter queue of a sink, or of a name no
// sink has any more: a sink removed or renamed leaves its dead letters
// under its old name until they age out.
type DeadLetterQueue struct {
	Sink        string `json:"sink"`
	DeadLetters uint64 `json:"dead_letters"`
	Configured  bool   `json:"configured"`
}

// DeadLetterQueues lists every configured sink's queue, in configuration
// order, then every queue with dead letters whose sink is no longer
// configured, by name.
func (m *Manager) DeadLetterQueues(ctx context.Context) ([]DeadLetterQueue, error) {
	names := m.Names()
	if m.dlq == nil {
		return nil, errors.New("sinks are not set up yet")
	}
	counts, err := m.dlq.counts(ctx)
	if err != nil {
		return nil, fmt.Errorf("counting dead letters: %w", err)
	}
	list := make([]DeadLetterQueue, 0, len(names)+len(counts))
	for _, name := range names {
		list = append(list, DeadLetterQueue{Sink: name, DeadLetters: counts[name], Configured: true})
		delete(counts, name)
	}
	for _, name := range slices.Sorted(maps.Keys(counts)) {
		if counts[name] > 0 {
			list = append(list, DeadLetterQueue{Sink: name, DeadLetters: counts[name]})
		}
	}
	return list, nil
}

// queue checks that name is a queue to read: a configured sink's, or one
// a sink no longer configured left dead letters in.
func (m *Manager) queue(ctx context.Context, name string) error {
	_, err := m.sink(name)
	if err == nil || !errors.Is(err, ErrUnknownSink) || !events.ValidName(name) {
		return err
	}
	n, cerr := m.dlq.count(ctx, name)
	if cerr != nil {
		return fmt.Errorf("counting the dead letters under %s: %w", name, cerr)
	}
	if n == 0 {
		return fmt.Errorf("%w %q, nor dead letters under that name", ErrUnknownSink, name)
	}
	return nil
}

// DeleteTenantDeadLetters deletes a tenant's dead letters from every
// sink's queue, configured or not, and says how many went, by sink (a
// tenant's purge: a queue's subjects name its sink alone, so each is read
// through). Left, a redrive would deliver them under the tenant's name to
// whoever has it next.
//
// It reads every queue at once, in the order the dead letters were
// stored, to the end, and again from there until nothing was added: a
// redrive through another relay, which this purge does not wait for, puts
// a dead letter's replacement (in the same queue, or another sink's for a
// redrive --to) before it removes the old one (deadLetters.replaced), so
// the replacement is stored after the old one, and is there before the
// old one is gone. Read queue by queue, a replacement put in a queue read
// already was missed.
func (m *Manager) DeleteTenantDeadLetters(ctx context.Context, tenant string) (map[string]int, error) {
	m.jobsMu.Lock() // after the redrives and replays under way (jobsMu)
	defer m.jobsMu.Unlock()
	if m.dlq == nil {
		return nil, errors.New("sinks are not set up yet")
	}
	var deleted map[string]int
	var after uint64 // read up to here
	for {
		info, err := m.dlq.stream.Info(ctx)
		if err != nil {
			return deleted, fmt.Errorf("reading the dead-letter queues: %w", err)
		}
		if info.State.LastSeq <= after {
			return deleted, nil
		}
		read := info.State.LastSeq
		var of []DeadLetter
		if err := m.dlq.each(ctx, ">", after, redriveBatch, nil, func(dl DeadLetter, _ *event.Event) error {
			read = max(read, dl.seq)
			if dl.Tenant == tenant {
				of = append(of, dl)
			}
			return nil
		}); err != nil {
			return deleted, fmt.Errorf("reading the dead-letter queues: %w", err)
		}
		for _, dl := range of {
			// Gone meanwhile: a redrive through another relay took it out,
			// having put its replacement further on, which this purge
			// reads next.
			if err := m.dlq.remove(ctx, dl); deletedAlready(err) {
				continue
			} else if err != nil {
				return deleted, fmt.Errorf("deleting a dead letter of sink %s: %w", dl.queue, err)
			}
			if deleted == nil {
				deleted = map[string]int{}
			}
			deleted[dl.queue]++
		}
		after = read
	}
}

// DeadLetters returns a page of at most limit of a sink's dead letters
// (DefaultPageSize when 0, at most MaxPageSize), oldest first, after the
// cursor after ("" for the first page).
func (m *Manager) DeadLetters(ctx context.Context, sink, after string, limit int) (DeadLetterPage, error) {
	if err := m.queue(ctx, sink); err != nil {
		return DeadLetterPage{}, err
	}
	var from uint64
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return DeadLetterPage{}, fmt.Errorf("page after %q: %w", after, ErrInvalidCursor)
		}
		from = n
	}
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	page := DeadLetterPage{DeadLetters: []DeadLetter{}}
	// One more than the page says whether another page follows.
	err := m.dlq.each(ctx, sink, from, limit+1, nil, func(dl DeadLetter, _ *event.Event) error {
		if len(page.DeadLetters) == limit {
			page.Next = strconv.FormatUint(page.DeadLetters[limit-1].seq, 10)
			return errStop
		}
		page.DeadLetters = append(page.DeadLetters, dl)
		return nil
	})
	if err != nil {
		return DeadLetterPage{}, fmt.Errorf("listing the dead letters of sink %s: %w", sink, err)
	}
	return page, nil
}

// RedriveResult says what a redrive did, or has done so far.
type RedriveResult struct {
	Total     uint64 `json:"total"` // dead letters to look at, at most
	Done      int    `json:"done"`  // looked at so far
	Delivered int    `json:"delivered"`
	Failed    int    `json:"failed"` // failed again and stay in the queue
	// Held are dead letters left in the queue, moved behind an earlier one
	// of their resource that failed again in this redrive, so that they
	// stay in order.
	Held int `json:"held,omitempty"`
	// Skipped are dead letters left in the queue because the sink a
	// redrive delivers them to (the queue's own, or RedriveQuery.To) does
	// not take their tenant or type.
	Skipped int `json:"skipped,omitempty"`
	// Purged are dead letters taken out of the queue undelivered: of a
	// tenant purged while the redrive ran (through another process, whose
	// purge does not wait for this one's jobs), or deleted meanwhile by
	// that purge or another process's redrive (the one this redrive would
	// have put in its place is taken back).
	Purged int `json:"purged,omitempty"`
	// Failures are the first of the failed ones, with their new error.
	Failures []DeadLetter `json:"failures,omitempty"`
}

// RedriveQuery says which dead letters a redrive delivers, and where.
type RedriveQuery struct {
	// Sink names the queue: a configured sink's, or one a removed or
	// renamed sink left (DeadLetterQueues).
	Sink string
	// ID is the event id of the one dead letter to deliver; "" for all.
	ID string
	// To is the configured sink to deliver them to, when not Sink itself:
	// for a sink renamed, or removed with another taking its place. Only
	// the dead letters whose tenant and type To takes are delivered; the
	// rest stay where they are. Those that fail again join To's queue.
	To string
}

// Redrive delivers dead letters again: the one whose event id is q.ID, or,
// when it is "", every one the queue had when the redrive started, reading
// them a batch at a time. Each delivered one leaves the queue; one that
// fails again goes to the end of the queue of the sink it was delivered
// to, with its status and error updated. progress, when not nil, is called
// after each dead letter.
func (m *Manager) Redrive(ctx context.Context, q RedriveQuery, progress func(RedriveResult)) (RedriveResult, error) {
	m.jobsMu.RLock()
	defer m.jobsMu.RUnlock()
	if err := m.queue(ctx, q.Sink); err != nil {
		return RedriveResult{}, err
	}
	to := cmp.Or(q.To, q.Sink)
	s, err := m.sink(to)
	if errors.Is(err, ErrUnknownSink) && to == q.Sink {
		return RedriveResult{}, fmt.Errorf("%w: sink %s is no longer configured; redrive its dead letters to a sink that is", ErrNotConfigured, q.Sink)
	}
	if err != nil {
		return RedriveResult{}, err
	}
	moving := to != q.Sink
	var res RedriveResult
	found := false
	// The resources whose dead letter failed again: their later dead
	// letters are not delivered before it, but moved behind it.
	held := map[resourceKey]bool{}
	total := func(n uint64) {
		if q.ID != "" {
			n = min(n, 1) // the one dead letter asked for, not the queue
		}
		res.Total = n
	}
	// In a redrive of all, a resource's dead letter that an earlier one of
	// it follows in the queue (put back at the end by a redrive cut short
	// before it moved the later ones behind it) is held behind it too. A
	// redrive of one delivers the one asked for.
	var heldBack map[uint64]bool
	if q.ID == "" {
		if heldBack, err = m.outOfOrder(ctx, q.Sink); err != nil {
			return RedriveResult{}, fmt.Errorf("redriving the dead letters of sink %s: %w", q.Sink, err)
		}
	}
	err = m.dlq.each(ctx, q.Sink, 0, redriveBatch, total, func(dl DeadLetter, e *event.Event) error {
		behind := e != nil && heldBack[dl.seq] // an earlier one of its resource is further on in the queue
		// The sink as configured now: a reload may have narrowed it (its
		// tenants, its events) or removed it since the redrive began.
		cur, err := m.sink(to)
		if err != nil {
			return err
		}
		s = cur
		if q.ID != "" && dl.ID != q.ID {
			// The one asked for failed again and went to the end of the
			// queue: its resource's later dead letters go behind it, as
			// in a redrive of all, or the next one sends them first.
			if key := (resourceKey{dl.Tenant, dl.Subject}); e != nil && held[key] && selects(s.cfg.Tenants, s.patterns, *e) {
				return m.keepBehind(ctx, to, dl, e, &res)
			}
			return nil
		}
		found = true
		res.Done++
		key := resourceKey{dl.Tenant, dl.Subject}
		switch {
		case moving && e == nil, e != nil && !selects(s.cfg.Tenants, s.patterns, *e):
			// Also in a sink's own queue: the workers' NATS user writes
			// it, and could put another tenant's signed event there
			// (README, Who can reach what); or the sink was narrowed.
			res.Skipped++
		case e != nil && s.worker != nil && s.worker.purgedCovers(*e, dl.from.seq):
			// Of a tenant purged through another process's admin API
			// (whose purge does not wait for this process's redrives):
			// this process's worker read the notice, and delivers none of
			// its events; the purge deletes its dead letters, so none is
			// sent or put back.
			if err := m.dropPurged(ctx, dl, &res); err != nil {
				return err
			}
		case e != nil && (held[key] || behind):
			if err := m.keepBehind(ctx, to, dl, e, &res); err != nil {
				return err
			}
		default:
			failed := res.Failed
			if err := m.redriveOne(ctx, s, dl, e, &res); err != nil {
				return err
			}
			if e != nil && res.Failed > failed {
				held[key] = true
			}
		}
		if progress != nil {
			progress(res)
		}
		if q.ID != "" && len(held) == 0 {
			return errStop // nothing of its resource to keep behind it
		}
		return nil
	})
	m.countDeadLetters(ctx, q.Sink)
	if moving {
		m.countDeadLetters(ctx, to)
	}
	if err != nil {
		return res, fmt.Errorf("redriving the dead letters of sink %s: %w", q.Sink, err)
	}
	if q.ID != "" && !found {
		return res, fmt.Errorf("sink %s has no dead letter with event id %s", q.Sink, q.ID)
	}
	return res, nil
}

// outOfOrder reads sink's queue and returns the dead letters (by their
// sequence in it) that a dead letter of the same resource made earlier
// follows, anywhere further on: not only the resource's earliest, which a
// redrive cut short twice leaves behind later ones as well ([1, 3, 2]
// sent 3 before 2 when only those before 1 were held). Earlier is by id,
// a UUIDv7 ordered by when the event was made: after a restore a later
// event may be numbered below an earlier one.
func (m *Manager) outOfOrder(ctx context.Context, sink string) (map[uint64]bool, error) {
	type entry struct {
		seq uint64
		id  string
	}
	queued := map[resourceKey][]entry{} // each resource's, in queue order
	err := m.dlq.each(ctx, sink, 0, redriveBatch, nil, func(dl DeadLetter, e *event.Event) error {
		if e == nil {
			return nil
		}
		if _, err := events.SubjectSeq(*e); err == nil {
			k := resourceKey{dl.Tenant, dl.Subject}
			queued[k] = append(queued[k], entry{dl.seq, e.ID()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	behind := map[uint64]bool{}
	for _, list := range queued {
		least := "" // the earliest id from i on
		for i := len(list) - 1; i >= 0; i-- {
			if least != "" && least < list[i].id {
				behind[list[i].seq] = true
			}
			if least == "" || list[i].id < least {
				least = list[i].id
			}
		}
	}
	return behind, nil
}

// countDeadLetters sets a configured sink's dead-letter gauge.
func (m *Manager) countDeadLetters(ctx context.Context, sink string) {
	s, err := m.sink(sink)
	if err != nil || m.o.SetupOnly {
		return
	}
	if n, err := m.dlq.count(ctx, sink); err == nil {
		m.ifCurrent(s, func() { m.metrics.deadLetters.WithLabelValues(sink).Set(float64(n)) })
	}
}

// resourceKey names a resource across tenants: its tenant and its events'
// subject (Users/<id>).
type resourceKey struct{ tenant, subject string }

// keepBehind moves dl to the end of sink to's queue, behind an earlier
// dead letter of its resource that failed again, and counts it held, or
// purged when it was deleted meanwhile (a purge, another process's
// redrive).
func (m *Manager) keepBehind(ctx context.Context, to string, dl DeadLetter, e *event.Event, res *RedriveResult) error {
	err := m.dlq.moveToEnd(ctx, to, dl, e)
	switch {
	case errors.Is(err, errDeadLetterGone):
		res.Purged++ // not in the queue
	case err != nil:
		return fmt.Errorf("keeping dead letter %s behind the earlier one of %s: %w", dl.ID, dl.Subject, err)
	default:
		res.Held++
	}
	return nil
}

// dropPurged takes a dead letter of a purged tenant out of the queue,
// undelivered (gone already is as good), and counts it.
func (m *Manager) dropPurged(ctx context.Context, dl DeadLetter, res *RedriveResult) error {
	if err := m.dlq.remove(ctx, dl); err != nil && !deletedAlready(err) {
		return fmt.Errorf("removing dead letter %s of a purged tenant: %w", dl.ID, err)
	}
	res.Purged++
	return nil
}

// redriveOne delivers one dead letter again.
func (m *Manager) redriveOne(ctx context.Context, s *sinkRuntime, dl DeadLetter, e *event.Event, res *RedriveResult) error {
	sink := s.cfg.Name
	fail := func(dl DeadLetter) {
		res.Failed++
		if len(res.Failures) < maxFailures {
			res.Failures = append(res.Failures, dl)
		}
	}
	if e == nil {
		fail(dl) // not a valid event: nothing to send
		return nil
	}
	r := deliverTraced(ctx, m.o.Tracer, sink, s.sink, e)
	if r.Err == nil {
		// Deleted meanwhile (a purge, another process's redrive): gone,
		// as this would leave it.
		if err := m.dlq.remove(ctx, dl); err != nil && !deletedAlready(err) {
			return fmt.Errorf("removing redriven event %s: %w", dl.ID, err)
		}
		res.Delivered++
		m.ifCurrent(s, func() { m.metrics.outcome(sink, "redriven") })
		m.tries.record(sink, []*event.Event{e}, r, dl.Attempts+1, "redriven")
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err // cut short: the dead letter stays as it was
	}
	// Its own id, as moveToEnd's: the id put would give it is that of any
	// other dead letter of the event with as many attempts (an earlier
	// redrive's, within the queue's ten minutes of duplicates), and the
	// queue dropped it as a copy of that one while this one was removed.
	// A redrive of this very dead letter cut short and run again puts the
	// same id, which the queue drops as the copy it is.
	id := deadLetterID(sink, e.ID(), dl.Attempts+1) + ".redriven-from." + strconv.FormatUint(dl.seq, 10)
	put := func(id string) (*jetstream.PubAck, error) {
		return m.dlq.putAck(ctx, sink, e, dl.from, r, dl.Attempts+1, id)
	}
	ack, err := put(id)
	if err != nil {
		return err
	}
	if err := m.dlq.replaced(ctx, dl, ack, put, id); errors.Is(err, errDeadLetterGone) {
		// Deleted meanwhile, by a tenant's purge or a redrive through
		// another process: not put back.
		res.Purged++
		return nil
	} else if err != nil {
		return fmt.Errorf("removing the earlier dead letter of event %s: %w", dl.ID, err)
	}
	dl.Status, dl.Error, dl.Attempts = r.Status, errText(r.Err), dl.Attempts+1
	fail(dl)
	m.tries.record(sink, []*event.Event{e}, r, dl.Attempts, "dead_lettered")
	return nil
}
