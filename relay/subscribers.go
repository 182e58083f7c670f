// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Subscriber is a NATS subscriber the relay admits to its embedded server:
// its name, its public nkey (the seed never reaches the relay), the
// subject pattern it is limited to ("" for all) and where its consumer
// started ("all" or "new"; records from before it was kept say nothing,
// which is "all"). The rules on these fields live in relay/natsbus, which
// applies them.
type Subscriber struct {
	Name      string    `json:"name"`
	PublicKey string    `json:"public_key"`
	Subjects  string    `json:"subjects,omitempty"`
	From      string    `json:"from,omitempty"`
	Created   time.Time `json:"created"`
}

// Tenant returns the tenant the subscriber's subjects are limited to, or
// "" when it reads every tenant's events (no subjects, or a wildcard in
// the tenant's place).
func (s Subscriber) Tenant() string { return events.PatternTenant(s.Subjects) }

// Subscriber errors.
var (
	ErrSubscriberExists   = errors.New("a subscriber with this name exists")
	ErrSubscriberNotFound = errors.New("no such subscriber")
	// ErrSubscriberTenantGone: the subjects name a tenant that is not
	// configured, or is being purged.
	ErrSubscriberTenantGone = errors.New("its tenant is not configured")
)

var bucketSubscribers = []byte("subscribers")

// AddSubscriber stores a new subscriber; a name already taken is refused
// with ErrSubscriberExists.
func (s *Store) AddSubscriber(ctx context.Context, sub Subscriber) (Subscriber, error) {
	if sub.Created.IsZero() {
		sub.Created = s.now().UTC()
	}
	v, err := json.Marshal(sub)
	if err != nil {
		return Subscriber{}, err
	}
	_, err = s.write(ctx, "", func(tx *bolt.Tx, w *txWrite) error {
		b := tx.Bucket(bucketSubscribers)
		if b.Get([]byte(sub.Name)) != nil {
			return w.refuse(fmt.Errorf("adding subscriber %s: %w", sub.Name, ErrSubscriberExists))
		}
		if err := s.refuseTenantGone(tx, sub); err != nil {
			return w.refuse(fmt.Errorf("adding subscriber %s: %w", sub.Name, err))
		}
		return b.Put([]byte(sub.Name), v)
	})
	if err != nil {
		return Subscriber{}, err
	}
	return sub, nil
}

// refuseTenantGone refuses, in a write, a subscriber whose subjects name
// a tenant not configured or being purged. Its caller checked the tenant
// before, but this write is the one a purge's beginning is ordered with: a
// subscriber written after the tenant was removed and its purge had
// looked for its subscribers (an add, or a replace narrowing one to the
// tenant) outlived the purge and read the events of the next tenant
// given the name.
func (s *Store) refuseTenantGone(tx *bolt.Tx, sub Subscriber) error {
	if t := sub.Tenant(); t != "" && (!s.HasTenant(t) || slices.Contains(purgingTenants(tx), t)) {
		return fmt.Errorf("tenant %s: %w", t, ErrSubscriberTenantGone)
	}
	return nil
}

// UpdateSubscriber replaces the subscriber named name with what update
// makes of it (its name stays); ErrSubscriberNotFound when there is none.
func (s *Store) UpdateSubscriber(ctx context.Context, name string, update func(old Subscriber) (Subscriber, error)) (Subscriber, error) {
	var sub Subscriber
	_, err := s.write(ctx, "", func(tx *bolt.Tx, w *txWrite) error {
		b := tx.Bucket(bucketSubscribers)
		old, err := storedSubscriber(b, name)
		if errors.Is(err, ErrSubscriberNotFound) {
			return w.refuse(fmt.Errorf("updating subscriber %s: %w", name, err))
		} else if err != nil {
			return err
		}
		if sub, err = update(old); err != nil {
			return w.refuse(fmt.Errorf("updating subscriber %s: %w", name, err))
		}
		sub.Name = name
		if err := s.refuseTenantGone(tx, sub); err != nil {
			return w.refuse(fmt.Errorf("updating subscriber %s: %w", name, err))
		}
		v, err := json.Marshal(sub)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return Subscriber{}, err
	}
	return sub, nil
}

// Subscribers lists the subscribers by name.
func (s *Store) Subscribers(_ context.Context) ([]Subscriber, error) {
	out := []Subscriber{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSubscribers).ForEach(func(k, v []byte) error {
			var sub Subscriber
			if err := json.Unmarshal(v, &sub); err != nil {
				return fmt.Errorf("decoding subscriber %s: %w", k, err)
			}
			out = append(out, sub)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("listing subscribers: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveSubscriber deletes a subscriber and returns what it was.
func (s *Store) RemoveSubscriber(ctx context.Context, name string) (Subscriber, error) {
	var sub Subscriber
	_, err := s.write(ctx, "", func(tx *bolt.Tx, w *txWrite) error {
		b := tx.Bucket(bucketSubscribers)
		var err error
		sub, err = storedSubscriber(b, name)
		if errors.Is(err, ErrSubscriberNotFound) {
			return w.refuse(fmt.Errorf("removing subscriber %s: %w", name, err))
		} else if err != nil {
			return err
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return Subscriber{}, err
	}
	return sub, nil
}

// storedSubscriber reads the subscriber named name from b;
// ErrSubscriberNotFound when there is none.
func storedSubscriber(b *bolt.Bucket, name string) (Subscriber, error) {
	v := b.Get([]byte(name))
	if v == nil {
		return Subscriber{}, ErrSubscriberNotFound
	}
	var sub Subscriber
	if err := json.Unmarshal(v, &sub); err != nil {
		return Subscriber{}, fmt.Errorf("decoding subscriber %s: %w", name, err)
	}
	return sub, nil
}
