// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestUpgradeFromLayout2: a data file of layout 2 holds events its
// publisher had not sent yet, stored as structured CloudEvents. Opened by
// this release it is marked layout 3 and takes new events in the new form;
// the publisher sends the old rows, unchanged (same ids, same data), then
// the new ones, in commit order. No acknowledged event is lost.
func TestUpgradeFromLayout2(t *testing.T) {
	s, c, path := openStore(t)
	create(t, s, "acme", user(t, `"userName":"ann","emails":[{"value":"ann@x.com","type":"work"}]`))
	g := create(t, s, "acme", group(t, `"displayName":"staff"`))
	bob := create(t, s, "globex", user(t, `"userName":"bob"`))
	mustPatch(t, s, "globex", bob.Type, bob.ID(), `{"op":"replace","path":"title","value":"Boss"}`)
	_ = g
	old := outbox(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it the file layout 2 wrote: every outbox row a structured
	// CloudEvent (json.Marshal of the event), and the layout number 2.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var oldIDs []string
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		rewrite := map[string][]byte{}
		if err := b.ForEach(func(k, v []byte) error {
			row := readOutboxRow(binary.BigEndian.Uint64(k), v)
			e, err := row.Event()
			if err != nil {
				return err
			}
			oldIDs = append(oldIDs, e.ID())
			if rewrite[string(k)], err = events.MarshalStructured(e); err != nil {
				return err
			}
			return nil
		}); err != nil {
			return err
		}
		for k, v := range rewrite {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyLayout, u64(upgradableLayout))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatalf("Open of a layout 2 file: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLayout); binary.BigEndian.Uint64(v) != layoutVersion {
			return fmt.Errorf("layout %d after the upgrade", binary.BigEndian.Uint64(v))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OutboxDepth(); n != len(old) {
		t.Fatalf("outbox depth %d after the upgrade, want %d", n, len(old))
	}
	create(t, s, "acme", user(t, `"userName":"cid"`))
	mustPatch(t, s, "globex", bob.Type, bob.ID(), `{"op":"replace","path":"title","value":"Chief"}`)
	rows, err := s.ReadOutbox(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(old)+2 || rows[0].Err != nil || rows[len(rows)-1].Err != nil {
		t.Fatalf("%d rows after the upgrade, want %d, all readable", len(rows), len(old)+2)
	}
	// The old rows are read as they were stored (structured JSON), not
	// rewritten; the new ones are stored messages.
	if err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		if first, last := b.Get(u64(rows[0].Key)), b.Get(u64(rows[len(rows)-1].Key)); events.IsMessage(first) || !events.IsMessage(last) {
			return fmt.Errorf("first row stored as a message: %v, last row: %v; want structured, then message", events.IsMessage(first), events.IsMessage(last))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	startPublisher(t, s, js, slog.New(slog.DiscardHandler))
	got := streamContents(t, js, len(old)+2)
	checkOrder(t, got)
	for i, o := range old {
		if got[i].subject != o.subject || got[i].seq != o.seq || got[i].data.ID != o.data.ID || string(got[i].data.Resource) != string(o.data.Resource) {
			t.Errorf("event %d changed across the upgrade:\n%+v\n%+v", i, got[i], o)
		}
	}
	ids := streamIDs(t, js, len(old)+2)
	if strings.Join(ids[:len(oldIDs)], ",") != strings.Join(oldIDs, ",") {
		t.Errorf("ids in the stream %v, want the old events' %v first", ids, oldIDs)
	}
	outboxEmpties(t, s)
}

// streamIDs returns the ids of the first n events in the stream, in order.
func streamIDs(t testing.TB, js jetstream.JetStream, n int) []string {
	t.Helper()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := uint64(1); seq <= uint64(n); seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.Header.Get("ce-id"))
	}
	return ids
}

// TestOpenRefusesNewerLayout: a file a later release wrote is not read.
func TestOpenRefusesNewerLayout(t *testing.T) {
	s, c, path := openStore(t)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyLayout, u64(layoutVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, testOptions(c)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("layout version %d", layoutVersion+1)) {
		t.Fatalf("Open of a newer layout: %v", err)
	}
}
