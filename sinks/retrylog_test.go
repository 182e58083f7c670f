// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestRetryLogSaysAFewAMinute: a sink says its first retryWarnsPerWindow
// failed attempts of a window one by one at Warn, counts the rest (each a
// Debug line) and says how many in one Warn line when the window is over;
// the next window says its first few again.
func TestRetryLogSaysAFewAMinute(t *testing.T) {
	var buf eventstest.Log
	const window = 300 * time.Millisecond
	r := newRetryLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), window)
	start := time.Now()
	for i := range 25 {
		r.failed(start, 503, "POST https://crm.example/hook: 503 Service Unavailable", "event_id", fmt.Sprint("e", i))
	}
	count := func(s string) int { return strings.Count(buf.String(), s) }
	if n := count("msg=\"delivery failed; will retry\""); n != retryWarnsPerWindow {
		t.Fatalf("%d failures said one by one, want %d:\n%s", n, retryWarnsPerWindow, buf.String())
	}
	eventstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(buf.String(), "failed=15 last_status=503") {
			return fmt.Errorf("no summary of the 15 counted:\n%s", buf.String())
		}
		return nil
	})
	// A window later: said one by one again, and no summary of nothing.
	r.failed(start.Add(window), 500, "POST https://crm.example/hook: 500 Internal Server Error", "event_id", "e25")
	if n := count("msg=\"delivery failed; will retry\""); n != retryWarnsPerWindow+1 {
		t.Fatalf("%d failures said one by one after the window, want %d:\n%s", n, retryWarnsPerWindow+1, buf.String())
	}
	if n := count("more deliveries failed"); n != 1 {
		t.Fatalf("%d summaries, want 1:\n%s", n, buf.String())
	}
}
