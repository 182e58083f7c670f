// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tidwall/gjson"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// Purging a tenant deletes what the data file holds under the name of a
// tenant no longer configured: its users, groups, memberships and every
// index (its bucket under tenants), its stored tokens and OAuth clients
// whatever their state, the NATS subscribers scoped to it, its entries in
// the provisioning log, and its events in the outbox and the quarantine,
// which are then never published.
//
// A purge is marked in meta ("purging") from its first transaction to its
// last (BeginPurge, EndPurge). While the mark is there a reload or a start
// that configures the name is refused (ErrBeingPurged), the provisioning
// log files no entry of it, and the name counts as holding something, so
// that a purge cut short (a crash, NATS away for the stream's part) is
// finished by running it again. Everything is deleted purgeChunk keys or
// rows per transaction, through the group commit like any write, so that
// the other tenants' writes keep flowing beside a purge of a million users.
//
// One thing stays of the tenant: the last sequence its events reached,
// which is no one's personal data, in the bucket purged under its name.
// It is put there in the transaction that deletes the tenant's counter (a
// purge cut short and resumed puts the higher of the two), and EndPurge
// puts the name there with 0 if its tenant had no event. A tenant
// configured under the name again continues after it (continueSequence),
// so that a subscriber that tells events apart by tenant and sequence
// never takes the new tenant's for the old one's. Until then the
// provisioning log files no entry of the name, as while it was being
// purged (purgedAway).

// keyPurging is meta's record of the tenants being purged: a JSON list of
// their names.
var keyPurging = []byte("purging")

// purgeChunk is how many keys one transaction of a purge deletes at most,
// and how many rows of the buckets tenants share (outbox, quarantine,
// provisioning log) it reads looking for the tenant's: a transaction holds
// the store's one writer, and its dirty pages, for one chunk at a time. A
// variable only so that a test can cross chunk boundaries with a few users.
var purgeChunk = 10_000

// Errors of a purge's start, and of a configuration naming a tenant being
// purged.
var (
	// ErrTenantConfigured: the name is a tenant relay.yaml configures; it
	// is removed (and the relay reloaded) before it is purged.
	ErrTenantConfigured = errors.New("it is a configured tenant")
	// ErrNothingToPurge: the data file holds nothing under the name: no
	// tenant of that name was ever configured, or its purge is done.
	ErrNothingToPurge = errors.New("the data file holds nothing under that name")
	// ErrBeingPurged: a configuration names a tenant whose purge has not
	// finished.
	ErrBeingPurged = errors.New("being purged")
)

// Purged counts what a purge deleted from the data file.
type Purged struct {
	Users       int `json:"users"`
	Groups      int `json:"groups"`
	Memberships int `json:"memberships"`
	// Keys counts every key deleted from the tenant's buckets: resources,
	// memberships, index keys and counters.
	Keys int `json:"keys"`
	// Tokens and Clients count the stored SCIM tokens and OAuth clients,
	// live, expired or revoked.
	Tokens  int `json:"tokens"`
	Clients int `json:"clients"`
	// Subscribers names the NATS subscribers whose records it deleted
	// (those scoped to the tenant that nothing removed before).
	Subscribers []string `json:"subscribers,omitempty"`
	LogEntries  int      `json:"log_entries"`
	// Outbox counts the events deleted from the outbox: never published,
	// or published and kept there a while (PublisherOptions.KeepFor).
	Outbox      int `json:"outbox_events"`
	Quarantined int `json:"quarantined_events"`
}

// purgingTenants returns the tenants meta marks as being purged.
func purgingTenants(tx *bolt.Tx) []string {
	var names []string
	if v := tx.Bucket(bucketMeta).Get(keyPurging); v != nil {
		_ = json.Unmarshal(v, &names) // written by markPurging alone
	}
	return names
}

// markPurging records the tenants being purged in meta.
func markPurging(tx *bolt.Tx, names []string) error {
	meta := tx.Bucket(bucketMeta)
	if len(names) == 0 {
		return meta.Delete(keyPurging)
	}
	v, err := json.Marshal(names)
	if err != nil {
		return err
	}
	return meta.Put(keyPurging, v)
}

// refuseBeingPurged refuses configuring tenants that are being purged.
func refuseBeingPurged(tx *bolt.Tx, tenants map[string]*tenant) error {
	var errs []error
	for _, name := range purgingTenants(tx) {
		if _, ok := tenants[name]; ok {
			errs = append(errs, fmt.Errorf("tenant %s: %w (scimrelay tenant purge %s): configure it once the purge has finished; a purge that stopped half-way finishes when it is run again", name, ErrBeingPurged, name))
		}
	}
	return errors.Join(errs...)
}

// Purging returns the tenants whose purge began and has not finished.
func (s *Store) Purging() ([]string, error) {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		names = purgingTenants(tx)
		return nil
	})
	return names, err
}

// BeginPurge marks the tenant name as being purged. It refuses a tenant
// that is configured (ErrTenantConfigured), and a name under which the
// data file holds nothing (ErrNothingToPurge), not even an unfinished
// purge. Marking a name marked already changes nothing.
func (s *Store) BeginPurge(_ context.Context, name string) error {
	if !events.ValidName(name) {
		// No tenant could have it; and a name with a wildcard would be a
		// filter of other tenants' events.
		return fmt.Errorf("purging tenant %q: %w", scim.Truncate(name, 64), ErrNothingToPurge)
	}
	err := s.commits.do(func(tx *bolt.Tx) error {
		// Recorded is what the last reload's transaction configured: a
		// reload adding the name commits before this one (and is refused
		// here), or after it (and refuses the name: SetTenants). So the
		// record never holds a name being purged.
		recorded, _ := recordedTenants(tx)
		if s.HasTenant(name) || slices.Contains(recorded, name) {
			return ErrTenantConfigured
		}
		marked := purgingTenants(tx)
		if slices.Contains(marked, name) {
			return nil
		}
		holds, err := s.holdsAnything(tx, name)
		if err != nil {
			return err
		}
		if !holds {
			return ErrNothingToPurge
		}
		return markPurging(tx, append(marked, name))
	})
	if err != nil {
		return fmt.Errorf("purging tenant %s: %w", name, err)
	}
	return nil
}

// holdsAnything reports whether the data file holds anything under name:
// its bucket (a tenant of that name was configured), a credential or a
// subscriber scoped to it.
func (s *Store) holdsAnything(tx *bolt.Tx, name string) (bool, error) {
	if tx.Bucket(bucketTenants).Bucket([]byte(name)) != nil {
		return true, nil
	}
	s.tokens.mu.RLock()
	for _, st := range s.tokens.byID {
		if st.Tenant == name {
			s.tokens.mu.RUnlock()
			return true, nil
		}
	}
	s.tokens.mu.RUnlock()
	subs, err := subscribersOf(tx, name)
	return len(subs) > 0, err
}

// subscribersOf returns the names of the stored subscribers scoped to the
// tenant name, in name order (the bucket's keys).
func subscribersOf(tx *bolt.Tx, name string) ([]string, error) {
	var out []string
	err := tx.Bucket(bucketSubscribers).ForEach(func(k, v []byte) error {
		var sub Subscriber
		if err := json.Unmarshal(v, &sub); err != nil {
			return fmt.Errorf("decoding subscriber %s: %w", k, err)
		}
		if sub.Tenant() == name {
			out = append(out, sub.Name)
		}
		return nil
	})
	return out, err
}

// Purge deletes what the data file holds under a tenant name that
// BeginPurge marked, but the mark (EndPurge removes it): credentials and
// subscribers first, then the tenant's events in the outbox and the
// quarantine, its provisioning log entries (log, when not nil, is told
// what they took), and its bucket. progress, when not nil, is told the
// counts after each transaction. Run again after it stopped half-way (ctx
// ended, an error), it deletes what is left.
func (s *Store) Purge(ctx context.Context, name string, log *RequestLog, progress func(Purged)) (Purged, error) {
	p := &purge{s: s, name: name, progress: progress}
	var marked bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		marked = slices.Contains(purgingTenants(tx), name)
		return nil
	}); err != nil {
		return Purged{}, err
	}
	if !marked {
		return Purged{}, fmt.Errorf("purging tenant %s: its purge was not begun", name)
	}
	for _, step := range []struct {
		what string
		do   func(ctx context.Context) error
	}{
		{"its credentials", p.credentials},
		{"its subscribers", p.subscribers},
		{"its events in the outbox", p.outbox},
		{"its events in the quarantine", p.quarantine},
		{"its provisioning log entries", func(ctx context.Context) error { return p.log(ctx, log) }},
		{"its users, groups and indexes", p.resources},
	} {
		if err := step.do(ctx); err != nil {
			return p.done, fmt.Errorf("purging tenant %s: deleting %s: %w", name, step.what, err)
		}
	}
	return p.done, nil
}

// EndPurge removes the mark of a purge whose data is all deleted: the name
// is free. meta's record of the configured tenants does not hold it
// (BeginPurge refused a name it held, and nothing records a name marked).
func (s *Store) EndPurge(_ context.Context, name string) error {
	err := s.commits.do(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTenants).Bucket([]byte(name)) != nil {
			return errors.New("its bucket is still there")
		}
		if err := keepSequence(tx, name, 0); err != nil {
			return err
		}
		return markPurging(tx, slices.DeleteFunc(purgingTenants(tx), func(n string) bool { return n == name }))
	})
	if err != nil {
		return fmt.Errorf("ending the purge of tenant %s: %w", name, err)
	}
	return nil
}

// PurgedSequence returns the last sequence the events of tenant name
// reached, once Purge has deleted its bucket: what the purge tells the
// delivery workers (sinks.Manager.AnnouncePurge), and where a tenant
// added again under the name goes on numbering. 0 when the name's events
// never had one.
func (s *Store) PurgedSequence(name string) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketPurged).Get([]byte(name)); len(v) == 8 {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return seq, err
}

// purge is one run of Purge.
type purge struct {
	s        *Store
	name     string
	progress func(Purged)
	done     Purged
}

// chunk commits fn, one chunk of the purge, and reports the counts. fn may
// run more than once in its commit (committer), so it counts into the
// Purged it is given, which starts empty each time; once committed, its
// counts are added to the purge's.
func (p *purge) chunk(ctx context.Context, fn func(tx *bolt.Tx, got *Purged) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var got Purged
	if err := p.s.commits.do(func(tx *bolt.Tx) error {
		got = Purged{}
		return fn(tx, &got)
	}); err != nil {
		return err
	}
	d := &p.done
	d.Users += got.Users
	d.Groups += got.Groups
	d.Memberships += got.Memberships
	d.Keys += got.Keys
	d.Tokens += got.Tokens
	d.Clients += got.Clients
	d.Subscribers = append(d.Subscribers, got.Subscribers...)
	d.LogEntries += got.LogEntries
	d.Outbox += got.Outbox
	d.Quarantined += got.Quarantined
	if p.progress != nil {
		out := *d
		out.Subscribers = slices.Clone(d.Subscribers)
		p.progress(out)
	}
	return nil
}

// credentials deletes the tenant's stored tokens and OAuth clients,
// whatever their state, from the file and the cache. Holding writeMu, no
// flush of last uses writes one back.
func (p *purge) credentials(ctx context.Context) error {
	c := p.s.tokens
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var ids []string
	c.mu.RLock()
	for id, st := range c.byID {
		if st.Tenant == p.name {
			ids = append(ids, id)
		}
	}
	c.mu.RUnlock()
	slices.Sort(ids)
	for part := range slices.Chunk(ids, purgeChunk) {
		err := p.chunk(ctx, func(tx *bolt.Tx, got *Purged) error {
			b := tx.Bucket(bucketTokens)
			for _, id := range part {
				if err := b.Delete([]byte(id)); err != nil {
					return err
				}
				if c.byID[id].Kind == KindClient {
					got.Clients++
				} else {
					got.Tokens++
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		c.mu.Lock()
		for _, id := range part {
			if st := c.byID[id]; len(st.Hash) == sha256.Size {
				delete(c.byHash, [32]byte(st.Hash))
			}
			delete(c.byID, id)
			delete(c.used, id)
		}
		c.mu.Unlock()
	}
	return nil
}

// subscribers deletes the records of the NATS subscribers scoped to the
// tenant that are still stored. The admin API removes them from the
// embedded server first (their connections and consumers); with an
// external NATS there is nothing of them there.
func (p *purge) subscribers(ctx context.Context) error {
	return p.chunk(ctx, func(tx *bolt.Tx, got *Purged) error {
		names, err := subscribersOf(tx, p.name)
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := tx.Bucket(bucketSubscribers).Delete([]byte(name)); err != nil {
				return err
			}
		}
		got.Subscribers = names
		return nil
	})
}

// outbox deletes the tenant's events from the outbox. None is added
// after the purge began (the tenant is not configured), so the rows read
// end at the last one there was.
func (p *purge) outbox(ctx context.Context) error {
	return p.sweep(ctx, sweep{
		bucket: bucketOutbox,
		mine:   func(_, v []byte) bool { return rowTenant(v) == p.name },
		count:  func(got *Purged, _, _ []byte) { got.Outbox++ },
		committed: func(got Purged) {
			p.s.depth.Add(-int64(got.Outbox))
		},
	})
}

// quarantine deletes the tenant's events from the quarantine; a row goes
// there from the outbox alone, so after the outbox none of the tenant's
// comes. A row that does not decode names no tenant, and stays.
func (p *purge) quarantine(ctx context.Context) error {
	return p.sweep(ctx, sweep{
		bucket: bucketQuarant,
		mine: func(_, v []byte) bool {
			var q Quarantined
			return json.Unmarshal(v, &q) == nil && rowTenant([]byte(q.Row)) == p.name
		},
		count: func(got *Purged, _, _ []byte) { got.Quarantined++ },
	})
}

// log deletes the tenant's entries from the provisioning log, and tells
// l, when not nil, what they took, having made it forget the tenant's
// summaries not yet written. None is filed after the purge began
// (RequestLog.write), so the entries read end at the last one there was.
func (p *purge) log(ctx context.Context, l *RequestLog) error {
	if l != nil {
		if err := l.dropPending(ctx, p.name); err != nil {
			return err
		}
	}
	var freed map[string]int64 // by share, in the chunk being committed
	return p.sweep(ctx, sweep{
		bucket: bucketProvLog,
		mine:   func(_, v []byte) bool { return gjson.GetBytes(v, "tenant").String() == p.name },
		begin:  func() { freed = map[string]int64{} },
		count: func(got *Purged, k, v []byte) {
			got.LogEntries++
			freed[shareOf(v)] += entrySize(k, v)
		},
		committed: func(Purged) {
			if l != nil && len(freed) > 0 {
				l.forget(freed)
			}
		},
	})
}

// sweep is a purge's pass over a bucket the tenants share.
type sweep struct {
	bucket []byte
	// mine says whether a row is the tenant's.
	mine func(k, v []byte) bool
	// count counts a row deleted into its chunk's counts; begin, when not
	// nil, is called as each run of a chunk's transaction begins, and
	// committed, when not nil, once the chunk has committed.
	count     func(got *Purged, k, v []byte)
	begin     func()
	committed func(Purged)
}

// sweep deletes the rows of w's bucket that are the tenant's, from its
// first to the last it held when the sweep began, reading purgeChunk rows
// per transaction.
func (p *purge) sweep(ctx context.Context, w sweep) error {
	var last []byte
	if err := p.s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(w.bucket); b != nil {
			k, _ := b.Cursor().Last()
			last = bytes.Clone(k)
		}
		return nil
	}); err != nil || last == nil {
		return err
	}
	var after []byte
	for {
		var next []byte
		var got Purged
		err := p.chunk(ctx, func(tx *bolt.Tx, chunk *Purged) error {
			next = nil
			if w.begin != nil {
				w.begin()
			}
			b := tx.Bucket(w.bucket)
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			var keys [][]byte
			for n := 0; k != nil && n < purgeChunk && bytes.Compare(k, last) <= 0; k, v = c.Next() {
				n++
				next = k
				if w.mine(k, v) {
					keys = append(keys, bytes.Clone(k))
					w.count(chunk, k, v)
				}
			}
			if k == nil || bytes.Compare(k, last) > 0 {
				next = nil // the end
			}
			next = bytes.Clone(next)
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			got = *chunk
			return nil
		})
		if err != nil {
			return err
		}
		if w.committed != nil {
			w.committed(got)
		}
		if next == nil {
			return nil
		}
		after = next
	}
}

// resources deletes the tenant's bucket: the keys of each of its buckets
// (users, groups, memberships, indexes, counters), purgeChunk per
// transaction, each bucket once empty, and the tenant's bucket last.
func (p *purge) resources(ctx context.Context) error {
	for {
		gone := false
		err := p.chunk(ctx, func(tx *bolt.Tx, got *Purged) error {
			gone = false
			root := tx.Bucket(bucketTenants)
			tb := root.Bucket([]byte(p.name))
			if tb == nil {
				gone = true
				return nil
			}
			// Before its counter goes, in the same transaction.
			if err := keepSequence(tx, p.name, lastSequence(tb)); err != nil {
				return err
			}
			var names [][]byte
			if err := tb.ForEachBucket(func(k []byte) error {
				names = append(names, bytes.Clone(k))
				return nil
			}); err != nil {
				return err
			}
			budget := purgeChunk
			for _, name := range names {
				b := tb.Bucket(name)
				n, err := deleteFirst(b, budget)
				if err != nil {
					return err
				}
				switch {
				case bytes.Equal(name, bucketUsers):
					got.Users += n
				case bytes.Equal(name, bucketGroups):
					got.Groups += n
				case bytes.Equal(name, bucketMembers):
					got.Memberships += n
				}
				got.Keys += n
				if budget -= n; budget == 0 {
					return nil
				}
				// Empty: deleting it costs a page or two.
				if err := tb.DeleteBucket(name); err != nil {
					return err
				}
			}
			gone = true
			return root.DeleteBucket([]byte(p.name))
		})
		if err != nil || gone {
			return err
		}
	}
}

// lastSequence returns the last event sequence of the tenant whose bucket
// is tb: 0 before its first event, and once its counter is deleted.
func lastSequence(tb *bolt.Bucket) uint64 {
	if c := tb.Bucket(bucketCounters); c != nil {
		if v := c.Get(keySequence); len(v) == 8 {
			return binary.BigEndian.Uint64(v)
		}
	}
	return 0
}

// keepSequence records in the bucket purged that the tenant name is
// purged, and that its events reached seq, unless it records a higher
// sequence already.
func keepSequence(tx *bolt.Tx, name string, seq uint64) error {
	b := tx.Bucket(bucketPurged)
	if v := b.Get([]byte(name)); len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
		return nil
	}
	return b.Put([]byte(name), u64(seq))
}

// continueSequence makes the events of tenant name, configured with its
// bucket tb, continue after the last sequence a purged tenant of the name
// reached, and forgets the purged one: the name is configured again.
func continueSequence(tx *bolt.Tx, tb *bolt.Bucket, name string) error {
	b := tx.Bucket(bucketPurged)
	v := b.Get([]byte(name))
	if v == nil {
		return nil
	}
	if len(v) == 8 && binary.BigEndian.Uint64(v) > lastSequence(tb) {
		if err := tb.Bucket(bucketCounters).Put(keySequence, u64(binary.BigEndian.Uint64(v))); err != nil {
			return err
		}
	}
	return b.Delete([]byte(name))
}

// purgedAway reports whether the tenant name is being purged (purging is
// purgingTenants(tx)), or was purged and is not configured since (the
// bucket purged holds the name: prepare deletes it from there whenever it
// configures the name). The provisioning log files no entry of it: one
// that comes after the purge began (a request answered before the
// tenant's removal, a minute's summary of reads written once its minute
// is over) was made before, and is the old tenant's; a request in the
// name of a tenant that is not configured is filed under no tenant.
func purgedAway(tx *bolt.Tx, purging []string, name string) bool {
	return slices.Contains(purging, name) || tx.Bucket(bucketPurged).Get([]byte(name)) != nil
}

// deleteFirst deletes up to limit keys of b from its first, and says how
// many.
func deleteFirst(b *bolt.Bucket, limit int) (int, error) {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// rowTenant returns the tenant of an outbox row, or of one quarantined:
// the second token of its message's subject, or, in a row of layout 2 (a
// structured CloudEvent in JSON), its tenant attribute; "" for a row
// that names none.
func rowTenant(v []byte) string {
	if events.IsMessage(v) {
		subject, err := events.MessageSubject(v)
		if err != nil {
			return ""
		}
		return events.PatternTenant(subject)
	}
	return gjson.GetBytes(v, events.ExtTenant).String()
}
