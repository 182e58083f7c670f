// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// committer runs the store's writes as group commits: one goroutine
// commits whatever writes are waiting, in one transaction and one fsync,
// and the writes that arrive meanwhile wait for the next. A write that
// finds it idle is committed at once, unless the commit just before
// answered several writers that may be on their way back (gather), so a
// steady lone writer waits for no timer, and parallel writers share a
// commit without one.
//
// bbolt's own Batch was used before. It collects writes for
// MaxBatchDelay, then commits them while the next batch collects; with a
// delay of 0 each write became its own commit and parallel writers
// queued for the lock one fsync at a time (1,249 creates/s at 32 writers),
// and any delay is paid by every write, also a lone one. The semantics are
// Batch's: a function may run more than once, and one that fails is run
// again alone, so that its error is its own and the others commit without
// it.
type committer struct {
	db     *bolt.DB
	max    int           // writes in one transaction at most
	linger time.Duration // an idle committer's wait for more writes
	// gatherMax bounds the wait for the writers the last commit answered
	// (gather).
	gatherMax time.Duration

	// observe, when set, is told of every commit: how long it took and
	// how many writes it held.
	observe atomic.Pointer[func(d time.Duration, writes int)]

	// failed, once set, is why a commit failed in bbolt itself (writing
	// or flushing the data file; a full disk apart): every later write
	// is refused with it. onFail is told once.
	failed atomic.Pointer[error]
	onFail func(error)

	// last is the id of the last transaction the committer committed, or
	// that the file had when it was opened. A write transaction's id is
	// the file's last one plus one, so one at or below last means the
	// file was replaced under the relay (replaced).
	last atomic.Uint64
	// opened is the data file the store opened, which its path must still
	// name (replaced).
	opened os.FileInfo
	// metas reads the data file's meta pages (checkMetas); pageSize is
	// the file's. seen is what the two pages held when the committer
	// began, each changed by the commits since: only the committer writes
	// the file once it runs (Open's own writes come before it), and a
	// commit writes the page of its id's parity. Only the committer's
	// goroutine reads and writes seen.
	metas    *os.File
	pageSize int
	seen     [2]uint64

	mu     sync.Mutex
	queue  []commitCall
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

// DefaultMaxBatch is how many writes share a commit unless configured.
const DefaultMaxBatch = 1000

// maxGather bounds gather's wait: a few fsyncs on a slow disk.
const maxGather = 2 * time.Millisecond

type commitCall struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// ErrWritesStopped is the error of every write after a commit failed in
// bbolt itself (an I/O error writing or flushing the data file), or the
// file was found replaced (ErrFileReplaced). Such a
// failure can leave the data file's pages in the operating system's cache
// unlike the disk, and bbolt's own state unlike either (a meta page
// written, its flush failed, the transaction rolled back in memory): a
// later commit could build on pages that are not there. Nothing more is
// written; the relay stops, and reads the file from disk when it starts
// again, as etcd and PostgreSQL do on a failed flush.
var ErrWritesStopped = errors.New("the relay stopped writing its data file (a commit failed, or the file was replaced): it writes nothing more until it is restarted")

func newCommitter(db *bolt.DB, maxBatch int, linger time.Duration, onFail func(error)) *committer {
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	c := &committer{db: db, max: maxBatch, linger: linger, gatherMax: maxGather, onFail: onFail, wake: make(chan struct{}, 1), done: make(chan struct{})}
	_ = db.View(func(tx *bolt.Tx) error {
		c.last.Store(uint64(tx.ID()))
		return nil
	})
	c.opened, _ = os.Stat(db.Path()) // Open checked that it is the file it opened
	c.metas, _ = os.Open(db.Path())  // nil if it cannot be: the other checks remain
	c.pageSize = db.Info().PageSize
	if c.metas != nil {
		if seen, err := c.readMetas(); err == nil {
			c.seen = seen
		} else {
			c.metas.Close()
			c.metas = nil
		}
	}
	go c.run()
	return c
}

// ErrFileReplaced means the data file was replaced while the relay had it
// open: a backup copied over it (cp writes the file in place, which
// bbolt's lock does not stop), or another file moved to its path. In
// place, its pages are no longer the ones the relay knows are free, and a
// commit would overwrite live ones; moved there, what the relay writes
// goes to a file no path names, lost at the next start. The relay writes
// nothing more and stops, and serves the file at its path when started
// again.
var ErrFileReplaced = errors.New("the data file was replaced while the relay had it open (a backup copied or moved over it?)")

// replaced checks that the data file is still the one the committer
// wrote: its path names the file the store opened, and the file's last
// transaction is not below known, the last the committer had committed
// before the transaction txID began (a read transaction's id is the
// file's last; a write transaction's, with write set, the file's last
// plus one). Other writers of the store (the layout upgrade at open, a
// reload's new tenants) only raise the id.
func (c *committer) replaced(known uint64, txID int, write bool) error {
	if now, err := os.Stat(c.db.Path()); err != nil || !os.SameFile(now, c.opened) {
		return fmt.Errorf("%w: %s is no longer the file the relay opened", ErrFileReplaced, c.db.Path())
	}
	last := uint64(txID)
	if write {
		last--
	}
	if last < known {
		return fmt.Errorf("%w: its last transaction is %d, and the relay had committed %d", ErrFileReplaced, last, known)
	}
	if write {
		return c.checkMetas()
	}
	return nil
}

// metaTxidAt is where a meta page holds its transaction id: after the
// page's header (id, flags, count, overflow: 16 bytes) and, in the meta,
// magic, version, page size, flags, the root bucket, the freelist and the
// high water mark (48 bytes). bbolt's layout, which its file format fixes.
const metaTxidAt = 16 + 48

// checkMetas checks, inside a write transaction (no other commit can
// write a meta page meanwhile), that the file's two meta pages hold what
// the committer knows they hold (seen). A copy written in place while a
// commit was under way passes the transaction-id check of replaced: that
// commit wrote its meta page, one id above the relay's, over the copy,
// whose other meta page is the copy's. Without this the next commit read
// the copy's pages through the relay's and panicked, or wrote into them.
// (A rule on the pair alone, the last id and the one before, would refuse
// a healthy file: a backup's copy holds its last id on page 0 whatever
// its parity, and bbolt's next commit writes the page of its own.)
func (c *committer) checkMetas() error {
	if c.metas == nil {
		return nil
	}
	ids, err := c.readMetas()
	if err != nil {
		return fmt.Errorf("%w: its meta pages cannot be read: %v", ErrFileReplaced, err)
	}
	if ids != c.seen {
		return fmt.Errorf("%w: its meta pages hold transactions %d and %d, where the relay wrote %d and %d", ErrFileReplaced, ids[0], ids[1], c.seen[0], c.seen[1])
	}
	return nil
}

// readMetas reads the transaction ids of the file's two meta pages.
func (c *committer) readMetas() ([2]uint64, error) {
	var ids [2]uint64
	var b [8]byte
	for i := range ids {
		if _, err := c.metas.ReadAt(b[:], int64(i*c.pageSize+metaTxidAt)); err != nil {
			return ids, err
		}
		ids[i] = binary.NativeEndian.Uint64(b[:]) // bbolt writes it in the machine's order
	}
	return ids, nil
}

// do commits fn with the writes waiting beside it and returns once that
// commit is durable, with fn's error or the commit's.
func (c *committer) do(fn func(*bolt.Tx) error) error {
	if err := c.stopped(); err != nil {
		return err
	}
	call := commitCall{fn: fn, err: make(chan error, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return bolterrors.ErrDatabaseNotOpen
	}
	c.queue = append(c.queue, call)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return <-call.err
}

// stopped returns the error of every write once a commit has failed.
func (c *committer) stopped() error {
	if f := c.failed.Load(); f != nil {
		return fmt.Errorf("%w (%w)", ErrWritesStopped, *f)
	}
	return nil
}

// fail stops the committer's writes after a commit failed with err.
func (c *committer) fail(err error) {
	if c.failed.CompareAndSwap(nil, &err) && c.onFail != nil {
		c.onFail(err)
	}
}

// close commits what is queued and stops; later writes fail.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
	if c.metas != nil {
		c.metas.Close()
	}
}

func (c *committer) run() {
	defer close(c.done)
	var last lastCommit
	for range c.wake {
		if c.linger > 0 {
			time.Sleep(c.linger) // to let more writers join: storage.batch_delay
		}
		for {
			if c.linger == 0 {
				c.gather(last)
			}
			c.mu.Lock()
			n := min(len(c.queue), c.max)
			batch := c.queue[:n:n]
			c.queue = c.queue[n:]
			left := len(c.queue)
			if left == 0 {
				c.queue = nil // let the backing array go
			}
			closed := c.closed
			c.mu.Unlock()
			if n == 0 {
				if closed {
					return
				}
				break
			}
			start := time.Now()
			c.commit(batch)
			last = lastCommit{writes: n, took: time.Since(start), ended: time.Now()}
			if left > 0 {
				last.writes = 0 // the writes left behind have waited a commit already
			}
		}
	}
}

// lastCommit is what gather knows of the commit before.
type lastCommit struct {
	writes int           // how many writers it answered (0: do not wait)
	took   time.Duration // from its start until they were answered
	ended  time.Time
}

// gather waits for the writers the last commit answered. They are
// answered together, and under steady load most of them write again soon
// after, each first doing its own work (an HTTP request read, decoded,
// validated). Committing at once the one or two writes that came first
// would spend a commit, and its fsyncs, on them, and the others would
// queue behind it. So the committer waits until half as many writes as
// the last commit held are queued, until half that commit's time has
// passed since it ended, and at most gatherMax (2 ms). After a commit of
// one, half is none: a steady lone writer never waits; a write that comes
// alone after a commit of four or more may wait up to the bound. It does not
// wait when the last commit left writes queued (they have waited a commit
// already), nor with storage.batch_delay set, which then decides alone how
// long the committer waits (run). Measured in README, Performance.
func (c *committer) gather(last lastCommit) {
	want := last.writes / 2
	wait := min(last.took/2, c.gatherMax) - time.Since(last.ended)
	if n, closed := c.queued(); n >= want || closed || wait <= 0 {
		return
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		select {
		case <-c.wake: // a write was queued (or the committer closed)
		case <-deadline.C:
			return
		}
		if n, closed := c.queued(); n >= want || closed {
			return
		}
	}
}

// queued is how many writes wait, and whether the committer is closing.
func (c *committer) queued() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue), c.closed
}

// commit runs calls in one transaction. When one fails, the transaction is
// rolled back, the failing call runs alone (its error goes to its caller)
// and the others run again without it.
func (c *committer) commit(calls []commitCall) {
	start := time.Now()
	n := len(calls)
	// The commit is observed before its writers are told, so that a write
	// that has returned is counted.
	observed := func() {
		if f := c.observe.Load(); f != nil {
			(*f)(time.Since(start), n)
		}
	}
	for len(calls) > 0 {
		if err := c.stopped(); err != nil {
			for _, call := range calls {
				call.err <- err
			}
			return
		}
		failed := -1
		var replaced error
		err := c.update(func(tx *bolt.Tx) error {
			// Only this goroutine stores last: it is the last commit's.
			if replaced = c.replaced(c.last.Load(), tx.ID(), true); replaced != nil {
				return replaced
			}
			for i, call := range calls {
				if err := safely(call.fn, tx); err != nil {
					// A write that panicked may have read pages written
					// under the relay since the check above (a copy in
					// place): if so, that is the failure, not the write.
					if errors.Is(err, errPanicked) {
						if replaced = c.replaced(c.last.Load(), tx.ID(), true); replaced != nil {
							return replaced
						}
					}
					failed = i
					return err
				}
			}
			return nil
		})
		if replaced != nil {
			// Nothing was written: the transaction was rolled back.
			c.fail(replaced)
			err = c.stopped()
			for _, call := range calls {
				call.err <- err
			}
			return
		}
		if failed < 0 {
			c.check(err)
			observed()
			for _, call := range calls {
				call.err <- err
			}
			return
		}
		bad := calls[failed]
		calls = append(calls[:failed:failed], calls[failed+1:]...)
		var fnErr error
		err = c.update(func(tx *bolt.Tx) error {
			fnErr = safely(bad.fn, tx)
			return fnErr
		})
		if fnErr == nil {
			c.check(err)
		}
		bad.err <- err
	}
	observed() // every write failed, each alone
}

// update runs fn in a write transaction, and keeps its id as the last
// one once it has committed.
func (c *committer) update(fn func(*bolt.Tx) error) error {
	var id int
	err := c.db.Update(func(tx *bolt.Tx) error {
		id = tx.ID()
		return fn(tx)
	})
	if err == nil {
		c.last.Store(uint64(id))
		c.seen[id%2] = uint64(id) // the meta page bbolt wrote
	}
	return err
}

// check stops writes when err, the error of a transaction whose writes
// all succeeded, says its commit failed, unless for want of space: bbolt
// writes the meta page in place, so a full disk fails a commit before its
// meta page is written, and rolling it back leaves the file as it was
// (Store.Writable waits for room).
func (c *committer) check(err error) {
	if err != nil && !diskFull(err) {
		c.fail(err)
	}
}

// errPanicked is the error of a write that panicked (safely).
var errPanicked = errors.New("recovered from panic")

// safely runs fn, turning a panic into an error: a write must never take
// the committer, and every writer waiting on it, down.
func safely(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("writing to the data file: %w: %v", errPanicked, p)
		}
	}()
	return fn(tx)
}
