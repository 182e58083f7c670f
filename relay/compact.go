// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// bbolt reuses the pages that deleted data leaves (events published, users
// deleted, a tenant purged, provisioning log entries past their bound) but
// never gives them back to the file system: the data file stays as large
// as it ever was. A compacted copy holds the same buckets, keys, values and
// bucket sequences in as few pages as they fit in; scimrelay compact puts
// one in place of the data file with the relay stopped.

// compactTxBytes bounds the keys and values one transaction of the copy
// writes, and so the memory it holds until it commits.
const compactTxBytes = 64 << 20

// CompactCopy writes to dst, a new file, a compacted copy of the data file
// src (opened by the caller, who holds its lock), and checks that the
// copy holds exactly what src does (sameContents) before it returns. The
// copy is flushed to disk. On an error dst may hold a partial copy: the
// caller removes it.
func CompactCopy(src *bolt.DB, dst string) error {
	// Written without a flush per transaction, and flushed once at the
	// end: a copy cut short is never used.
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: lockTimeout, NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("creating the compacted copy: %w", err)
	}
	if err := bolt.Compact(out, src, compactTxBytes); err != nil {
		_ = out.Close()
		return fmt.Errorf("writing the compacted copy: %w", err)
	}
	if err := sameContents(src, out); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return fmt.Errorf("flushing the compacted copy: %w", err)
	}
	return out.Close()
}

// sameContents checks that a and b hold the same buckets, keys, values
// and bucket sequences: a digest of each, read in key order.
func sameContents(a, b *bolt.DB) error {
	da, na, err := contentDigest(a)
	if err != nil {
		return fmt.Errorf("reading the data file: %w", err)
	}
	db, nb, err := contentDigest(b)
	if err != nil {
		return fmt.Errorf("reading the compacted copy back: %w", err)
	}
	if na != nb || !bytes.Equal(da, db) {
		return fmt.Errorf("the compacted copy does not hold what the data file does (%d entries, the copy %d): %w", na, nb, errCopyDiffers)
	}
	return nil
}

// errCopyDiffers is sameContents' finding.
var errCopyDiffers = errors.New("contents differ")

// contentDigest reads every bucket of db, nested ones too, in key order,
// and returns a digest of their names, sequences, keys and values, and
// how many entries (keys and buckets) it read.
func contentDigest(db *bolt.DB) ([]byte, int, error) {
	h := sha256.New()
	n := 0
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			n++
			return digestBucket(h, &n, name, b)
		})
	})
	return h.Sum(nil), n, err
}

// digestBucket adds bucket b, named name, to h: each entry is written
// with its length first, so that no two different contents read alike.
// A key not after the one before it is an error: a damaged page, whose
// keys read without a fault (readEveryPage).
func digestBucket(h hash.Hash, n *int, name []byte, b *bolt.Bucket) error {
	field := func(p []byte) {
		var l [9]byte
		if p == nil {
			l[0] = 1 // a nested bucket's value
		}
		binary.BigEndian.PutUint64(l[1:], uint64(len(p)))
		h.Write(l[:])
		h.Write(p)
	}
	field([]byte("bucket"))
	field(name)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], b.Sequence())
	h.Write(seq[:])
	c := b.Cursor()
	var prev []byte
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("it is damaged: in bucket %q a key is out of order", scim.Truncate(string(name), 64))
		}
		prev = k
		*n++
		field(k)
		field(v)
		if v == nil {
			if err := digestBucket(h, n, k, b.Bucket(k)); err != nil {
				return err
			}
		}
	}
	field([]byte("end"))
	return nil
}
