// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Batched delivery (CloudEvents' batched content mode). A sink with a
// batch setting sends application/cloudevents-batch+json arrays. Order is
// still the lanes' business: a resource's lane hands the batcher a slice
// of its waiting events, in order, and waits for the outcome before it
// hands over the next, so that no event of a resource is sent before the
// batch holding its predecessors was accepted. The batcher puts the slices
// of many lanes, of every partition the worker owns, into one request:
// when the batch holds max_events, or max_wait after its first slice (and
// later while every request slot is taken, gathering meanwhile). The
// sink's concurrency bounds the batches in flight. The outcome of a batch
// is each of its slices' outcome: a lane whose batch failed parks its
// resource from the first event of its slice, and other resources, in the
// same batch or not, are not held back by it beyond that one request.

// Batch is a sink's batch setting.
type Batch struct {
	// MaxEvents is the most events in one request (1 to 1,000; 0 is 100).
	MaxEvents int
	// MaxWait is how long the first event of a batch waits for others
	// (at most 10 s; 0 is 50 ms).
	MaxWait time.Duration
	// MaxBytes bounds one request's body, the events and the JSON array's
	// brackets and commas (64 KiB to 64 MiB;
	// 0 is 1 MiB, what many receivers' proxies take by default): a batch
	// closes before a slice that would take it past them. A slice larger
	// alone (one resource's events) goes in a request of its own.
	MaxBytes int64
}

// Bounds and defaults of a Batch.
const (
	defaultBatchEvents = 100
	maxBatchEvents     = 1000
	defaultBatchWait   = 50 * time.Millisecond
	maxBatchWait       = 10 * time.Second
	defaultBatchBytes  = 1 << 20
	minBatchBytes      = 64 << 10
	maxBatchBytes      = 64 << 20
)

// batchSender is a sink that takes several events in one request.
type batchSender interface {
	// part encodes one event as a batch carries it.
	part(e *event.Event) ([]byte, error)
	// sendBatch delivers encoded events in one request, in the order given.
	sendBatch(ctx context.Context, ids []string, parts [][]byte) Result
}

// batcher gathers the slices of a worker's lanes into batches.
type batcher struct {
	sender    batchSender
	maxEvents int
	maxBytes  int64
	maxWait   time.Duration
	slots     chan struct{} // batches in flight

	mu   sync.Mutex
	open *pendingBatch // gathering; nil when none is
}

// pendingBatch is a batch being gathered, then sent.
type pendingBatch struct {
	ids   []string
	parts [][]byte
	bytes int64         // of the request body: parts, and the array's brackets and commas
	full  chan struct{} // closed when it cannot take more
	done  chan struct{} // closed when res is set
	res   Result
	// ctx ends when a lane that put events in it stops hard (its worker
	// lost the lane's partition, or gave it up too slowly): the request is
	// cancelled, so that no event goes out from a worker that no longer
	// owns it, and the batch is abandoned.
	ctx       context.Context
	cancel    context.CancelFunc
	abandoned atomic.Bool
	stops     []func() bool
}

func newBatcher(sender batchSender, b Batch, slots chan struct{}) *batcher {
	return &batcher{sender: sender, maxEvents: b.MaxEvents, maxBytes: b.MaxBytes, maxWait: b.MaxWait, slots: slots}
}

// submit puts one lane's events, in order, into a batch and returns the
// batch's outcome. An event that cannot be encoded fails the slice at
// once, as a permanent failure. A slice whose batch another lane abandoned
// goes into the next batch at once: that failure was not the receiver's.
// When stopping closes (the lane's partition hands over gracefully: a
// reload of the sink, a worker joining or leaving) the batch is sent at
// once rather than after maxWait, which may outlast the hand-over: the
// hand-over then became a hard stop, and the next owner sent again every
// event after this one's, delivered already. nil: never.
func (b *batcher) submit(ctx context.Context, stopping <-chan struct{}, es []*event.Event) Result {
	parts := make([][]byte, len(es))
	ids := make([]string, len(es))
	for i, e := range es {
		part, err := b.sender.part(e)
		if err != nil {
			return Result{Err: err, Permanent: true, Events: len(es)}
		}
		parts[i], ids[i] = part, e.ID()
	}
	for {
		pb := b.add(ctx, ids, parts)
		res, again := b.await(ctx, stopping, pb)
		if !again {
			return res
		}
	}
}

// await waits for pb's outcome (again: the slice goes into the next
// batch), sending pb at once if stopping closes meanwhile.
func (b *batcher) await(ctx context.Context, stopping <-chan struct{}, pb *pendingBatch) (res Result, again bool) {
	for {
		select {
		case <-stopping:
			b.mu.Lock()
			b.closeLocked(pb) // a no-op once it is closed
			b.mu.Unlock()
			stopping = nil
		case <-pb.done:
			if pb.res.Err != nil && pb.abandoned.Load() && ctx.Err() == nil {
				return Result{}, true
			}
			return pb.res, false
		case <-ctx.Done():
			return Result{Err: ctx.Err()}, false
		}
	}
}

// add puts a slice's encoded events into the open batch, opening one (and
// its sender) when none is open or the slice would overfill it, in events
// or in bytes (maxBytes 0: no bound). The bytes are the request body's,
// the JSON array's brackets and commas with the events.
func (b *batcher) add(ctx context.Context, ids []string, parts [][]byte) *pendingBatch {
	var size int64
	for _, p := range parts {
		size += int64(len(p)) + 1 // and its ',' or the closing ']'
	}
	over := func(n int, bytes int64) bool {
		return n > b.maxEvents || (b.maxBytes > 0 && bytes > b.maxBytes)
	}
	b.mu.Lock()
	if pb := b.open; pb != nil && over(len(pb.ids)+len(ids), pb.bytes+size) {
		b.closeLocked(pb) // this slice starts the next one
	}
	pb := b.open
	if pb == nil {
		pb = &pendingBatch{full: make(chan struct{}), done: make(chan struct{}), bytes: 1} // the '['
		pb.ctx, pb.cancel = context.WithCancel(context.Background())
		b.open = pb
		go b.send(pb)
	}
	pb.ids = append(pb.ids, ids...)
	pb.parts = append(pb.parts, parts...)
	pb.bytes += size
	pb.stops = append(pb.stops, context.AfterFunc(ctx, func() {
		pb.abandoned.Store(true)
		pb.cancel()
	}))
	if len(pb.ids) >= b.maxEvents || (b.maxBytes > 0 && pb.bytes >= b.maxBytes) {
		b.closeLocked(pb)
	}
	b.mu.Unlock()
	return pb
}

func (b *batcher) closeLocked(pb *pendingBatch) {
	if b.open == pb {
		b.open = nil
		close(pb.full)
	}
}

// send waits until the batch is full or its first event has waited
// maxWait, then for a request slot (the batch keeps gathering
// meanwhile), and sends it.
func (b *batcher) send(pb *pendingBatch) {
	t := time.NewTimer(b.maxWait)
	select {
	case <-pb.full:
	case <-t.C:
	}
	t.Stop()
	slot := false
	select {
	case b.slots <- struct{}{}:
		slot = true
	case <-pb.ctx.Done():
	}
	b.mu.Lock()
	b.closeLocked(pb)
	b.mu.Unlock()
	switch {
	case !slot:
		pb.res = Result{Err: pb.ctx.Err()}
	default:
		pb.res = b.sender.sendBatch(pb.ctx, pb.ids, pb.parts)
		<-b.slots
	}
	for _, stop := range pb.stops {
		stop()
	}
	pb.cancel()
	close(pb.done)
}
