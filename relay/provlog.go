// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The provisioning log records every SCIM request, the way Entra's own
// provisioning logs do on its side: who asked for what, what came back, and
// the events it produced. It lives in the data file (bucket "provlog", key
// u64(unix nanoseconds) ‖ u64(counter)) and is written in batches by its own
// goroutine, so that logging never adds a transaction, let alone an fsync,
// to a SCIM request.

var bucketProvLog = []byte("provlog")

// LogEntry is one SCIM request.
type LogEntry struct {
	Time       time.Time     `json:"time"`
	RequestID  string        `json:"request_id"`
	Tenant     string        `json:"tenant,omitempty"`
	Method     string        `json:"method"`
	Path       string        `json:"path"`
	Operation  string        `json:"operation,omitempty"`
	Resource   string        `json:"resource_type,omitempty"`
	ResourceID string        `json:"resource_id,omitempty"`
	Name       string        `json:"name,omitempty"`  // userName or displayName
	Email      string        `json:"email,omitempty"` // a user's primary (else work) email
	Status     int           `json:"status"`
	ScimType   string        `json:"scim_type,omitempty"`
	Detail     string        `json:"detail,omitempty"`
	Latency    time.Duration `json:"latency_ns"`
	EventIDs   []string      `json:"event_ids,omitempty"`
	// Key orders entries; pass the last one seen as After to read on.
	Key string `json:"key"`
}

// LogQuery selects log entries.
type LogQuery struct {
	Tenant string
	Since  time.Time
	// Until, when set, ends the selection before this time.
	Until time.Time
	// After continues after the entry with this key (for --follow); with
	// Newest, before it (the next page of older entries).
	After string
	// Newest reads from the end of the window back: the latest entries
	// first.
	Newest bool
	// Status is "2xx", "4xx", "5xx", an exact code such as "409", or "".
	Status string
	// User matches userName, displayName or email, case-insensitively, by
	// substring.
	User string
	// Operation is one operation (create, patch, token …), or "".
	Operation string
	Limit     int
}

// RequestLog writes and reads the provisioning log.
type RequestLog struct {
	store     *Store
	log       *slog.Logger
	retention time.Duration
	entries   chan LogEntry
	dropped   atomic.Uint64
	counter   atomic.Uint64
	done      chan struct{}
}

// NewRequestLog returns the provisioning log of a store, keeping entries for retention.
func NewRequestLog(s *Store, retention time.Duration, log *slog.Logger) *RequestLog {
	if retention <= 0 {
		retention = 30 * 24 * time.Hour
	}
	return &RequestLog{store: s, log: log, retention: retention, entries: make(chan LogEntry, 8192), done: make(chan struct{})}
}

// Record queues an entry. It never blocks: when the writer is behind by
// thousands of entries, new ones are dropped and counted instead of
// slowing SCIM down.
func (l *RequestLog) Record(e LogEntry) {
	select {
	case l.entries <- e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped returns how many entries were dropped because the writer was behind.
func (l *RequestLog) Dropped() uint64 { return l.dropped.Load() }

// Run writes queued entries in batches and prunes expired ones, until ctx
// ends; then it writes what is left.
func (l *RequestLog) Run(ctx context.Context) error {
	defer close(l.done)
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	if err := l.prune(); err != nil {
		l.log.Warn("pruning the provisioning log", "err", err)
	}
	batch := make([]LogEntry, 0, 512)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := l.write(batch); err != nil {
			l.log.Warn("writing the provisioning log", "entries", len(batch), "err", err)
		}
		batch = batch[:0]
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case e := <-l.entries:
			batch = append(batch, e)
			if len(batch) == cap(batch) {
				flush()
			}
		case <-tick.C:
			flush()
		case <-prune.C:
			if err := l.prune(); err != nil {
				l.log.Warn("pruning the provisioning log", "err", err)
			}
		case <-ctx.Done():
			for {
				select {
				case e := <-l.entries:
					batch = append(batch, e)
				default:
					flush()
					return nil
				}
			}
		}
	}
}

// Wait returns once Run has written everything and returned.
func (l *RequestLog) Wait() { <-l.done }

func (l *RequestLog) key(t time.Time) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k[:8], uint64(t.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], l.counter.Add(1))
	return k
}

func (l *RequestLog) write(batch []LogEntry) error {
	return l.store.commits.do(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketProvLog)
		if err != nil {
			return err
		}
		for _, e := range batch {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put(l.key(e.Time), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// prune deletes entries older than the retention.
func (l *RequestLog) prune() error {
	cutoff := make([]byte, 8)
	binary.BigEndian.PutUint64(cutoff, uint64(l.store.now().Add(-l.retention).UnixNano()))
	for {
		n := 0
		err := l.store.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketProvLog)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			for k, _ := c.First(); k != nil && bytes.Compare(k[:8], cutoff) < 0 && n < 10_000; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil || n < 10_000 {
			return err
		}
	}
}

// Query returns matching entries, oldest first, or newest first with
// q.Newest.
func (l *RequestLog) Query(ctx context.Context, q LogQuery) ([]LogEntry, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	first := timeKey(q.Since)
	last := []byte(nil) // exclusive; nil: none
	if !q.Until.IsZero() {
		last = timeKey(q.Until)
	}
	var after []byte
	if q.After != "" {
		k, err := decodeLogKey(q.After)
		if err != nil {
			return nil, err
		}
		after = k
		if q.Newest {
			if last == nil || bytes.Compare(k, last) < 0 {
				last = k
			}
		} else if bytes.Compare(k, first) > 0 {
			first = k
		}
	}
	out := []LogEntry{}
	user := strings.ToLower(q.User)
	err := l.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketProvLog)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek(first)
		step := c.Next
		if q.Newest {
			step = c.Prev
			if last == nil {
				k, v = c.Last()
			} else if k, v = c.Seek(last); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for n := 0; k != nil && len(out) < q.Limit; k, v = step() {
			if n++; n%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if bytes.Compare(k, first) < 0 || last != nil && bytes.Compare(k, last) >= 0 {
				break // past the window: keys are in time order
			}
			if after != nil && bytes.Equal(k, after) {
				continue
			}
			var e LogEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding a log entry: %w", err)
			}
			if q.Tenant != "" && e.Tenant != q.Tenant || !statusMatches(q.Status, e.Status) ||
				q.Operation != "" && e.Operation != q.Operation ||
				user != "" && !strings.Contains(strings.ToLower(e.Name), user) && !strings.Contains(strings.ToLower(e.Email), user) {
				continue
			}
			e.Key = encodeLogKey(k)
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// timeKey is the first key an entry at t or later can have.
func timeKey(t time.Time) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(max(t.UnixNano(), 0)))
	return k
}

// ErrLogEntryNotFound means no entry of the provisioning log has the key
// given: it never had one, or the entry is past the retention.
var ErrLogEntryNotFound = errors.New("no such log entry")

// Entry returns the entry whose key is key.
func (l *RequestLog) Entry(_ context.Context, key string) (LogEntry, error) {
	k, err := decodeLogKey(key)
	if err != nil {
		return LogEntry{}, err
	}
	var e LogEntry
	err = l.store.db.View(func(tx *bolt.Tx) error {
		var v []byte
		if b := tx.Bucket(bucketProvLog); b != nil {
			v = b.Get(k)
		}
		if v == nil {
			return fmt.Errorf("%w %s (entries are kept for %s)", ErrLogEntryNotFound, key, l.retention)
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decoding log entry %s: %w", key, err)
		}
		e.Key = key
		return nil
	})
	return e, err
}

// LogCount counts a tenant's requests by status class.
type LogCount struct {
	Tenant string `json:"tenant"`
	Total  int    `json:"total"`
	Class2 int    `json:"2xx"`
	Class4 int    `json:"4xx"`
	Class5 int    `json:"5xx"`
}

// Count counts the requests since a time per tenant, in tenant order.
// It reads every entry since then, so it is meant for short windows (the
// console's last hour).
func (l *RequestLog) Count(ctx context.Context, since time.Time) ([]LogCount, error) {
	start := timeKey(since)
	counts := map[string]*LogCount{}
	err := l.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketProvLog)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		n := 0
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if n++; n%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			var e struct {
				Tenant string `json:"tenant"`
				Status int    `json:"status"`
			}
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding a log entry: %w", err)
			}
			lc := counts[e.Tenant]
			if lc == nil {
				lc = &LogCount{Tenant: e.Tenant}
				counts[e.Tenant] = lc
			}
			lc.Total++
			switch e.Status / 100 {
			case 2:
				lc.Class2++
			case 4:
				lc.Class4++
			case 5:
				lc.Class5++
			}
		}
		return nil
	})
	out := make([]LogCount, 0, len(counts))
	for _, lc := range counts {
		out = append(out, *lc)
	}
	slices.SortFunc(out, func(a, b LogCount) int { return strings.Compare(a.Tenant, b.Tenant) })
	return out, err
}

// statusMatches compares a status with "2xx", "4xx", "5xx", "409" or "".
func statusMatches(want string, got int) bool {
	switch {
	case want == "":
		return true
	case len(want) == 3 && strings.HasSuffix(strings.ToLower(want), "xx"):
		return want[0] == byte('0'+got/100)
	}
	return want == fmt.Sprint(got)
}

func encodeLogKey(k []byte) string { return fmt.Sprintf("%x", k) }

// ErrInvalidLogKey means LogQuery.After is not a key Query returned.
var ErrInvalidLogKey = errors.New("not a log entry key")

func decodeLogKey(s string) ([]byte, error) {
	var k []byte
	if _, err := fmt.Sscanf(s, "%x", &k); err != nil || len(k) != 16 {
		return nil, fmt.Errorf("after: %q: %w", s, ErrInvalidLogKey)
	}
	return k, nil
}
