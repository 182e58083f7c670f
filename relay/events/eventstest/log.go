// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"bytes"
	"slices"
	"strings"
	"sync"
)

// Log is an output (a logger's, a process's stderr) that the code under
// test writes while the test reads it.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// GrepLines returns the lines of s that contain one of subs.
func GrepLines(s string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(line, sub) }) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
