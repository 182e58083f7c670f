// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestNATSLoggerHoldsRepeats: a warning or error nats-server repeats while
// its cause lasts is said once a minute per format, the next line counting
// those held back (at Debug meanwhile). An on-call review saw "JetStream
// failed to store a msg on stream" 26 times in 45 s of a full disk. The
// statements nats-server's own RateLimitErrorf passes on as "%s" are
// told apart by their text.
func TestNATSLoggerHoldsRepeats(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	l := newNATSLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	l.now = func() time.Time { return now }
	const stored = "JetStream failed to store a msg on stream '%s > %s': %v"
	for range 23 { // every 2 s, as nats-server says it, for 45 s
		l.Errorf(stored, "$G", "SCIMRELAY_WORKERS", "write /data/nats: no space left on device")
		l.Errorf("%s", "first statement")
		l.Errorf("%s", "second statement")
		now = now.Add(2 * time.Second)
	}
	l.Warnf("a warning of another format")
	count := func(level, what string) int {
		n := 0
		for line := range strings.Lines(buf.String()) {
			if strings.Contains(line, "level="+level) && strings.Contains(line, what) {
				n++
			}
		}
		return n
	}
	if n := count("ERROR", "failed to store a msg"); n != 1 {
		t.Errorf("45 s of the same error said %d times at Error, want once:\n%s", n, buf.String())
	}
	for _, what := range []string{"first statement", "second statement", "a warning of another format"} {
		if n := count("", what); n != 1 {
			t.Errorf("%q said %d times, want once (the first of its kind):\n%s", what, n, buf.String())
		}
	}
	now = now.Add(15 * time.Second) // a minute after the first
	l.Errorf(stored, "$G", "SCIMRELAY_WORKERS", "write /data/nats: no space left on device")
	if n := count("ERROR", "failed to store a msg"); n != 2 || !strings.Contains(buf.String(), "repeated=22") {
		t.Errorf("a minute on, want the error said again counting the 22 held back:\n%s", buf.String())
	}
}

// TestNATSLoggerHoldsRepeatsAcrossConnections: nats-server writes a
// connection's address and id (and its name once connected) into the
// format of a line about it, so a burst of refused connections would be a
// new kind each; they are one (the diff review).
func TestNATSLoggerHoldsRepeatsAcrossConnections(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	l := newNATSLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	l.now = func() time.Time { return now }
	for i := range 50 {
		prefix := fmt.Sprintf("127.0.0.1:%d - cid:%d", 40000+i, i)
		if i%2 == 1 {
			prefix += ` - "probe:` + fmt.Sprint(i) + `" - "$G/anon"`
		}
		l.Errorf(prefix+" - authentication error - User %q", "nobody")
	}
	l.Errorf("127.0.0.1:50000 - cid:99 - Slow Consumer Detected: WriteDeadline of %v exceeded", "10s")
	if n := strings.Count(buf.String(), "authentication error"); n != 1 {
		t.Errorf("50 connections refused said %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "Slow Consumer Detected") {
		t.Errorf("another statement about a connection was held back as the same kind:\n%s", buf.String())
	}
}
