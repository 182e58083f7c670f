// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
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
