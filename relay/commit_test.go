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

// TestGroupCommitWaitsForTheWritersItAnswered: after a commit of eight
// writes, the first write to come back waits for half as many before it
// commits, so that the four share a commit instead of one committing
// alone and three behind it; after a commit of one, a write waits for no
// one.
func TestGroupCommitWaitsForTheWritersItAnswered(t *testing.T) {
	c, _, sizes := openCommitter(t, 100)
	c.gatherMax = time.Minute // so the bound is half the last commit's time
	// held is how long the held commits take: half of it is far more than
	// any scheduling delay below.
	const held = 2 * time.Second
	hold := func(started chan<- struct{}, release <-chan struct{}) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			close(started)
			<-release
			return put("held")(tx)
		}
	}
	holdFor := func(release chan<- struct{}) {
		begun := time.Now()
		for time.Since(begun) < held { // the commit is made to take this long
			time.Sleep(10 * time.Millisecond)
		}
		close(release)
	}
	errs := make(chan error, 16)
	receive := func(n int) {
		t.Helper()
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}

	// A commit of one, held; then a write commits at once.
	started, release := make(chan struct{}), make(chan struct{})
	go func() { errs <- c.do(hold(started, release)) }()
	<-started
	holdFor(release)
	receive(1)
	start := time.Now()
	if err := c.do(put("alone")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= held/2 {
		t.Fatalf("a write after a commit of one took %s: it waited for writers that are not coming", took)
	}

	// A commit of eight, held: one write holds the committer while eight
	// queue, one of which holds their commit.
	started, release = make(chan struct{}), make(chan struct{})
	go func() { errs <- c.do(hold(started, release)) }()
	<-started
	started2, release2 := make(chan struct{}), make(chan struct{})
	go func() { errs <- c.do(hold(started2, release2)) }()
	for i := range 7 {
		go func() { errs <- c.do(put(fmt.Sprint("k", i))) }()
	}
	queued(t, c, 8)
	close(release)
	<-started2
	holdFor(release2)
	receive(1 + 8)
	// The first write to come back waits until four are queued.
	go func() { errs <- c.do(put("back0")) }()
	queued(t, c, 1) // it waits in the queue: committed at once, it would commit alone
	for i := 1; i < 4; i++ {
		go func() { errs <- c.do(put(fmt.Sprint("back", i))) }()
	}
	receive(4)
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if got := sizes(); fmt.Sprint(got) != "[1 1 1 8 4]" {
			return fmt.Errorf("commits held %v writes, want [1 1 1 8 4]", got)
		}
		return nil
	})
}
