// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"fmt"
	"time"
)

// The retry policy of a partition, in one place: what becomes of a
// resource's events after a request carrying them failed, whether they
// came from the consumer (handle) or were read back from the stream
// (readBack, oneByOne). The callers differ only in how they carry it out:
// events from the consumer are parked in the bucket and acknowledged,
// events read back move their record.

// outcome is what becomes of a resource's failed events.
type outcome int

const (
	// retryLater: the resource is parked from the first failed event
	// until the record's Due, the schedule's next delay.
	retryLater outcome = iota
	// sendAlone: a request carrying several events was refused for good,
	// refused for its credentials or is out of tries. Which event the
	// receiver refuses is not known, so none is dead-lettered: they go
	// out one per request. Where the events cannot be split at once
	// (taken from the consumer), the record parks the resource due now,
	// its head's tries unchanged.
	sendAlone
	// deadLettered: the event, refused alone for good or out of tries,
	// is in the dead-letter queue; it is settled. So is one of a tenant
	// purged while it was under way, which no dead letter outlives.
	deadLettered
	// deadLetterFailed: as deadLettered, but the dead-letter queue did not
	// take it; the resource tries again shortly.
	deadLetterFailed
)

// dropsBefore reports whether the stream may have dropped it by t: an
// event leaves it max_age after it was stored (keepFor; 0: never). When
// the stream's timestamp is not known, the event's own time stands in: it
// is earlier. A margin of a tenth of max_age (at most an hour) leaves time
// to read the event back and for clocks that differ.
func (w *worker) dropsBefore(it item, t time.Time) bool {
	stored := it.stored
	if stored.IsZero() {
		stored = it.e.Time()
	}
	drop, ok := w.dropTime(stored)
	return ok && t.After(drop)
}

// dropTime is the last time an event the stream stored at stored is
// tried, the margin before it may drop it (dropsBefore); false when the
// stream keeps events for ever.
func (w *worker) dropTime(stored time.Time) (time.Time, bool) {
	if w.keepFor <= 0 {
		return time.Time{}, false
	}
	return stored.Add(w.keepFor - min(w.keepFor/10, time.Hour)), true
}

// failed applies the sink's retry policy to a slice of one resource whose
// request failed with res: failed are the slice's items from the first
// that went out, tries the failed tries of failed[0], this one included.
// It records the failure (metrics, attempt log, dead-letter queue) and
// returns what becomes of the resource, with the record that parks it
// from failed[0] (retryLater, sendAlone), or the dead-letter queue's error.
// early, when set, is a try before its time (wake.go): it does not count,
// and a failure short of a permanent one leaves the record it was made
// from as it was.
func (p *partition) failed(failed []item, res Result, tries int, early *early) (outcome, parkRecord, error) {
	w := p.w
	out := send(failed)
	if early == nil || early.probe {
		// A recovery's own failed tries are no sign of an outage: a
		// resource the receiver fails alone would start the next one.
		w.sawFailure(res)
	}
	rec := parkRecord{From: failed[0].sseq, Attempts: tries, Status: res.Status, Error: truncate(errText(res.Err), 256), Stored: failed[0].stored}
	if !res.Permanent && early != nil {
		rec.Attempts, rec.Due, rec.Down, rec.failed = early.rec.Attempts, early.rec.Due, downs(res), time.Now()
		if ra := w.now().Add(min(res.RetryAfter, maxRetryAfter)); ra.After(rec.Due) && !w.dropsBefore(failed[0], ra) {
			rec.Due = ra
		}
		w.retrying(out, res, tries, rec.Due)
		return retryLater, rec, nil
	}
	// A batch refused for its credentials (401, 403) may be refused for
	// some of its events only (a receiver refusing one tenant's), which
	// would fail every batch they share with the others: its events go
	// out one per request first, as a permanent refusal's do, and each
	// refused alone then keeps the schedule.
	if !res.Permanent && !(refusesCredentials(res.Status) && res.Events > 1) {
		if delay, ok := w.schedule.Delay(tries, res, w.rnd); ok {
			next := w.now().Add(delay)
			if !w.dropsBefore(failed[0], next) {
				rec.Due, rec.Down, rec.failed = next, downs(res), time.Now()
				w.retrying(out, res, tries, rec.Due)
				return retryLater, rec, nil
			}
			// Out of tries, as far as the stream is concerned: waiting
			// longer would lose the events without a dead letter.
			res.Err = fmt.Errorf("%s; no try is left before the stream drops the event (nats.stream.max_age %s)", errText(res.Err), w.keepFor)
			w.log.Warn("an event's next try would come after the stream drops it; not waiting for it", "partition", p.n, "event_id", out[0].ID(), "retry_in", delay, "max_age", w.keepFor)
		}
	}
	// The request's own count says whether it was a batch (another lane's
	// events may be the ones refused); the slice's, that dead-lettering
	// out[0] alone would settle events never sent.
	if res.Events > 1 || len(out) > 1 {
		rec.Attempts, rec.Due = tries-1, w.now()
		// Counted and logged as a retry: they go out again, one per
		// request.
		w.retrying(out, res, tries, rec.Due)
		return sendAlone, rec, nil
	}
	if w.purgedCovers(*out[0], sent(failed).sseq) {
		// Its tenant was purged while it was under way (purged.go): a
		// dead letter written now would outlive the purge, whose
		// deletion of the tenant's dead letters may be over.
		w.metrics.outcome(w.name, "purged")
		return deadLettered, rec, nil
	}
	if err := w.deadLetter(p.ctx, out[0], sent(failed).origin(), res, tries); err != nil {
		w.log.Warn("an event failed for good but cannot be dead-lettered; will try again", "partition", p.n, "event_id", out[0].ID(), "err", err)
		return deadLetterFailed, rec, err
	}
	return deadLettered, rec, nil
}
