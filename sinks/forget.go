// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A sink removed from relay.yaml keeps what it has in NATS, so that adding
// it back resumes where it stopped: its partition consumers on the stream
// (with the events they hold for it), its parking bucket (records and
// claims), its dead letters and its delivery attempts. Forget deletes
// them, for a sink that is gone for good: otherwise a sink given the name
// later (another receiver, maybe another customer's) would be sent the
// earlier one's events by the consumers it finds. Once forgotten, a sink
// added under the name starts afresh, as any sink added does.

// Forgotten says what Forget deleted of a sink.
type Forgotten struct {
	Sink string `json:"sink"`
	// Consumers counts its partition consumers (and a consumer of the
	// layout before partitions), Undelivered the events they still held
	// for it: stored and not yet delivered, or out and not acknowledged.
	Consumers   int    `json:"consumers"`
	Undelivered uint64 `json:"undelivered"`
	// Buckets counts its parking bucket (and the ordering bucket of the
	// layout before partitions), Parked the resources whose events waited
	// in it.
	Buckets     int    `json:"buckets"`
	Parked      int    `json:"parked"`
	DeadLetters uint64 `json:"dead_letters"`
	Attempts    uint64 `json:"attempts"` // delivery attempt records
}

var (
	// ErrSinkConfigured refuses to forget a sink the relay delivers to.
	ErrSinkConfigured = errors.New("the sink is configured")
	// ErrSinkRunning refuses to forget a sink whose workers still run
	// somewhere: a process not yet reloaded without it.
	ErrSinkRunning = errors.New("workers still deliver the sink")
)

// Forget deletes what sink name, no longer configured, left in NATS, and
// this process's note of when a reload added it (Options.AddedFile). It
// refuses a sink this manager runs (ErrSinkConfigured), one that a worker
// of any process still announces itself for (ErrSinkRunning: that process
// has not been reloaded without it, and would make its consumers again),
// and a name under which nothing is stored (ErrUnknownSink).
func (m *Manager) Forget(ctx context.Context, name string) (Forgotten, error) {
	m.applyMu.Lock() // no reload adds the name meanwhile
	defer m.applyMu.Unlock()
	if slices.Contains(m.Names(), name) {
		return Forgotten{}, fmt.Errorf("forgetting sink %s: %w: remove it from relay.yaml and reload every process first", name, ErrSinkConfigured)
	}
	if !events.ValidName(name) {
		return Forgotten{}, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	sh := m.shared
	if sh == nil || m.dlq == nil {
		return Forgotten{}, errors.New("sinks are not set up yet")
	}
	_, present, _, err := (&membership{stream: sh.workers, sink: name}).list(ctx)
	if err != nil {
		return Forgotten{}, err
	}
	if len(present) > 0 {
		return Forgotten{}, fmt.Errorf("forgetting sink %s: %w (%s): reload the processes that run it, and try again once they have stopped it", name, ErrSinkRunning, strings.Join(present, ", "))
	}
	f, stored, err := m.stored(ctx, name)
	if err != nil {
		return Forgotten{}, err
	}
	if len(stored.consumers) == 0 && len(stored.buckets) == 0 && f.DeadLetters == 0 && f.Attempts == 0 {
		return Forgotten{}, fmt.Errorf("%w %q, nor anything stored under that name", ErrUnknownSink, name)
	}
	// The consumers first: once they are gone, nothing can deliver under
	// the name, and a sink added under it starts afresh.
	for _, c := range stored.consumers {
		if err := sh.stream.DeleteConsumer(ctx, c); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return Forgotten{}, fmt.Errorf("deleting consumer %s: %w", c, err)
		}
	}
	for _, b := range stored.buckets {
		if err := m.o.JS.DeleteKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return Forgotten{}, fmt.Errorf("deleting bucket %s: %w", b, err)
		}
	}
	if err := m.dlq.stream.Purge(ctx, jetstream.WithPurgeSubject(dlqSubjectRoot+name)); err != nil {
		return Forgotten{}, fmt.Errorf("deleting the dead letters of sink %s: %w", name, err)
	}
	attempts, err := m.o.JS.Stream(ctx, deliveriesStream)
	if err != nil {
		return Forgotten{}, fmt.Errorf("opening stream %s: %w", deliveriesStream, err)
	}
	for _, subject := range sinkAttemptSubjects(name) {
		if err := attempts.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
			return Forgotten{}, fmt.Errorf("deleting the delivery attempts of sink %s: %w", name, err)
		}
	}
	m.added.note(time.Time{}, nil, []string{name})
	return f, nil
}

// storedState names what a sink has in NATS.
type storedState struct {
	consumers, buckets []string
}

// stored reads what sink name has in NATS, and counts it.
func (m *Manager) stored(ctx context.Context, name string) (Forgotten, storedState, error) {
	f := Forgotten{Sink: name}
	var st storedState
	stream := m.shared.stream
	names := stream.ConsumerNames(ctx)
	for c := range names.Name() {
		if _, ok := consumerOf(name, c); ok {
			st.consumers = append(st.consumers, c)
		}
	}
	if err := names.Err(); err != nil {
		return f, st, fmt.Errorf("listing the consumers of sink %s: %w", name, err)
	}
	for _, c := range st.consumers {
		cons, err := stream.Consumer(ctx, c)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return f, st, fmt.Errorf("reading consumer %s: %w", c, err)
		}
		info := cons.CachedInfo()
		f.Consumers++
		f.Undelivered += info.NumPending + uint64(info.NumAckPending)
	}
	for _, b := range []string{parkingBucketName(name), oldCursorBucket(name)} {
		kv, err := m.o.JS.KeyValue(ctx, b)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return f, st, fmt.Errorf("opening bucket %s: %w", b, err)
		}
		st.buckets = append(st.buckets, b)
		f.Buckets++
		if b != parkingBucketName(name) {
			continue
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return f, st, fmt.Errorf("listing bucket %s: %w", b, err)
		}
		for k := range keys.Keys() {
			if !bookkeepingKey(k) {
				f.Parked++
			}
		}
		_ = keys.Stop()
	}
	var err error
	if f.DeadLetters, err = m.dlq.count(ctx, name); err != nil {
		return f, st, fmt.Errorf("counting the dead letters of sink %s: %w", name, err)
	}
	if f.Attempts, err = countAttempts(ctx, m.o.JS, name, time.Unix(0, 0)); err != nil {
		return f, st, fmt.Errorf("counting the delivery attempts of sink %s: %w", name, err)
	}
	return f, st, nil
}

// consumerOf reports whether consumer c is one of sink's: a partition
// consumer (its partition), or the single consumer of the layout before
// partitions (-1).
func consumerOf(sink, c string) (partition int, ok bool) {
	old := oldCursorBucket(sink)
	if c == old {
		return -1, true
	}
	rest, found := strings.CutPrefix(c, old+"-P")
	n, err := strconv.Atoi(rest)
	return n, found && err == nil && n >= 0
}

// oldCursorBucket names the single consumer, and its cursor bucket, that
// a sink had in the layout before partitions.
func oldCursorBucket(sink string) string { return "scimrelay-sink-" + sink }
