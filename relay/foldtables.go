// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"fmt"
	"slices"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// The case-folded indexes (userName, emails, work emails, group
// displayName) hold scim.Fold of each value, and scim.Fold is Go's Unicode
// case tables: a release built with a Go whose tables add case pairs
// (Unicode 16 adds some, for letters unassigned in 15) folds such a value
// to another key than the one stored. Its delete would then leave the old
// key behind, which uniqueness counts as taken by a holder no filter finds,
// and a filter would miss the user. So the file records the Unicode version
// its folded keys were built with, and Open rebuilds them when the
// release's differs.
var (
	keyFoldTables = []byte("fold_unicode")
	foldedIndexes = [][]byte{ixUserName, ixEmail, ixWorkEmail, ixDisplayName}
)

// foldTablesBefore is the Unicode version the folded keys of a file with no
// keyFoldTables were built with: every release before it was recorded was
// built with Go 1.26, whose tables are Unicode 15.0.0 (as since Go 1.21).
const foldTablesBefore = "15.0.0"

// refoldIndexes rebuilds the folded indexes of every tenant's bucket (a
// tenant no longer configured too: one added again has its users back)
// when the file's keys were built with other case tables than this
// build's, a chunk of resources a transaction, then records the version.
// Open runs it before it serves, so nothing else writes meanwhile; one cut
// short (a crash, a full disk) has not recorded the version, and runs
// again from the start on the next Open.
func (s *Store) refoldIndexes() error {
	built, recorded := foldTablesBefore, false
	var tenants []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyFoldTables); v != nil {
			built, recorded = string(v), true
		}
		return tx.Bucket(bucketTenants).ForEachBucket(func(k []byte) error {
			tenants = append(tenants, string(k))
			return nil
		})
	}); err != nil {
		return fmt.Errorf("reading the case tables of the indexes: %w", err)
	}
	if built == unicode.Version && recorded {
		return nil
	}
	keys := 0
	if built != unicode.Version {
		for _, tenant := range tenants {
			n, err := s.refold(tenant)
			if err != nil {
				return fmt.Errorf("rebuilding the case-folded indexes of tenant %s: %w", tenant, err)
			}
			keys += n
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyFoldTables, []byte(unicode.Version))
	}); err != nil {
		return fmt.Errorf("recording the case tables of the indexes: %w", err)
	}
	if built != unicode.Version {
		s.log.Info("rebuilt the case-folded indexes (userName, emails, group displayName) for this build's Unicode case tables",
			"from_unicode", built, "to_unicode", unicode.Version, "tenants", len(tenants), "keys", keys)
	}
	return nil
}

// refold empties tenant's folded indexes and puts every user's and group's
// keys in them again; it returns how many keys it put.
func (s *Store) refold(tenant string) (int, error) {
	if err := s.db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTenants).Bucket([]byte(tenant))
		for _, name := range foldedIndexes {
			if tb.Bucket(name) != nil {
				if err := tb.DeleteBucket(name); err != nil {
					return err
				}
			}
			if _, err := tb.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	keys := 0
	put := func(tb *bolt.Bucket, r *scim.Resource) error {
		// r was indexed when it was written, so no value is too long.
		entries, _ := indexEntries(r)
		for _, e := range entries {
			folded := slices.ContainsFunc(foldedIndexes, func(b []byte) bool { return bytes.Equal(b, e.bucket) })
			if ix := tb.Bucket(e.bucket); ix != nil && folded {
				if err := ix.Put(e.key, nil); err != nil {
					return err
				}
				keys++
			}
		}
		return nil
	}
	for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
		if err := s.eachStored(tenant, rt, "its names and emails are not indexed", put); err != nil {
			return keys, err
		}
	}
	return keys, nil
}
