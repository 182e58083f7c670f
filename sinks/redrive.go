// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/cloudevents/sdk-go/v2/event"
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

// DeadLetterPage is one page of a sink's dead letters, oldest first.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// Next is the cursor of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

// DeadLetters returns a page of at most limit of a sink's dead letters
// (DefaultPageSize when 0, at most MaxPageSize), oldest first, after the
// cursor after ("" for the first page).
func (m *Manager) DeadLetters(ctx context.Context, sink, after string, limit int) (DeadLetterPage, error) {
	if _, err := m.sink(sink); err != nil {
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
	// Failures are the first of the failed ones, with their new error.
	Failures []DeadLetter `json:"failures,omitempty"`
}

// Redrive delivers a sink's dead letters again: the one whose event id is
// id, or, when id is "", every one the sink had when the redrive started,
// reading them a batch at a time. Each delivered one leaves the queue; one
// that fails again goes back to its end with its status and error updated.
// progress, when not nil, is called after each dead letter.
func (m *Manager) Redrive(ctx context.Context, sink, id string, progress func(RedriveResult)) (RedriveResult, error) {
	s, err := m.sink(sink)
	if err != nil {
		return RedriveResult{}, err
	}
	var res RedriveResult
	found := false
	// The resources whose dead letter failed again: their later dead
	// letters are not delivered before it, but moved behind it.
	held := map[resourceKey]bool{}
	err = m.dlq.each(ctx, sink, 0, redriveBatch, func(n uint64) { res.Total = n }, func(dl DeadLetter, e *event.Event) error {
		if id != "" && dl.ID != id {
			return nil
		}
		found = true
		res.Done++
		key := resourceKey{dl.Tenant, dl.Subject}
		if e != nil && held[key] {
			if err := m.dlq.moveToEnd(ctx, sink, dl, e); err != nil {
				return fmt.Errorf("keeping dead letter %s behind the earlier one of %s: %w", dl.ID, dl.Subject, err)
			}
			res.Held++
		} else {
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
		if id != "" {
			return errStop
		}
		return nil
	})
	if n, cerr := m.dlq.count(ctx, sink); cerr == nil {
		m.ifCurrent(s, func() { m.metrics.deadLetters.WithLabelValues(sink).Set(float64(n)) })
	}
	if err != nil {
		return res, fmt.Errorf("redriving the dead letters of sink %s: %w", sink, err)
	}
	if id != "" && !found {
		return res, fmt.Errorf("sink %s has no dead letter with event id %s", sink, id)
	}
	return res, nil
}

// resourceKey names a resource across tenants: its tenant and its events'
// subject (Users/<id>).
type resourceKey struct{ tenant, subject string }

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
	r := s.sink.Deliver(ctx, e)
	if r.Err == nil {
		if err := m.dlq.remove(ctx, dl); err != nil {
			return fmt.Errorf("removing redriven event %s: %w", dl.ID, err)
		}
		res.Delivered++
		m.metrics.outcome(sink, "redriven")
		m.tries.record(sink, []*event.Event{e}, r, dl.Attempts+1, "redriven")
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err // cut short: the dead letter stays as it was
	}
	if _, err := m.dlq.put(ctx, sink, e, r, dl.Attempts+1); err != nil {
		return err
	}
	if err := m.dlq.remove(ctx, dl); err != nil {
		return fmt.Errorf("removing the earlier dead letter of event %s: %w", dl.ID, err)
	}
	dl.Status, dl.Error, dl.Attempts = r.Status, errText(r.Err), dl.Attempts+1
	fail(dl)
	m.tries.record(sink, []*event.Event{e}, r, dl.Attempts, "dead_lettered")
	return nil
}
