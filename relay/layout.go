// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// upgradeChunk is how many users one transaction of a layout upgrade reads
// at most, so that upgrading a file of a million users holds its dirty
// pages for one chunk at a time, never for the whole file. A variable only
// so that a test can cross chunk boundaries with a few users.
var upgradeChunk = 10_000

// maxSharersLogged bounds the user ids the upgrade's warning about shared
// work emails names: enough to start from, never a flood.
const maxSharersLogged = 10

// upgradeLayout brings a file of layout 2 or 3 (prepare has checked which)
// to layoutVersion. Layout 3 changed the outbox rows only, which are read
// in either form (readOutboxRow); layout 4 indexes every work email
// (indexWorkEmails). Open runs it before it serves, so nothing else
// writes meanwhile. The file is marked layoutVersion before anything
// changes (prepare), with the layout it came from under
// keyUpgradingFrom, which is deleted only when all is done: an upgrade cut
// short (a crash, a full disk) runs again on the next Open, each step may
// run twice, and a release before layoutVersion refuses the file rather
// than write it as of its own layout (a rollback to one left a deleted
// user's work-email keys in a half-upgraded file, which no upgrade
// removes).
func (s *Store) upgradeLayout(from uint64) error {
	added, err := s.indexWorkEmails()
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keyUpgradingFrom)
	}); err != nil {
		return fmt.Errorf("recording layout %d: %w", layoutVersion, err)
	}
	s.log.Info("upgraded the data file's layout", "from", from, "to", layoutVersion, "work_email_keys_added", added)
	return nil
}

// indexWorkEmails puts every work email of every tenant's users in the
// tenant's ix_workemail, where layouts before 4 put the first alone; it
// returns how many keys it added. Tenants no longer configured are done
// too: one added again has its users back. Each tenant's users are read
// upgradeChunk per transaction, in id order.
func (s *Store) indexWorkEmails() (int, error) {
	var names []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTenants).ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	}); err != nil {
		return 0, fmt.Errorf("listing the tenants: %w", err)
	}
	total := 0
	for _, name := range names {
		u := &workEmailUpgrade{store: s, tenant: name}
		if t := s.tenantMap()[name]; t != nil {
			u.uniqueEmail = t.uniqueEmail
		}
		if err := u.run(); err != nil {
			return total, fmt.Errorf("indexing the work emails of tenant %s: %w", name, err)
		}
		total += u.added
		if len(u.shared) > 0 {
			s.log.Warn("upgrading the data file: users share work emails in a tenant whose work email is unique; "+
				"each is indexed for all its users, and a client matching on it finds them all: give each user a work email of its own",
				"tenant", name, "emails", len(u.shared), "users", u.sharers)
		}
	}
	return total, nil
}

// workEmailUpgrade is one tenant's part of indexWorkEmails.
type workEmailUpgrade struct {
	store  *Store
	tenant string
	// uniqueEmail: the tenant is configured with a unique work email, so
	// emails two users share are counted for the operator. They are
	// indexed for both either way: the index holds several ids per key
	// (lookupIDs), and refusing the file would stop the relay.
	uniqueEmail bool
	added       int
	shared      map[string]bool // index key prefixes (emails) more than one user holds
	sharers     []string        // up to maxSharersLogged of the users holding them
}

// run indexes the tenant's users, a chunk per transaction.
func (u *workEmailUpgrade) run() error {
	return u.store.eachStored(u.tenant, scim.UserResourceType, "its work emails are not indexed", func(tb *bolt.Bucket, r *scim.Resource) error {
		ix, err := tb.CreateBucketIfNotExists(ixWorkEmail)
		if err != nil {
			return err
		}
		return u.user(ix, r)
	})
}

// eachStored calls each for every resource of type rt stored for tenant,
// in id order, upgradeChunk of them a transaction, with the tenant's bucket
// in that transaction, so that a walk over a file of a million users holds
// its dirty pages for one chunk at a time. A record that cannot be read is
// read by nothing: it is logged (left, what is not done for it) and left
// as it is, rather than keep the relay from starting.
func (s *Store) eachStored(tenant string, rt *scim.ResourceType, left string, each func(tb *bolt.Bucket, r *scim.Resource) error) error {
	var after []byte // the last resource done
	for {
		n := 0
		if err := s.db.Update(func(tx *bolt.Tx) error {
			tb := tx.Bucket(bucketTenants).Bucket([]byte(tenant))
			b := tb.Bucket(bucketUsers)
			if rt == scim.GroupResourceType {
				b = tb.Bucket(bucketGroups)
			}
			if b == nil {
				return nil
			}
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < upgradeChunk; k, v = c.Next() {
				after = bytes.Clone(k)
				n++
				rec, err := decodeRecord(rt, v)
				if err != nil {
					s.log.Warn("upgrading the data file: a stored "+strings.ToLower(rt.Name)+" cannot be read; "+left, "tenant", tenant, "id", string(k), "err", err)
					continue
				}
				if err := each(tb, rec.res); err != nil {
					return err
				}
			}
			return nil
		}); err != nil || n < upgradeChunk {
			return err
		}
	}
}

// user puts r's missing work email keys in ix. What layouts before 4
// indexed, the first work email (or the primary, or the first email), is
// among r's keys, so the index is then what indexEntries gives for r.
func (u *workEmailUpgrade) user(ix *bolt.Bucket, r *scim.Resource) error {
	id := r.ID()
	// r was indexed when it was written, so no value is too long.
	entries, _ := indexEntries(r)
	for _, e := range entries {
		if !bytes.Equal(e.bucket, ixWorkEmail) {
			continue
		}
		if ix.Get(e.key) == nil {
			if err := ix.Put(e.key, nil); err != nil {
				return err
			}
			u.added++
		}
		if !u.uniqueEmail {
			continue
		}
		prefix := e.key[:len(e.key)-len(id)]
		holders := scanIDs(ix, prefix, 2)
		if len(holders) < 2 {
			continue
		}
		if u.shared == nil {
			u.shared = map[string]bool{}
		}
		u.shared[string(prefix)] = true
		for _, h := range holders {
			if len(u.sharers) < maxSharersLogged && !slices.Contains(u.sharers, h) {
				u.sharers = append(u.sharers, h)
			}
		}
	}
	return nil
}
