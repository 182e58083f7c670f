// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// replayBatch is how many events a replay reads at a time.
const replayBatch = 128

// ReplayResult says what a replay did, or has done so far.
type ReplayResult struct {
	Total        uint64 `json:"total"` // events of the sink's tenants since the time, at most
	Done         int    `json:"done"`  // read so far
	Matched      int    `json:"matched"`
	Delivered    int    `json:"delivered"`
	DeadLettered int    `json:"dead_lettered"`
	// Purged are events of a tenant purged while the replay ran (through
	// another process's admin API, whose purge does not wait for this
	// process's replays): neither sent nor dead-lettered once this
	// process's worker has read the purge's notice.
	Purged int `json:"purged,omitempty"`
}

// Replay sends a sink the events of the stream since a time again, in
// stream order, whether or not it had them: for a receiver that lost its
// data, or a sink added after the events. It reads the events a batch at a
// time, up to the last one there was when it started; events that fail
// are dead-lettered. progress, when not nil, is called after each event.
func (m *Manager) Replay(ctx context.Context, sink string, since time.Time, progress func(ReplayResult)) (ReplayResult, error) {
	m.jobsMu.RLock() // its dead letters are not put beside a tenant's purge of them
	defer m.jobsMu.RUnlock()
	s, err := m.sink(sink)
	if err != nil {
		return ReplayResult{}, err
	}
	stream, err := m.o.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return ReplayResult{}, fmt.Errorf("replaying to sink %s: %w", sink, err)
	}
	cfg := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
	for _, t := range s.cfg.Tenants {
		cfg.FilterSubjects = append(cfg.FilterSubjects, events.TenantSubjects(t))
	}
	var res ReplayResult
	// A replay's dead letters have ids of their own: the id of a worker's
	// first dead letter of an event (sink, event, attempt 1) would have
	// JetStream drop one as its copy for minutes after that one was
	// redriven and left the queue.
	run := strconv.FormatInt(time.Now().UnixNano(), 10)
	err = readRange(ctx, stream, cfg, replayBatch, func(n uint64) { res.Total = n }, func(msg jetstream.Msg, _ uint64) error {
		res.Done++
		defer func() {
			if progress != nil {
				progress(res)
			}
		}()
		// The sink as configured now: a reload may have narrowed it or
		// removed it since the replay began.
		cur, err := m.sink(sink)
		if err != nil {
			return err
		}
		s = cur
		seq, _ := events.StoredAt(msg)
		e, err := m.o.Trust.Published(seq, msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			return nil // not an event the relay published: the workers drop or dead-letter it, a replay skips it
		}
		if !selects(s.cfg.Tenants, s.patterns, e) {
			// The consumer's filter takes the sink's tenants, but a
			// client that may make consumers on the stream can have
			// another deliver to the reader's inbox (readRange).
			return nil
		}
		res.Matched++
		purged := func() bool { return s.worker != nil && s.worker.purgedCovers(e, seq) }
		if purged() {
			res.Purged++
			return nil
		}
		r := deliverTraced(ctx, m.o.Tracer, sink, s.sink, &e)
		if r.Err == nil {
			res.Delivered++
			m.ifCurrent(s, func() { m.metrics.outcome(sink, "replayed") })
			m.tries.record(sink, []*event.Event{&e}, r, 1, "replayed")
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if purged() {
			// Refused while the purge ran: a dead letter, or a record of
			// the attempt, would outlive the purge's deletion of them.
			res.Purged++
			return nil
		}
		if _, err := m.dlq.putAs(ctx, sink, &e, origin{sig: msg.Headers().Get(events.SignatureHeader), seq: seq}, r, 1, sink+"."+e.ID()+".replay."+run); err != nil {
			return err
		}
		res.DeadLettered++
		m.ifCurrent(s, func() { m.metrics.outcome(sink, "dead_lettered") })
		m.tries.record(sink, []*event.Event{&e}, r, 1, "dead_lettered")
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("replaying to sink %s: %w", sink, err)
	}
	return res, nil
}
