// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// SinceBackup is what a data file holds that an earlier backup of it does
// not, or no longer: what restoring the backup in the file's place takes
// back, and the operator then sets right (README, Backup and recovery).
type SinceBackup struct {
	// Made holds, by tenant, the users and groups made since the backup
	// ("Users/<id>", "Groups/<id>"): the sinks had their events, the
	// restored file has them no more, and Entra makes them again under
	// new ids.
	Made map[string][]string
	// Deleted holds, by tenant, those deleted since the backup: the sinks
	// were told, and the restored file has them again.
	Deleted map[string][]string
	// CredentialsMade are the Secret Tokens and OAuth clients made since
	// the backup (a rotation makes one too): refused after the restore.
	CredentialsMade []Token
	// CredentialsRevoked are those revoked since the backup: live again
	// after the restore.
	CredentialsRevoked []Token
	// CredentialsBack are those deleted since the backup (a tenant's
	// purge deletes its credentials) that were not revoked then: back after
	// the restore, and live.
	CredentialsBack []Token
	// Purged holds, by tenant, how many users and groups the backup has
	// of each tenant purged since (its bucket gone from the data file):
	// all back after the restore, its credentials too; they are not in
	// Deleted.
	Purged map[string]int
	// SubscribersAdded are the NATS subscribers added since the backup,
	// gone after the restore; SubscribersRemoved those removed since,
	// back; SubscribersChanged those whose key, subjects or start changed
	// since, back as they were.
	SubscribersAdded, SubscribersRemoved, SubscribersChanged []string
	// OAuthKeyChanged says the key that signs OAuth access tokens was
	// rotated since the backup: the restored file signs with the old one.
	OAuthKeyChanged bool
}

// Empty reports whether nothing changed since the backup.
func (s SinceBackup) Empty() bool {
	return len(s.Made) == 0 && len(s.Deleted) == 0 && len(s.CredentialsMade) == 0 && len(s.CredentialsRevoked) == 0 &&
		len(s.CredentialsBack) == 0 && len(s.Purged) == 0 &&
		len(s.SubscribersAdded) == 0 && len(s.SubscribersRemoved) == 0 && len(s.SubscribersChanged) == 0 && !s.OAuthKeyChanged
}

// CompareWithBackup reads the data file at current and the backup at
// backup (CheckCopy has passed), both read-only (a relay's lock on either
// waits and then fails, as CheckCopy's), and returns what current holds
// that backup does not. A current file cut short or damaged (which may be
// why it is restored) is an error, CheckCopy's, not a fault. The users
// and groups are compared by id in key order, one tenant at a time,
// without loading either file's whole set.
func CompareWithBackup(current, backup string) (since SinceBackup, err error) {
	if err := CheckCopy(current); err != nil {
		return SinceBackup{}, err
	}
	cur, err := bolt.Open(current, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return SinceBackup{}, fmt.Errorf("opening %s: %w", current, err)
	}
	defer func() { _ = cur.Close() }()
	old, err := bolt.Open(backup, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return SinceBackup{}, fmt.Errorf("opening %s: %w", backup, err)
	}
	defer func() { _ = old.Close() }()
	err = cur.View(func(now *bolt.Tx) error {
		return old.View(func(then *bolt.Tx) (err error) {
			defer func() { // bbolt panics at a damaged page
				if r := recover(); r != nil {
					err = fmt.Errorf("a page is damaged: %v", r)
				}
			}()
			since, err = compareTx(now, then)
			return err
		})
	})
	return since, err
}

// compareTx is CompareWithBackup's work, in a transaction on each file.
func compareTx(now, then *bolt.Tx) (SinceBackup, error) {
	s := SinceBackup{Made: map[string][]string{}, Deleted: map[string][]string{}, Purged: map[string]int{}}
	for _, tenant := range tenantNames(now, then) {
		// Only a purge removes a tenant's bucket.
		purged := now.Bucket(bucketTenants).Bucket([]byte(tenant)) == nil
		for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
			made, deleted := compareKeys(storedOf(now, tenant, rt), storedOf(then, tenant, rt))
			for _, id := range made {
				s.Made[tenant] = append(s.Made[tenant], rt.Name+"s/"+id)
			}
			if purged {
				s.Purged[tenant] += len(deleted)
				continue
			}
			for _, id := range deleted {
				s.Deleted[tenant] = append(s.Deleted[tenant], rt.Name+"s/"+id)
			}
		}
	}
	nowTokens, err := tokenRecords(now)
	if err != nil {
		return s, err
	}
	thenTokens, err := tokenRecords(then)
	if err != nil {
		return s, err
	}
	for _, id := range slices.Sorted(maps.Keys(nowTokens)) {
		t, before := nowTokens[id], thenTokens[id]
		switch {
		case before == nil || !bytes.Equal(before.Hash, t.Hash):
			s.CredentialsMade = append(s.CredentialsMade, t.Token)
		case !t.Revoked.IsZero() && before.Revoked.IsZero():
			s.CredentialsRevoked = append(s.CredentialsRevoked, t.Token)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(thenTokens)) {
		if t := thenTokens[id]; nowTokens[id] == nil && t.Revoked.IsZero() {
			s.CredentialsBack = append(s.CredentialsBack, t.Token)
		}
	}
	nowSubs, thenSubs := now.Bucket(bucketSubscribers), then.Bucket(bucketSubscribers)
	s.SubscribersAdded, s.SubscribersRemoved = compareKeys(nowSubs, thenSubs)
	if nowSubs != nil && thenSubs != nil {
		_ = nowSubs.ForEach(func(k, v []byte) error {
			if w := thenSubs.Get(k); w != nil && !sameSubscriber(v, w) {
				s.SubscribersChanged = append(s.SubscribersChanged, string(k))
			}
			return nil
		})
	}
	s.OAuthKeyChanged = !bytes.Equal(now.Bucket(bucketMeta).Get(keyOAuth), then.Bucket(bucketMeta).Get(keyOAuth))
	for tenant, n := range s.Purged {
		if n == 0 && !slices.ContainsFunc(s.CredentialsBack, func(t Token) bool { return t.Tenant == tenant }) {
			delete(s.Purged, tenant) // nothing of it comes back
		}
	}
	return s, nil
}

// tenantNames are the names of the tenants either transaction's file
// holds, sorted.
func tenantNames(txs ...*bolt.Tx) []string {
	var names []string
	for _, t := range txs {
		if b := t.Bucket(bucketTenants); b != nil {
			_ = b.ForEachBucket(func(k []byte) error {
				names = append(names, string(k))
				return nil
			})
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// storedOf is the bucket of tenant's resources of type rt in t, nil when
// the tenant has none.
func storedOf(t *bolt.Tx, tenant string, rt *scim.ResourceType) *bolt.Bucket {
	if tb := t.Bucket(bucketTenants).Bucket([]byte(tenant)); tb != nil {
		return resourceBucket(tb, rt)
	}
	return nil
}

// compareKeys walks two buckets' keys in order and returns those only
// now has (added) and those only then has (removed); a nil bucket has
// none.
func compareKeys(now, then *bolt.Bucket) (added, removed []string) {
	var a, b *bolt.Cursor
	var ka, kb []byte
	if now != nil {
		a = now.Cursor()
		ka, _ = a.First()
	}
	if then != nil {
		b = then.Cursor()
		kb, _ = b.First()
	}
	for ka != nil || kb != nil {
		switch c := compareNil(ka, kb); {
		case c < 0:
			added = append(added, string(ka))
			ka, _ = a.Next()
		case c > 0:
			removed = append(removed, string(kb))
			kb, _ = b.Next()
		default:
			ka, _ = a.Next()
			kb, _ = b.Next()
		}
	}
	return added, removed
}

// compareNil is bytes.Compare with nil (a cursor at its end) after every
// key.
func compareNil(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}

// tokenRecords reads the tokens bucket of t by id.
func tokenRecords(t *bolt.Tx) (map[string]*storedToken, error) {
	out := map[string]*storedToken{}
	b := t.Bucket(bucketTokens)
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		var st storedToken
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("decoding token %s: %w", k, err)
		}
		if st.Kind == "" {
			st.Kind = KindToken // written before there were kinds
		}
		out[string(k)] = &st
		return nil
	})
	return out, err
}

// sameSubscriber reports whether two records of a subscriber give it the
// same key, subjects and start.
func sameSubscriber(a, b []byte) bool {
	var x, y Subscriber
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return x.PublicKey == y.PublicKey && x.Subjects == y.Subjects && x.From == y.From
}
