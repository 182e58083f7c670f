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
// sequence, and they are delivered. A worker renews its lease only at a
// heartbeat at which it read the notices (reconcile), and delivers
// nothing once its lease has run out, so the purge waits a lease (and a
// second) after the notice is stored: by then every worker that still
// delivers has read it. A notice stays in the stream for its memberTTL,
// and the purge writes it again as its wait ends, so that it outlives the
// stream's purge that follows; the worker keeps what it read until it
// stops, and one that starts later finds none of the tenant's events in
// the stream. Sink names begin with a letter or digit, so no sink's
// announcements share the subjects.
const purgedSubjectRoot = workersSubjectRoot + "_purged."

// AnnouncePurge tells every delivery worker, of every sink and process
// sharing the NATS stream, that tenant is purged and that none of its
// events numbered up to seq is to be delivered any more, and returns once
// every worker that has not read it has stopped delivering: a lease, and
// a second, after the notice was stored. A delivery already under way
// ends as it would have.
func (m *Manager) AnnouncePurge(ctx context.Context, tenant string, seq uint64) error {
	if m.shared == nil {
		return fmt.Errorf("telling the delivery workers that tenant %s is purged: the sinks' streams are not set up", tenant)
	}
	if !events.ValidName(tenant) {
		return fmt.Errorf("telling the delivery workers that tenant %q is purged: not a tenant name", tenant)
	}
	notice := func() error {
		if _, err := m.o.JS.Publish(ctx, purgedSubjectRoot+tenant+"."+strconv.FormatUint(seq, 10), nil); err != nil {
			return fmt.Errorf("telling the delivery workers that tenant %s is purged: %w", tenant, err)
		}
		return nil
	}
	if err := notice(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(m.shared.t.lease + time.Second):
	}
	// Written again as the wait ends, so that the notice lives its whole
	// memberTTL from now: the stream's purge, which follows, has that long
	// before a worker that starts meanwhile could miss both the notice and
	// the purge.
	return notice()
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

// withNotices returns had with the notices' tenants and sequences added
// (had itself when they add nothing), each notice a subject past
// purgedSubjectRoot; what is not a notice AnnouncePurge writes is passed
// over.
func withNotices(had purgedTenants, notices []string) purgedTenants {
	next, copied := had, false
	for _, notice := range notices {
		tenant, num, ok := strings.Cut(notice, ".")
		seq, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil || !events.ValidName(tenant) {
			continue
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
	return next
}

// takePurged adds the purge notices a heartbeat read to what the worker's
// partitions check (skips). What was read before stays: a notice ages out
// of the stream.
func (w *worker) takePurged(notices []string) {
	had := w.purged.Load()
	var have purgedTenants
	if had != nil {
		have = *had
	}
	next := withNotices(have, notices)
	if had == nil || !maps.Equal(next, have) {
		w.purged.Store(&next)
	}
}

// purgedCovers reports whether e is an event of a tenant purged since the
// worker started, numbered up to the sequence the purge reached.
func (w *worker) purgedCovers(e event.Event) bool {
	p := w.purged.Load()
	return p != nil && p.covers(e)
}
