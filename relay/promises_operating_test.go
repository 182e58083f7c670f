// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestLogRetention holds the README's "kept provisioning_log.retention (30
// days)": a log started with the default retention drops the entries
// older than 30 days and keeps the others, and one that starts as time
// has moved on drops those that have aged past it since.
func TestLogRetention(t *testing.T) {
	s, c, _ := openStore(t)
	now := c.now()
	entry := func(id string, age time.Duration) LogEntry {
		return LogEntry{Time: now.Add(-age), RequestID: id, Tenant: "acme", Operation: "create", Status: 201}
	}
	runLog(t, s, LogOptions{}, []LogEntry{
		entry("40d", 40*24*time.Hour), entry("31d", 31*24*time.Hour), entry("29d", 29*24*time.Hour), entry("1h", time.Hour),
	})
	kept := func() []string {
		t.Helper()
		l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
		got, err := l.Query(context.Background(), LogQuery{Since: now.Add(-365 * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.RequestID)
		}
		slices.Sort(ids)
		return ids
	}
	if got := kept(); !slices.Equal(got, []string{"1h", "29d", "31d", "40d"}) {
		t.Fatalf("written: %v", got)
	}
	runLog(t, s, LogOptions{}, nil) // a restart prunes
	if got := kept(); !slices.Equal(got, []string{"1h", "29d"}) {
		t.Fatalf("after pruning at 30 days: %v, want 1h and 29d", got)
	}
	c.add(2 * 24 * time.Hour)
	runLog(t, s, LogOptions{Retention: 30 * 24 * time.Hour}, nil)
	if got := kept(); !slices.Equal(got, []string{"1h"}) {
		t.Fatalf("two days later: %v, want 1h alone", got)
	}
}

// startLog runs a provisioning log over s that prunes by age every
// millisecond, as a running relay does every hour, until the test ends.
func startLog(t *testing.T, s *Store, o LogOptions) *RequestLog {
	t.Helper()
	l := NewRequestLog(s, o, slog.New(slog.DiscardHandler))
	l.pruneEvery = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return l
}

// logIDs returns the request ids of the log's entries, oldest first.
func logIDs(t *testing.T, l *RequestLog, since time.Time) []string {
	t.Helper()
	got, err := l.Query(context.Background(), LogQuery{Since: since, Limit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(got))
	for i, e := range got {
		ids[i] = e.RequestID
	}
	return ids
}

// logWriteWait is how long a test waits for entries it recorded to be
// written (in batches, each a commit of the data file with fsync) and the
// log pruned after them: a CI run under -race, its disk shared with other
// packages' tests, wrote 160 of 300 entries in 5 s.
const logWriteWait = time.Minute

// waitLog polls until the log holds exactly want.
func waitLog(t *testing.T, l *RequestLog, since time.Time, want ...string) {
	t.Helper()
	eventstest.CheckFor(t, logWriteWait, time.Millisecond, func() error {
		if got := logIDs(t, l, since); !slices.Equal(got, want) {
			return fmt.Errorf("the log holds %v, want %v", got, want)
		}
		return nil
	})
}

// TestLogPrunedByAgeWhileRunning: a relay that runs for months keeps its
// provisioning log to provisioning_log.retention without a restart: as
// time passes, the running log drops each entry once it is older than the
// retention, and keeps the younger ones.
func TestLogPrunedByAgeWhileRunning(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	since := start.Add(-365 * 24 * time.Hour)
	l := startLog(t, s, LogOptions{Retention: 24 * time.Hour})
	for _, e := range []LogEntry{
		{Time: start.Add(-2 * time.Hour), RequestID: "2h"},
		{Time: start.Add(-time.Hour), RequestID: "1h"},
		{Time: start, RequestID: "now"},
	} {
		e.Tenant, e.Operation, e.Status = "acme", "create", 201
		l.Record(e)
	}
	waitLog(t, l, since, "2h", "1h", "now")

	c.add(22*time.Hour + 30*time.Minute) // "2h" is 24.5 hours old now
	waitLog(t, l, since, "1h", "now")
	c.add(time.Hour) // and "1h"
	waitLog(t, l, since, "now")
	c.add(time.Hour)
	waitLog(t, l, since)
}

// TestLogPrunedBySizeWhileRunning: a running log past
// provisioning_log.max_bytes drops its oldest entries as it writes new
// ones, without a restart: after each write it is back within the bound,
// holding the newest entries without a gap.
func TestLogPrunedBySizeWhileRunning(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	const bound = minLogMaxBytes
	l := startLog(t, s, LogOptions{MaxBytes: bound})
	// Texts within their bounds, about 1,750 bytes an entry: 300 are half
	// the bound.
	text := strings.Repeat("x", 250)
	record := func(from, n int) {
		for i := from; i < from+n; i++ {
			l.Record(LogEntry{Time: start.Add(time.Duration(i) * time.Microsecond), RequestID: fmt.Sprint(i), Tenant: "acme",
				Operation: "create", Status: 201, Path: text, ResourceID: text, Name: text, Email: text, Detail: text + text})
		}
	}
	// held reads, in one transaction, the entries' request ids, oldest
	// first, and what they take in the data file, as the bound counts: read
	// apart, a prune between the two made a log of 900 entries look within
	// its bound.
	held := func() (ids []string, n int64) {
		t.Helper()
		if err := s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketProvLog)
			if b == nil {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				var e LogEntry
				if err := json.Unmarshal(v, &e); err != nil {
					return err
				}
				ids = append(ids, e.RequestID)
				n += entrySize(k, v)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return ids, n
	}
	written := 0
	for round := range 4 {
		record(written, 300)
		written += 300
		newest := fmt.Sprint(written - 1)
		// A batch is written, then the oldest entries go: poll for both.
		var ids []string
		eventstest.CheckFor(t, logWriteWait, 5*time.Millisecond, func() error {
			var n int64
			ids, n = held()
			if len(ids) == 0 || ids[len(ids)-1] != newest {
				return fmt.Errorf("round %d: the newest entry is not written yet (%d entries)", round, len(ids))
			}
			if n > bound {
				return fmt.Errorf("after %d entries: the log takes %d bytes, past its bound of %d", written, n, bound)
			}
			return nil
		})

		if round >= 2 && (ids[0] == "0" || len(ids) >= written) {
			t.Fatalf("after %d entries: the log holds %d from %s, want the oldest dropped", written, len(ids), ids[0])
		}
		// What is kept is the newest, without a gap.
		first, _ := strconv.Atoi(ids[0])
		if len(ids) != written-first {
			t.Fatalf("after %d entries: %d kept from %d, want every one since it", written, len(ids), first)
		}
	}
}
