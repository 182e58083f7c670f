// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestFailureLogSaysAFewAMinute: a sink says its first failureWarnsPerWindow
// failed attempts of a window one by one at Warn, counts the rest (each a
// Debug line) and says how many in one Warn line when the window is over;
// the next window says its first few again.
func TestFailureLogSaysAFewAMinute(t *testing.T) {
	var buf eventstest.Log
	const window = 300 * time.Millisecond
	r := newFailureLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), window,
		"delivery failed; will retry", "more deliveries failed and will be retried")
	start := time.Now()
	for i := range 25 {
		r.failed(start, 503, "POST https://crm.example/hook: 503 Service Unavailable", "event_id", fmt.Sprint("e", i))
	}
	count := func(s string) int { return strings.Count(buf.String(), s) }
	if n := count("msg=\"delivery failed; will retry\""); n != failureWarnsPerWindow {
		t.Fatalf("%d failures said one by one, want %d:\n%s", n, failureWarnsPerWindow, buf.String())
	}
	eventstest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(buf.String(), "failed=15 last_status=503") {
			return fmt.Errorf("no summary of the 15 counted:\n%s", buf.String())
		}
		return nil
	})
	// A window later: said one by one again, and no summary of nothing.
	r.failed(start.Add(window), 500, "POST https://crm.example/hook: 500 Internal Server Error", "event_id", "e25")
	if n := count("msg=\"delivery failed; will retry\""); n != failureWarnsPerWindow+1 {
		t.Fatalf("%d failures said one by one after the window, want %d:\n%s", n, failureWarnsPerWindow+1, buf.String())
	}
	if n := count("more deliveries failed"); n != 1 {
		t.Fatalf("%d summaries, want 1:\n%s", n, buf.String())
	}
}

// TestDeadLettersAreSaidAFewAMinute: a receiver that refuses every event
// for good (410 Gone) has each dead-lettered, and the sink says
// the first failureWarnsPerWindow of a minute at Warn, the rest at Debug,
// instead of a Warn line for every event.
func TestDeadLettersAreSaidAFewAMinute(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusGone })
	var log eventstest.Log
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	p := newPublisher(t, js)
	const n = 25
	for i := range n {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := m.DeadLetters(context.Background(), "crm", "", n+1)
		if err != nil || len(page.DeadLetters) != n {
			return fmt.Errorf("%d dead letters, %v; want %d", len(page.DeadLetters), err, n)
		}
		return nil
	})
	said := `level=WARN msg="delivery failed for good; event dead-lettered"`
	counted := `level=DEBUG msg="delivery failed for good; event dead-lettered"`
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if w, d := strings.Count(log.String(), said), strings.Count(log.String(), counted); w != failureWarnsPerWindow || w+d != n {
			return fmt.Errorf("%d dead letters said at Warn and %d at Debug; want %d and %d", w, d, failureWarnsPerWindow, n-failureWarnsPerWindow)
		}
		// Each says how to deliver it once the receiver is mended.
		if told := strings.Count(log.String(), `redrive="scimrelay dlq redrive --sink `); told != n {
			return fmt.Errorf("%d of %d dead letters say how to redrive them", told, n)
		}
		return nil
	})
}
