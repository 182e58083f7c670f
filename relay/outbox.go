// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// OutboxRow is one committed event waiting for JetStream's acknowledgement.
type OutboxRow struct {
	Key   uint64 // commit order
	Event event.Event
	// Err is why the row could not be decoded (Event is then empty); Raw
	// is the row as stored, for quarantine.
	Err error
	Raw []byte
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
// commit order. A row that does not decode is returned with Err set, for
// the caller to quarantine: it must not stop the rows behind it.
func (s *Store) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	var rows []OutboxRow
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(rows) < limit; k, v = c.Next() {
			row := OutboxRow{Key: binary.BigEndian.Uint64(k)}
			if err := json.Unmarshal(v, &row.Event); err != nil {
				row.Event = event.Event{}
				row.Err = fmt.Errorf("decoding outbox row %d: %w", row.Key, err)
			} else if err := row.Event.Validate(); err != nil {
				row.Err = fmt.Errorf("outbox row %d is not a valid event: %w", row.Key, err)
			}
			if row.Err != nil {
				row.Raw = append([]byte(nil), v...)
			}
			rows = append(rows, row)
		}
		return nil
	})
	return rows, err
}

// Quarantined is an outbox row that could not be published, kept aside so
// that the rows behind it could be.
type Quarantined struct {
	Key    uint64    `json:"key"` // its place in commit order
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	Row    string    `json:"row"` // the row as stored
}

// QuarantineOutbox moves an outbox row to the quarantine bucket, with why.
func (s *Store) QuarantineOutbox(key uint64, reason string) error {
	moved := false
	err := s.commits.do(func(tx *bolt.Tx) error {
		moved = false // a commit may run this again
		v := tx.Bucket(bucketOutbox).Get(u64(key))
		if v == nil {
			return nil
		}
		q, err := json.Marshal(Quarantined{Key: key, Time: s.now().UTC(), Reason: reason, Row: string(v)})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketQuarant).Put(u64(key), q); err != nil {
			return err
		}
		moved = true
		return tx.Bucket(bucketOutbox).Delete(u64(key))
	})
	if err != nil {
		return fmt.Errorf("quarantining outbox row %d: %w", key, err)
	}
	if moved {
		s.depth.Add(-1)
	}
	return nil
}

// QuarantinedRows returns up to limit quarantined rows after key after, in
// commit order.
func (s *Store) QuarantinedRows(after uint64, limit int) ([]Quarantined, error) {
	out := []Quarantined{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQuarant).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var q Quarantined
			if err := json.Unmarshal(v, &q); err != nil {
				q = Quarantined{Key: binary.BigEndian.Uint64(k), Reason: "the quarantine record does not decode: " + err.Error(), Row: string(v)}
			}
			out = append(out, q)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the outbox quarantine: %w", err)
	}
	return out, nil
}

// QuarantineCount returns how many outbox rows are in quarantine.
func (s *Store) QuarantineCount() (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketQuarant).Stats().KeyN
		return nil
	})
	return n, err
}

// DeleteOutbox removes published events from the outbox; keys already
// gone are skipped.
func (s *Store) DeleteOutbox(keys []uint64) error {
	var deleted int
	err := s.commits.do(func(tx *bolt.Tx) error {
		deleted = 0 // a commit may run this again
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
