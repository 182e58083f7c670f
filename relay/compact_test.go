// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestCompactCopy: a compacted copy of a file with free pages is smaller
// and holds the same buckets (nested ones too), keys, values (an empty one
// too) and bucket sequences; and the check that it does finds a copy that
// differs by a value, a key or a sequence.
func TestCompactCopy(t *testing.T) {
	dir := t.TempDir()
	src, err := bolt.Open(filepath.Join(dir, "src.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	value := bytes.Repeat([]byte("v"), 2000)
	err = src.Update(func(tx *bolt.Tx) error {
		top, err := tx.CreateBucket([]byte("tenants"))
		if err != nil {
			return err
		}
		inner, err := top.CreateBucket([]byte("acme"))
		if err != nil {
			return err
		}
		if err := inner.SetSequence(41); err != nil {
			return err
		}
		for i := range 2000 {
			if err := inner.Put(fmt.Appendf(nil, "user%05d", i), value); err != nil {
				return err
			}
		}
		if err := inner.Put([]byte("empty"), []byte{}); err != nil {
			return err
		}
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return meta.Put([]byte("layout"), []byte{0, 0, 0, 0, 0, 0, 0, 9})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Update(func(tx *bolt.Tx) error {
		inner := tx.Bucket([]byte("tenants")).Bucket([]byte("acme"))
		for i := 10; i < 2000; i++ {
			if err := inner.Delete(fmt.Appendf(nil, "user%05d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "dst.db")
	if err := CompactCopy(src, dst); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(src.Path())
	after, _ := os.Stat(dst)
	if after.Size() >= before.Size()/4 {
		t.Fatalf("compacted %d bytes to %d", before.Size(), after.Size())
	}
	out, err := bolt.Open(dst, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	err = out.View(func(tx *bolt.Tx) error {
		inner := tx.Bucket([]byte("tenants")).Bucket([]byte("acme"))
		if seq, v, e := inner.Sequence(), inner.Get([]byte("user00003")), inner.Get([]byte("empty")); seq != 41 || !bytes.Equal(v, value) || e == nil || len(e) != 0 || inner.Get([]byte("user00010")) != nil {
			t.Errorf("the copy's bucket: sequence %d, user00003 %d bytes, empty %v, user00010 %v", seq, len(v), e, inner.Get([]byte("user00010")))
		}
		if inner.Stats().KeyN != 11 {
			t.Errorf("the copy's bucket holds %d keys, want 11", inner.Stats().KeyN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameContents(src, out); err != nil {
		t.Fatalf("the copy as written: %v", err)
	}

	for name, change := range map[string]func(*bolt.Bucket) error{
		"a value":                func(b *bolt.Bucket) error { return b.Put([]byte("user00003"), []byte("other")) },
		"an empty value removed": func(b *bolt.Bucket) error { return b.Delete([]byte("empty")) },
		"a key more":             func(b *bolt.Bucket) error { return b.Put([]byte("user00011"), value) },
		"a sequence":             func(b *bolt.Bucket) error { return b.SetSequence(42) },
	} {
		err := out.Update(func(tx *bolt.Tx) error { return change(tx.Bucket([]byte("tenants")).Bucket([]byte("acme"))) })
		if err != nil {
			t.Fatal(err)
		}
		if err := sameContents(src, out); !errors.Is(err, errCopyDiffers) {
			t.Errorf("%s changed in the copy: %v, want it found", name, err)
		}
		// Back as it was, for the next change.
		err = out.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("tenants")).Bucket([]byte("acme"))
			if err := b.Delete([]byte("user00011")); err != nil {
				return err
			}
			if err := b.Put([]byte("user00003"), value); err != nil {
				return err
			}
			if err := b.Put([]byte("empty"), []byte{}); err != nil {
				return err
			}
			return b.SetSequence(41)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := sameContents(src, out); err != nil {
			t.Fatalf("the copy put back after %s: %v", name, err)
		}
	}
}
