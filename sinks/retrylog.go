// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"log/slog"
	"sync"
	"time"
)

// retryWarnsPerWindow is how many failed attempts a sink's log says one
// by one in a minute (retryWindow) before it counts the rest.
const (
	retryWarnsPerWindow = 10
	retryWindow         = time.Minute
)

// retryLog keeps a sink's "will retry" warnings to a few a minute. A
// receiver down while Entra provisions fails an attempt for every event
// of every resource in turn: a soak review at 20 requests a second logged
// 9,030 such lines in 8.5 minutes of outages, burying every other line.
// Past retryWarnsPerWindow in a window the failures are counted and said
// in one line when the window is over, with the last one's status and
// error; each is still an attempt in the delivery log (`scimrelay log
// --deliveries`), a metric, and a Debug line.
type retryLog struct {
	log    *slog.Logger
	window time.Duration

	mu         sync.Mutex
	start      time.Time // the window's
	said, held int       // failures said one by one, and counted, in it
	lastStatus int
	lastErr    string
	pending    bool // a summary is due at the window's end
}

func newRetryLog(log *slog.Logger, window time.Duration) *retryLog {
	return &retryLog{log: log, window: window}
}

// failed says or counts one failed attempt, of status and error err;
// args describe it further.
func (r *retryLog) failed(now time.Time, status int, err string, args ...any) {
	args = append(args, "status", status, "err", err)
	r.mu.Lock()
	if now.Sub(r.start) >= r.window {
		r.start, r.said = now, 0
	}
	if r.said < retryWarnsPerWindow {
		r.said++
		r.mu.Unlock()
		r.log.Warn("delivery failed; will retry", args...)
		return
	}
	r.held++
	r.lastStatus, r.lastErr = status, err
	if !r.pending {
		r.pending = true
		time.AfterFunc(r.start.Add(r.window).Sub(now), r.summarise)
	}
	r.mu.Unlock()
	r.log.Debug("delivery failed; will retry", args...)
}

// summarise says how many failures were counted rather than said.
func (r *retryLog) summarise() {
	r.mu.Lock()
	held, status, err := r.held, r.lastStatus, r.lastErr
	r.held, r.pending = 0, false
	r.mu.Unlock()
	if held > 0 {
		r.log.Warn("more deliveries failed and will be retried; past the first few a minute they are counted here, each is in the delivery log (scimrelay log --deliveries)",
			"failed", held, "last_status", status, "last_err", err, "window", r.window)
	}
}
