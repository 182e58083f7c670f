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
// again; freeing space is not enough. Once the store's file system has
// room again, the healer restarts the JetStream of the relay's account
// (the global account, which holds every stream, consumer and bucket) in
// process: its streams are closed and opened again from the same store.
// Stored events and consumer positions are on disk, so nothing is lost; an
// event whose publish failed is still in the relay's outbox and goes out
// after the restart (deduplicated by its id if it had been stored after
// all).
//
// Not the whole of JetStream: nats-server 2.15.2 does not take its
// $JS.API.> subscription away when JetStream shuts down
// (setJetStreamExportSubs subscribes it, jetstream_api.go:1116, and
// shutdownJetStream leaves it), so EnableJetStream afterwards added a
// second dispatcher, and every JetStream API request was handled twice
// from then on (a message deleted, then "no message found"); and with
// subscribers' accounts registered it gave each of them a JetStream import
// of its own (configAllJetStreamAccounts), so their requests were answered
// twice, by the relay and by JetStream.
type StoreHealer struct {
	s        *server.Server
	storeDir string
	log      *slog.Logger
	minFree  uint64

	mu          sync.Mutex
	last        time.Time
	saidStopped bool // that JetStream is not running, and a restart of the relay is needed
}

// healInterval is the least time between two restarts of JetStream.
const healInterval = 5 * time.Second

// defaultMinFree is the room the store's file system needs before a
// restart is worth it: a few of JetStream's message blocks.
const defaultMinFree = 32 << 20

// NewStoreHealer returns a healer for an embedded server started with
// StartEmbedded and o.
func NewStoreHealer(s *server.Server, o Options, log *slog.Logger) (*StoreHealer, error) {
	if s.JetStreamConfig() == nil {
		return nil, errors.New("the embedded NATS server runs without JetStream")
	}
	return &StoreHealer{s: s, storeDir: o.StoreDir, log: log.With("component", "nats-server"), minFree: defaultMinFree}, nil
}

// WriteError returns why the embedded server's JetStream cannot store
// events (a stream stuck on a write error, or JetStream stopped), or nil.
func (h *StoreHealer) WriteError() error {
	if !h.s.JetStreamEnabled() {
		return errNotRunning
	}
	if !h.s.GlobalAccount().JetStreamEnabled() {
		// A restart of the account's JetStream that failed half way.
		return errors.New("JetStream is not enabled for the relay's account")
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

// HealStore restarts the JetStream of the relay's account if it cannot
// store events (see WriteError) and the store has room again. It reports
// whether it restarted it. JetStream that nats-server stopped itself it
// leaves stopped (errNotRunning).
func (h *StoreHealer) HealStore(ctx context.Context) (bool, error) {
	stuck := h.WriteError()
	if stuck == nil {
		return false, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if errors.Is(stuck, errNotRunning) {
		// nats-server stopped JetStream itself (it does so on a permission
		// error, not on a full disk). Starting it again would leave every
		// JetStream API request handled twice (see StoreHealer).
		if !h.saidStopped {
			h.saidStopped = true
			h.log.Error("nats-server stopped JetStream (its log says why); events wait in the outbox: restart the relay once the NATS store can be written")
		}
		return false, stuck
	}
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
	h.log.Warn("restarting the relay's JetStream account: it cannot store events and its disk has room again", "err", stuck)
	acc := h.s.GlobalAccount()
	_, reserved, _ := h.s.JetStreamReservedResources()
	if acc.JetStreamEnabled() {
		if err := acc.DisableJetStream(); err != nil {
			return false, fmt.Errorf("stopping the relay's JetStream account: %w", err)
		}
	}
	// No limits: JetStream's defaults, as the account got them at start.
	if err := acc.EnableJetStream(nil, nil); err != nil {
		return false, fmt.Errorf("starting the relay's JetStream account again: %w", err)
	}
	// nats-server sets a stream's max_bytes aside again when it opens the
	// stream, without giving back what it set aside before: each restart
	// adds that much to what the server counts as reserved, until nothing
	// more can be, which only a restart of the relay resets.
	if _, now, _ := h.s.JetStreamReservedResources(); now > reserved {
		if cfg := h.s.JetStreamConfig(); cfg != nil && now+(now-reserved) > cfg.MaxStore {
			h.log.Error("after another restart of its JetStream account the NATS store would have no room to set aside for streams' max_bytes (nats-server counts them again at each restart); restart the relay",
				"reserved_bytes", now, "max_store_bytes", cfg.MaxStore)
		}
	}
	return true, nil
}

// errNotRunning is the WriteError of a server whose JetStream is stopped:
// nats-server stops it itself on a permission error, and only a restart
// of the relay starts it again without the API handled twice.
var errNotRunning = errors.New("JetStream is not running: nats-server stopped it (its log says why); restart the relay once the NATS store can be written")
