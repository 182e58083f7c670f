// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// openCommitter is a committer on a fresh bbolt file with a bucket "b",
// and the sizes of the commits it made, in order.
func openCommitter(t *testing.T, maxBatch int) (*committer, *bolt.DB, func() []int) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	c := newCommitter(db, maxBatch, 0)
	var mu sync.Mutex
	var sizes []int
	observe := func(_ time.Duration, writes int) { mu.Lock(); sizes = append(sizes, writes); mu.Unlock() }
	c.observe.Store(&observe)
	t.Cleanup(func() { c.close(); _ = db.Close() })
	return c, db, func() []int { mu.Lock(); defer mu.Unlock(); return append([]int(nil), sizes...) }
}

func put(key string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(key), []byte("v")) }
}

// queued waits until n writes wait for the committer.
func queued(t *testing.T, c *committer, n int) {
	t.Helper()
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.queue) != n {
			return fmt.Errorf("%d writes queued, want %d", len(c.queue), n)
		}
		return nil
	})
}

// TestGroupCommit: writes that arrive while a commit is under way share the
// next one, up to the batch size; a write that fails is committed without
// and gets its own error, and the others commit; after close, writes fail.
func TestGroupCommit(t *testing.T) {
	c, db, sizes := openCommitter(t, 5)
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- c.do(func(tx *bolt.Tx) error {
			close(started)
			<-release // hold the committer in its first commit
			return put("first")(tx)
		})
	}()
	<-started
	bad := errors.New("refused")
	errs := make(chan error, 7)
	for i := range 7 {
		fn := put(fmt.Sprint("k", i))
		if i == 2 {
			fn = func(*bolt.Tx) error { return bad }
		}
		go func() { errs <- c.do(fn) }()
	}
	queued(t, c, 7)
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range 7 {
		if err := <-errs; errors.Is(err, bad) {
			failed++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if failed != 1 {
		t.Fatalf("%d writes got the failing write's error, want 1", failed)
	}
	// 1 alone, then the 7 waiting in batches of at most 5; the failing one
	// is run again alone, so the commits reported hold 1, 5 and 2 writes.
	// (A commit is reported after its writers are answered: poll.)
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if got := sizes(); fmt.Sprint(got) != "[1 5 2]" {
			return fmt.Errorf("commits held %v writes, want [1 5 2]", got)
		}
		return nil
	})
	n := 0
	if err := db.View(func(tx *bolt.Tx) error { n = tx.Bucket([]byte("b")).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 7 {
		t.Errorf("%d keys stored, want 7 (all but the failing write)", n)
	}
	c.close()
	if err := c.do(put("late")); !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		t.Errorf("a write after close: %v, want ErrDatabaseNotOpen", err)
	}
}
