// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scimrelay/scimrelay/relay/events"
)

// A tenant's purge deletes its events from the stream, but not the ones a
// worker has taken already: waiting in a resource's lane, or for a retry
// in memory. So the purge tells the workers, by a notice in the workers'
// stream whose subject says the tenant, the last sequence its events
// reached and the event stream's last sequence when its events were all
// in it (purgedSubjectRoot<tenant>.<sequence>.<stream sequence>), and
// each worker reads the notices at every heartbeat and from then on
// delivers none of the tenant's events numbered up to the one and stored
// up to the other: they are settled as "purged". A tenant added again
// under the name numbers its events after that sequence, and they are
// delivered; so are the events of a tenant of the name on another front
// end sharing the stream (its own data file numbers them from 1), stored
// after the purge. Before the stream sequence was in the notice, such a
// front end's events numbered up to the purged sequence were settled as
// purged by every running worker. A worker renews its lease only at a
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
// events numbered up to seq and stored up to the event stream's last
// sequence now is to be delivered any more (a tenant of the name on
// another front end numbers its own), and returns once
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
	// The caller has every event of the tenant in the stream by now.
	st, err := m.o.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("telling the delivery workers that tenant %s is purged: reading the event stream: %w", tenant, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("telling the delivery workers that tenant %s is purged: reading the event stream: %w", tenant, err)
	}
	subject := purgedSubjectRoot + tenant + "." + strconv.FormatUint(seq, 10) + "." + strconv.FormatUint(info.State.LastSeq, 10)
	notice := func() error {
		if _, err := m.o.JS.Publish(ctx, subject, nil); err != nil {
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

// purgedTenants is what a worker read of the purge notices: how far each
// purged tenant's purge reached. Replaced whole, never changed.
type purgedTenants map[string]purgeReach

// purgeReach is how far a tenant's purges reached: the last sequence of
// the tenant's events, and the event stream's last sequence then
// (math.MaxUint64 from a notice of an earlier release, which said only
// the first). Of two purges of a name, each the furthest: the stream's
// purge deleted every event of the name stored before it.
type purgeReach struct{ seq, stream uint64 }

// covers reports whether e, stored at stream sequence sseq (0: not
// known), is an event of a purged tenant, numbered up to the sequence its
// purge reached and stored before it.
func (p purgedTenants) covers(e event.Event, sseq uint64) bool {
	reach, ok := p[events.Tenant(e)]
	if !ok {
		return false
	}
	seq, err := events.Sequence(e)
	return err == nil && seq <= reach.seq && sseq <= reach.stream
}

// withNotices returns had with the notices' tenants and reaches added
// (had itself when they add nothing), each notice a subject past
// purgedSubjectRoot; what is not a notice AnnouncePurge writes is passed
// over.
func withNotices(had purgedTenants, notices []string) purgedTenants {
	next, copied := had, false
	for _, notice := range notices {
		reach := purgeReach{stream: math.MaxUint64}
		tenant, nums, ok := strings.Cut(notice, ".")
		num, streamNum, bounded := strings.Cut(nums, ".")
		var err error
		reach.seq, err = strconv.ParseUint(num, 10, 64)
		if bounded && err == nil {
			reach.stream, err = strconv.ParseUint(streamNum, 10, 64)
		}
		if !ok || err != nil || !events.ValidName(tenant) {
			continue
		}
		if known, ok := next[tenant]; ok {
			if known.seq >= reach.seq && known.stream >= reach.stream {
				continue
			}
			reach = purgeReach{seq: max(known.seq, reach.seq), stream: max(known.stream, reach.stream)}
		}
		if !copied {
			next, copied = make(purgedTenants, len(had)+1), true
			maps.Copy(next, had)
		}
		next[tenant] = reach
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

// purgedCovers reports whether e, stored at stream sequence sseq, is an
// event of a tenant purged since the worker started, within the purge's
// reach.
func (w *worker) purgedCovers(e event.Event, sseq uint64) bool {
	p := w.purged.Load()
	return p != nil && p.covers(e, sseq)
}
