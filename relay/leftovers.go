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
// relay.yaml keeps all of it, and one added under the name has all of it
// back: its users and groups, its stored credentials, and the NATS
// subscribers whose subjects name it.
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
	subs, err := s.Subscribers(ctx)
	if err != nil {
		return Leftovers{}, err
	}
	for _, sub := range subs {
		if sub.Tenant() == name {
			l.Subscribers = append(l.Subscribers, sub.Name)
		}
	}
	return l, nil
}

// keyTenants is meta's record of the tenants configured when the file was
// last opened or its tenants set: a JSON list of their names.
var keyTenants = []byte("tenants")

// recordTenants records the configured tenants in meta and returns those
// it recorded before; known is false when it had no record that it can
// read (a new file, or one last used by a release that kept none).
func recordTenants(tx *bolt.Tx, tenants map[string]*tenant) (before []string, known bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyTenants); v != nil {
		// A record that cannot be read says nothing; it is written anew.
		known = json.Unmarshal(v, &before) == nil
	}
	v, err := json.Marshal(slices.Sorted(maps.Keys(tenants)))
	if err != nil {
		return nil, false, err
	}
	if err := meta.Put(keyTenants, v); err != nil {
		return nil, false, fmt.Errorf("recording the configured tenants: %w", err)
	}
	return before, known, nil
}

// AddedSinceLastRun returns the tenants configured at Open that were not
// configured when the data file was last used (opened, or its tenants set
// by a reload): a name among them that holds Leftovers has them back.
// None when the file had no record of its tenants (a new file, or one a
// release that kept none used last).
func (s *Store) AddedSinceLastRun() []string { return s.addedAtOpen }
