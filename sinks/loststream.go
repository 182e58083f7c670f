// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A stream that lost its events (a damaged message block nats-server drops
// at its start, keeping the stream and its consumers' positions) numbers
// new ones from 0 again, and each sink consumer would pass over the new
// events up to where it had been. A worker looks for it at a setup
// (streamRenumbered) and, running, after each reconnection to NATS or
// trouble consuming (the stream's node of a cluster away while the worker
// stayed connected to another), before it takes anything more (take,
// lostUnderway); found, the
// consumer is made again from the stream's first event, one process at a
// time (recoverConsumer).
//
// Where the stream has stored fewer new events than a consumer had
// reached, the consumer's position is past the stream's end
// (behindStream). Where it has stored more (a front end's outbox flushed
// at once after the restart), the positions look as those of a stream that
// lost nothing, and the consumer would pass over the new events up to its
// old position: 93 of 150 in a review's run.
//
// So each partition's worker marks, in the sink's parking bucket, the
// identity of the event at its consumer's ack floor: its stream sequence,
// the time the stream stored it, and when the consumer was made
// (reachedKey). A stream sequence never names another event while the
// stream keeps its events, so the stream holding an event stored at
// another time there is one that lost them; no clock is compared, only
// what the server stamped. The mark of a consumer made since (recovered,
// or made anew with the stream) is not that consumer's and is passed over.
// A mark lags the consumer by up to reachedEvery, which the positions
// cover: a stream whose last event is before the consumer's position lost
// its events, and one whose last event is at or after it holds an event at
// the mark's sequence, which is the mark's event or a new one.

// recoveryKey is the key of the sink's parking bucket that a process
// holds while it deletes partition n's consumer, found past the end of a
// stream that lost its events, and makes it again: the processes of a
// deployment set up at once (a rolling start after the NATS store was
// damaged) each found it so, and each deleted it and made it again. One
// deleted the consumer another had just made, which could leave
// nats-server a consumer without its store (err_code 10012 at every
// later setup), and one that looked in between found none and made it
// with "deliver new", which won the other's create and skipped every
// event stored since the loss (TestLostStreamConcurrentSetups).
func recoveryKey(partition int) string { return "recover." + strconv.Itoa(partition) }

// recoveryStale is how old a recovery's key is taken to be left by a
// process that stopped while it held it.
const recoveryStale = 30 * time.Second

// recoveryBucket opens the sink's parking bucket, nil when there is none
// yet (a sink set up for the first time has no consumer to recover).
func (w *worker) recoveryBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := w.js.KeyValue(ctx, parkingBucketName(w.name))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	return kv, err
}

// awaitRecovery waits while another process holds partition n's recovery
// (recoveryKey), and reports whether there was one, and whether it was
// left by a process that stopped while it held it (recoveryStale: it is
// let go of here).
func (w *worker) awaitRecovery(ctx context.Context, partition int) (waited, interrupted bool, err error) {
	kv, err := w.recoveryBucket(ctx)
	if kv == nil || err != nil {
		return false, false, err
	}
	for {
		e, err := kv.Get(ctx, recoveryKey(partition))
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return waited, false, nil
		}
		if err != nil {
			return waited, false, err
		}
		if time.Since(e.Created()) > recoveryStale {
			if err := kv.Delete(ctx, recoveryKey(partition), jetstream.LastRevision(e.Revision())); err != nil && !casConflict(err) {
				return waited, false, err
			}
			w.log.Warn("a partition's consumer recovery was left by a process that stopped while it held it; let go of it", "partition", partition, "holder", string(e.Value()))
			return true, true, nil
		}
		waited = true
		select {
		case <-ctx.Done():
			return waited, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// recoverConsumer deletes partition n's consumer, found as info past the
// stream's end, and makes it again as cfg, holding the partition's
// recovery (recoveryKey) meanwhile; held by another process, it waits for
// that one to end. The caller looks at the consumer again either way.
func (w *worker) recoverConsumer(ctx context.Context, partition int, info *jetstream.ConsumerInfo, cfg jetstream.ConsumerConfig) error {
	kv, err := w.recoveryBucket(ctx)
	if err != nil {
		return err
	}
	if kv != nil {
		if _, err := kv.Create(ctx, recoveryKey(partition), []byte(w.members.id)); casConflict(err) {
			_, _, err := w.awaitRecovery(ctx, partition)
			return err
		} else if err != nil {
			return err
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
			defer cancel()
			if err := kv.Delete(dctx, recoveryKey(partition)); err != nil {
				w.log.Warn("letting go of a partition's consumer recovery failed; the others set up wait for it to age", "partition", partition, "err", err, "wait", recoveryStale)
			}
		}()
	}
	// Another process may have made it again before this one held the
	// recovery: that one is kept.
	now, err := w.js.Consumer(ctx, events.StreamName, info.Name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		_, err = w.js.CreateConsumer(ctx, events.StreamName, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			return nil
		}
		return err
	}
	if err != nil || !now.CachedInfo().Created.Equal(info.Created) {
		return err
	}
	if err := w.js.DeleteConsumer(ctx, events.StreamName, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	if _, err = w.js.CreateConsumer(ctx, events.StreamName, cfg); errors.Is(err, jetstream.ErrConsumerExists) {
		return nil
	}
	return err
}

// streamRenumbered reports whether the event stream lost its events
// under the consumer info describes (behindStream; the caller makes it
// again: recoverConsumer). Once a setup found it so, its later
// partitions, set up one after another, are asked once.
func (w *worker) streamRenumbered(ctx context.Context, partition int, info *jetstream.ConsumerInfo) (bool, error) {
	behind, err := w.behindStream(ctx, partition, info, w.renumberSeen, func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(2 * time.Second):
			return true
		}
	})
	if behind {
		w.renumberSeen = true
	}
	return behind, err
}

// behindStream reports whether the event stream's last event is before
// where the consumer info describes has reached, and says so at Error.
// The stream's sequence never goes back while it keeps its store: such a
// stream lost its events (a message block of nats-server's store
// damaged, which it drops at its start, keeping the stream and its
// consumers' positions) and numbers new ones from there again, and the
// consumer would skip every one of them up to its old position, as
// partition.recreate says of a stream made anew. Asked twice, wait apart
// (a stream's leader just elected may not have applied every entry yet),
// unless once; wait false ends the look with an error.
func (w *worker) behindStream(ctx context.Context, partition int, info *jetstream.ConsumerInfo, once bool, wait func() bool) (bool, error) {
	at := max(info.Delivered.Stream, info.AckFloor.Stream)
	var last uint64
	for i := range 2 {
		if i > 0 {
			if once {
				break
			}
			if !wait() {
				return false, cmp.Or(ctx.Err(), context.Canceled)
			}
		}
		actx, cancel := context.WithTimeout(ctx, apiTimeout)
		st, err := w.js.Stream(actx, events.StreamName)
		cancel()
		if err != nil {
			return false, err
		}
		if last = st.CachedInfo().State.LastSeq; at <= last {
			return w.storedAnew(ctx, partition, info)
		}
	}
	w.log.Error("the event stream's last event is before this partition's consumer position: the stream lost its events (its NATS store damaged) and numbers new ones from there again; recreating the consumer from the stream's first event (the events the stream lost and this sink had not delivered are gone)",
		"consumer", info.Name, "consumer_at_stream_seq", at, "stream_last_seq", last)
	return true, nil
}

// fromFirstEvent is partition's consumer made again from the stream's
// first event ("deliver new" would skip what was published since the
// stream lost its events), keeping the filter of the tenants this process
// does not configure from was, the consumer found (othersKept).
func (w *worker) fromFirstEvent(partition int, was jetstream.ConsumerConfig) jetstream.ConsumerConfig {
	cfg := w.consumerConfig(partition)
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverAllPolicy, 0, nil
	cfg.FilterSubjects = w.othersKept(cfg.FilterSubjects, was)
	return cfg
}

// reachedKey is the key of the sink's parking bucket holding partition n's
// mark. Like claim.<n> and recover.<n> it is outside the partitions'
// records (bookkeepingKey).
func reachedKey(partition int) string { return "reached." + strconv.Itoa(partition) }

// reachedEvery is how often, at most, a partition's worker writes its
// mark again: one direct get and one bucket write a partition.
const reachedEvery = 30 * time.Second

// reached is a partition's mark: the consumer it is of (made then), and
// the event at its ack floor (its stream sequence, stored then).
type reached struct {
	made   time.Time
	seq    uint64
	stored time.Time
}

func (r reached) encode() []byte {
	return fmt.Appendf(nil, "%s %d %s", r.made.UTC().Format(time.RFC3339Nano), r.seq, r.stored.UTC().Format(time.RFC3339Nano))
}

func parseReached(b []byte) (reached, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return reached{}, fmt.Errorf("a mark of %d fields, not 3", len(f))
	}
	var r reached
	var err error
	if r.made, err = time.Parse(time.RFC3339Nano, f[0]); err != nil {
		return reached{}, err
	}
	if r.seq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return reached{}, err
	}
	if r.stored, err = time.Parse(time.RFC3339Nano, f[2]); err != nil {
		return reached{}, err
	}
	return r, nil
}

// storedAnew reports whether the event stream holds, at the sequence of
// partition's mark, another event than the one marked, for the consumer
// info describes (its mark: one of a consumer made since is passed over),
// and says so at Error. No mark, or no event there (aged out, or a
// tenant's events purged), tells nothing: false.
func (w *worker) storedAnew(ctx context.Context, partition int, info *jetstream.ConsumerInfo) (bool, error) {
	kv, err := w.recoveryBucket(ctx)
	if kv == nil || err != nil {
		return false, err
	}
	actx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	e, err := kv.Get(actx, reachedKey(partition))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	mark, err := parseReached(e.Value())
	if err != nil {
		w.log.Warn("a partition's mark in the parking bucket is unreadable; passed over", "partition", partition, "err", err)
		return false, nil
	}
	if !mark.made.Equal(info.Created) {
		return false, nil
	}
	m, err := getMsg(actx, w.stream, mark.seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if m.Time.Equal(mark.stored) {
		return false, nil
	}
	w.log.Error("the event stream holds another event at the sequence this partition's consumer had reached: the stream lost its events (its NATS store damaged) and numbered new ones from there again; recreating the consumer from the stream's first event (the events the stream lost and this sink had not delivered are gone)",
		"consumer", info.Name, "stream_seq", mark.seq, "stored_then", mark.stored, "stored_now", m.Time)
	return true, nil
}

// markReached writes the partition's mark (reachedKey) of the consumer
// info describes, at its ack floor, when that moved, the last write is
// reachedEvery old and no other worker holds the consumer's pin (pin,
// as the look found it). A failed write is tried again at the next look.
func (p *partition) markReached(info *jetstream.ConsumerInfo, pin string) {
	floor := info.AckFloor.Stream
	p.mu.Lock()
	// A consumer made since the last mark (made again from the first
	// event, here or by another process) has none of its own yet: it is
	// marked at once, not reachedEvery after the last consumer's.
	fresh := !info.Created.Equal(p.markedFor)
	due := floor != 0 && (fresh || floor != p.marked && time.Since(p.markedAt) >= reachedEvery) && (pin == "" || pin == p.pin)
	p.mu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
	defer cancel()
	m, err := getMsg(ctx, p.w.stream, floor)
	if err != nil {
		return // gone (a tenant's events purged): the next floor
	}
	if p.lookDue() {
		// Answered after a reconnection no look has checked yet: the
		// stream may have lost its events meanwhile, and this would mark
		// a new event as the one the consumer had reached (lostUnderway
		// looks first).
		return
	}
	if _, err := p.w.parked.kv.Put(ctx, reachedKey(p.n), reached{made: info.Created, seq: floor, stored: m.Time}.encode()); err != nil {
		p.w.log.Debug("writing the partition's mark failed; will write it at a later look", "partition", p.n, "err", err)
		return
	}
	p.mu.Lock()
	p.marked, p.markedAt, p.markedFor = floor, time.Now(), info.Created
	p.mu.Unlock()
}

// bookkeepingKey reports whether key of a sink's parking bucket is the
// workers' own (a partition's claim, recovery or mark), not a parked
// resource's record.
func bookkeepingKey(key string) bool {
	for _, prefix := range []string{"claim.", "recover.", "reached."} {
		if strings.HasPrefix(key, prefix) {
			return true
		}
	}
	return false
}

// errRecovered ends consume when its consumer was made again from the
// stream's first event (lostUnderway).
var errRecovered = errors.New("the event stream lost its events: the partition's consumer was made again from its first event")

// take hands m, a message of the consumer cons (made then: its creation
// time, in nanoseconds), to enqueue, once the partition has looked, since
// the connection to NATS was last made again, whether the stream lost its
// events meanwhile (lostUnderway). Delivered before the look, the new
// events past the consumer's old position went out first, and the marks
// of their resources then dropped their earlier events as repeats when the
// consumer made again sent them. Nothing is taken from a consumer made
// again or gone, and consume ends.
func (p *partition) take(cons jetstream.Consumer, made int64, m jetstream.Msg) {
	for p.lookDue() { // looked at again while a recovery fails
		ctx, cancel := context.WithTimeout(p.ctx, apiTimeout)
		info, err := cons.Info(ctx)
		cancel()
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			p.endConsume(err)
			return
		}
		if err == nil && p.lostUnderway(info) {
			break
		}
		if p.ctx.Err() != nil || p.lookDue() && !p.pause(time.Second) {
			return
		}
	}
	if p.recovered.Load() == made {
		p.endConsume(errRecovered)
		return
	}
	p.enqueue(m)
}

// endConsume ends the partition's consume with err, unless it is ending
// already (consume takes the first).
func (p *partition) endConsume(err error) {
	select {
	case p.lost <- err:
	default:
	}
}

// lookDue reports whether the partition must look for a stream that lost
// its events (lostUnderway) before it takes anything more: the connection
// to NATS was made again, or consuming reported trouble (disturbed),
// since it last looked.
func (p *partition) lookDue() bool {
	nc := p.w.js.Conn()
	return nc != nil && (p.disturbed.Load() || nc.Stats().Reconnects != p.reconnects.Load())
}

// lostUnderway looks, after the connection to NATS was made again, for a
// stream that lost its events meanwhile (a damaged block of nats-server's
// store, the server restarted: the stream numbers new events from 0 again
// and the consumer keeps its position), as a setup does
// (worker.streamRenumbered). The consumer passed over every event stored
// since up to its old position, readyz all ok
// (TestLostStreamUnderRunningWorkers). Found so (behindStream), it is
// made again from the stream's first event by this worker, which holds the
// partition's claim, under the partition's recovery (recoverConsumer),
// and it reports true; the consumer info describes is the one found.
func (p *partition) lostUnderway(info *jetstream.ConsumerInfo) bool {
	p.lookMu.Lock()
	defer p.lookMu.Unlock()
	nc := p.w.js.Conn()
	if nc == nil {
		return false
	}
	reconnects := nc.Stats().Reconnects
	disturbed := p.disturbed.Swap(false)
	if reconnects == p.reconnects.Load() && !disturbed {
		return false
	}
	behind, err := p.w.behindStream(p.ctx, p.n, info, false, func() bool { return p.pause(2 * time.Second) })
	if err != nil {
		if disturbed {
			p.disturbed.Store(true)
		}
		return false // the next look
	}
	if !behind {
		p.reconnects.Store(reconnects)
		return false
	}
	cfg := p.w.fromFirstEvent(p.n, info.Config)
	p.mu.Lock()
	p.highest, p.floor, p.consumed = 0, 0, 0
	p.mu.Unlock()
	// Nothing more is taken from the consumer found, deleted or not: a
	// recovery that failed is tried again at the next look.
	p.recovered.Store(info.Created.UnixNano())
	ctx, cancel := context.WithTimeout(p.ctx, 4*apiTimeout)
	defer cancel()
	if err := p.w.recoverConsumer(ctx, p.n, info, cfg); err != nil {
		if disturbed {
			p.disturbed.Store(true)
		}
		p.w.log.Warn("recreating the consumer of a stream that lost its events failed; will look again", "partition", p.n, "err", err)
		return false
	}
	p.reconnects.Store(reconnects)
	return true
}
