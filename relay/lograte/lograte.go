// SPDX-License-Identifier: Apache-2.0

// Package lograte keeps a log line that repeats to one per key per period,
// counting the ones held back so that the next line can say how many there
// were: a token refused for every request Entra sends, a write to a full
// disk failing for every request, nats-server saying the same error every
// two seconds. (The sinks' failureLog says a burst of lines before it
// counts, and admin's TokenAttempts sums refusals on a ticker; this is the
// simplest of the three, with no goroutine and no timer: the count is said
// by the next line due.) It imports nothing of the project.
package lograte

import (
	"sync"
	"time"
)

// maxKeys bounds the keys kept: past it, those whose period is over are
// forgotten, and a new key while all are within theirs is not kept (its
// lines are all due). Callers use keys from a mostly bounded set (stored
// credential ids, format strings of a program's source, which nats-server
// prefixes with a client's name); the bound is a backstop.
const maxKeys = 1024

// Limiter says whether a line for a key is due: the first one at once,
// then one a period, each with how many were held back since the last.
// The zero value is not usable; New makes one. It is safe for concurrent
// use.
type Limiter[K comparable] struct {
	period time.Duration

	mu   sync.Mutex
	keys map[K]*entry
}

type entry struct {
	said time.Time // when the last line of the key was due
	held int       // lines held back since
}

// New returns a Limiter that lets one line a period through per key.
func New[K comparable](period time.Duration) *Limiter[K] {
	return &Limiter[K]{period: period, keys: map[K]*entry{}}
}

// Note counts a line for key at now and reports whether it is due; when it
// is, held is how many lines of the key were held back since the last one
// due (0 for the first). A line not due is held: its caller logs it at a
// lower level, or not at all.
func (l *Limiter[K]) Note(key K, now time.Time) (due bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= maxKeys {
			for k, old := range l.keys {
				if now.Sub(old.said) >= l.period {
					delete(l.keys, k)
				}
			}
		}
		if len(l.keys) < maxKeys { // else said, and not kept: the bound holds
			l.keys[key] = &entry{said: now}
		}
		return true, 0
	}
	if now.Sub(e.said) < l.period {
		e.held++
		return false, 0
	}
	held = e.held
	e.said, e.held = now, 0
	return true, held
}
