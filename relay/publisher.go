// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Outbox is what the publisher needs from the store: committed events in
// commit order, removable once JetStream has them, and a place to put a
// row that can never be published.
type Outbox interface {
	ReadOutbox(after uint64, limit int) ([]OutboxRow, error)
	DeleteOutbox(keys []uint64) error
	QuarantineOutbox(key uint64, reason string) error
	OutboxReady() <-chan struct{}
}

var _ Outbox = (*Store)(nil)

// StoreHealer repairs the NATS store after a write error once it can: the
// embedded server restarts JetStream when its disk has room again. It
// reports whether it repaired anything.
type StoreHealer interface {
	HealStore(ctx context.Context) (bool, error)
}

// natsbus.StoreHealer implements StoreHealer; neither relay nor natsbus
// may import the other, so its guard is in cmd/scimrelay, where they meet.

// PublisherOptions tunes a Publisher; the zero value works.
type PublisherOptions struct {
	// Window is how many outbox rows are read and published together:
	// the first alone, the others in atomic batches of at most 1,000,
	// each sent once the one before is stored, or chained (Sole).
	Window int
	// Sole says that no other client publishes to the stream: the
	// embedded server, where only the relay's own connection may. A
	// window's rows after its first then go at once, each expecting the
	// stream's last sequence to be the one before its own, instead of in
	// atomic batches: with no one else storing in between, a row refused
	// or lost has every later one of the window refused with it, and
	// nothing overtakes it (docs/decisions.md, Publishing). With other
	// publishers (front ends sharing an external stream) the chain let
	// another's messages fill the gap a refused row left.
	Sole bool
	// AckTimeout bounds each wait for JetStream's answer: to a row sent
	// alone (a window's first, one of its last few) or to a batch's
	// commit; a window may wait several times. It also bounds a first
	// row's pending acknowledgement in nats.go.
	AckTimeout time.Duration
	// ResendAfter is how long the publisher waits for an event's
	// acknowledgement before it sends the event again, and again after as
	// long, until AckTimeout: a message that reached a stream's leader as
	// it stopped leading is never answered, and its copy reaches the next
	// leader. 0, or not below AckTimeout: one second, or half AckTimeout
	// when that is shorter.
	ResendAfter time.Duration
	// MaxBackoff caps the wait between attempts while NATS is away.
	MaxBackoff time.Duration
	// Observe, when set, is called for every event JetStream acknowledged,
	// with the time it was committed (for the publish-lag metric).
	Observe func(committed time.Time)
	// Healer, when set, is asked to repair the NATS store after a failed
	// attempt.
	Healer StoreHealer
	// Quarantined, when set, is called for every row put in quarantine.
	Quarantined func()
	// Resent, when set, is called for every event sent again
	// (ResendAfter).
	Resent func()
	// Tracer, when set, traces the publish of every event that carries a
	// trace context, as a child of the request that made it. Nil: no
	// tracing, at no cost.
	Tracer trace.Tracer
	// KeepFor is how long an event JetStream acknowledged stays in the
	// outbox before it is deleted: long enough for the NATS server to have
	// written it to disk, so that a crash of the machine cannot lose an
	// event the server held only in memory; the event is published again
	// instead. 0 deletes at once, for a server that writes every message to
	// disk before acknowledging it.
	KeepFor time.Duration
	// Signer, when set, signs every event as it is published (NATS
	// external to the relay, where other clients can have the stream
	// store what they choose: events.Trust). Nil: unsigned.
	Signer *events.Signer
}

// Publisher drains the outbox to JetStream: in commit order (so in each
// tenant's sequence order), with Nats-Msg-Id set to the event id so that a
// re-publish after a crash is deduplicated, deleting rows only after the
// PubAck. It never blocks a SCIM request: the store commits and signals, and
// the publisher catches up.
//
// Order under partial failure: the first event of a window is published
// alone, and the others behind it in JetStream atomic batches, stored all
// or none, each sent once the one before it is stored (publishWindow). If
// one is refused or lost, nothing after it is stored; the next attempt
// starts again from it. A first event whose acknowledgement does not come
// within ResendAfter is sent again as it was (JetStream stores it once, by
// its Nats-Msg-Id, and answers every copy): a stream leader that stops
// with a message in hand answers nothing, and waiting AckTimeout for it
// held every new event back for 10 s at each leader change.
type Publisher struct {
	outbox Outbox
	js     jetstream.JetStream
	log    *slog.Logger
	o      PublisherOptions

	healthy       atomic.Bool
	lastPublished atomic.Int64 // unix nanoseconds of the last acknowledged publish
	quarantined   atomic.Int64
	// window is held from a window's read of the outbox until its
	// publishing has ended (AwaitWindow).
	window sync.Mutex
	// Under window: unanswered is the outbox key of the last row sent in
	// a window that ended without JetStream's answer to it (an
	// acknowledgement timed out: the server may still store the message,
	// signed as it was then); answered the key up to which every row sent
	// has had its answer or left the outbox otherwise (quarantined, its
	// tenant purged). progress, when not nil, is closed when answered
	// moves (AwaitSettled).
	unanswered, answered uint64
	progress             chan struct{}

	// Run's goroutine alone uses these. after is the key of the last row
	// JetStream acknowledged: the next window is read from behind it while
	// the rows up to it are kept and deleted. kept are the acknowledged rows
	// not yet deleted, oldest first; deleting is the delete in flight, nil
	// when none is.
	after    uint64
	kept     []keptRows
	deleting *outboxDelete
	// singly is the key up to which rows are published one at a time:
	// a batch JetStream refused for what one of its rows may be (a
	// per-subject limit, a message too large) is refused whole, naming
	// none, and the rows it held go alone, one after another, each once
	// the one before is stored, until the one refused is reached: set
	// aside when it can never be stored (quarantine), tried again after a
	// backoff when it may be.
	singly uint64
	// observed is the key of the last row counted by Observe; sent the
	// key of the last row sent.
	observed, sent uint64
	// maxBatch is the most rows sent in one atomic batch: maxAtomicBatch
	// until the server names a lower limit (sendBatch).
	maxBatch int
	// reconnects is the connection's reconnection count as of the last
	// window: a reconnection may be to a server that crashed and came back
	// without what it had not yet written to disk, the very events kept.
	reconnects uint64
}

// observe counts row once, however often JetStream acknowledges it.
func (p *Publisher) observe(row OutboxRow) {
	if p.o.Observe == nil || row.Key <= p.observed {
		return
	}
	p.observed = row.Key
	p.o.Observe(row.Time)
}

// keptRows are rows JetStream acknowledged at the same time.
type keptRows struct {
	keys  []uint64
	acked time.Time
}

// outboxDelete is a delete of published rows, running.
type outboxDelete struct {
	done chan struct{} // closed when err is set
	err  error
}

// NewPublisher returns a publisher from outbox to JetStream over nc,
// through a JetStream context of its own (see newPublishContext).
func NewPublisher(outbox Outbox, nc *nats.Conn, log *slog.Logger, o PublisherOptions) (*Publisher, error) {
	if o.Window <= 0 {
		// Each window pays a read and an fsync'd delete of the outbox: a
		// member PATCH commits 100 events at once, and with 512 the outbox
		// fell 23,000 events behind in the bench's member phase (2,900 with
		// 2048; docs/decisions.md, Publishing).
		o.Window = 2048
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.ResendAfter <= 0 || o.ResendAfter >= o.AckTimeout {
		o.ResendAfter = min(time.Second, o.AckTimeout/2)
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	js, err := newPublishContext(nc, o)
	if err != nil {
		return nil, err
	}
	p := &Publisher{outbox: outbox, js: js, log: log, o: o, maxBatch: maxAtomicBatch}
	if nc != nil {
		p.reconnects = nc.Stats().Reconnects
	}
	return p, nil
}

// newPublishContext returns the publisher's JetStream context, whose
// pending acknowledgements time out with the window that waits for them.
//
// nats.go holds each async publish until its ack comes, and otherwise
// forever unless told to time it out: a window given up on after
// AckTimeout (a stream without a leader, a subject no stream takes, a
// publish permission refused, the connection up throughout) left its
// entries behind, and once they filled the pending limit every later
// publish failed, "stalled with too many outstanding async published
// messages", after the fault was gone, until a reconnect. Each entry's
// timeout starts when its event is sent and the window's wait when the
// last one was, so by the time the publisher gives up on a window nats.go
// has let go of all of it; the next attempt publishes it again, and
// JetStream drops what it had already stored by its Nats-Msg-Id.
//
// The context is the publisher's own so that the timeout always matches
// AckTimeout, and so that no other async publisher on the connection (the
// sinks' attempt records) takes from its limit. The rows sent alone are
// asynchronous: a window's first, the copies sent again (ResendAfter), and
// in a chain (PublisherOptions.Sole) every row of the window, whose
// answers come at once when the chain breaks (refused by their expected
// sequence): the limit holds the window under way and what is left of the
// one before.
func newPublishContext(nc *nats.Conn, o PublisherOptions) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(o.AckTimeout), jetstream.WithPublishAsyncMaxPending(2*o.Window))
	if err != nil {
		return nil, fmt.Errorf("opening JetStream to publish: %w", err)
	}
	return js, nil
}

// Healthy reports whether the last attempt to publish succeeded.
func (p *Publisher) Healthy() bool { return p.healthy.Load() }

// LastPublished returns when JetStream last acknowledged an event (zero
// before the first).
func (p *Publisher) LastPublished() time.Time {
	if n := p.lastPublished.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

const minBackoff = 100 * time.Millisecond

// Run publishes until ctx ends, and then what the outbox holds, for at
// most AckTimeout (drainOnStop). While NATS is away it retries with capped
// exponential backoff, cut short when the connection comes back, saying so
// in the log once per outage and when it recovers.
func (p *Publisher) Run(ctx context.Context) error {
	p.healthy.Store(true)
	defer p.deleteKept() // a clean stop leaves nothing to publish twice
	defer p.drainOnStop()
	// The wait between attempts ends early when the connection is back:
	// NATS may have been away far longer than the backoff it reached.
	reconnected := make(chan nats.Status, 1)
	if nc := p.js.Conn(); nc != nil {
		reconnected = nc.StatusChanged(nats.CONNECTED)
		defer nc.RemoveStatusListener(reconnected)
	}
	backoff := minBackoff
	failingSince := time.Time{}
	// A periodic wake-up covers a signal lost to a full channel between a
	// drain that found nothing and the next commit.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n, err := p.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			p.healthy.Store(false)
			wait := retryWait(err, backoff)
			if failingSince.IsZero() {
				failingSince = time.Now()
				p.log.Warn("publishing events to NATS failed; SCIM keeps answering and events wait in the outbox", "err", err, "retry_in", wait)
			} else {
				p.log.Debug("publishing events to NATS still failing", "err", err, "retry_in", wait)
			}
			if p.heal(ctx) {
				backoff = minBackoff
				continue
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-reconnected:
				p.log.Info("NATS connection is back; publishing again")
				backoff = minBackoff
			case <-t.C:
				backoff = min(backoff*2, p.o.MaxBackoff)
			}
			t.Stop()
			continue
		}
		if !failingSince.IsZero() {
			p.log.Info("publishing events to NATS again", "outage", time.Since(failingSince).Round(time.Millisecond))
			failingSince = time.Time{}
		}
		p.healthy.Store(true)
		backoff = minBackoff
		if n > 0 {
			continue // more may be waiting
		}
		due := p.keptDue()
		select {
		case <-ctx.Done():
			due.Stop()
			return nil
		case <-p.outbox.OutboxReady():
		case <-tick.C:
		case <-reconnected:
		case <-p.deleteDone(): // drain settles it and starts the next
		case <-due.C: // drain deletes them
		}
		due.Stop()
	}
}

// drainOnStop, once Run's context has ended, publishes what the outbox
// holds, for at most AckTimeout: the relay stops its SCIM listener before
// its publisher, so these are the events of the last requests it
// answered, which would otherwise wait for this front end's next start
// (and for ever, for one that is not started again). Its first failure
// ends it: with NATS away they wait, as they did.
func (p *Publisher) drainOnStop() {
	ctx, cancel := context.WithTimeout(context.Background(), p.o.AckTimeout)
	defer cancel()
	if _, err := p.drain(ctx); err != nil {
		p.log.Warn("stopping with events not yet published to NATS; they stay in the outbox and are published at the next start", "err", err)
	}
}

// leaderlessRetry is the longest wait between attempts while the server
// answers that no stream takes the events (ErrNoStreamResponse).
const leaderlessRetry = time.Second

// retryWait is how long the publisher waits after a failed attempt, its
// backoff being backoff. When the server answered that nothing takes the
// events' subject, NATS is there and the stream has no leader (it is
// electing one, or lacks a quorum until a node is back): an attempt is
// one message, and one a second finds the stream as soon as it is back,
// where the backoff, doubling to MaxBackoff, kept waiting after the
// stream was back (a chaos run's publisher tried again 3.2 s after its
// last failed try, 9.7 s after its first).
func retryWait(err error, backoff time.Duration) time.Duration {
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return min(backoff, leaderlessRetry)
	}
	return backoff
}

// heal asks the healer to repair the NATS store, reporting whether it did.
func (p *Publisher) heal(ctx context.Context) bool {
	if p.o.Healer == nil {
		return false
	}
	healed, err := p.o.Healer.HealStore(ctx)
	if err != nil {
		p.log.Debug("the NATS store cannot be repaired yet", "err", err)
	}
	if healed {
		p.log.Info("restarted the NATS store after a write error; publishing again")
	}
	return healed
}

// drain publishes what the outbox holds, one window at a time, and returns
// how many events it published. Each window is read and sent while the one
// before it is deleted from the outbox: the delete is a commit, which waits
// its turn behind the SCIM requests' (docs/decisions.md, Publishing).
func (p *Publisher) drain(ctx context.Context) (int, error) {
	if err := p.deleteDue(time.Now()); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, more, err := p.nextWindow(ctx)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// againAfterReconnect publishes the kept rows again, from the start of the
// outbox, once the connection has reconnected since the last window: the
// server may have crashed and come back without the events it had
// acknowledged but not yet written to disk, which is what they are kept
// for. JetStream drops the copies it still has by their Nats-Msg-Id (the
// keep is within the duplicate window: scimrelay check), and the rows
// behind them go after them, so that none overtakes a lost one.
func (p *Publisher) againAfterReconnect() error {
	nc := p.js.Conn()
	if nc == nil {
		return nil
	}
	r := nc.Stats().Reconnects
	if r == p.reconnects {
		return nil
	}
	p.reconnects = r
	// The server reached may take larger batches than the one that
	// named a lower limit (its limit raised, as lowerMaxBatch advises, and
	// restarted): it refuses a larger one once, naming its own.
	p.maxBatch = maxAtomicBatch
	if len(p.kept) == 0 && p.deleting == nil {
		return nil
	}
	if err := p.settleDelete(true); err != nil {
		return err // it read the outbox again from its start already
	}
	p.log.Info("NATS reconnected: publishing the kept events again, in case the server lost what it had not yet written to disk", "kept", len(p.kept))
	p.after, p.kept = 0, nil
	return nil
}

// mayHaveLost reports whether the server may have lost what it
// acknowledged and had not yet written to disk: the connection is down, or
// came back since the last window, which has not yet published the kept
// rows again (againAfterReconnect). The kept rows stay meanwhile, however
// long ago they came due: deleted on their timer while a crashed server
// was away, they were lost when it came back without them (a review of
// the reconnection's republishing). A server that died without the
// connection noticing yet (its ping interval) is not seen.
func (p *Publisher) mayHaveLost() bool {
	nc := p.js.Conn()
	return nc != nil && (!nc.IsConnected() || nc.Stats().Reconnects != p.reconnects)
}

// nextWindow reads a window of the outbox and publishes it, holding
// p.window meanwhile; more is false when the outbox had nothing to read.
func (p *Publisher) nextWindow(ctx context.Context) (n int, more bool, err error) {
	p.window.Lock()
	defer p.window.Unlock()
	if err := p.againAfterReconnect(); err != nil {
		return 0, false, err
	}
	rows, err := p.outbox.ReadOutbox(p.after, p.o.Window)
	if err != nil {
		return 0, false, fmt.Errorf("reading the outbox: %w", err)
	}
	// The rows before the first read have left the outbox; with none
	// read, every row sent has.
	if len(rows) == 0 {
		p.answeredTo(p.unanswered)
	} else {
		p.answeredTo(rows[0].Key - 1)
	}
	if len(rows) == 0 {
		return 0, false, nil
	}
	n, err = p.publishWindow(ctx, rows)
	return n, true, err
}

// AwaitSettled returns once every message the publisher sent before the
// call has JetStream's answer: acknowledged, as stored or as a duplicate
// of one stored, or refused. A message whose acknowledgement timed out
// may be stored later (a stream leader changing, a slow disk), and is
// sent again with the rows after it until JetStream answers: the
// rotation of the event-signing key waits for that before it retires the
// old key at the stream's last sequence, so that no event the old key
// signed is stored after the bound. It returns ctx's error when ctx ends
// first (once the window under way has ended, each of its waits for an
// answer within AckTimeout).
func (p *Publisher) AwaitSettled(ctx context.Context) error {
	p.window.Lock() // the window under way, if any, ends first
	// Only the rows sent by now: under a steady load of two front ends,
	// windows cut short keep sending rows without an answer, and a wait
	// for all of them might not end.
	mark := p.unanswered
	for mark > p.answered {
		if p.progress == nil {
			p.progress = make(chan struct{})
		}
		ch := p.progress
		p.window.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("events sent to NATS have had no answer yet: %w", ctx.Err())
		}
		p.window.Lock()
	}
	p.window.Unlock()
	return nil
}

// answeredTo records, under p.window, that every row sent up to key has
// had JetStream's answer or left the outbox.
func (p *Publisher) answeredTo(key uint64) {
	if key <= p.answered {
		return
	}
	p.answered = key
	if p.progress != nil {
		close(p.progress)
		p.progress = nil
	}
}

// AwaitWindow returns once the window being published, if any, has ended:
// every row the publisher read from the outbox before the call has been
// acknowledged by JetStream or given up on (each wait for an answer
// within AckTimeout). A purge
// calls it after deleting a tenant's rows from the outbox, so that no
// event of the tenant reaches the stream after its events are purged
// there.
func (p *Publisher) AwaitWindow() {
	p.window.Lock() // taken once the window under way, if any, lets go
	p.window.Unlock()
}

// publishWindow sends rows and waits for JetStream's answers. Rows are
// deleted only once acknowledged. It stops at the first row that fails,
// nothing after it stored, and the next attempt starts again from it. A
// row that can never become a message, or that JetStream refuses for what
// it is, is quarantined instead, so that it does not hold back the rows
// behind it.
//
// The first row goes alone; the others follow in atomic batches (stored
// all or none, nats-server 2.12 and later), or alone when a few
// (smallTail), each sent once the one before is stored. A batch refused or lost leaves nothing stored behind it, and
// none can be stored late ahead of a row missing: its first row was sent
// once every row before it was stored. Each batch's first message expects
// the stream's last sequence to be the last one stored (the head's, then
// the batch before's), so that another publisher in between (a front end
// of other tenants) ends the window, as the chain before did.
//
// Why not each row expecting the last sequence, counted from the first's,
// pipelined (until 2026-12-04): the expectation is stream-wide, so when
// another publisher stored m messages just before row k, rows k..k+m-1
// were refused and row k+m's expectation held again: it and the rows
// after it were stored ahead of those refused, and the delivery workers
// dropped the overtaken ones as duplicates
// (TestTwoFrontEndsPublishIntoOneStream). A chain by the previous
// event's id (Nats-Expected-Last-Msg-Id) stops a replicated stream
// (nats-server 2.15: its replicas take a wrong one for a write error),
// and per-subject expectations cannot be pipelined on a clustered stream
// (docs/decisions.md, Publishing).
func (p *Publisher) publishWindow(ctx context.Context, rows []OutboxRow) (int, error) {
	w := &pubWindow{p: p, ctx: ctx, rows: rows, sentBefore: p.sent}
	defer w.endSpans()
	err := w.publish()
	if w.sent > 0 {
		p.sent = max(p.sent, rows[w.sent-1].Key)
	}
	if w.sent > len(w.acked) {
		// Conservatively, even those JetStream refused: a copy sent by
		// an earlier window may still be on its way.
		p.unanswered = max(p.unanswered, rows[w.sent-1].Key)
	}
	if len(w.acked) > 0 {
		now := time.Now()
		p.lastPublished.Store(now.UnixNano())
		p.after = w.acked[len(w.acked)-1]
		p.answeredTo(p.after)
		p.kept = append(p.kept, keptRows{keys: w.acked, acked: now})
		if derr := p.deleteDue(now); derr != nil {
			return len(w.acked), errors.Join(derr, err)
		}
	}
	return len(w.acked), err
}

// pubWindow is one window being published: its rows, the futures of
// the rows sent alone (futures[i] is rows[i]'s), the publish spans of the
// rows sent (nil when not traced), how many were sent, and the keys of
// the rows acknowledged, in order.
type pubWindow struct {
	p       *Publisher
	ctx     context.Context
	rows    []OutboxRow
	futures []jetstream.PubAckFuture
	spans   []trace.Span
	sent    int
	acked   []uint64
	// sentBefore is the key of the last row this process sent before the
	// window; resent the rows the window sent again. A duplicate answer to
	// one of either may be to a copy this process stored, and the event
	// is counted as published (once: Publisher.observe); to another row,
	// it is to a copy an earlier process stored (a row kept in the outbox
	// across a restart), which that process counted.
	sentBefore uint64
	resent     map[int]bool
	// base is the row that was stored alone; the rows before it were
	// duplicates, or went alone after a batch refused (Publisher.singly).
	base int
	// head is the stream sequence rows[base] was stored at, once a chain
	// counts from it (PublisherOptions.Sole); 0 otherwise.
	head uint64
}

// maxAtomicBatch is the most rows sent in one atomic batch: nats-server's
// default jetstream.limits.max_batch_size, above which a batch is refused
// whole. A server set lower names its limit as it refuses one, and the
// publisher keeps to that (lowerMaxBatch); one set higher is not asked.
const maxAtomicBatch = 1000

// smallTail is the most rows at the end of a window (after its head, or
// after a batch) sent one at a time, each once the one before is stored,
// rather than in a batch: a batch is
// staged on the server first, in a store of its own (files on disk,
// synced, on a stream of one replica), which at 500 writes a second,
// windows of a few events, raised the p99 from write to stream from
// about 1 ms to 3-12 ms, and on a loaded machine from 4 ms to 40-60 ms
// (BenchmarkAckToStream).
const smallTail = 8

// The headers of an atomic batch (nats-server's JSBatchId, JSBatchSeq,
// JSBatchCommit), which nats.go has no names for.
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// publish sends the window's first row and waits for its acknowledgement,
// then sends the others in atomic batches. A row that JetStream already
// held (a duplicate: a row kept, or sent again after a crash) is refused
// in a batch, with the whole batch, so the rows go one by one while their
// answers are duplicates, and the batches start after the first one
// stored (base). A duplicate used to end the window, each one costing an
// outbox read of a window's rows: 6,000 kept events sent again after a
// restart took a minute before a new one went out.
func (w *pubWindow) publish() error {
	deadline := time.NewTimer(w.p.o.AckTimeout)
	defer deadline.Stop()
	var last uint64 // the stream sequence of the last row stored
	for ; ; w.base++ {
		if w.base == len(w.rows) {
			return nil
		}
		if stop, err := w.send(w.base); stop {
			return err
		}
		deadline.Reset(w.p.o.AckTimeout)
		ack, stop, err := w.await(w.base, deadline)
		if stop {
			return err
		}
		if !ack.Duplicate && w.rows[w.base].Key > w.p.singly {
			last = ack.Sequence
			break
		}
	}
	if w.p.o.Sole {
		return w.chain(last, deadline)
	}
	for start := w.base + 1; start < len(w.rows); {
		size := w.p.maxBatch
		if len(w.rows)-start <= smallTail {
			size = 1
		}
		end := min(start+size, len(w.rows))
		var stop bool
		var err error
		if last, stop, err = w.sendBatch(start, end, last); stop {
			return err
		}
		start = end
	}
	return nil
}

// chain sends the rows after the head at once, each expecting the
// stream's last sequence to be the one before its own, counted from the
// head's, stored at head (PublisherOptions.Sole), then waits for their
// answers in order. The first that fails ends the window: every later one
// was refused by its expectation, and the next window starts from it.
func (w *pubWindow) chain(head uint64, deadline *time.Timer) error {
	w.head = head
	var sendErr error
	for i := w.base + 1; i < len(w.rows); i++ {
		var stop bool
		if stop, sendErr = w.send(i); stop {
			break
		}
	}
	// Each future's own timeout (AckTimeout) started when it was sent;
	// the window's wait starts now, after the last one.
	deadline.Reset(w.p.o.AckTimeout)
	for i := w.base + 1; i < len(w.futures); i++ {
		if _, stop, err := w.await(i, deadline); stop {
			return cmp.Or(err, sendErr)
		}
	}
	return sendErr
}

// message returns rows[i]'s message as it goes out, signed when the
// publisher signs, or why it cannot go out. It goes as it was encoded
// when the change was committed; JetStream's expectations are headers of
// their own.
func (w *pubWindow) message(i int) (*nats.Msg, error) {
	row := w.rows[i]
	if row.Err != nil {
		return nil, row.Err
	}
	if w.p.o.Signer != nil {
		if err := w.p.o.Signer.Sign(row.Msg); err != nil {
			return nil, err
		}
	}
	return row.Msg, nil
}

// send publishes rows[i] alone, with its expectations (publishOpts). It
// reports whether the window stops there, and why when that is a failure;
// a row that cannot be sent is quarantined when it is the window's head
// (the next read starts after it), and left for the next window, whose
// head it is, when rows before it are still on their way.
func (w *pubWindow) send(i int) (stop bool, err error) {
	p, row := w.p, w.rows[i]
	msg, err := w.message(i)
	if err != nil {
		if i > w.base {
			return true, nil
		}
		return true, p.quarantine(row, err)
	}
	f, err := p.js.PublishMsgAsync(msg, w.publishOpts(i)...)
	if err != nil {
		if refusesMessage(err) {
			if i > w.base {
				return true, nil
			}
			return true, p.quarantine(row, err)
		}
		return true, fmt.Errorf("publishing event %s: %w", row.ID, err)
	}
	w.futures = append(w.futures, f)
	w.sent = i + 1
	if p.o.Tracer != nil {
		w.spans = append(w.spans, p.startSpan(w.ctx, row))
	}
	return false, nil
}

// publishOpts are rows[i]'s expectations when sent alone: the stream,
// and in a chain (PublisherOptions.Sole) for every row after the head
// the stream's last sequence, the one before its own.
func (w *pubWindow) publishOpts(i int) []jetstream.PublishOpt {
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(events.StreamName)}
	if w.head != 0 && i > w.base {
		opts = append(opts, jetstream.WithExpectLastSequence(w.head+uint64(i-w.base)-1))
	}
	return opts
}

// errAtomicContainsDuplicate is JetStream's refusal of an atomic batch
// holding a message whose Nats-Msg-Id it has stored
// (JSAtomicPublishContainsDuplicateMessageErr; nats.go names no constant
// for it).
const errAtomicContainsDuplicate jetstream.ErrorCode = 10201

// errAtomicTooLarge is JetStream's refusal of an atomic batch of more
// messages than the server's max_batch_size, which its description names
// (JSAtomicPublishTooLargeBatchErrF: "atomic publish batch is too large:
// 1000").
const errAtomicTooLarge jetstream.ErrorCode = 10199

// lowerMaxBatch keeps the batches to the limit a refusal as too large
// (errAtomicTooLarge) names, or to half the batch refused when it names
// none it can read, and reports whether that is lower than before.
func (p *Publisher) lowerMaxBatch(refused int, e *jetstream.APIError) bool {
	limit := refused / 2
	if _, n, ok := strings.Cut(e.Description, ": "); ok {
		if v, err := strconv.Atoi(strings.TrimSpace(n)); err == nil && v >= 1 {
			limit = v
		}
	}
	if limit < 1 || limit >= p.maxBatch {
		return false
	}
	p.log.Warn("the NATS server refuses atomic batches of more than this many events; publishing in batches of that size (raise jetstream.limits.max_batch_size on the server to publish faster; the publisher tries larger batches again when it reconnects, as after the server's restart)",
		"max_batch", limit, "refused", refused)
	p.maxBatch = limit
	return true
}

// sendBatch publishes rows[start:end] as one atomic batch (one row as a
// plain message: smallTail), the first expecting the stream's last sequence to be after (the last row stored),
// and waits for JetStream's answer to its commit: last is the sequence of
// the batch's last row once stored. stop reports that the window ends
// there, and err why when that is a failure. The batch ends before a row
// that cannot be sent, and the window after it: the next window has that
// row for its head, which sets it aside. The messages before the commit
// go without a reply subject, which JetStream answers nothing on.
//
// A batch refused by its expectation (another publisher stored messages
// since the last row) or because a row of it is stored already ends the
// window, not a failure: the next window starts from its first row,
// alone. Refused otherwise, its rows go one at a time (Publisher.singly);
// that too is not a failure, the row that fails alone is. Each
// ResendAfter without an answer the batch is sent again under a new id
// (an id's batch that a stream's leader stopped with is gone, and a copy
// of its commit alone would be refused as incomplete), and the first
// answer to it or to a copy taken, as await does for a row: a copy of a
// batch stored is refused as holding a duplicate, and the next window
// finds the rows stored; a copy of one being stored is answered that it
// is in process, and the wait goes on.
func (w *pubWindow) sendBatch(start, end int, after uint64) (last uint64, stop bool, err error) {
	p := w.p
	batch := make([]*nats.Msg, 0, end-start)
	for i := start; i < end; i++ {
		msg, err := w.message(i)
		if err != nil {
			stop = true
			break
		}
		h := maps.Clone(msg.Header)
		h.Set(jetstream.ExpectedStreamHeader, events.StreamName)
		if len(batch) == 0 {
			// Only a batch's first message may carry it.
			h.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(after, 10))
		}
		batch = append(batch, &nats.Msg{Subject: msg.Subject, Header: h, Data: msg.Data})
	}
	if len(batch) == 0 {
		return after, true, nil
	}
	end = start + len(batch)
	first, lastID := w.rows[start].ID, w.rows[end-1].ID
	// One row is sent as a plain message (smallTail).
	alone := len(batch) == 1
	resent := false
	nc := p.js.Conn()
	answers := make(chan *nats.Msg, 1+int(p.o.AckTimeout/p.o.ResendAfter))
	// A private reply subject, not nc.NewInbox(): a client allowed
	// _INBOX.> (the delivery workers' user) sees the answers there, and
	// a new inbox's token follows the last one's by a fixed step, so it
	// could answer the next commit first and have the publisher delete
	// events JetStream refused (a review did).
	sub, err := nc.ChanSubscribe(events.PrivateInbox(nc), answers)
	if err != nil {
		return after, true, fmt.Errorf("subscribing to JetStream's answer to events %s to %s: %w", first, lastID, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	commit := batch[len(batch)-1]
	if !alone {
		commit.Header.Set(batchCommitHeader, "1")
	}
	commit.Reply = sub.Subject
	if p.o.Tracer != nil {
		for i := start; i < end; i++ {
			w.spans = append(w.spans, p.startSpan(w.ctx, w.rows[i]))
		}
	}
	settle := func(err error) {
		for i := start; i < end; i++ {
			w.endSpan(i, err)
		}
	}
	goesSingly := func(err error) (uint64, bool, error) {
		p.singly = max(p.singly, w.rows[end-1].Key)
		p.log.Debug("JetStream refused a batch of events; they go one at a time", "first", first, "events", len(batch), "err", err)
		settle(err)
		return after, true, nil
	}
	// send publishes the batch under a new id: nats.go has written each
	// message out by the time PublishMsg returns, so the next id can be
	// set on the same messages.
	var ids []string // the batch ids sent, which JetStream's answer names
	send := func() error {
		id := rand.Text()
		ids = append(ids, id)
		for i, msg := range batch {
			if !alone {
				msg.Header.Set(batchIDHeader, id)
				msg.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
			}
			if err := nc.PublishMsg(msg); err != nil {
				w.sent = max(w.sent, start+i)
				return err
			}
		}
		w.sent = max(w.sent, end)
		return nil
	}
	if err := send(); err != nil {
		if refusesMessage(err) {
			return goesSingly(err)
		}
		return after, true, fmt.Errorf("publishing events %s to %s: %w", first, lastID, err)
	}
	resend := time.NewTicker(p.o.ResendAfter)
	defer resend.Stop()
	deadline := time.NewTimer(p.o.AckTimeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-answers:
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				return after, true, fmt.Errorf("publishing events %s to %s: %w", first, lastID, jetstream.ErrNoStreamResponse)
			}
			var ack struct {
				jetstream.PubAck
				Batch string              `json:"batch"`
				Count int                 `json:"count"`
				Error *jetstream.APIError `json:"error"`
			}
			if err := json.Unmarshal(m.Data, &ack); err != nil {
				return after, true, fmt.Errorf("reading JetStream's answer to events %s to %s: %w", first, lastID, err)
			}
			if ack.Error == nil && (ack.Stream != events.StreamName || !alone && !slices.Contains(ids, ack.Batch)) {
				// Not JetStream's answer to this batch, which names its
				// stream and the id sent (crypto/rand, seen by no one
				// else): taken, it would delete events never stored.
				p.log.Warn("an answer to a batch of events that is not JetStream's was passed over", "first", first, "stream", ack.Stream, "batch", ack.Batch)
				continue
			}
			// A copy of a row sent alone that JetStream stored is
			// answered as a duplicate, naming where it is.
			if ack.Error == nil && (ack.Count == len(batch) || alone) {
				settle(nil)
				for i := start; i < end; i++ {
					w.acked = append(w.acked, w.rows[i].Key)
					if !ack.Duplicate || resent || w.rows[i].Key <= w.sentBefore {
						p.observe(w.rows[i])
					}
				}
				return ack.Sequence, stop, nil
			}
			if ack.Error == nil {
				return after, true, fmt.Errorf("JetStream answered a batch of %d events, %s to %s, with a count of %d", len(batch), first, lastID, ack.Count)
			}
			switch ack.Error.ErrorCode {
			case errDuplicateInProcess:
				continue // a copy: the batch, or an earlier copy, is being stored
			case jetstream.JSErrCodeStreamWrongLastSequence, errAtomicContainsDuplicate:
				settle(ack.Error)
				return after, true, nil
			case errAtomicTooLarge:
				if p.lowerMaxBatch(len(batch), ack.Error) {
					// Nothing of it stored: the next window starts
					// from its first row, in batches the server takes.
					settle(ack.Error)
					return after, true, nil
				}
			}
			return goesSingly(ack.Error)
		case <-resend.C:
			if err := send(); err != nil {
				settle(err)
				return after, true, fmt.Errorf("publishing events %s to %s again: %w", first, lastID, err)
			}
			resent = true
			if p.o.Resent != nil {
				for range batch { // each event sent again counts
					p.o.Resent()
				}
			}
			p.log.Debug("no acknowledgement yet; sent the batch of events again", "first", first, "events", len(batch), "after", p.o.ResendAfter)
		case <-deadline.C:
			return after, true, fmt.Errorf("no acknowledgement from JetStream within %s", p.o.AckTimeout)
		case <-w.ctx.Done():
			return after, true, w.ctx.Err()
		}
	}
}

// await waits for the acknowledgement of rows[i], sent alone, and returns
// it; stop reports that the window ends there, err why when that is a
// failure. Each ResendAfter without an answer it sends the row again, the
// same message, and takes the first answer to the row or to its latest
// copy: a copy of a row JetStream stored is answered as a duplicate
// naming where it is; a copy of a row a replicated stream is still
// storing is answered that it is in process, and the wait goes on for the
// row's own answer.
func (w *pubWindow) await(i int, deadline *time.Timer) (ack *jetstream.PubAck, stop bool, err error) {
	p, row := w.p, w.rows[i]
	resend := time.NewTicker(p.o.ResendAfter)
	defer resend.Stop()
	acked, failed := w.futures[i].Ok(), w.futures[i].Err()
	var copyAcked <-chan *jetstream.PubAck
	var copyFailed <-chan error
	for {
		select {
		case ack := <-acked:
			return w.answered(i, ack, nil)
		case ack := <-copyAcked:
			return w.answered(i, ack, nil)
		case err := <-failed:
			return w.answered(i, nil, err)
		case err := <-copyFailed:
			if inProcess(err) {
				// The row, or an earlier copy, is being stored: its
				// answer is the one to wait for.
				copyAcked, copyFailed = nil, nil
				continue
			}
			return w.answered(i, nil, err)
		case <-resend.C:
			// A copy with headers of its own: nats.go may still read the
			// message it was given (it publishes it again itself when no
			// server answers for the stream), and a publish writes its
			// expectations into the headers.
			again := &nats.Msg{Subject: row.Msg.Subject, Header: maps.Clone(row.Msg.Header), Data: row.Msg.Data}
			f, err := p.js.PublishMsgAsync(again, w.publishOpts(i)...)
			if err != nil {
				w.endSpan(i, err)
				return nil, true, fmt.Errorf("publishing event %s again: %w", row.ID, err)
			}
			copyAcked, copyFailed = f.Ok(), f.Err()
			if w.resent == nil {
				w.resent = map[int]bool{}
			}
			w.resent[i] = true
			if p.o.Resent != nil {
				p.o.Resent()
			}
			p.log.Debug("no acknowledgement yet; sent the event again", "event", row.ID, "after", p.o.ResendAfter)
		case <-deadline.C:
			return nil, true, fmt.Errorf("no acknowledgement from JetStream within %s", p.o.AckTimeout)
		case <-w.ctx.Done():
			return nil, true, w.ctx.Err()
		}
	}
}

// errDuplicateInProcess is JetStream's answer to a message whose
// Nats-Msg-Id a replicated stream's leader is storing already (409,
// JSStreamDuplicateMessageConflict; nats.go names no constant for it).
const errDuplicateInProcess jetstream.ErrorCode = 10158

// inProcess reports whether err says that a message of the same id is
// being stored: a copy sent again while the row was on its way.
func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errDuplicateInProcess
}

// answered settles rows[i] with JetStream's answer to it or to a copy: an
// ack, or err.
func (w *pubWindow) answered(i int, ack *jetstream.PubAck, err error) (*jetstream.PubAck, bool, error) {
	p, row := w.p, w.rows[i]
	w.endSpan(i, err)
	if err == nil {
		w.acked = append(w.acked, row.Key)
		if !ack.Duplicate || w.resent[i] || row.Key <= w.sentBefore {
			p.observe(row)
		}
		return ack, false, nil
	}
	if refusesMessage(err) {
		return nil, true, p.quarantine(row, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		// In a chain: a row before it failed, or this is a copy of a
		// row stored since. Not a failure; the next window starts from
		// it.
		return nil, true, nil
	}
	return nil, true, fmt.Errorf("publishing event %s: %w", row.ID, err)
}

// endSpan ends rows[i]'s publish span, if traced, as failed when err is set.
func (w *pubWindow) endSpan(i int, err error) {
	if i >= len(w.spans) || w.spans[i] == nil {
		return
	}
	if err != nil {
		w.spans[i].SetStatus(codes.Error, err.Error())
	}
	w.spans[i].End()
	w.spans[i] = nil
}

// endSpans ends the spans of rows that were not acknowledged: the window
// stopped before them.
func (w *pubWindow) endSpans() {
	for _, s := range w.spans {
		if s != nil {
			s.End()
		}
	}
}

// deleteDue starts the delete of the kept rows whose time is up, unless
// a delete is in flight: a delete is a commit, which waits its turn behind
// the SCIM requests', and the rows that come due meanwhile go in the next.
func (p *Publisher) deleteDue(now time.Time) error {
	if err := p.settleDelete(false); err != nil {
		return err
	}
	if p.deleting != nil || p.mayHaveLost() {
		return nil
	}
	n := 0
	for n < len(p.kept) && !p.kept[n].acked.Add(p.o.KeepFor).After(now) {
		n++
	}
	if n == 0 {
		return nil
	}
	var keys []uint64
	for _, k := range p.kept[:n] {
		keys = append(keys, k.keys...)
	}
	rest := copy(p.kept, p.kept[n:])
	clear(p.kept[rest:]) // let go of the deleted keys
	p.kept = p.kept[:rest]
	d := &outboxDelete{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		d.err = p.outbox.DeleteOutbox(keys)
	}()
	p.deleting = d
	return nil
}

// settleDelete ends the delete in flight, if any: it waits for it when
// wait is set, and otherwise only settles one that has ended. When the
// delete failed, the rows it left, and the kept ones, are read again from
// the start of the outbox and published again, as after a crash: JetStream
// drops the copies by their Nats-Msg-Id.
func (p *Publisher) settleDelete(wait bool) error {
	d := p.deleting
	if d == nil {
		return nil
	}
	if !wait {
		select {
		case <-d.done:
		default:
			return nil
		}
	}
	<-d.done
	p.deleting = nil
	if d.err != nil {
		p.after, p.kept = 0, nil
	}
	return d.err
}

// maxStopWait bounds how long a clean stop waits for kept rows to come
// due: within a stop's grace period (60 s in the shipped deployments)
// whatever nats.sync_interval says.
const maxStopWait = 5 * time.Second

// deleteKept, on a clean stop, waits until the kept rows are due, at most
// maxStopWait, and deletes those that are, so that the next start
// publishes none of them again. NATS keeps running until the publisher
// has stopped.
func (p *Publisher) deleteKept() {
	const left = "the published events kept in the outbox are published again at the next start, and JetStream drops the copies it still remembers"
	if err := p.settleDelete(true); err != nil {
		p.log.Warn("deleting published events from the outbox failed; "+left, "err", err)
		return
	}
	if len(p.kept) == 0 {
		return
	}
	last := p.kept[len(p.kept)-1].acked.Add(p.o.KeepFor)
	time.Sleep(min(time.Until(last), maxStopWait))
	err := p.deleteDue(time.Now())
	if err == nil {
		err = p.settleDelete(true)
	}
	switch {
	case err != nil:
		p.log.Warn("deleting published events from the outbox failed; "+left, "err", err)
	case len(p.kept) > 0:
		p.log.Warn("stopping with published events kept in the outbox, not yet due; "+left, "kept", len(p.kept))
	}
}

// deleteDone is closed when the delete in flight ends; nil, which is never
// ready, when none is in flight.
func (p *Publisher) deleteDone() <-chan struct{} {
	if p.deleting == nil {
		return nil
	}
	return p.deleting.done
}

// keptDue is a timer that fires when the oldest kept rows come due; one
// that never fires when none are kept or a delete is in flight (its end
// wakes the publisher instead).
func (p *Publisher) keptDue() *time.Timer {
	if len(p.kept) == 0 || p.deleting != nil || p.mayHaveLost() {
		t := time.NewTimer(time.Hour)
		t.Stop()
		return t
	}
	return time.NewTimer(time.Until(p.kept[0].acked.Add(p.o.KeepFor)))
}

// startSpan starts the publish span of an event that carries a trace
// context; nil for one that does not (committed while not tracing).
func (p *Publisher) startSpan(ctx context.Context, row OutboxRow) trace.Span {
	h := row.Msg.Header
	parent := events.MessageTraceContext(ctx, h)
	if !trace.SpanContextFromContext(parent).IsValid() {
		return nil
	}
	_, span := p.o.Tracer.Start(parent, "publish "+events.StreamName, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", row.Msg.Subject),
			attribute.String("messaging.message.id", row.ID),
			attribute.String("scimrelay.tenant", events.MessageAttribute(h, events.ExtTenant)),
			attribute.String("cloudevents.event_type", events.MessageAttribute(h, "type")),
		))
	return span
}

// jsErrCodeHeaderExceedsMaximum is JetStream's "header size exceeds
// maximum allowed", which nats.go has no name for.
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// refusesMessage reports whether JetStream or the client refused a message
// for what it is, so that publishing it again can never succeed.
func refusesMessage(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return true
		}
	}
	return false
}

// quarantine sets a row aside, says so once, and counts it. When the row
// cannot be set aside it returns why, so that the publisher tries again
// after its backoff instead of at once, over and over.
func (p *Publisher) quarantine(row OutboxRow, cause error) error {
	if err := p.outbox.QuarantineOutbox(row.Key, cause.Error()); err != nil {
		return err
	}
	p.quarantined.Add(1)
	if p.o.Quarantined != nil {
		p.o.Quarantined()
	}
	p.log.Error("an outbox row cannot be published; it is kept in quarantine and the rows behind it go on",
		"key", row.Key, "event_id", row.ID, "err", cause)
	return nil
}
