// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A parked resource's record is taken out of the parking bucket with a
// purge, which leaves a marker on the key: the message that says "deleted"
// to whoever reads the bucket as a stream of changes. The bucket keeps it
// as long as it keeps records (30 days and more: parkingTTL), so a worker
// taking a partition over, which lists the partition's keys, read through
// one marker for every resource parked in that time (a soak review: 1,238
// after three 2-minute outages of one receiver). Message TTLs on the
// bucket would remove them, but a stream given message TTLs cannot have
// them taken away, and an earlier release then refuses to start on it; so
// the bucket is left as it is, and the partition's owner removes its
// partition's markers once they are markerAge old (sweepMarkers).
//
// What the markers are for, and so why an age: with History 1 a marker
// hides no earlier value (the record it replaced went when it was
// written), and every reader of the bucket here takes a missing key as a
// deleted one (load, claim). A marker matters only to a watcher that
// received the record and has not yet read past its marker: it would
// never learn of the delete. Nothing of the relay watches the bucket for
// long (a listing ends once it has read the keys there are); an hour is
// far beyond any listing, and beyond an operator's `nats kv watch` that
// fell behind.
//
// The removal is not KeyValue.PurgeDeletes: that lists the markers, then
// purges each key's subject whole, and a record written to the key
// between the two (a resource parked again at once, which the lanes do)
// would go with it, its events acknowledged and never delivered. Each
// marker is purged up to its own sequence instead, which leaves anything
// written after it. Claims (claim.<n>) are outside the partitions' keys
// and never touched.

// defaultMarkerAge is how old a marker is before it is removed.
const defaultMarkerAge = time.Hour

// sweepTimeout bounds one sweep: one not done by then goes on at the next.
const sweepTimeout = time.Minute

// marker is a record's purge (or delete) marker: its key and revision.
type marker struct {
	key      string
	revision uint64
}

// oldMarkers returns the markers of partition n's records written before
// before.
func (pk *parking) oldMarkers(ctx context.Context, n int, before time.Time) ([]marker, error) {
	w, err := pk.kv.WatchFiltered(ctx, []string{strconv.Itoa(n) + ".>"}, jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("reading the markers of partition %d: %w", n, err)
	}
	defer func() { _ = w.Stop() }()
	var out []marker
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reading the markers of partition %d: %w", n, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("reading the markers of partition %d: the watch ended", n)
			}
			if e == nil { // read to the end
				return out, nil
			}
			if op := e.Operation(); (op == jetstream.KeyValuePurge || op == jetstream.KeyValueDelete) && e.Created().Before(before) {
				out = append(out, marker{key: e.Key(), revision: e.Revision()})
			}
		}
	}
}

// purgeMarkers removes markers, each with nothing before it on its key
// and nothing after it: a record written to the key since stays. It
// returns how many it removed before it failed, if it did.
func (pk *parking) purgeMarkers(ctx context.Context, js jetstream.JetStream, ms []marker) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	sctx, cancel := context.WithTimeout(ctx, apiTimeout)
	st, err := js.Stream(sctx, "KV_"+pk.kv.Bucket())
	cancel()
	if err != nil {
		return 0, fmt.Errorf("opening the parking bucket: %w", err)
	}
	for i, m := range ms {
		pctx, cancel := context.WithTimeout(ctx, apiTimeout)
		err := st.Purge(pctx, jetstream.WithPurgeSubject("$KV."+pk.kv.Bucket()+"."+m.key), jetstream.WithPurgeSequence(m.revision+1))
		cancel()
		if err != nil {
			return i, fmt.Errorf("removing the marker of %s: %w", m.key, err)
		}
	}
	return len(ms), nil
}

// sweepMarkers removes the partition's markers older than markerAge. It
// runs while the partition is consumed, in its owner only.
func (p *partition) sweepMarkers() {
	w := p.w
	ctx, cancel := context.WithTimeout(p.ctx, sweepTimeout)
	defer cancel()
	go func() { // a hand-over does not wait for it
		select {
		case <-p.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	lctx, lcancel := context.WithTimeout(ctx, 2*apiTimeout)
	ms, err := w.parked.oldMarkers(lctx, p.n, w.now().Add(-w.t.markerAge))
	lcancel()
	n := 0
	if err == nil {
		n, err = w.parked.purgeMarkers(ctx, w.js, ms)
	}
	if n > 0 {
		w.log.Debug("removed the markers of parked resources' records taken out", "partition", p.n, "markers", n, "older_than", w.t.markerAge)
	}
	switch {
	case err != nil && p.isStopping():
	case err != nil:
		// Once until one succeeds: it is tried again every sweep.
		if w.sweepFailing.CompareAndSwap(false, true) {
			w.log.Warn("removing old markers from the parking bucket failed; hand-overs read through them until it succeeds (on an external NATS the worker needs $JS.API.STREAM.PURGE.KV_"+w.parked.kv.Bucket()+")",
				"partition", p.n, "err", err)
		}
	case n > 0: // a sweep that found nothing to remove proves nothing
		if w.sweepFailing.CompareAndSwap(true, false) {
			w.log.Info("removing old markers from the parking bucket works again", "partition", p.n)
		}
	}
}
