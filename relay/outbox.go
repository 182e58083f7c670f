// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// OutboxRow is one committed event waiting for JetStream's acknowledgement.
type OutboxRow struct {
	Key   uint64 // commit order
	Event event.Event
}

// emit builds an event about rec and appends it to the outbox in the same
// transaction. It advances the tenant's sequence and rec's subjectseq; the
// caller writes rec afterwards.
func (w *txWrite) emit(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, rec *record, a events.Action, changes []scim.Change, member *events.Member) error {
	seq, err := increment(tb.Bucket(bucketCounters), keySequence)
	if err != nil {
		return err
	}
	rec.subjectSeq++
	if member != nil && member.UserName == "" && member.DisplayName == "" {
		m, err := describeMember(tb, *member)
		if err != nil {
			return err
		}
		member = &m
	}
	data := events.Data{
		Tenant:       t.name,
		ResourceType: rec.res.Type.Name,
		ID:           rec.res.ID(),
		ExternalID:   rec.res.ExternalID(),
		Resource:     w.store.eventResource(t.name, rec.res),
		Member:       member,
	}
	for _, c := range changes {
		ec := events.Change{Path: c.Path}
		if c.Old != nil {
			if ec.Old, err = json.Marshal(c.Old); err != nil {
				return err
			}
		}
		if c.New != nil {
			if ec.New, err = json.Marshal(c.New); err != nil {
				return err
			}
		}
		data.Changes = append(data.Changes, ec)
	}
	e, err := events.New(events.Meta{
		Tenant:     t.name,
		Action:     a,
		ResourceID: rec.res.ID(),
		Sequence:   seq,
		SubjectSeq: rec.subjectSeq,
		Time:       w.now,
		BaseURL:    w.store.publicURL,
	}, data)
	if err != nil {
		return err
	}
	payload, err := events.MarshalStructured(e)
	if err != nil {
		return err
	}
	key, err := increment(tx.Bucket(bucketMeta), keyOutboxCounter)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketOutbox).Put(u64(key), payload); err != nil {
		return err
	}
	w.eventIDs = append(w.eventIDs, e.ID())
	return nil
}

// eventResource is the resource as events carry it: its canonical JSON,
// with meta.location when a public URL is configured, never with a
// group's members or a user's derived groups.
func (s *Store) eventResource(tenant string, r *scim.Resource) json.RawMessage {
	out := &scim.Resource{Type: r.Type, Attrs: make(map[string]any, len(r.Attrs))}
	for k, v := range r.Attrs {
		if k != "members" && k != "groups" && k != "meta" {
			out.Attrs[k] = v
		}
	}
	m := r.Meta()
	if s.publicURL != "" {
		m.Location = scim.Location(scim.TenantURL(s.publicURL, tenant), r.Type, r.ID())
	}
	out.SetMeta(m)
	return out.AppendJSON(nil)
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

// increment adds one to a counter and returns the new value.
func increment(b *bolt.Bucket, key []byte) (uint64, error) {
	var n uint64
	if v := b.Get(key); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	return n, b.Put(key, u64(n))
}

// ReadOutbox returns up to limit committed events after key after, in
// commit order.
func (s *Store) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	var rows []OutboxRow
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(rows) < limit; k, v = c.Next() {
			var e event.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding outbox row %d: %w", binary.BigEndian.Uint64(k), err)
			}
			rows = append(rows, OutboxRow{Key: binary.BigEndian.Uint64(k), Event: e})
		}
		return nil
	})
	return rows, err
}

// DeleteOutbox removes published events from the outbox; keys already
// gone are skipped.
func (s *Store) DeleteOutbox(keys []uint64) error {
	var deleted int
	err := s.db.Batch(func(tx *bolt.Tx) error {
		deleted = 0 // Batch may run this again
		c := tx.Bucket(bucketOutbox).Cursor()
		for _, k := range keys {
			key := u64(k)
			if found, _ := c.Seek(key); found == nil || !bytes.Equal(found, key) {
				continue
			}
			if err := c.Delete(); err != nil {
				return err
			}
			deleted++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deleting published events from the outbox: %w", err)
	}
	s.depth.Add(-int64(deleted))
	return nil
}

// OutboxDepth returns how many events wait to be published. It reads a
// counter kept beside the outbox, so a metric can call it on every scrape
// however long NATS has been away; the error is always nil.
func (s *Store) OutboxDepth() (int, error) {
	return int(s.depth.Load()), nil
}
