// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/disk/disktest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestCommitFailureStopsWrites: once a commit fails in bbolt itself (its
// flush of the data file failed), the store writes nothing more, even when
// the disk is back, and says so: Failed is closed, Writable and every
// write answer ErrWritesStopped (503 to SCIM). The file, opened again,
// holds what was committed before. A later commit could otherwise build
// on pages that never reached the disk.
func TestCommitFailureStopsWrites(t *testing.T) {
	s, c, path := openStore(t)
	before := create(t, s, "acme", user(t, `"userName":"before"`))
	restore := disktest.FailWrites(t, path)
	_, err := s.Create(ctx, "acme", user(t, `"userName":"during"`))
	wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
	select {
	case <-s.Failed():
	default:
		t.Fatal("Failed is not closed after a commit failed")
	}
	if s.Failure() == nil {
		t.Fatal("Failure says nothing")
	}
	restore()
	_, err = s.Create(ctx, "acme", user(t, `"userName":"after"`))
	wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
	if err := s.Writable(); !errors.Is(err, ErrWritesStopped) {
		t.Fatalf("Writable after a failed commit: %v", err)
	}
	_ = s.Close()

	s, err = Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get(ctx, "acme", scim.UserResourceType, before.ID()); err != nil {
		t.Fatalf("the user committed before: %v", err)
	}
	list, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	if list.Total != 1 {
		t.Fatalf("%d users in the file opened again, want the one committed before", list.Total)
	}
	// And it writes again.
	create(t, s, "acme", user(t, `"userName":"again"`))
}

// TestPruneWithNothingToDeleteWritesNothing: pruning the provisioning log
// (at each start and every hour) when no entry is past its retention
// commits nothing, so it does not fail, and stop, a relay whose data disk
// fails while nothing else writes (a relay draining for its shutdown
// delay: its start's prune failed first in CI, where a test waited for a
// request's commit to). An entry past its retention is still deleted.
func TestPruneWithNothingToDeleteWritesNothing(t *testing.T) {
	s, c, path := openStore(t)
	o := LogOptions{Retention: 24 * time.Hour}
	l := runLog(t, s, o, []LogEntry{{Time: c.now(), RequestID: "young", Tenant: "acme", Operation: "create", Status: 201}})
	restore := disktest.FailWrites(t, path)
	if err := l.prune(); err != nil {
		t.Fatalf("a prune with nothing to delete: %v", err)
	}
	if err := s.Failure(); err != nil {
		t.Fatalf("a prune with nothing to delete failed the store: %v", err)
	}
	restore()
	c.add(25 * time.Hour)
	if err := l.prune(); err != nil {
		t.Fatal(err)
	}
	if got := logIDs(t, l, c.now().Add(-48*time.Hour)); len(got) != 0 {
		t.Fatalf("past its retention the log still holds %v", got)
	}
}

// storeWithACopy opens a store, writes ann, takes a copy of its file
// (a backup), then writes three more users.
func storeWithACopy(t *testing.T) (s *Store, path string, backup []byte) {
	t.Helper()
	s, _, path = openStore(t)
	create(t, s, "acme", user(t, `"userName":"ann"`))
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bob", "cy", "dee"} {
		create(t, s, "acme", user(t, `"userName":"`+name+`"`))
	}
	return s, path, backup
}

// TestFileReplacedStopsWrites: a backup copied over the data file while
// the store has it open (cp writes the file in place; bbolt's lock does
// not stop it), or moved to its path (mv, a rename), is found at the next
// write, at the next Ping (the readiness check) when nothing is written,
// or at a reload's new tenants: the write is refused, nothing is written
// to the copy, and writes stop as after a failed commit. Started again,
// the store serves the copy. Before, the next commit after a copy in place
// freed pages the copy used and bbolt panicked; after a move, writes went
// on into a file no path named, lost at the next start.
func TestFileReplacedStopsWrites(t *testing.T) {
	for _, how := range []string{"in place", "moved"} {
		for _, found := range []string{"write", "ping", "reload"} {
			t.Run(how+"/"+found, func(t *testing.T) {
				s, path, backup := storeWithACopy(t)
				if how == "in place" {
					disktest.WriteInPlace(t, path, backup)
				} else {
					if err := os.WriteFile(path+".new", backup, 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(path+".new", path); err != nil {
						t.Fatal(err)
					}
				}
				switch found {
				case "ping":
					if err := s.Ping(); !errors.Is(err, ErrWritesStopped) || !errors.Is(err, ErrFileReplaced) {
						t.Fatalf("Ping after the file was replaced: %v", err)
					}
				case "reload":
					if err := s.SetTenants([]TenantOptions{{Name: "acme"}, {Name: "globex"}}); !errors.Is(err, ErrFileReplaced) {
						t.Fatalf("a reload's new tenant after the file was replaced: %v", err)
					}
				}
				_, err := s.Create(ctx, "acme", user(t, `"userName":"eve"`))
				wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
				if f := s.Failure(); !errors.Is(f, ErrWritesStopped) || !errors.Is(f, ErrFileReplaced) {
					t.Fatalf("Failure: %v", f)
				}
				_ = s.Close()
				// The copy is as it was put there: ann alone.
				s2, err := Open(path, testOptions(&clock{t: time.Now()}))
				if err != nil {
					t.Fatal(err)
				}
				defer s2.Close()
				page, err := s2.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10})
				if err != nil || page.Total != 1 {
					t.Fatalf("the copy, opened again: %d users (%v), want ann alone", page.Total, err)
				}
			})
		}
	}
}

// TestFileCopiedDuringACommitStopsWrites: a copy written in place while a
// commit is under way (cp racing the relay's writes), which that commit
// then finishes on top of, is found at the next write; and a write that
// panics on the copy's pages is refused as the file replaced, not as an
// internal error. Before, the commit's meta page, one id above the
// relay's, passed the transaction-id check, and the next writes read the
// copy's pages through the relay's: they panicked (500) and the relay went
// on (CI: TestBackupCopiedOverARunningRelay, under load).
func TestFileCopiedDuringACommitStopsWrites(t *testing.T) {
	for _, during := range []string{"a commit that ends", "a write that panics"} {
		t.Run(during, func(t *testing.T) {
			s, path, backup := storeWithACopy(t)
			err := s.commits.do(func(tx *bolt.Tx) error {
				disktest.WriteInPlace(t, path, backup)
				if during == "a write that panics" {
					var m map[string]int
					m["the copy's pages"]++ // as reading them through the relay's did
				}
				return nil
			})
			if during == "a write that panics" && !errors.Is(err, ErrFileReplaced) {
				t.Fatalf("a write that panicked on the copy: %v, want the file replaced", err)
			}
			_, err = s.Create(ctx, "acme", user(t, `"userName":"eve"`))
			wantErr(t, err, scim.ErrUnavailable, "could not write its data file")
			if f := s.Failure(); !errors.Is(f, ErrWritesStopped) || !errors.Is(f, ErrFileReplaced) {
				t.Fatalf("Failure: %v", f)
			}
		})
	}
}

// TestPingWhileWritingIsNotAReplacement: Ping, the readiness check, on
// the relay's own file while a commit ends during it, between its read
// transaction's start and its comparison, does not take the file for a
// replaced one. It did: compared with that commit, its transaction looked
// older, and a probe could stop a healthy relay under Entra's writes.
func TestPingWhileWritingIsNotAReplacement(t *testing.T) {
	s, _, _ := openStore(t)
	n := 0
	pingBegun = func() {
		n++
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"during-ping-%d"`, n)))
	}
	defer func() { pingBegun = nil }()
	for range 3 {
		if err := s.Ping(); err != nil {
			t.Fatalf("Ping on the relay's own file while it writes: %v", err)
		}
	}
}

// TestOpenWhileRestoring: a store opened while another process holds the
// data file's lock and moves another file to its path (scimrelay restore)
// opens the file moved there once the lock is let go, not the one it
// found first, which no path names any more.
func TestOpenWhileRestoring(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "scimrelay.db")
	s, err := Open(path, testOptions(&clock{t: time.Now()}))
	if err != nil {
		t.Fatal(err)
	}
	create(t, s, "acme", user(t, `"userName":"old"`))
	_ = s.Close()
	restored := filepath.Join(dir, "restored.db")
	s, err = Open(restored, testOptions(&clock{t: time.Now()}))
	if err != nil {
		t.Fatal(err)
	}
	create(t, s, "acme", user(t, `"userName":"restored"`))
	_ = s.Close()

	lock, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan *Store, 1)
	go func() {
		s, err := Open(path, testOptions(&clock{t: time.Now()}))
		if err != nil {
			t.Error(err)
		}
		opened <- s
	}()
	// Open has the old file open, besides the lock's, and waits for the
	// lock.
	eventstest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if n := openedTimes(t, path); n < 2 {
			return fmt.Errorf("the data file is open %d times", n)
		}
		return nil
	})
	select {
	case s := <-opened:
		t.Fatalf("Open did not wait for the lock: %v", s)
	default:
	}
	if err := os.Rename(restored, path); err != nil {
		t.Fatal(err)
	}
	_ = lock.Close()
	s = <-opened
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: mustParseFilter(t, scim.UserResourceType, `userName eq "restored"`), StartIndex: 1, Count: 10})
	if err != nil || page.Total != 1 {
		t.Fatalf("the store opened during the restore serves the file it replaced: %d users named restored (%v)", page.Total, err)
	}
}

// openedTimes counts this process's open descriptors of the file at path.
func openedTimes(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestCheckCopy: a copy is a backup this build can restore only when it
// holds every page its meta page counts, each page readable, has the
// relay's meta bucket, and records a layout this build reads or upgrades.
// Open, which serve runs, refuses the same files, naming the file: one cut
// short (a copy or a volume migration that stopped part-way) or with a
// damaged page crashed the process (SIGBUS past the end; bbolt's panic in
// the goroutine that rebuilds the free list), and another program's bbolt
// file was taken for a new data file, an empty index served.
func TestCheckCopy(t *testing.T) {
	s, _, _ := openStore(t)
	for i := range 300 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"user%04d@example.com","displayName":%q`, i, strings.Repeat("x", 200))))
	}
	var backup bytes.Buffer
	if _, err := s.Backup(&backup, nil); err != nil {
		t.Fatal(err)
	}
	whole := backup.Bytes()
	const page = 4096
	damaged := func(off int) []byte {
		d := bytes.Clone(whole)
		for i := off; i < off+64; i++ {
			d[i] ^= 0xff
		}
		return d
	}
	// A branch page's second key made lower than its first: the walk of
	// the keys steps past it, bbolt's rebuild of the free list did not.
	// The page is the root of a bucket (a free page may look like one).
	branchKeyDamaged := func() []byte {
		src := filepath.Join(t.TempDir(), "whole.db")
		if err := os.WriteFile(src, whole, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(src, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true}) // tx.Page needs the free list
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var root int
		var find func(tx *bolt.Tx, b *bolt.Bucket) error
		find = func(tx *bolt.Tx, b *bolt.Bucket) error {
			if p, err := tx.Page(int(b.Root())); err == nil && p != nil && p.Type == "branch" && p.Count >= 2 {
				root = p.ID
				return nil
			}
			return b.ForEachBucket(func(k []byte) error {
				if root == 0 {
					return find(tx, b.Bucket(k))
				}
				return nil
			})
		}
		if err := db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				if root == 0 {
					return find(tx, b)
				}
				return nil
			})
		}); err != nil || root == 0 {
			t.Fatalf("no bucket whose root is a branch page of two keys: %v", err)
		}
		d := bytes.Clone(whole)
		elem := root*page + 16 + 16 // 16 bytes of page header, then elements of 16 (pos, ksize, pgid)
		pos, ksize := binary.LittleEndian.Uint32(d[elem:]), binary.LittleEndian.Uint32(d[elem+4:])
		clear(d[elem+int(pos) : elem+int(pos)+int(ksize)])
		return d
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Another program's bbolt file, and one of a later layout.
	boltFile := func(name string, fill func(*bolt.Tx) error) string {
		p := filepath.Join(dir, name)
		db, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(fill); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		return p
	}
	other := boltFile("other.db", func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("things"))
		return err
	})
	later := boltFile("later.db", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keyLayout, u64(layoutVersion+1))
	})
	for _, c := range []struct {
		name, path, says string
	}{
		{"whole", write("whole.db", whole), ""},
		{"cut short", write("short.db", whole[:len(whole)/2/page*page]), "cut short"},
		{"cut to its meta pages", write("metas.db", whole[:4*page]), "cut short"},
		{"a damaged page", write("damaged.db", damaged(3*page)), "damaged"},
		{"a damaged page in the middle", write("middle.db", damaged(len(whole)/2/page*page)), "damaged"},
		{"keys out of order", write("keys.db", bytes.ReplaceAll(whole, []byte("user0150@"), []byte("user0001@"))), "out of order"},
		{"a branch page's keys out of order", write("branch.db", branchKeyDamaged()), "damaged"},
		{"another program's", other, "not a scimrelay data file"},
		{"a later layout", later, fmt.Sprintf("layout version %d", layoutVersion+1)},
		{"not bbolt", write("text.db", []byte("hello")), ""},
	} {
		err := CheckCopy(c.path)
		switch {
		case c.name == "whole" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.name != "whole" && err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.says != "" && (err == nil || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.says)
		}
		data, rerr := os.ReadFile(c.path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		served := write("served-"+filepath.Base(c.path), data)
		opened, err := Open(served, testOptions(&clock{}))
		if err == nil {
			_ = opened.Close()
		}
		switch {
		case c.name == "whole" && err != nil:
			t.Errorf("Open %s: %v", c.name, err)
		case c.name != "whole" && err == nil:
			t.Errorf("Open %s: served", c.name)
		case c.name != "whole" && (!strings.Contains(err.Error(), served) || !strings.Contains(err.Error(), c.says)):
			t.Errorf("Open %s: %v, want it to name the file and say %q", c.name, err, c.says)
		}
	}
}
