// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ordering per resource rests on the events' subjectseq extension: each
// resource's events are numbered 1, 2, 3 … without gaps. For every resource a
// sink has seen, a cursor in a JetStream key-value bucket (one bucket per
// sink, shared by every worker of the sink, surviving restarts) records the
// highest number completed: delivered, dead-lettered, or skipped because the
// sink does not want that type. An event may go out only when it is the next
// number; a later one waits until its predecessor completes. A failing event
// therefore holds back the later events of its own resource and nothing else.
//
// Event-type filters are applied here, not by the consumer, because a
// filtered-out event must still advance its resource's cursor.

// cursorState is what the bucket stores for one resource.
type cursorState struct {
	// Last is the highest subjectseq completed.
	Last uint64 `json:"last"`
	// Base is the first subjectseq this sink saw for the resource: a sink
	// added later starts in the middle of a resource's history.
	Base uint64 `json:"base"`
	// Head is an event that failed and waits for its retry, Attempts its
	// failed tries so far, Until when it is due again.
	Head     uint64    `json:"head,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Until    time.Time `json:"until,omitzero"`
}

// cursor is a cursor with the revision it was read at.
type cursor struct {
	state  cursorState
	rev    uint64
	exists bool
}

type verdict int

const (
	deliverNext verdict = iota // the next event of its resource: deliver it
	deliverLate                // older than anything this sink saw: deliver it, the cursor stays
	duplicate                  // already completed: acknowledge, do not deliver again
	waitTurn                   // a predecessor has not completed yet
)

// decide says what to do with the event numbered seq given its cursor.
func decide(c cursor, seq uint64) verdict {
	switch {
	case !c.exists:
		return deliverNext
	case seq < c.state.Base:
		return deliverLate
	case seq <= c.state.Last:
		return duplicate
	case seq == c.state.Last+1:
		return deliverNext
	}
	return waitTurn
}

// completed returns the cursor state after the events numbered first to
// last completed.
func (c cursor) completed(first, last uint64) cursorState {
	if !c.exists {
		return cursorState{Last: last, Base: first}
	}
	s := c.state
	s.Last = max(s.Last, last)
	if s.Head <= s.Last {
		s.Head, s.Attempts, s.Until = 0, 0, time.Time{}
	}
	return s
}

// failed returns the cursor state after a try of the event numbered seq
// failed, due again at until, and its number of failed tries.
func (c cursor) failed(seq uint64, until time.Time) (cursorState, int) {
	s := c.state
	if !c.exists {
		s = cursorState{Last: seq - 1, Base: seq}
	}
	if s.Head != seq {
		s.Head, s.Attempts = seq, 0
	}
	s.Attempts++
	s.Until = until
	return s, s.Attempts
}

// cursors reads and writes the cursors of one sink, caching what this
// worker wrote; a write that loses a race with another worker refreshes.
type cursors struct {
	kv    jetstream.KeyValue
	mu    sync.Mutex
	cache map[string]cursor
}

var errConflict = errors.New("cursor changed concurrently")

// cursorBucket creates or opens a sink's cursor bucket. Entries live 30 days:
// longer than the stream keeps events plus the retry horizon, so a cursor
// that is gone belongs to a resource whose earlier events are gone too.
func cursorBucket(ctx context.Context, js jetstream.JetStream, sink string, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      "scimrelay-sink-" + sink,
		Description: "delivery order of sink " + sink + ": the last event completed per resource",
		History:     1,
		TTL:         30 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the ordering bucket of sink %s: %w", sink, err)
	}
	return kv, nil
}

func newCursors(kv jetstream.KeyValue) *cursors {
	return &cursors{kv: kv, cache: map[string]cursor{}}
}

// get returns a resource's cursor, from this worker's cache when it has
// it. assumeNew skips the bucket on a cache miss: the caller knows the
// cursor is almost surely absent, and put's Create settles it if not.
func (c *cursors) get(ctx context.Context, key string, assumeNew bool) (cursor, error) {
	c.mu.Lock()
	cur, ok := c.cache[key]
	c.mu.Unlock()
	if ok || assumeNew {
		return cur, nil
	}
	return c.load(ctx, key)
}

func (c *cursors) load(ctx context.Context, key string) (cursor, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return cursor{}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("reading cursor %s: %w", key, err)
	}
	var s cursorState
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return cursor{}, fmt.Errorf("decoding cursor %s: %w", key, err)
	}
	cur := cursor{state: s, rev: e.Revision(), exists: true}
	c.remember(key, cur)
	return cur, nil
}

func (c *cursors) remember(key string, cur cursor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cache) > 100_000 {
		clear(c.cache) // a bound on memory; cursors reload on demand
	}
	c.cache[key] = cur
}

func (c *cursors) forget(key string) {
	c.mu.Lock()
	delete(c.cache, key)
	c.mu.Unlock()
}

// put writes s over the cursor cur was read as; errConflict when another
// worker wrote it in between.
func (c *cursors) put(ctx context.Context, key string, cur cursor, s cursorState) error {
	v, err := json.Marshal(s)
	if err != nil {
		return err
	}
	var rev uint64
	if cur.exists {
		rev, err = c.kv.Update(ctx, key, v, cur.rev)
	} else {
		rev, err = c.kv.Create(ctx, key, v)
	}
	if err != nil {
		c.forget(key)
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return errConflict
		}
		return fmt.Errorf("writing cursor %s: %w", key, err)
	}
	c.remember(key, cursor{state: s, rev: rev, exists: true})
	return nil
}

// update reads a cursor, applies f and writes the result, retrying when
// another worker wrote the cursor meanwhile.
func (c *cursors) update(ctx context.Context, key string, f func(cursor) cursorState) error {
	for i := 0; ; i++ {
		cur, err := c.get(ctx, key, false)
		if err != nil {
			return err
		}
		err = c.put(ctx, key, cur, f(cur))
		if !errors.Is(err, errConflict) || i == 5 {
			return err
		}
	}
}
