// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A resource whose head event failed, or whose waiting events outgrow its
// share of the consumer's pending window, is parked: its consumer messages
// are acknowledged as they arrive (so they never hold the window, however
// many there are), and a record in the sink's key-value bucket says where
// its delivery stands: the stream sequence of its first undelivered event,
// the failed tries of that event and when it is due again. When it is due,
// the partition's owner reads the resource's events back from the stream by
// subject (direct get, next by subject) and delivers them in order until
// it catches up, then takes the resource's events from the consumer again.
// The records are keyed by partition, so that a worker taking a partition
// over finds its parked resources with one listing.

// parkRecord is the stored state of a parked resource.
type parkRecord struct {
	// From is the stream sequence to read the resource from: its first
	// event not yet delivered (or dead-lettered, or filtered out).
	From uint64 `json:"from"`
	// Attempts counts the failed tries of the event at From.
	Attempts int `json:"attempts,omitempty"`
	// Due is when From is tried (again).
	Due time.Time `json:"due"`
	// Stored is when the stream stored the event at From (zero: not known,
	// or written by an earlier release): a worker that loads the record
	// brings Due back to the time the stream may drop the event by the
	// max_age it read, which a restart may have lowered since.
	Stored time.Time `json:"stored,omitzero"`
	// Status and Error are the last failure's, for people reading the bucket
	// (a try before its time, wake.go, leaves the stored record as it was).
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Down says the last failure was the receiver being down (no answer,
	// or a 5xx without Retry-After): the resource is tried before Due
	// once the receiver answers again (wake.go).
	Down bool `json:"down,omitempty"`
	// failed is when this worker's try that wrote the record failed (zero:
	// not known here, as for a record read from the bucket): a recovery
	// wakes the resources that failed before it, and a probe only those
	// no success has answered since.
	failed time.Time
}

// parking reads and writes one sink's park records.
type parking struct {
	kv jetstream.KeyValue
}

// parkingBucket creates or opens a sink's bucket, whose records live
// parkingTTL(keepFor): keepFor is how long the stream keeps events (its
// max_age, as the worker read it; 0: for ever).
func parkingBucket(ctx context.Context, js jetstream.JetStream, sink string, replicas int, keepFor time.Duration) (*parking, error) {
	ttl := parkingTTL(keepFor)
	// A worker that read the stream before its max_age was raised must not
	// cut short the records of one that read it after.
	st, err := js.Stream(ctx, "KV_"+parkingBucketName(sink))
	switch {
	case err == nil:
		if had := st.CachedInfo().Config.MaxAge; had == 0 || (ttl != 0 && had > ttl) {
			ttl = had
		}
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("reading the parking bucket of sink %s: %w", sink, err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      parkingBucketName(sink),
		Description: "resources of sink " + sink + " whose events are read back from the stream: where each stands",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the parking bucket of sink %s: %w", sink, err)
	}
	return &parking{kv: kv}, nil
}

// minParkingTTL is the shortest time the parking bucket keeps a key: a
// partition's claim, in the same bucket, is written again once a day.
const minParkingTTL = 30 * 24 * time.Hour

// parkingTTL is how long the parking bucket keeps a record: as long as the
// stream keeps the events it points at (keepFor; 0: for ever, and so the
// records), and a day more. Their events were acknowledged when the
// resource was parked, so a record gone before its retry loses them
// without a dead letter; and no retry is put off past keepFor
// (worker.dropsBefore), so a record written when its event was stored, or
// later, outlives its retry.
func parkingTTL(keepFor time.Duration) time.Duration {
	if keepFor <= 0 {
		return 0
	}
	return max(minParkingTTL, keepFor+24*time.Hour)
}

func parkingBucketName(sink string) string { return "scimrelay-parked-" + sink }

// parkKey is the record's key: partition, tenant, kind, resource id.
func parkKey(partition int, s events.StoredSubject) string {
	return strconv.Itoa(partition) + "." + s.Key()
}

func (pk *parking) put(ctx context.Context, partition int, s events.StoredSubject, r parkRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := pk.kv.Put(ctx, parkKey(partition, s), b); err != nil {
		return fmt.Errorf("parking %s: %w", s.Key(), err)
	}
	return nil
}

func (pk *parking) remove(ctx context.Context, partition int, s events.StoredSubject) error {
	if err := pk.kv.Purge(ctx, parkKey(partition, s)); err != nil {
		return fmt.Errorf("unparking %s: %w", s.Key(), err)
	}
	return nil
}

// parked is a resource's record as loaded.
type parked struct {
	subject events.StoredSubject
	record  parkRecord
}

// load returns the parked resources of a partition.
func (pk *parking) load(ctx context.Context, partition int) ([]parked, error) {
	prefix := strconv.Itoa(partition) + "."
	lister, err := pk.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return nil, fmt.Errorf("listing parked resources of partition %d: %w", partition, err)
	}
	defer func() { _ = lister.Stop() }()
	var out []parked
	for key := range lister.Keys() {
		s, ok := parseParkKey(partition, strings.TrimPrefix(key, prefix))
		if !ok {
			continue // not ours to read; left as it is
		}
		e, err := pk.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading parked resource %s: %w", key, err)
		}
		var r parkRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.From == 0 {
			continue
		}
		out = append(out, parked{subject: s, record: r})
	}
	return out, nil
}

func parseParkKey(partition int, rest string) (events.StoredSubject, bool) {
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || !events.ValidName(parts[0]) || (parts[1] != "user" && parts[1] != "group") || !events.ValidResourceID(parts[2]) {
		return events.StoredSubject{}, false
	}
	return events.StoredSubject{Tenant: parts[0], Kind: parts[1], ResourceID: parts[2], Partition: partition}, true
}

// parkOverflowLocked parks a lane from its first queued event, in the
// background: enqueue is the consumer's callback, and waiting for the
// bucket there would hold up every lane of the partition. The lane is
// not worked until the record is written (or not), then starts again.
func (p *partition) parkOverflowLocked(l *lane) {
	from := streamSeq(l.queue[0])
	if l.out > 0 {
		// A slice is out: if it fails and its own park is not written
		// (held), a record from queue[0] would have its events
		// acknowledged unread by the next owner, which takes the record
		// and gets them again from the ack floor. If it is delivered, the
		// read-back skips it (subjectseq <= delivered).
		from = min(from, l.out)
	}
	rec := parkRecord{From: from, Due: p.w.now()}
	if l.hold != nil {
		rec = l.hold.rec // its retry stands as it was
	}
	t := p.beginParkLocked(l)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := p.writePark(l, t, rec)
		if overflowParkWritten != nil {
			overflowParkWritten()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.endParkLocked(l, t, rec, err, "its events outgrew the lane")
		if !l.busy && l.parking == 0 {
			p.startLocked(l)
		}
	}()
}

// parkQueuedLocked parks a lane with rec and acknowledges its queued
// messages that rec covers; if the record cannot be written, nothing
// changes. It is called and returns with p.mu held, but releases it across
// the write, so that the partition's other lanes go on meanwhile.
func (p *partition) parkQueuedLocked(l *lane, rec parkRecord, why string) bool {
	t := p.beginParkLocked(l)
	p.mu.Unlock()
	err := p.writePark(l, t, rec)
	p.mu.Lock()
	return p.endParkLocked(l, t, rec, err, why)
}

// beginParkLocked stops the lane from being worked, or parked again from
// enqueue, until endParkLocked, and takes the write's turn.
func (p *partition) beginParkLocked(l *lane) recordTurn {
	l.parking++
	return l.turnLocked()
}

// writePark writes a park record in its turn, without p.mu.
func (p *partition) writePark(l *lane, t recordTurn, rec parkRecord) error {
	t.wait()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	return p.w.parked.put(ctx, p.n, l.subject, rec)
}

// endParkLocked applies a park record's write: on success the lane is
// parked at rec, and its queued messages, those that arrived during the
// write included, are acknowledged. While another park of the lane is
// next in turn, a message before rec.From stays for it: it is of a failed
// slice that its lane parks from its first event (handle, while a park
// from enqueue was being written), and only that record covers it; so
// does one the lane holds (hold), for its retry. Otherwise such a message
// is acknowledged as enqueue does while parked: a copy of an event
// delivered already.
func (p *partition) endParkLocked(l *lane, t recordTurn, rec parkRecord, err error, why string) bool {
	w := p.w
	l.parking--
	close(t.done)
	if err != nil {
		l.parkFails++
		backoff := min(parkBackoff<<min(l.parkFails-1, 5), maxParkBackoff)
		l.nextPark = time.Now().Add(backoff)
		w.log.Warn("parking a resource failed; its events stay in the consumer, unacknowledged", "partition", p.n, "err", err, "next_park_in", backoff)
		return false
	}
	w.log.Debug("resource parked", "partition", p.n, "resource", l.subject.Key(), "from", rec.From, "why", why)
	l.park, l.parkFails, l.nextPark = &rec, 0, time.Time{}
	if l.hold != nil && rec.From <= l.hold.rec.From {
		l.hold = nil // the record carries its retry
	}
	kept := l.queue[:0]
	for _, m := range l.queue {
		seq := streamSeq(m)
		if seq < rec.From && (l.parking > 0 || l.hold != nil) {
			kept = append(kept, m)
			continue
		}
		l.dropped = max(l.dropped, seq)
		p.ack(m)
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	return true
}
