// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// windowsRead is the store's outbox, noting the window of every read.
type windowsRead struct {
	*Store
	mu     sync.Mutex
	limits []int
}

func (w *windowsRead) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	w.mu.Lock()
	w.limits = append(w.limits, limit)
	w.mu.Unlock()
	return w.Store.ReadOutbox(after, limit)
}

var _ Outbox = (*windowsRead)(nil)

// TestPublisherWindowsOf2048: the README's outbox drain publishes "windows
// of 2,048 chained": a publisher made as serve makes it (no window set)
// reads the outbox 2,048 events at a time, and publishes what it read.
// (TestStreamOrderUnderPartialFailure holds the chain within a window.)
func TestPublisherWindowsOf2048(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	create(t, s, "acme", user(t, `"userName":"ann"`))
	w := &windowsRead{Store: s}
	p := newPublisher(t, w, js, slog.New(slog.DiscardHandler), PublisherOptions{})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	outboxEmpties(t, s)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.limits) == 0 || slices.ContainsFunc(w.limits, func(n int) bool { return n != 2048 }) {
		t.Errorf("the publisher read the outbox in windows of %v, want 2,048", w.limits)
	}
}
