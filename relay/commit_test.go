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
	c := newCommitter(db, maxBatch, 0, nil)
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

// holdCommit starts a write that holds c in its commit until release is
// called, which returns the write's error.
func holdCommit(t *testing.T, c *committer) (release func() error) {
	t.Helper()
	started, done := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- c.do(func(tx *bolt.Tx) error {
			close(started)
			<-done
			return put("first")(tx)
		})
	}()
	<-started
	return func() error { close(done); return <-first }
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
	release := holdCommit(t, c)
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
	if err := release(); err != nil {
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

// TestGroupCommitDefaultBatch holds relay.yaml's "storage.batch_size: 0:
// the default, 1000": a committer given 0 commits the writes waiting for
// it 1000 at a time.
func TestGroupCommitDefaultBatch(t *testing.T) {
	c, _, sizes := openCommitter(t, 0)
	release := holdCommit(t, c)
	const waiting = DefaultMaxBatch + 1
	errs := make(chan error, waiting)
	for i := range waiting {
		go func() { errs <- c.do(put(fmt.Sprint("k", i))) }()
	}
	queued(t, c, waiting)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	for range waiting {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if got := sizes(); fmt.Sprint(got) != "[1 1000 1]" {
			return fmt.Errorf("commits held %v writes, want [1 1000 1]", got)
		}
		return nil
	})
}

// TestGroupCommitWaitsForTheWritersItAnswered: after a commit of eight
// writes, the first write to come back waits for half as many before it
// commits, so that the four share a commit instead of one committing
// alone and three behind it; when fewer come back it commits once half
// the last commit's time has passed, or gatherMax if that is sooner; after
// a commit of one, a write waits for no one.
func TestGroupCommitWaitsForTheWritersItAnswered(t *testing.T) {
	// held is how long the commit before takes: a quarter of it is far more
	// than any scheduling delay below, and half of it is the wait.
	const held = 2 * time.Second
	// receive waits for the answers of n writes on errs.
	receive := func(t *testing.T, errs <-chan error, n int) {
		t.Helper()
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	// holdThenRelease makes a held commit take held, then lets it go.
	holdThenRelease := func(release chan<- struct{}) {
		begun := time.Now()
		for time.Since(begun) < held { // the commit is made to take this long
			time.Sleep(10 * time.Millisecond)
		}
		close(release)
	}
	// hold is a write that signals started when its commit runs and holds
	// that commit until release.
	hold := func(release <-chan struct{}) (func(*bolt.Tx) error, chan struct{}) {
		started := make(chan struct{})
		return func(tx *bolt.Tx) error {
			close(started)
			<-release
			return put("held")(tx)
		}, started
	}
	// afterCommitOf leaves c idle after a commit of n writes that took held.
	afterCommitOf := func(t *testing.T, c *committer, n int) {
		t.Helper()
		errs := make(chan error, n+1)
		// One write holds the committer while the n queue, one of which
		// holds their commit for held.
		release1, release2 := make(chan struct{}), make(chan struct{})
		first, started1 := hold(release1)
		go func() { errs <- c.do(first) }()
		<-started1
		longest, started2 := hold(release2)
		go func() { errs <- c.do(longest) }()
		for i := range n - 1 {
			go func() { errs <- c.do(put(fmt.Sprint("k", i))) }()
		}
		queued(t, c, n)
		close(release1)
		<-started2
		holdThenRelease(release2)
		receive(t, errs, n+1)
	}
	commits := func(t *testing.T, sizes func() []int, want string) {
		t.Helper()
		eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if got := sizes(); fmt.Sprint(got) != want {
				return fmt.Errorf("commits held %v writes, want %s", got, want)
			}
			return nil
		})
	}
	if c, _, _ := openCommitter(t, 100); c.gatherMax != 2*time.Millisecond {
		t.Errorf("gatherMax is %s, want 2ms as documented", c.gatherMax)
	}
	// One write alone after a commit of n: whether it waits, about half
	// the commit's time, or commits at once.
	for _, tc := range []struct {
		name      string
		n         int
		gatherMax time.Duration // a minute: the bound is half the last commit's time
		linger    time.Duration
		waits     bool
	}{
		{"after a commit of one", 1, time.Minute, 0, false},
		{"fewer come back", 8, time.Minute, 0, true},
		// the default, 2ms, made long enough to tell from no bound
		{"bounded by gatherMax", 8, 50 * time.Millisecond, 0, false},
		{"with batch_delay", 8, time.Minute, time.Millisecond, false}, // batch_delay alone decides
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _, sizes := openCommitter(t, 100)
			c.gatherMax, c.linger = tc.gatherMax, tc.linger
			afterCommitOf(t, c, tc.n)
			start := time.Now()
			if err := c.do(put("alone")); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if tc.waits && (took < held/4 || took > 2*held) {
				t.Errorf("a write alone after a commit of %d that took %s committed after %s, want about half of that", tc.n, held, took)
			}
			if !tc.waits && took >= held/4 {
				t.Errorf("a write alone after a commit of %d committed after %s: it waited for writers that are not coming", tc.n, took)
			}
			commits(t, sizes, fmt.Sprintf("[1 %d 1]", tc.n))
		})
	}
	t.Run("half come back", func(t *testing.T) {
		t.Parallel()
		c, _, sizes := openCommitter(t, 100)
		c.gatherMax = time.Minute
		afterCommitOf(t, c, 8)
		errs := make(chan error, 4)
		go func() { errs <- c.do(put("back0")) }()
		queued(t, c, 1) // it waits in the queue: committed at once, it would commit alone
		start := time.Now()
		for i := 1; i < 4; i++ {
			go func() { errs <- c.do(put(fmt.Sprint("back", i))) }()
		}
		receive(t, errs, 4)
		if took := time.Since(start); took >= held/4 {
			t.Errorf("the four took %s once the last came: the wait wanted more than half of eight", took)
		}
		commits(t, sizes, "[1 8 4]")
	})
	t.Run("writes left behind", func(t *testing.T) {
		t.Parallel()
		c, _, sizes := openCommitter(t, 4) // four writes a commit at most
		c.gatherMax = time.Minute
		afterCommitOf(t, c, 4)
		// Five queue behind a held write; the first four commit, held
		// long, and the fifth, left behind, is committed at once after.
		// (The blocker itself, alone after the commit of four, waits about
		// a second for a second write before committing alone.)
		release, held2 := make(chan struct{}), make(chan struct{})
		errs := make(chan error, 6)
		blocker, started := hold(release)
		go func() { errs <- c.do(blocker) }()
		<-started
		second, _ := hold(held2)
		go func() { errs <- c.do(second) }()
		queued(t, c, 1)
		for i := range 4 {
			go func() { errs <- c.do(put(fmt.Sprint("left", i))) }()
		}
		queued(t, c, 5)
		close(release)
		queued(t, c, 1) // four taken
		holdThenRelease(held2)
		ended := time.Now()
		receive(t, errs, 6)
		if took := time.Since(ended); took >= held/4 {
			t.Errorf("the write left behind by a full commit was answered %s after it: it waited again", took)
		}
		commits(t, sizes, "[1 4 1 4 1]")
	})
}

// TestCommitterWritesOnACopyOfEitherParity: a backup's copy (bbolt's
// WriteTo) holds its last transaction on meta page 0 and the one before
// on page 1, whatever the last one's parity, where bbolt's own commits
// write the page of their id's parity; the committer writes on such a copy
// as on any file, from its first commit, with no write of Open's before
// it. A check that the pages hold the last id on its parity's page and
// the one before on the other refused every write on a copy of odd id.
func TestCommitterWritesOnACopyOfEitherParity(t *testing.T) {
	for _, writes := range []int{1, 2} { // before the copy: an odd and an even last id
		t.Run(fmt.Sprint(writes), func(t *testing.T) {
			c, db, _ := openCommitter(t, 10)
			for i := range writes {
				if err := c.do(put(fmt.Sprint("before", i))); err != nil {
					t.Fatal(err)
				}
			}
			copyPath := filepath.Join(t.TempDir(), "copy.db")
			if err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(copyPath, 0o600) }); err != nil {
				t.Fatal(err)
			}
			restored, err := bolt.Open(copyPath, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			rc := newCommitter(restored, 10, 0, nil)
			t.Cleanup(func() { rc.close(); _ = restored.Close() })
			for i := range 3 {
				if err := rc.do(put(fmt.Sprint("after", i))); err != nil {
					t.Fatalf("write %d on a copy of %d writes: %v", i, writes, err)
				}
			}
		})
	}
}
