// SPDX-License-Identifier: Apache-2.0

package lograte

import (
	"testing"
	"time"
)

// TestNote: the first line of a key is due at once, then one a period,
// each saying how many were held back since the last; keys are apart.
func TestNote(t *testing.T) {
	l := New[string](time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	check := func(key string, at time.Duration, due bool, held int) {
		t.Helper()
		if d, h := l.Note(key, t0.Add(at)); d != due || h != held {
			t.Errorf("%s at %s: due %v held %d, want %v %d", key, at, d, h, due, held)
		}
	}
	check("a", 0, true, 0)
	check("a", time.Second, false, 0)
	check("b", time.Second, true, 0)
	check("a", 59*time.Second, false, 0)
	check("a", time.Minute, true, 2)
	check("a", 2*time.Minute, true, 0)
	check("a", 2*time.Minute+time.Second, false, 0)
	check("a", 3*time.Minute, true, 1)
}

// TestKeysBounded: past maxKeys, keys whose period is over are forgotten.
func TestKeysBounded(t *testing.T) {
	l := New[int](time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxKeys {
		l.Note(i, t0)
	}
	l.Note(-1, t0.Add(time.Minute))
	if n := len(l.keys); n != 1 {
		t.Errorf("%d keys kept, want the new one", n)
	}
	for i := range maxKeys + 10 { // all within their period: new ones are said, not kept
		if due, _ := l.Note(i, t0.Add(time.Minute)); !due {
			t.Fatalf("key %d, new, not due", i)
		}
	}
	if n := len(l.keys); n != maxKeys {
		t.Errorf("%d keys kept, want at most %d", n, maxKeys)
	}
}
