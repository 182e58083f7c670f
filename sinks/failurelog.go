// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"log/slog"
	"sync"
	"time"
)

// failureWarnsPerWindow is how many failures of one kind a sink's log
// says one by one in a minute (failureWindow) before it counts the rest.
const (
	failureWarnsPerWindow = 10
	failureWindow         = time.Minute
)

// failureLog keeps a sink's warnings of one kind of failure (an attempt
// that will be retried, an event dead-lettered) to a few a minute. A
// receiver down while Entra provisions fails an attempt for every event
// of every resource in turn: a soak review at 20 requests a second logged
// 9,030 "will retry" lines in 8.5 minutes of outages, burying every other
// line, and a receiver with the wrong secret dead-letters every event.
// Past failureWarnsPerWindow in a window the failures are counted and said
// in one line when the window is over, with the last one's status and
// error; each is still an attempt in the delivery log (`scimrelay log
// --deliveries`), a metric, and a Debug line (a dead letter is in the
// queue, `scimrelay dlq list`, too).
type failureLog struct {
	log    *slog.Logger
	window time.Duration
	// msg says one failure; summary the failures counted in a window.
	msg, summary string

	mu         sync.Mutex
	start      time.Time // the window's
	said, held int       // failures said one by one, and counted, in it
	lastStatus int
	lastErr    string
	pending    bool // a summary is due at the window's end
}

func newFailureLog(log *slog.Logger, window time.Duration, msg, summary string) *failureLog {
	return &failureLog{log: log, window: window, msg: msg, summary: summary}
}

// failed says or counts one failed attempt, of status and error err;
// args describe it further.
func (r *failureLog) failed(now time.Time, status int, err string, args ...any) {
	args = append(args, "status", status, "err", err)
	r.mu.Lock()
	if now.Sub(r.start) >= r.window {
		r.start, r.said = now, 0
	}
	if r.said < failureWarnsPerWindow {
		r.said++
		r.mu.Unlock()
		r.log.Warn(r.msg, args...)
		return
	}
	r.held++
	r.lastStatus, r.lastErr = status, err
	if !r.pending {
		r.pending = true
		time.AfterFunc(r.start.Add(r.window).Sub(now), r.summarise)
	}
	r.mu.Unlock()
	r.log.Debug(r.msg, args...)
}

// summarise says how many failures were counted rather than said.
func (r *failureLog) summarise() {
	r.mu.Lock()
	held, status, err := r.held, r.lastStatus, r.lastErr
	r.held, r.pending = 0, false
	r.mu.Unlock()
	if held > 0 {
		r.log.Warn(r.summary,
			"failed", held, "last_status", status, "last_err", err, "window", r.window)
	}
}
