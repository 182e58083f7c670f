// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
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
	var oldIDs []string
	rewriteFile(t, path, upgradableLayout, func(tx *bolt.Tx) error {
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
		return nil
	})

	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatalf("Open of a layout 2 file: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	checkLayout(t, s)
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
	if err := s.commits.do(func(tx *bolt.Tx) error {
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

// rewriteFile makes the closed data file at path what a release of an
// older layout wrote: fn changes what that release wrote differently, and
// the file records the layout.
func rewriteFile(t testing.TB, path string, layout uint64, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyLayout, u64(layout))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkLayout fails t unless s's file records layoutVersion.
func checkLayout(t testing.TB, s *Store) {
	t.Helper()
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLayout); binary.BigEndian.Uint64(v) != layoutVersion {
			return fmt.Errorf("layout %d after the upgrade", binary.BigEndian.Uint64(v))
		}
		if v := tx.Bucket(bucketMeta).Get(keyUpgradingFrom); v != nil {
			return fmt.Errorf("still upgrading from %x after the upgrade", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// oldWorkEmailIndex makes each tenant's ix_workemail what layouts 2 and 3
// wrote: every user's first work email alone (scim.Resource.WorkEmail: the
// first typed work, else the primary, else the first).
func oldWorkEmailIndex(tx *bolt.Tx) error {
	root := tx.Bucket(bucketTenants)
	var names [][]byte
	if err := root.ForEachBucket(func(k []byte) error {
		names = append(names, bytes.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		tb := root.Bucket(name)
		if err := tb.DeleteBucket(ixWorkEmail); err != nil {
			return err
		}
		ix, err := tb.CreateBucket(ixWorkEmail)
		if err != nil {
			return err
		}
		if err := tb.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(scim.UserResourceType, v)
			if err != nil {
				return err
			}
			if we := rec.res.WorkEmail(); we != "" {
				return ix.Put(append(ixKey(scim.Fold(we)), k...), nil)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// indexKeys lists the keys of every tenant's index buckets named, as
// "<tenant> <bucket> <key>".
func indexKeys(t testing.TB, db *bolt.DB, buckets ...[]byte) []string {
	t.Helper()
	var keys []string
	if err := db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketTenants)
		return root.ForEachBucket(func(name []byte) error {
			for _, b := range buckets {
				if err := root.Bucket(name).Bucket(b).ForEach(func(k, _ []byte) error {
					keys = append(keys, fmt.Sprintf("%s %s %q", name, b, k))
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestUpgradeIndexesEveryWorkEmail: a file of layout 2 or 3 indexed each
// user's first work email alone. Opened, it is marked layout 4 and its
// ix_workemail is, in every tenant, what this release writes: a second
// work email is then taken, and a new user with it is refused. The
// upgrade reads the users a few per transaction (upgradeChunk, lowered
// here), so chunk boundaries are crossed.
func TestUpgradeIndexesEveryWorkEmail(t *testing.T) {
	chunk := upgradeChunk
	upgradeChunk = 2
	t.Cleanup(func() { upgradeChunk = chunk })
	for _, layout := range []uint64{2, 3} {
		t.Run(fmt.Sprint("layout ", layout), func(t *testing.T) {
			s, c, path := openStore(t)
			var seconds []string
			for i := range 5 {
				second := fmt.Sprintf("Second-%d@x.com", i)
				seconds = append(seconds, second)
				create(t, s, "safe", user(t, fmt.Sprintf(`"userName":"u%d","emails":[{"value":"first-%d@x.com","type":"work"},{"value":"home-%d@x.com","type":"home"},{"value":%q,"type":"Work"}]`, i, i, i, second)))
			}
			create(t, s, "acme", user(t, `"userName":"ann","emails":[{"value":"ann@x.com","type":"work"},{"value":"ann@y.com","type":"work"}]`))
			create(t, s, "acme", user(t, `"userName":"bob","emails":[{"value":"bob@home.com"},{"value":"bob@x.com","primary":true}]`))
			want := indexKeys(t, s.db, ixWorkEmail)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The outbox rows keep their form; TestUpgradeFromLayout2 covers layout 2's.
			rewriteFile(t, path, layout, oldWorkEmailIndex)

			s, err := Open(path, testOptions(c))
			if err != nil {
				t.Fatalf("Open of a layout %d file: %v", layout, err)
			}
			t.Cleanup(func() { _ = s.Close() })
			checkLayout(t, s)
			if got := indexKeys(t, s.db, ixWorkEmail); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("ix_workemail after the upgrade:\n%s\nwant what this release writes:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for _, second := range seconds {
				_, err := s.Create(ctx, "safe", user(t, `"userName":"new","emails":[{"value":"`+strings.ToUpper(second)+`","type":"work"}]`))
				wantErr(t, err, scim.ErrUniqueness, "is already taken")
			}
		})
	}
}

// TestUpgradeKeepsSharedWorkEmails: users that share a work email before
// the upgrade (a release of layout 3 let a user's second work email be
// another's; a tenant may also have switched to unique: email with
// duplicates in it) are all kept and indexed under it. The upgrade does
// not fail; in a tenant whose work email is unique it warns, naming the
// tenant, how many emails are shared and the users, and in a tenant
// unique by userName, where sharing is allowed, it says nothing. Until the
// operator gives each user its own, a change that keeps the shared email
// is refused and one that drops it goes through.
func TestUpgradeKeepsSharedWorkEmails(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	// Written while no tenant made the work email unique.
	s, err := Open(path, Options{Tenants: []TenantOptions{{Name: "safe"}, {Name: "acme"}}, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	a := create(t, s, "safe", user(t, `"userName":"a","emails":[{"value":"a@x.com","type":"work"},{"value":"dup1@x.com","type":"work"}]`))
	b := create(t, s, "safe", user(t, `"userName":"b","emails":[{"value":"DUP1@x.com","type":"work"}]`))
	cc := create(t, s, "safe", user(t, `"userName":"c","emails":[{"value":"c@x.com","type":"work"},{"value":"dup2@x.com","type":"work"}]`))
	d := create(t, s, "safe", user(t, `"userName":"d","emails":[{"value":"d@home.com"},{"value":"dup2@x.com","primary":true}]`))
	create(t, s, "acme", user(t, `"userName":"e","emails":[{"value":"e@x.com","type":"work"},{"value":"shared@x.com","type":"work"}]`))
	create(t, s, "acme", user(t, `"userName":"f","emails":[{"value":"shared@x.com","type":"work"}]`))
	stored := map[string]string{}
	for _, r := range []*scim.Resource{a, b, cc, d} {
		stored[r.ID()] = string(r.AppendJSON(nil))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rewriteFile(t, path, 3, oldWorkEmailIndex)

	var logs bytes.Buffer
	o := testOptions(c) // safe: unique: email
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err = Open(path, o)
	if err != nil {
		t.Fatalf("Open of a layout 3 file with shared work emails: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	warned := ""
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") {
			if warned != "" || !strings.Contains(line, "users share work emails") {
				t.Fatalf("logs:\n%s\nwant one warning about shared work emails", logs.String())
			}
			warned = line
		}
	}
	for _, want := range []string{"tenant=safe", "emails=2", a.ID(), b.ID(), cc.ID(), d.ID()} {
		if !strings.Contains(warned, want) {
			t.Errorf("warning %q does not say %s", warned, want)
		}
	}

	for _, r := range []*scim.Resource{a, b, cc, d} {
		got, err := s.Get(ctx, "safe", scim.UserResourceType, r.ID())
		if err != nil || string(got.AppendJSON(nil)) != stored[r.ID()] {
			t.Fatalf("user %s after the upgrade: %v %v, want %s", r.String("userName"), got, err, stored[r.ID()])
		}
	}
	holders := func(email string) string {
		t.Helper()
		var ids []string
		if err := s.db.View(func(tx *bolt.Tx) error {
			ids = lookupIDs(tx.Bucket(bucketTenants).Bucket([]byte("safe")).Bucket(ixWorkEmail), scim.Fold(email), -1)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(ids, " ")
	}
	if got, want := holders("dup1@x.com"), a.ID()+" "+b.ID(); got != want {
		t.Errorf("dup1 is indexed for %s, want a and b: %s", got, want)
	}
	if got, want := holders("dup2@x.com"), cc.ID()+" "+d.ID(); got != want {
		t.Errorf("dup2 is indexed for %s, want c and d: %s", got, want)
	}

	_, err = s.Create(ctx, "safe", user(t, `"userName":"new","emails":[{"value":"dup1@x.com","type":"work"}]`))
	wantErr(t, err, scim.ErrUniqueness, `email "dup1@x.com" is already taken`)
	_, err = patch(t, s, "safe", scim.UserResourceType, a.ID(), `{"op":"replace","path":"title","value":"Boss"}`)
	wantErr(t, err, scim.ErrUniqueness, `email "dup1@x.com" is already taken`)
	mustPatch(t, s, "safe", scim.UserResourceType, a.ID(), `{"op":"remove","path":"emails[value eq \"dup1@x.com\"]"}`)
	if got := holders("dup1@x.com"); got != b.ID() {
		t.Errorf("after a gave it up, dup1 is indexed for %s, want b alone: %s", got, b.ID())
	}
}

// TestUpgradeNamesTenSharersAtMost: the upgrade's warning of shared work
// emails names up to ten of the users (README: never a flood), and counts
// every email shared.
func TestUpgradeNamesTenSharersAtMost(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "scimrelay.db")
	s, err := Open(path, Options{Tenants: []TenantOptions{{Name: "safe"}}, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 12 {
		// Six emails, each of two users.
		ids = append(ids, create(t, s, "safe", user(t, fmt.Sprintf(`"userName":"u%d","emails":[{"value":"shared%d@x.com","type":"work"}]`, i, i/2))).ID())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rewriteFile(t, path, 3, oldWorkEmailIndex)
	var logs bytes.Buffer
	o := testOptions(c)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if s, err = Open(path, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	named := 0
	for _, id := range ids {
		if strings.Contains(logs.String(), id) {
			named++
		}
	}
	if named != 10 || !strings.Contains(logs.String(), "emails=6") {
		t.Fatalf("the warning names %d of the 12 users sharing emails, want 10, and emails=6:\n%s", named, logs.String())
	}
}

// TestUpgradeCutShortIsRefusedByEarlierReleases: an upgrade killed
// mid-way (a crash, a full disk) leaves the file marked with the new
// layout and where it came from, so that a release before it, rolled back
// to, refuses it as it refuses an upgraded one (a layout 3 release opened
// it, deleted a user and left her second work email's key, which no
// upgrade removes: a new user could never take that email), and this
// release finishes the upgrade at its next start.
func TestUpgradeCutShortIsRefusedByEarlierReleases(t *testing.T) {
	if path := os.Getenv("SCIMRELAY_TEST_UPGRADE_KILL"); path != "" {
		// The process killed mid-upgrade: it exits where the upgrade
		// warns of the damaged user, the last of the last tenant.
		upgradeChunk = 1
		o := testOptions(&clock{t: time.Now()})
		o.Logger = slog.New(exitOnWarn{})
		_, err := Open(path, o)
		t.Fatalf("the upgrade ended without meeting the damaged user: %v", err)
	}
	s, c, path := openStore(t)
	ann := create(t, s, "safe", user(t, `"userName":"ann","emails":[{"value":"ann@x.com","type":"work"},{"value":"ann2@x.com","type":"work"}]`))
	create(t, s, "safe", user(t, `"userName":"bob","emails":[{"value":"bob@x.com","type":"work"}]`))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The file layout 3 wrote, with a damaged user sorting after ann.
	rewriteFile(t, path, 3, func(tx *bolt.Tx) error {
		if err := oldWorkEmailIndex(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketTenants).Bucket([]byte("safe")).Bucket(bucketUsers).Put([]byte("ffffffff-ffff-7fff-bfff-ffffffffffff"), []byte("damaged"))
	})

	cmd := exec.Command(os.Args[0], "-test.run=^TestUpgradeCutShortIsRefusedByEarlierReleases$")
	cmd.Env = append(os.Environ(), "SCIMRELAY_TEST_UPGRADE_KILL="+path)
	if out, err := cmd.CombinedOutput(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 9 {
		t.Fatalf("the upgrade was not killed mid-way: %v\n%s", err, out)
	}

	// Cut short, the file already says layout 4, and where it came from.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if l, from := meta.Get(keyLayout), meta.Get(keyUpgradingFrom); binary.BigEndian.Uint64(l) != layoutVersion || len(from) != 8 || binary.BigEndian.Uint64(from) != 3 {
			return fmt.Errorf("an upgrade cut short left layout %x, upgrading from %x; want %d from 3", l, from, layoutVersion)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// The release of layout 3 (c4eac9d): it refuses a file whose layout
	// is not 2 or 3; otherwise it deletes ann, removing her record and the
	// keys it indexes (ix_workemail: her first work email alone).
	refused := false
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if l := binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(keyLayout)); l != 2 && l != 3 {
			refused = true
			return nil
		}
		tb := tx.Bucket(bucketTenants).Bucket([]byte("safe"))
		entries, err := indexEntries(ann)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if bytes.Equal(e.bucket, ixWorkEmail) && !bytes.HasPrefix(e.key, ixKey(scim.Fold(ann.WorkEmail()))) {
				continue
			}
			if err := tb.Bucket(e.bucket).Delete(e.key); err != nil {
				return err
			}
		}
		return tb.Bucket(bucketUsers).Delete([]byte(ann.ID()))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !refused {
		t.Error("the release before layout 4 opens a file whose upgrade was cut short")
	}

	// This release again: the upgrade is finished.
	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	checkLayout(t, s)
	cid := user(t, `"userName":"cid","emails":[{"value":"ann2@x.com","type":"work"}]`)
	if _, err := s.Create(ctx, "safe", cid); err == nil {
		t.Fatal("ann's second work email is not indexed after the upgrade was finished")
	}
	if _, err := s.Delete(ctx, "safe", scim.UserResourceType, ann.ID(), scim.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, "safe", cid); err != nil {
		t.Fatalf("a new user with the second work email of a user deleted since: %v\nix_workemail: %q", err, indexKeys(t, s.db, ixWorkEmail))
	}
}

// exitOnWarn ends the process, as a kill would, at the first warning.
type exitOnWarn struct{}

func (exitOnWarn) Enabled(context.Context, slog.Level) bool { return true }
func (exitOnWarn) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		os.Exit(9)
	}
	return nil
}
func (h exitOnWarn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h exitOnWarn) WithGroup(string) slog.Handler      { return h }

// TestIndexesRefoldedForOtherCaseTables: a file whose folded index keys
// were built with other Unicode case tables than this build's (a release
// built with another Go; here, keys such tables would have left: a user's
// key under another fold, a deleted user's key left behind) has its
// folded indexes rebuilt by Open, a few resources a transaction, in every
// tenant: each is then what this release writes, the user is found by
// userName and email again, and the name the deleted user's leftover key
// held is free. The file then records this build's version, and the next
// Open rebuilds nothing. A file that records none (every release before
// this one) was built with Unicode 15.0.0's tables.
func TestIndexesRefoldedForOtherCaseTables(t *testing.T) {
	chunk := upgradeChunk
	upgradeChunk = 2
	t.Cleanup(func() { upgradeChunk = chunk })
	s, c, path := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"Ann","emails":[{"value":"Ann@X.com","type":"work"}]`))
	for i := range 4 {
		create(t, s, "globex", user(t, fmt.Sprintf(`"userName":"u%d","emails":[{"value":"u%d@x.com"}]`, i, i)))
	}
	create(t, s, "acme", group(t, `"displayName":"Ops"`))
	want := indexKeys(t, s.db, foldedIndexes...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	stale := func(tx *bolt.Tx) error {
		acme := tx.Bucket(bucketTenants).Bucket([]byte("acme"))
		for _, k := range []struct {
			bucket    []byte
			now, then string
		}{
			{ixUserName, "ann", "ann-other-tables"},
			{ixWorkEmail, "ann@x.com", "ann@x.com-other-tables"},
			{ixDisplayName, "ops", "ops-other-tables"},
		} {
			b := acme.Bucket(k.bucket)
			id := ann.ID()
			if bytes.Equal(k.bucket, ixDisplayName) {
				id = firstID(t, acme.Bucket(bucketGroups))
			}
			if err := b.Delete(append(ixKey(k.now), id...)); err != nil {
				return err
			}
			if err := b.Put(append(ixKey(k.then), id...), nil); err != nil {
				return err
			}
		}
		if err := acme.Bucket(ixUserName).Put(append(ixKey("ghost"), "0190a000-0000-7000-8000-00000000dead"...), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyFoldTables, []byte("14.0.0"))
	}
	rewriteFile(t, path, layoutVersion, stale)

	open := func() (*Store, string) {
		t.Helper()
		var logs bytes.Buffer
		o := testOptions(c)
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		s, err := Open(path, o)
		if err != nil {
			t.Fatalf("Open of a file indexed with other case tables: %v", err)
		}
		return s, logs.String()
	}
	s, logs := open()
	if !strings.Contains(logs, "rebuilt the case-folded indexes") || !strings.Contains(logs, "from_unicode=14.0.0 to_unicode="+unicode.Version) {
		t.Errorf("Open said nothing of the rebuild: %s", logs)
	}
	if got := indexKeys(t, s.db, foldedIndexes...); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("folded indexes after the rebuild:\n%s\nwant what this release writes:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, filter := range []string{`userName eq "ANN"`, `emails[type eq "work"].value eq "ann@x.com"`} {
		page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: mustParseFilter(t, scim.UserResourceType, filter), StartIndex: 1, Count: 10})
		if err != nil || page.Total != 1 || len(page.Resources) != 1 || page.Resources[0].ID() != ann.ID() {
			t.Errorf("%s finds %d (%v) after the rebuild, want Ann", filter, page.Total, err)
		}
	}
	create(t, s, "acme", user(t, `"userName":"Ghost"`)) // its leftover key is gone
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, logs = open()
	defer s.Close()
	if strings.Contains(logs, "rebuilt") {
		t.Errorf("the second Open rebuilt the indexes again: %s", logs)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket(bucketMeta).Get(keyFoldTables)); v != unicode.Version {
			return fmt.Errorf("the file records case tables %q, want this build's %q", v, unicode.Version)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// firstID is the key of b's first record.
func firstID(t testing.TB, b *bolt.Bucket) string {
	t.Helper()
	k, _ := b.Cursor().First()
	if k == nil {
		t.Fatal("no record")
	}
	return string(k)
}

// BenchmarkOpenUpgrading measures what Open takes before it serves when a
// file of Entra-like users needs its layout upgraded (every work email
// indexed, from layout 3) or its folded indexes rebuilt (a release built
// with other Unicode case tables): the relay answers nothing meanwhile,
// and the Helm chart's startup probe gives a pod 180 s; beside them, an
// Open with nothing to upgrade. Users from
// SCIMRELAY_BENCH_USERS, 100,000 when unset:
//
//	SCIMRELAY_BENCH_USERS=1000000 go test ./relay -run x -bench OpenUpgrading -benchtime 1x -timeout 1h
func BenchmarkOpenUpgrading(b *testing.B) {
	n := 100_000
	if v := os.Getenv("SCIMRELAY_BENCH_USERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	for _, step := range []struct {
		name    string
		layout  uint64
		rewrite func(tx *bolt.Tx) error
		said    string
	}{
		{"nothing to upgrade", layoutVersion, func(*bolt.Tx) error { return nil }, ""},
		{"work emails from layout 3", 3, oldWorkEmailIndex, "upgraded the data file's layout"},
		{"folded indexes for other case tables", layoutVersion, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyFoldTables, []byte("14.0.0"))
		}, "rebuilt the case-folded indexes"},
	} {
		b.Run(step.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s, c, path := openStore(b)
				bulkUsersLike(b, s, n, func(i int) *scim.Resource { return entraUser(b, i) })
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				rewriteFile(b, path, step.layout, step.rewrite)
				var logs bytes.Buffer
				o := testOptions(c)
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				b.StartTimer()
				start := time.Now()
				s, err := Open(path, o)
				took := time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if !strings.Contains(logs.String(), step.said) {
					b.Fatalf("Open did not say %q: %s", step.said, logs.String())
				}
				b.ReportMetric(took.Seconds(), "s/open")
				b.ReportMetric(float64(n)/took.Seconds(), "users/s")
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
