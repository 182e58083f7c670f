// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// OutboxRow is one committed event waiting for JetStream's acknowledgement.
type OutboxRow struct {
	Key uint64 // commit order
	// Msg is the message to publish, as it was encoded when the change was
	// written; ID is its event id (and Nats-Msg-Id), Time its commit time.
	Msg  *nats.Msg
	ID   string
	Time time.Time
	// Err is why the row cannot be published (Msg is then nil).
	Err error
}

// Event decodes the row's CloudEvent, as a subscriber would.
func (r OutboxRow) Event() (event.Event, error) {
	if r.Msg == nil {
		return event.Event{}, fmt.Errorf("outbox row %d: %w", r.Key, r.Err)
	}
	return events.FromMsg(r.Msg.Subject, r.Msg.Header, r.Msg.Data)
}

// emit builds an event about rec in the transaction and appends it to the
// outbox. It advances the tenant's sequence and rec's subjectseq; the
// caller writes rec afterwards. Creates encode their event before the
// transaction instead (prepareCreate) and only append it here (appendEvent).
func (w *txWrite) emit(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, rec *record, a events.Action, changes []scim.Change, member *events.Member) error {
	return w.emitAs(tx, tb, t, rec, w.store.eventResource(t.name, rec.res, nil), a, changes, member)
}

// emitMembers emits a member event for each change, all carrying the group
// as it is after the change, as member events carry it
// (memberEventResource), encoded once: a member PATCH makes one event per
// member.
func (w *txWrite) emitMembers(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, rec *record, changes []memberChange) error {
	if len(changes) == 0 {
		return nil
	}
	resource := w.store.memberEventResource(t.name, rec.res)
	for _, c := range changes {
		action := events.GroupMemberAdded
		if !c.added {
			action = events.GroupMemberRemoved
		}
		if err := w.emitAs(tx, tb, t, rec, resource, action, nil, &c.member); err != nil {
			return err
		}
	}
	return nil
}

// emitAs is emit with the resource's JSON as events carry it
// (eventResource) already encoded.
func (w *txWrite) emitAs(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, rec *record, resource json.RawMessage, a events.Action, changes []scim.Change, member *events.Member) error {
	if member != nil && member.UserName == "" && member.DisplayName == "" {
		m, err := describeMember(tb, *member)
		if err != nil {
			return err
		}
		member = &m
	}
	d, err := w.store.encodeEvent(t.name, rec.res, resource, a, w.now, w.ext, changes, member)
	if err != nil {
		return err
	}
	rec.subjectSeq++
	return w.appendEvent(tx, tb, d, rec.subjectSeq)
}

// encodeEvent encodes the event of a change to r, whose JSON as events
// carry it is resource; ext are its further extension attributes (the
// request's trace context).
func (s *Store) encodeEvent(tenant string, r *scim.Resource, resource json.RawMessage, a events.Action, now time.Time, ext map[string]string, changes []scim.Change, member *events.Member) (*events.Draft, error) {
	data := events.Data{
		Tenant:       tenant,
		ResourceType: r.Type.Name,
		ID:           r.ID(),
		ExternalID:   r.ExternalID(),
		Resource:     resource,
		Member:       member,
	}
	for _, c := range changes {
		ec := events.Change{Path: c.Path}
		// As the resource is written (scim.AppendValue): &, < and > as
		// they are, where json.Marshal wrote each as six bytes, and the
		// event of a change of such a value grew six times its size.
		if c.Old != nil {
			ec.Old = scim.AppendValue(nil, c.Old)
		}
		if c.New != nil {
			ec.New = scim.AppendValue(nil, c.New)
		}
		data.Changes = append(data.Changes, ec)
	}
	return events.Encode(events.Meta{
		Tenant:     tenant,
		Action:     a,
		ResourceID: r.ID(),
		Time:       now,
		BaseURL:    s.publicURL,
		Extensions: ext,
	}, data)
}

// appendEvent gives an encoded event the tenant's next sequence number and
// subjectSeq, and appends it to the outbox.
func (w *txWrite) appendEvent(tx *bolt.Tx, tb *bolt.Bucket, d *events.Draft, subjectSeq uint64) error {
	if limit := w.store.maxEvent.Load(); limit > 0 && int64(len(d.Row())) > limit {
		// The bus would refuse the event for good, after the change was
		// answered: a change whose event cannot be delivered is refused.
		// An error, not w.refuse: the change is written already, and the
		// transaction must not commit it (the committer reruns the writes
		// that shared it without this one).
		return scim.Errorf(scim.ErrPayloadTooLarge, "the change is too large for its event: %d bytes where the event bus takes %d (an event carries the resource, and the old and new values of what changed); send smaller values", len(d.Row()), limit)
	}
	seq, err := increment(tb.Bucket(bucketCounters), keySequence)
	if err != nil {
		return err
	}
	d.SetSequences(seq, subjectSeq)
	key, err := increment(tx.Bucket(bucketMeta), keyOutboxCounter)
	if err != nil {
		return err
	}
	if err := appending(tx.Bucket(bucketOutbox)).Put(u64(key), d.Row()); err != nil {
		return err
	}
	w.eventIDs = append(w.eventIDs, d.ID())
	return nil
}

// eventHeadroom is what an event's message may gain at publishing, besides
// the row the outbox stores (JetStream's expectation headers).
const eventHeadroom = 4 << 10

// LimitEvents sets the largest message the event bus takes (NATS's
// max_payload): a change whose event would be larger is refused, 413,
// and not committed. 0 removes the limit.
func (s *Store) LimitEvents(maxPayload int64) {
	s.maxEvent.Store(max(maxPayload-eventHeadroom, 0))
}

// memberGroupAttrs are the attributes of a group its member events carry.
var memberGroupAttrs = [...]string{"id", "externalId", "displayName", "meta"}

// memberEventResource is a group as its member events carry it: its core
// attributes, without its extensions. A member event is one per member,
// and a group's extension of any size, copied into each, made a PATCH of
// 15 KB write 300 MB of events (a review). group.created and
// group.updated carry the extensions.
func (s *Store) memberEventResource(tenant string, g *scim.Resource) json.RawMessage {
	core := &scim.Resource{Type: g.Type, Attrs: make(map[string]any, len(memberGroupAttrs))}
	for _, k := range memberGroupAttrs {
		if v, ok := g.Attrs[k]; ok {
			core.Attrs[k] = v
		}
	}
	return s.eventResource(tenant, core, nil)
}

// eventResource is the resource as events carry it: its canonical JSON,
// with meta.location when a public URL is configured, never with a
// group's members or a user's derived groups. stored, when not nil, is r
// as its record stores it (r.AppendJSON), taken as is where the two agree.
func (s *Store) eventResource(tenant string, r *scim.Resource, stored json.RawMessage) json.RawMessage {
	_, members := r.Attrs["members"]
	_, groups := r.Attrs["groups"]
	if s.publicURL == "" && !members && !groups {
		if stored != nil {
			return stored
		}
		return r.AppendJSON(nil)
	}
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
// commit order. A row that cannot be published is returned with Err set,
// for the caller to quarantine: it must not stop the rows behind it.
func (s *Store) ReadOutbox(after uint64, limit int) ([]OutboxRow, error) {
	var rows []OutboxRow
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(rows) < limit; k, v = c.Next() {
			rows = append(rows, readOutboxRow(binary.BigEndian.Uint64(k), bytes.Clone(v)))
		}
		return nil
	})
	return rows, err
}

// readOutboxRow reads a stored row: the message as encoded when it was
// committed, or (written before layout 3) a structured CloudEvent in JSON,
// encoded now as that release's publisher did.
func readOutboxRow(key uint64, v []byte) OutboxRow {
	row := OutboxRow{Key: key}
	if events.IsMessage(v) {
		m, err := events.ParseMessage(v)
		if err == nil {
			row.Msg, err = m.NATS()
		}
		if err == nil {
			row.ID = row.Msg.Header.Get(nats.MsgIdHdr)
			row.Time, _ = time.Parse(time.RFC3339Nano, events.MessageAttribute(row.Msg.Header, "time"))
		} else {
			row.Err = fmt.Errorf("decoding outbox row %d: %w", key, err)
		}
	} else {
		var e event.Event
		if err := json.Unmarshal(v, &e); err != nil {
			row.Err = fmt.Errorf("decoding outbox row %d: %w", key, err)
		} else if err := e.Validate(); err != nil {
			row.Err = fmt.Errorf("outbox row %d is not a valid event: %w", key, err)
		} else if row.Msg, err = events.ToMsg(e); err != nil {
			row.Err = fmt.Errorf("encoding outbox row %d: %w", key, err)
		} else {
			row.ID, row.Time = e.ID(), e.Time()
		}
	}
	if row.Err != nil {
		row.Msg = nil
	}
	return row
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

// OutboxDepth returns how many events are in the outbox: waiting to be
// published, or published and kept by the publisher (KeepFor). It reads a
// counter kept beside the outbox, so a metric can call it on every scrape
// however long NATS has been away; the error is always nil.
func (s *Store) OutboxDepth() (int, error) {
	return int(s.depth.Load()), nil
}

// EventsMade is how many events the data file has made in all, published
// or not: the outbox's counter, which only grows (a restored backup's
// goes back with it).
func (s *Store) EventsMade() (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyOutboxCounter); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n, err
}

// OutboxOldest returns when the oldest event in the outbox was
// committed; zero when the outbox is empty.
func (s *Store) OutboxOldest() (time.Time, error) {
	if s.depth.Load() == 0 {
		return time.Time{}, nil
	}
	var oldest time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketOutbox).Cursor().First()
		if v == nil {
			return nil
		}
		row := readOutboxRow(binary.BigEndian.Uint64(k), v)
		if row.Err != nil {
			return fmt.Errorf("reading the oldest outbox row: %w", row.Err)
		}
		oldest = row.Time
		return nil
	})
	return oldest, err
}
