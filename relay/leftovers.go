// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Leftovers is what the data file holds under a tenant's name, whether
// or not a tenant of that name is configured. A tenant removed from
// relay.yaml keeps all of it until it is purged (purge.go), and one added
// under the name has all of it back: its users and groups, its stored
// credentials, and the NATS subscribers whose subjects name it.
type Leftovers struct {
	Users, Groups int
	// Tokens and Clients count the stored SCIM tokens and OAuth clients
	// that are live (neither revoked nor expired): those that let their
	// holder in again.
	Tokens, Clients int
	// Subscribers names the NATS subscribers whose subjects name the
	// tenant (Subscriber.Tenant).
	Subscribers []string
}

// Empty reports whether the name holds nothing: a tenant added under it
// starts afresh.
func (l Leftovers) Empty() bool {
	return l.Users == 0 && l.Groups == 0 && l.Tokens == 0 && l.Clients == 0 && len(l.Subscribers) == 0
}

// Leftovers returns what the data file holds under the tenant name. It
// counts the tenant's users and groups by reading their buckets' pages, so
// it is for a change of tenants, not for every request.
func (s *Store) Leftovers(ctx context.Context, name string) (Leftovers, error) {
	var l Leftovers
	if err := s.db.View(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTenants).Bucket([]byte(name))
		if tb == nil {
			return nil
		}
		if b := tb.Bucket(bucketUsers); b != nil {
			l.Users = b.Stats().KeyN
		}
		if b := tb.Bucket(bucketGroups); b != nil {
			l.Groups = b.Stats().KeyN
		}
		return nil
	}); err != nil {
		return Leftovers{}, fmt.Errorf("counting the resources of tenant %s: %w", name, err)
	}
	now := s.now()
	s.tokens.mu.RLock()
	for _, st := range s.tokens.byID {
		switch {
		case st.Tenant != name || !st.Live(now):
		case st.Kind == KindClient:
			l.Clients++
		default:
			l.Tokens++
		}
	}
	s.tokens.mu.RUnlock()
	subs, err := s.SubscribersOf(ctx, name)
	if err != nil {
		return Leftovers{}, err
	}
	l.Subscribers = subs
	return l, nil
}

// SubscribersOf returns the names of the NATS subscribers scoped to the
// tenant name, without counting anything else it holds (a removal needs
// them alone, and Leftovers reads every page of a tenant's resources).
func (s *Store) SubscribersOf(_ context.Context, name string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		out, err = subscribersOf(tx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing subscribers: %w", err)
	}
	return out, nil
}

// keyTenants is meta's record of the tenants configured when the file was
// last opened or its tenants set: a JSON list of their names.
var keyTenants = []byte("tenants")

// recordedTenants returns the tenants meta records; known is false when it
// has no record that it can read (a new file, or one last used by a
// release that kept none; a record that cannot be read is written anew).
func recordedTenants(tx *bolt.Tx) (tenants []string, known bool) {
	if v := tx.Bucket(bucketMeta).Get(keyTenants); v != nil {
		known = json.Unmarshal(v, &tenants) == nil
	}
	return tenants, known
}

// recordTenants records the configured tenants in meta.
func recordTenants(tx *bolt.Tx, tenants map[string]*tenant) error {
	v, err := json.Marshal(slices.Sorted(maps.Keys(tenants)))
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketMeta).Put(keyTenants, v); err != nil {
		return fmt.Errorf("recording the configured tenants: %w", err)
	}
	return nil
}

// AddedSinceLastRun returns the tenants configured at Open that were not
// configured when the file's tenants were last recorded (RecordTenants,
// or a reload's SetTenants): a name among them that holds Leftovers has
// them back. None when the file had no record of its tenants (a new
// file, or one a release that kept none used last).
func (s *Store) AddedSinceLastRun() []string { return s.addedAtOpen }

// RecordTenants records the configured tenants in the data file, once what
// AddedSinceLastRun says has been said: a start that fails before then
// says it again at the next one (the diff review). Commands that open the
// file without serving it record nothing.
func (s *Store) RecordTenants() error {
	return s.commits.do(func(tx *bolt.Tx) error { return recordTenants(tx, s.tenantMap()) })
}
