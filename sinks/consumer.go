// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// worker delivers one sink's events from its durable consumer. Messages are
// queued in lanes, one per resource, so that a resource's events go out one
// at a time and in order while different resources go out in parallel, up
// to the sink's concurrency.
type worker struct {
	name        string
	sink        Sink
	patterns    events.Patterns
	schedule    Schedule
	cons        jetstream.Consumer
	cursors     *cursors
	dlq         *deadLetters
	attempts    *attemptLog
	metrics     *metrics
	log         *slog.Logger
	concurrency int
	ackWait     time.Duration
	now         func() time.Time
	rnd         func() float64

	mu    sync.Mutex
	lanes map[string][]jetstream.Msg // resource key → its messages, head first
	sem   chan struct{}
	wg    sync.WaitGroup
}

// run consumes until ctx ends.
func (w *worker) run(ctx context.Context) error {
	w.sem = make(chan struct{}, w.concurrency)
	w.lanes = map[string][]jetstream.Msg{}
	iter, err := w.cons.Messages(jetstream.PullMaxMessages(max(64, w.concurrency*8)))
	if err != nil {
		return fmt.Errorf("sink %s: consuming: %w", w.name, err)
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	w.wg.Add(1)
	go w.keepQueuedAlive(ctx)
	for {
		m, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				w.wg.Wait()
				return nil
			}
			w.log.Warn("receiving events failed; retrying", "sink", w.name, "err", err)
			continue
		}
		w.enqueue(ctx, m)
	}
}

// laneKey names the resource a message is about: tenant and subject.
func laneKey(m jetstream.Msg) (string, bool) {
	tenant, subject := header(m, "ce-tenant"), header(m, "ce-subject")
	if !events.ValidTenant(tenant) || subject == "" {
		return "", false
	}
	return tenant + "." + subject, true
}

func header(m jetstream.Msg, name string) string {
	h := m.Headers()
	if v := h.Get(name); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && len(k) == len(name) && equalFold(k, name) {
			return v[0]
		}
	}
	return ""
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (w *worker) enqueue(ctx context.Context, m jetstream.Msg) {
	key, ok := laneKey(m)
	if !ok {
		w.poison(ctx, m, errors.New("the message has no ce-tenant or ce-subject header"))
		return
	}
	w.mu.Lock()
	queue, busy := w.lanes[key]
	w.lanes[key] = append(queue, m)
	w.mu.Unlock()
	if busy {
		return // its lane is already being worked
	}
	w.wg.Add(1)
	go w.drainLane(ctx, key)
}

// outcome is what became of a lane's head.
type outcome struct {
	done  bool          // completed or acknowledged: the next in the lane may go
	retry time.Duration // not done: the head comes back after this delay
}

// maxRun bounds how many completed events wait for one cursor write.
const maxRun = 64

// run is what a lane has completed but not yet recorded: events delivered
// (or filtered out, or dead-lettered) in order. Their cursor write and their
// acknowledgements are made once for the whole run, so that a burst of
// events on one resource (a group's members) costs one write, not one each.
// A crash before the write only means the run is delivered again, in order,
// with the same webhook-ids.
type run struct {
	first, last uint64 // subjectseqs completed; last 0 = none
	msgs        []jetstream.Msg
}

// view is the cursor as the lane sees it: what the bucket says, plus the run.
func (r *run) view(c cursor) cursor {
	if r.last == 0 {
		return c
	}
	if !c.exists {
		c = cursor{exists: true, state: cursorState{Base: r.first}}
	}
	c.state.Last = max(c.state.Last, r.last)
	return c
}

func (r *run) add(m jetstream.Msg, seq uint64) {
	if r.last == 0 {
		r.first = seq
	}
	r.last = seq
	r.msgs = append(r.msgs, m)
}

// drainLane delivers a lane's messages one after the other.
func (w *worker) drainLane(ctx context.Context, key string) {
	defer w.wg.Done()
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-w.sem }()
	var r run
	for {
		w.mu.Lock()
		head := w.lanes[key][0]
		w.mu.Unlock()
		out := w.handle(ctx, key, head, &r)
		if out.done {
			w.mu.Lock()
			queue := w.lanes[key][1:]
			w.lanes[key] = queue
			w.mu.Unlock()
			if len(queue) > 0 && len(r.msgs) < maxRun {
				continue
			}
			w.flush(ctx, key, &r)
			w.mu.Lock()
			if len(w.lanes[key]) > 0 { // more arrived while flushing
				w.mu.Unlock()
				continue
			}
			delete(w.lanes, key)
			w.mu.Unlock()
			return
		}
		w.flush(ctx, key, &r)
		// The head comes back later: send the rest of the lane back too, each
		// a little later than the one before, so that JetStream redelivers
		// them in order behind it.
		w.mu.Lock()
		followers := w.lanes[key][1:]
		delete(w.lanes, key)
		w.mu.Unlock()
		for i, m := range followers {
			_ = m.NakWithDelay(out.retry + time.Duration(i+1)*10*time.Millisecond)
		}
		return
	}
}

// flush records a run: the cursor advances past it, then its messages are
// acknowledged. If the cursor cannot be written the messages come back and
// go out again.
func (w *worker) flush(ctx context.Context, key string, r *run) {
	if r.last == 0 {
		return
	}
	first, last := r.first, r.last
	err := w.cursors.update(ctx, key, func(c cursor) cursorState { return c.completed(first, last) })
	for i, m := range r.msgs {
		if err != nil {
			_ = m.NakWithDelay(time.Second + time.Duration(i)*10*time.Millisecond)
			continue
		}
		w.ack(m)
	}
	if err != nil {
		// The delivery happened; if the cursor cannot say so, the events
		// come back and go out again (at-least-once, same webhook-ids).
		w.log.Warn("recording deliveries failed; they will be repeated", "sink", w.name, "events", len(r.msgs), "err", err)
	}
	*r = run{}
}

// keepQueuedAlive tells JetStream that queued messages are still being
// worked on, so their ack wait does not run out while they wait their turn.
func (w *worker) keepQueuedAlive(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		var queued []jetstream.Msg
		for _, q := range w.lanes {
			queued = append(queued, q...)
		}
		w.mu.Unlock()
		for _, m := range queued {
			_ = m.InProgress()
		}
	}
}

// handle decides what to do with a lane's head and does it. What it
// completes joins the lane's run r.
func (w *worker) handle(ctx context.Context, key string, m jetstream.Msg, r *run) outcome {
	e, err := events.FromMsg(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		w.poison(ctx, m, err)
		return outcome{done: true}
	}
	seq, err := events.SubjectSeq(e)
	if err != nil || seq == 0 {
		w.poison(ctx, m, fmt.Errorf("event %s has no subjectseq", e.ID()))
		return outcome{done: true}
	}
	cur, err := w.cursors.get(ctx, key, r.last == 0 && firstSight(m, seq))
	if err != nil {
		return w.later(m, 5*time.Second, "reading the ordering cursor", err)
	}
	v := decide(r.view(cur), seq)
	if v == waitTurn && r.last == 0 {
		// The cached cursor may be behind: another worker of this sink may
		// have delivered the predecessor. Ask the bucket before waiting.
		if cur, err = w.cursors.load(ctx, key); err != nil {
			return w.later(m, 5*time.Second, "reading the ordering cursor", err)
		}
		v = decide(cur, seq)
	}
	switch v {
	case duplicate:
		w.metrics.outcome(w.name, "duplicate")
		w.ack(m)
		return outcome{done: true}
	case waitTurn:
		// A predecessor is not done: come back after its retry is due, or
		// soon when it is in flight on another worker.
		wait := max(time.Until(cur.state.Until), 0)
		return w.later(m, wait+50*time.Millisecond+w.jitter(200*time.Millisecond), "", nil)
	}
	action, _ := events.ActionOf(e)
	if !w.patterns.Match(action) {
		w.metrics.outcome(w.name, "filtered")
		return w.complete(m, seq, v, r)
	}
	res := w.deliver(ctx, m, &e)
	if ctx.Err() != nil {
		return outcome{retry: time.Second} // shutting down: JetStream redelivers it
	}
	if res.Err == nil {
		w.metrics.delivered(w.name, res.Latency)
		w.attempts.record(w.name, &e, res, 0, "delivered")
		w.log.Debug("delivered", "sink", w.name, "event_id", e.ID(), "status", res.Status, "latency", res.Latency)
		return w.complete(m, seq, v, r)
	}
	// A failure: record the run so far, so that the failure's cursor state
	// builds on it.
	w.flush(ctx, key, r)
	if cur, err = w.cursors.get(ctx, key, false); err != nil {
		return w.later(m, 5*time.Second, "reading the ordering cursor", err)
	}
	var tries int
	var delay time.Duration
	ok := false
	if !res.Permanent {
		due := w.now()
		var s cursorState
		s, tries = cur.failed(seq, due)
		if delay, ok = w.schedule.Delay(tries, res, w.rnd); ok {
			s.Until = due.Add(delay)
			if err := w.cursors.put(ctx, key, cur, s); err != nil {
				// Without the cursor other workers would not wait; retry soon.
				return w.later(m, time.Second, "recording a failed delivery", err)
			}
		}
	}
	if !ok {
		if tries == 0 {
			tries = cur.state.Attempts + 1
		}
		if err := w.dlq.put(ctx, w.name, &e, res, tries); err != nil {
			return w.later(m, 5*time.Second, "dead-lettering", err)
		}
		w.metrics.outcome(w.name, "dead_lettered")
		w.attempts.record(w.name, &e, res, tries, "dead_lettered")
		w.log.Warn("delivery failed for good; event dead-lettered", "sink", w.name, "event_id", e.ID(), "status", res.Status, "attempt", tries, "latency", res.Latency, "err", res.Err)
		return w.complete(m, seq, v, r)
	}
	w.metrics.outcome(w.name, "retry")
	w.attempts.recordRetry(w.name, &e, res, tries, w.now().Add(delay))
	w.log.Warn("delivery failed; will retry", "sink", w.name, "event_id", e.ID(), "status", res.Status, "attempt", tries, "latency", res.Latency, "retry_in", delay.Round(time.Millisecond), "err", res.Err)
	return w.later(m, delay, "", nil)
}

// firstSight reports whether a message is a resource's first event arriving
// for the first time: then it almost surely has no cursor yet, and writing
// one with Create (which fails if one exists) is check enough.
func firstSight(m jetstream.Msg, seq uint64) bool {
	if seq != 1 {
		return false
	}
	meta, err := m.Metadata()
	return err == nil && meta.NumDelivered == 1
}

// deliver calls the sink, telling JetStream the message is in progress
// meanwhile so a slow receiver does not cause a redelivery.
func (w *worker) deliver(ctx context.Context, m jetstream.Msg, e *event.Event) Result {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(w.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return w.sink.Deliver(ctx, e)
}

// complete adds a completed event to the lane's run; an event older than
// the cursor (first seen late) is acknowledged at once, moving nothing.
func (w *worker) complete(m jetstream.Msg, seq uint64, v verdict, r *run) outcome {
	if v == deliverNext {
		r.add(m, seq)
	} else {
		w.ack(m)
	}
	return outcome{done: true}
}

func (w *worker) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		w.log.Warn("acknowledging an event failed; it may be delivered again", "sink", w.name, "err", err)
	}
}

// later sends the message back to JetStream to come again after d.
func (w *worker) later(m jetstream.Msg, d time.Duration, doing string, err error) outcome {
	if err != nil {
		w.log.Warn(doing+" failed; will try again", "sink", w.name, "err", err, "retry_in", d)
	}
	if nerr := m.NakWithDelay(d); nerr != nil {
		w.log.Warn("returning an event to the stream failed; it comes back after the ack wait", "sink", w.name, "err", nerr)
	}
	return outcome{retry: d}
}

// poison dead-letters a message that is not a scimrelay event, so that it
// does not block its consumer.
func (w *worker) poison(ctx context.Context, m jetstream.Msg, cause error) {
	w.log.Error("message is not a scimrelay event; dead-lettered", "sink", w.name, "subject", m.Subject(), "err", cause)
	if err := w.dlq.putRaw(ctx, w.name, m, cause); err != nil {
		w.log.Error("dead-lettering a malformed message failed", "sink", w.name, "err", err)
	}
	w.metrics.outcome(w.name, "dead_lettered")
	_ = m.Term()
}

func (w *worker) jitter(d time.Duration) time.Duration { return time.Duration(w.rnd() * float64(d)) }

// defaultRand is the jitter source.
func defaultRand() float64 { return rand.Float64() }
