// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scimrelay/scimrelay/relay/disk"
)

// StoreHealer brings the embedded server's JetStream back after a write
// error. nats-server keeps a stream's first write error (a full disk,
// typically) and refuses every write after it until the stream is opened
// again; freeing space is not enough. The healer restarts JetStream in
// process, from the same store and with the same limits, once the store's
// file system has room again. Stored events and consumer positions are on
// disk, so nothing is lost; an event whose publish failed is still in the
// relay's outbox and goes out after the restart (deduplicated by its id if
// it had been stored after all).
type StoreHealer struct {
	s        *server.Server
	storeDir string
	cfg      server.JetStreamConfig
	log      *slog.Logger
	minFree  uint64

	mu   sync.Mutex
	last time.Time
}

// healInterval is the least time between two restarts of JetStream.
const healInterval = 5 * time.Second

// defaultMinFree is the room the store's file system needs before a
// restart is worth it: a few of JetStream's message blocks.
const defaultMinFree = 32 << 20

// NewStoreHealer returns a healer for an embedded server started with
// StartEmbedded and o.
func NewStoreHealer(s *server.Server, o Options, log *slog.Logger) (*StoreHealer, error) {
	cfg := s.JetStreamConfig()
	if cfg == nil {
		return nil, errors.New("the embedded NATS server runs without JetStream")
	}
	return &StoreHealer{s: s, storeDir: o.StoreDir, cfg: *cfg, log: log.With("component", "nats-server"), minFree: defaultMinFree}, nil
}

// WriteError returns why the embedded server's JetStream cannot store
// events (a stream stuck on a write error, or JetStream stopped), or nil.
func (h *StoreHealer) WriteError() error {
	if !h.s.JetStreamEnabled() {
		return errors.New("JetStream is not running")
	}
	health := h.s.Healthz(&server.HealthzOptions{Details: true})
	for _, e := range health.Errors {
		if strings.Contains(e.Error, "write error") {
			return errors.New(e.Error)
		}
	}
	return nil
}

// Watch heals the store whenever it is stuck, until ctx ends: a consumer
// or a bucket can be stuck on a write error while the relay publishes
// nothing that would notice.
func (h *StoreHealer) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := h.HealStore(ctx); err != nil {
			h.log.Debug("the NATS store cannot be repaired yet", "err", err)
		}
	}
}

// HealStore restarts JetStream if it cannot store events (see WriteError)
// and the store has room again. It reports whether it restarted JetStream.
func (h *StoreHealer) HealStore(ctx context.Context) (bool, error) {
	stuck := h.WriteError()
	if stuck == nil {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if since := time.Since(h.last); since < healInterval {
		return false, fmt.Errorf("%w (restarted JetStream %s ago)", stuck, since.Round(time.Millisecond))
	}
	if free, err := disk.Free(h.storeDir); err == nil && free < h.minFree {
		return false, fmt.Errorf("%w; the NATS store %s has %d KiB free, waiting for %d KiB", stuck, h.storeDir, free>>10, h.minFree>>10)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	h.last = time.Now()
	h.log.Warn("restarting JetStream: it cannot store events and its disk has room again", "err", stuck)
	if err := h.s.ShutdownJetStream(); err != nil {
		return false, fmt.Errorf("stopping JetStream: %w", err)
	}
	cfg := h.cfg
	cfg.StoreDir = h.storeDir // EnableJetStream appends its own directory again
	if err := h.s.EnableJetStream(&cfg); err != nil {
		return false, fmt.Errorf("starting JetStream again: %w", err)
	}
	return true, nil
}
