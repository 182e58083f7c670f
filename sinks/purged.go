// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A tenant's purge deletes its events from the stream, but not the ones a
// worker has taken already: waiting in a resource's lane, or for a retry
// in memory. So the purge tells the workers, by a notice in the workers'
// stream whose subject says the tenant and the last sequence its events
// reached (purgedSubjectRoot<tenant>.<sequence>), and each worker reads
// the notices at every heartbeat and from then on delivers none of the
// tenant's events numbered up to it: they are settled as "purged". A
// tenant added again under the name numbers its events after that
// sequence, and they are delivered. A notice stays in the stream for its
// memberTTL, longer than a worker can go without reading it and still
// deliver (its lease); the worker keeps what it read until it stops, and
// one that starts later finds none of the tenant's events in the stream.
// Sink names begin with a letter or digit, so no sink's announcements
// share the subjects.
const purgedSubjectRoot = workersSubjectRoot + "_purged."

// purgeNoticeReads is how many heartbeats AnnouncePurge leaves the
// workers to read a notice.
const purgeNoticeReads = 2

// AnnouncePurge tells every delivery worker, of every sink and process
// sharing the NATS stream, that tenant is purged and that none of its
// events numbered up to seq is to be delivered any more, and returns once
// they have had purgeNoticeReads heartbeats (and a second) to read it.
// A delivery already under way ends as it would have.
func (m *Manager) AnnouncePurge(ctx context.Context, tenant string, seq uint64) error {
	if m.shared == nil {
		return fmt.Errorf("telling the delivery workers that tenant %s is purged: the sinks' streams are not set up", tenant)
	}
	if !events.ValidName(tenant) {
		return fmt.Errorf("telling the delivery workers that tenant %q is purged: not a tenant name", tenant)
	}
	if _, err := m.o.JS.Publish(ctx, purgedSubjectRoot+tenant+"."+strconv.FormatUint(seq, 10), nil); err != nil {
		return fmt.Errorf("telling the delivery workers that tenant %s is purged: %w", tenant, err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(purgeNoticeReads*m.shared.t.heartbeat + time.Second):
		return nil
	}
}

// purgedTenants is what a worker read of the purge notices: each purged
// tenant's last sequence. Replaced whole, never changed.
type purgedTenants map[string]uint64

// covers reports whether e is an event of a purged tenant, numbered up to
// the sequence its purge reached.
func (p purgedTenants) covers(e event.Event) bool {
	last, ok := p[events.Tenant(e)]
	if !ok {
		return false
	}
	seq, err := events.Sequence(e)
	return err == nil && seq <= last
}

// readPurged reads the purge notices the workers' stream holds and returns
// had with them added (had itself when they add nothing).
func readPurged(ctx context.Context, workers jetstream.Stream, had purgedTenants) (purgedTenants, error) {
	info, err := workers.Info(ctx, jetstream.WithSubjectFilter(purgedSubjectRoot+">"))
	if err != nil {
		return had, fmt.Errorf("reading the purge notices: %w", err)
	}
	next, copied := had, false
	for subject := range info.State.Subjects {
		tenant, num, ok := strings.Cut(strings.TrimPrefix(subject, purgedSubjectRoot), ".")
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil || !events.ValidName(tenant) {
			continue // not a notice AnnouncePurge writes
		}
		if last, known := next[tenant]; known && last >= seq {
			continue
		}
		if !copied {
			next, copied = make(purgedTenants, len(had)+1), true
			maps.Copy(next, had)
		}
		next[tenant] = seq
	}
	return next, nil
}

// readPurged reads the purge notices into what the worker's partitions
// check (skips), saying at Warn when a read fails after one succeeded,
// and at Info when one succeeds again.
func (w *worker) readPurged(ctx context.Context) {
	had := w.purged.Load()
	var have purgedTenants
	if had != nil {
		have = *had
	}
	rctx, cancel := context.WithTimeout(ctx, max(w.t.heartbeat, 2*time.Second))
	next, err := readPurged(rctx, w.members.stream, have)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && !w.purgedFailing:
		w.log.Warn("the worker cannot read which tenants were purged; it delivers what it holds of a tenant purged meanwhile until it can", "err", err)
		w.purgedFailing = true
	case err == nil && w.purgedFailing:
		w.log.Info("the worker reads which tenants were purged again")
		w.purgedFailing = false
	}
	if err == nil && (had == nil || !maps.Equal(next, have)) {
		w.purged.Store(&next)
	}
}

// purgedCovers reports whether e is an event of a tenant purged since the
// worker started, numbered up to the sequence the purge reached.
func (w *worker) purgedCovers(e event.Event) bool {
	p := w.purged.Load()
	return p != nil && p.covers(e)
}
