// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRetryPolicy is the one retry policy that events from the consumer
// and events read back from the stream share: what a failed request's
// result makes of a resource's slice, with a real dead-letter queue.
func TestRetryPolicy(t *testing.T) {
	js := natsStream(t)
	m, err := NewManager(Options{Sinks: []Config{sinkConfig("crm", "http://127.0.0.1:1", nil)}, JS: js,
		Rand:   func() float64 { return 0.5 }, // no jitter
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil { // the worker, not running: nothing else reads it
		t.Fatal(err)
	}
	w := m.sinks["crm"].worker
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	w.now = func() time.Time { return now }
	p := newPartition(w, 0)
	last := len(w.schedule)
	fail500 := errors.New("POST: 500")
	// What the HTTP client says when nothing listens.
	refusedConn := fmt.Errorf("POST http://127.0.0.1:9/h: %w", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	since := time.Now().Add(-time.Minute)

	var n uint64
	slice := func(kinds ...bool) []item { // true: sent, false: skipped
		var out []item
		for _, sent := range kinds {
			n++
			out = append(out, item{e: eventstest.Event(t, "acme", events.UserUpdated, "u1", n, n), seq: n, sseq: 100 + n, skip: !sent})
		}
		return out
	}
	for _, c := range []struct {
		name    string
		items   []item
		res     Result
		tries   int
		want    outcome
		due     time.Time // retryLater, sendAlone
		records int       // retryLater, sendAlone: the record's Attempts
		metric  string    // the outcome counted and recorded as an attempt
		down    bool      // retryLater: the record's Down
		early   *early
	}{
		{"retryable: the schedule's next delay", slice(true), Result{Status: 500, Err: fail500, Events: 1}, 1, retryLater, now.Add(w.schedule[0]), 1, "retry", true, nil},
		{"a longer Retry-After wins", slice(true), Result{Status: 429, Err: fail500, Events: 1, RetryAfter: time.Hour}, 2, retryLater, now.Add(time.Hour), 2, "retry", false, nil},
		{"a batch with retries left waits as a whole", slice(true, false, true), Result{Status: 503, Err: fail500, Events: 2}, 3, retryLater, now.Add(w.schedule[2]), 3, "retry", true, nil},
		{"out of tries, alone: dead-lettered", slice(true), Result{Status: 500, Err: fail500, Events: 1}, last + 1, deadLettered, time.Time{}, 0, "dead_lettered", false, nil},
		{"out of tries without an answer: dead-lettered, saying why", slice(true), Result{Err: refusedConn, Events: 1}, last + 1, deadLettered, time.Time{}, 0, "dead_lettered", false, nil},
		{"refused for good, alone: dead-lettered", slice(true, false), Result{Status: 422, Err: fail500, Events: 1, Permanent: true}, 1, deadLettered, time.Time{}, 0, "dead_lettered", false, nil},
		{"a batch refused for good: one per request, at once", slice(true, true), Result{Status: 422, Err: fail500, Events: 2, Permanent: true}, 1, sendAlone, now, 0, "retry", false, nil},
		{"refused for good in another lane's batch: one per request", slice(true), Result{Status: 400, Err: fail500, Events: 7, Permanent: true}, 2, sendAlone, now, 1, "retry", false, nil},
		{"a batch out of tries: one per request, its head's tries kept", slice(true, true), Result{Status: 500, Err: fail500, Events: 2}, last + 1, sendAlone, now, last, "retry", false, nil},
		{"an early try does not count", slice(true), Result{Status: 503, Err: fail500, Events: 1}, 3, retryLater, now.Add(time.Hour), 2, "retry", true, &early{rec: parkRecord{Attempts: 2, Due: now.Add(time.Hour)}}},
		{"an early try told to wait: the longer wait", slice(true), Result{Status: 503, Err: fail500, Events: 1, RetryAfter: 2 * time.Hour}, 3, retryLater, now.Add(2 * time.Hour), 2, "retry", false, &early{rec: parkRecord{Attempts: 2, Due: now.Add(time.Hour)}}},
		{"an early try refused for good: dead-lettered", slice(true), Result{Status: 422, Err: fail500, Events: 1, Permanent: true}, 3, deadLettered, time.Time{}, 0, "dead_lettered", false, &early{rec: parkRecord{Attempts: 2, Due: now.Add(time.Hour)}}},
		{"a result that counts no events never settles unsent ones", slice(true, true), Result{Err: fail500, Permanent: true}, 1, sendAlone, now, 0, "retry", false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := map[string]float64{}
			for _, o := range []string{"retry", "dead_lettered"} {
				before[o] = testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", o))
			}
			o, rec, err := p.failed(c.items, c.res, c.tries, c.early)
			if err != nil || o != c.want {
				t.Fatalf("outcome %d (err %v), want %d", o, err, c.want)
			}
			for name, was := range before {
				got, want := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", name))-was, 0.0
				if name == c.metric {
					want = float64(len(send(c.items)))
					if name == "dead_lettered" {
						want = 1
					}
				}
				if got != want {
					t.Errorf("outcome %q counted %v times, want %v", name, got, want)
				}
			}
			if o == deadLettered {
				page, err := m.DeadLetters(ctx, "crm", "", 0)
				if err != nil {
					t.Fatal(err)
				}
				dl := page.DeadLetters[len(page.DeadLetters)-1]
				if dl.ID != c.items[0].e.ID() || dl.Attempts != c.tries || dl.Status != c.res.Status || dl.ErrorClass != errorClass(c.res) {
					t.Fatalf("dead letter %+v, want event %s after %d tries with status %d, error class %q", dl, c.items[0].e.ID(), c.tries, c.res.Status, errorClass(c.res))
				}
				return
			}
			// The failed try is in the attempt log, for each event sent.
			eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				all, err := Attempts(ctx, js, AttemptQuery{Sink: "crm", Since: since, Limit: 10_000})
				if err != nil {
					return err
				}
				for _, e := range send(c.items) {
					if !slices.ContainsFunc(all, func(a Attempt) bool {
						return a.EventID == e.ID() && a.Outcome == "retry" && a.Attempt == c.tries && a.Status == c.res.Status && a.NextAttempt.Equal(c.due)
					}) {
						return fmt.Errorf("no retry of event %s (try %d) recorded", e.ID(), c.tries)
					}
				}
				return nil
			})
			want := parkRecord{From: c.items[0].sseq, Attempts: c.records, Due: c.due, Status: c.res.Status, Error: errText(c.res.Err), Down: c.down}
			if o == retryLater && rec.failed.IsZero() {
				t.Error("the record does not say when the try failed")
			}
			if rec.failed = (time.Time{}); rec != want {
				t.Fatalf("park record %+v, want %+v", rec, want)
			}
		})
	}

	// An event that comes again (an acknowledgement lost, a hand-over)
	// and fails as before is in the queue once, and counted once.
	t.Run("dead-lettered again when it comes again: once", func(t *testing.T) {
		items, res := slice(true), Result{Status: 422, Err: fail500, Events: 1, Permanent: true}
		if o, _, err := p.failed(items, res, 1, nil); err != nil || o != deadLettered {
			t.Fatalf("outcome %d (err %v), want dead-lettered", o, err)
		}
		counted := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", "dead_lettered"))
		queued, err := m.dlq.count(ctx, "crm")
		if err != nil {
			t.Fatal(err)
		}
		if o, _, err := p.failed(items, res, 1, nil); err != nil || o != deadLettered {
			t.Fatalf("again: outcome %d (err %v), want dead-lettered", o, err)
		}
		if got := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", "dead_lettered")) - counted; got != 0 {
			t.Errorf("the event dead-lettered again was counted %v more times, want 0", got)
		}
		if n, err := m.dlq.count(ctx, "crm"); n != queued || err != nil {
			t.Errorf("%d dead letters (%v) after the event came again, want %d", n, err, queued)
		}
	})
}

// TestFailureLogsAreBounded: the warning a failed delivery logs quotes its
// error cut as the attempts and dead letters keep it (1 KiB): a receiver
// writes part of that error.
func TestFailureLogsAreBounded(t *testing.T) {
	js := natsStream(t)
	logs := &eventstest.Log{}
	m, err := NewManager(Options{Sinks: []Config{sinkConfig("crm", "http://127.0.0.1:1", nil)}, JS: js,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil { // the worker, not running
		t.Fatal(err)
	}
	w := m.sinks["crm"].worker
	e := testEvent(t, events.UserCreated, "u1", 1)
	res := Result{Status: 500, Err: errors.New("POST: " + strings.Repeat("x", 100<<10)), Events: 1}
	w.retrying([]*event.Event{e}, res, 1, time.Now().Add(time.Minute))
	if err := w.deadLetter(ctx, e, origin{}, res, 2); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines logged, got %d", len(lines))
	}
	for _, line := range lines {
		if len(line) > 2*maxErrorInQueue || !strings.Contains(line, strings.Repeat("x", 512)) {
			t.Errorf("a line of %d bytes logged (%.120s...): want the error in it, cut to %d bytes", len(line), line, maxErrorInQueue)
		}
	}
}

// TestDropsBefore: no retry is put off past the time the stream drops its
// event, max_age after it was stored, less a tenth of max_age, at most an
// hour (README, Retries); an event whose stream time is not known is timed
// from its own, and a stream without max_age drops nothing.
func TestDropsBefore(t *testing.T) {
	stored := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	it := item{e: eventstest.Event(t, "acme", events.UserCreated, "u1", 1, 1), stored: stored}
	for _, c := range []struct {
		keepFor, at time.Duration // after stored
		drops       bool
	}{
		{7 * 24 * time.Hour, 7*24*time.Hour - 61*time.Minute, false},
		{7 * 24 * time.Hour, 7*24*time.Hour - 59*time.Minute, true}, // the margin is an hour at most
		{5 * time.Hour, 4*time.Hour + 29*time.Minute, false},
		{5 * time.Hour, 4*time.Hour + 31*time.Minute, true}, // a tenth of max_age
		{0, 1000 * 24 * time.Hour, false},
	} {
		w := &worker{keepFor: c.keepFor}
		if got := w.dropsBefore(it, stored.Add(c.at)); got != c.drops {
			t.Errorf("max_age %s, a try %s after the event was stored: dropped before it %t, want %t", c.keepFor, c.at, got, c.drops)
		}
	}
	unknown := item{e: eventstest.Event(t, "acme", events.UserCreated, "u1", 1, 1)}
	w := &worker{keepFor: 5 * time.Hour}
	if !w.dropsBefore(unknown, unknown.e.Time().Add(4*time.Hour+31*time.Minute)) || w.dropsBefore(unknown, unknown.e.Time().Add(4*time.Hour+29*time.Minute)) {
		t.Error("an event whose stream time is not known is not timed from its own time")
	}
}
