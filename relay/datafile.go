// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// The data file as a file: opened under its lock, checked as a copy
// before it replaces anything (restore, compact: compact.go), copied
// while the relay serves (backup), and the space it takes.

// ErrInUse means another process holds the data file.
var ErrInUse = errors.New("in use by another scimrelay process")

// openDataFile opens the data file at path and takes its lock, and checks
// that path still names the file it locked: one moved to the path while
// Open waited for the lock (scimrelay restore renames a backup there while
// it holds the lock) is opened instead, so that the relay never serves a
// file no path names, whose writes a restart would lose.
func openDataFile(path string, o *bolt.Options) (*bolt.DB, error) {
	for range 3 {
		before, err := os.Stat(path)
		db, err2 := bolt.Open(path, 0o600, o)
		if err2 != nil {
			return nil, err2
		}
		after, err3 := os.Stat(path)
		if err != nil || (err3 == nil && os.SameFile(before, after)) {
			return db, nil
		}
		_ = db.Close()
	}
	return nil, errors.New("another file was moved to its path each time it was opened")
}

// readableLayout returns the layout version a file's meta bucket records,
// or why this build cannot read the file.
func readableLayout(meta *bolt.Bucket) (uint64, error) {
	v := meta.Get(keyLayout)
	if len(v) != 8 {
		return 0, errors.New("the file records no layout version; it was written by an older scimrelay")
	}
	layout := binary.BigEndian.Uint64(v)
	if from := meta.Get(keyUpgradingFrom); layout == layoutVersion && len(from) == 8 {
		layout = binary.BigEndian.Uint64(from) // an upgrade cut short
	}
	if layout < upgradableLayout || layout > layoutVersion {
		return 0, fmt.Errorf("the file has layout version %d; this build reads version %d, and upgrades a file of versions %d to %d", layout, layoutVersion, upgradableLayout, layoutVersion-1)
	}
	return layout, nil
}

// CheckCopy checks that the file at path is a whole copy of a data file
// that this build can open: a backup before it replaces anything. It
// holds every page its meta page counts (bbolt opens a copy cut short
// without a complaint, since it reads only the meta pages, and would
// fault on the first page past the end), and records a layout this build
// reads or upgrades.
func CheckCopy(path string) error {
	// bbolt would try to write a new file's first pages into an empty
	// one (opened read-only: "bad file descriptor").
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 {
		return errors.New("it is empty (0 bytes)")
	}
	return checkPages(path, "the copy", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("it has no meta bucket: it is not a scimrelay data file")
		}
		_, err := readableLayout(meta)
		return err
	})
}

// checkPages opens the file at path read-only (a shared lock, taken
// within lockTimeout), reads every page it uses (readEveryPage; what
// names the file in the error), checks its tree (checkTree) and then runs
// then, when not nil, in the same read.
func checkPages(path, what string, then func(*bolt.Tx) error) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return err
	}
	leaveOpen := false
	defer func() {
		if !leaveOpen {
			_ = db.Close()
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if err := readEveryPage(tx, fi.Size(), what); err != nil {
			return err
		}
		if err := checkTree(tx); err != nil {
			leaveOpen = true
			return err
		}
		if then == nil {
			return nil
		}
		return then(tx)
	})
}

// readEveryPage checks that a file of size bytes holds every page tx
// counts, and reads every page it uses, in this goroutine: bbolt opens a
// file cut short without a complaint (it reads only the meta pages) and
// faults (SIGBUS) on the first page past the end, and it panics at a
// damaged page (its type, its id), in a goroutine of its own when it
// rebuilds the free list of a file that keeps none, as the relay's, at
// the first write: either ended the process. Here both are an error.
// what names the file in the error ("the copy", "the data file").
func readEveryPage(tx *bolt.Tx, size int64, what string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("it is damaged: %v", r)
		}
	}()
	if want := tx.Size(); size < want {
		return fmt.Errorf("%d bytes of the %d its pages take: %s was cut short", size, want, what)
	}
	// A page damaged in a copy of the right length (a disk or a transfer
	// error) made the relay panic at its start, on the file the restore
	// had put in place. tx.Check would rebuild the free list in a
	// goroutine of its own, where a panic cannot be taken.
	// Keys out of order (a leaf page's keys damaged, its header intact)
	// read without a fault, yet the free list's rebuild at the open for
	// writing checks their order and panics.
	n := 0
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return digestBucket(crc32.NewIEEE(), &n, name, b) // the read is the check; a cheap sum of it will do
	})
}

// checkTree runs bbolt's own check of tx's file, every page of which
// readEveryPage has read without a fault: the free list's rebuild checks
// more than a walk of the keys reads (a branch page's keys, which the
// walk steps past; no page used twice), and panicked where this returns
// an error. After its first error bbolt's check goes on reading the file
// in a goroutine of its own, which an unmapping would fault: the caller
// must leave the file open (a mapping and a descriptor, in a process
// about to end on the error).
func checkTree(tx *bolt.Tx) error {
	var damage error
	for err := range tx.Check() {
		if damage == nil {
			damage = fmt.Errorf("it is damaged: %v", err)
		}
	}
	return damage
}

// Backup writes a consistent copy of the data file to w while the store
// keeps serving. size, when set, is told the copy's length before its
// first byte is written, so that a reader can tell a copy cut short.
func (s *Store) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("writing backup: %w", err)
	}
	return n, nil
}

// StorageStats describes the space the data file takes, by bucket.
type StorageStats struct {
	// FileBytes is the size of the data file on disk (FileSpace): its
	// free pages included, and the room bbolt grew it by ahead of them.
	FileBytes int64 `json:"file_bytes"`
	// FreeBytes is the size of its free pages: what the relay reuses
	// before the file grows, and what scimrelay compact gives back.
	FreeBytes int64 `json:"free_bytes"`
	// Buckets lists every bucket: meta, outbox, quarantine, tokens,
	// subscribers, purged, provlog, and tenants/<name>/<bucket> for each
	// tenant.
	Buckets []BucketStats `json:"buckets"`
}

// BucketStats is one bucket's share of the data file.
type BucketStats struct {
	Name string `json:"name"`
	Keys int    `json:"keys"`
	// Bytes is what its pages hold in use (leaves, branches and inline
	// buckets), not counting the pages' unused room.
	Bytes int64 `json:"bytes"`
	// PageBytes is the size of the pages it takes.
	PageBytes int64 `json:"page_bytes"`
}

// FileSpace returns the data file's size and the size of its free pages
// (bbolt's free list, which it keeps in memory): cheap, for every scrape.
func (s *Store) FileSpace() (file, free int64, err error) {
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), int64(s.db.Stats().FreeAlloc), nil
}

// StorageStats walks every bucket of the data file. It reads every page, so
// it is for operators and benchmarks, not for every scrape.
func (s *Store) StorageStats() (StorageStats, error) {
	var out StorageStats
	err := s.db.View(func(tx *bolt.Tx) error {
		add := func(name string, b *bolt.Bucket) {
			st := b.Stats()
			out.Buckets = append(out.Buckets, BucketStats{
				Name: name, Keys: st.KeyN,
				Bytes:     int64(st.BranchInuse + st.LeafInuse + st.InlineBucketInuse),
				PageBytes: int64(st.BranchAlloc + st.LeafAlloc),
			})
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if !bytes.Equal(name, bucketTenants) {
				add(string(name), b)
				return nil
			}
			return b.ForEachBucket(func(tenant []byte) error {
				tb := b.Bucket(tenant)
				return tb.ForEachBucket(func(sub []byte) error {
					add("tenants/"+string(tenant)+"/"+string(sub), tb.Bucket(sub))
					return nil
				})
			})
		})
	})
	if err == nil {
		out.FileBytes, out.FreeBytes, err = s.FileSpace()
	}
	if err != nil {
		return StorageStats{}, fmt.Errorf("reading the data file's statistics: %w", err)
	}
	return out, nil
}
