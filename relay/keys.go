// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The data file's keys (the access-token key, the event-signing seed) are
// in its backups too: whoever holds a copy can sign access tokens and
// events. Rotating them (scimrelay keys rotate) makes a copy's keys
// worthless: the new ones are written to the file, durably, before they
// are used.

// The meta bucket's keys of the access-token keys beside keyOAuth (the
// key in use): when it was made (unix nanoseconds; absent for a key made
// by a release that did not date it), and the key it replaced with the
// end of the overlap in which that one still verifies.
var (
	keyOAuthCreated       = []byte("oauth_key_created")
	keyOAuthPrevious      = []byte("oauth_key_previous")
	keyOAuthPreviousUntil = []byte("oauth_key_previous_until")
)

// oauthKeys are the keys of access tokens: cur signs and verifies;
// previous, until previousUntil, verifies what it signed before a
// rotation. Replaced whole on a rotation.
type oauthKeys struct {
	cur           []byte
	created       time.Time // zero: not known
	previous      []byte    // nil: none
	previousUntil time.Time
}

// verifies reports whether mac is the HMAC of signed under a key that
// verifies at now.
func (k *oauthKeys) verifies(signed string, mac []byte, now time.Time) bool {
	if hmac.Equal(mac, hmacOf(k.cur, signed)) {
		return true
	}
	return k.previous != nil && now.Before(k.previousUntil) && hmac.Equal(mac, hmacOf(k.previous, signed))
}

// OAuthKey describes the access-token keys, never the keys themselves: an
// id (the first 12 hex digits of a key's SHA-256) and times.
type OAuthKey struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created,omitzero"` // zero: made with the data file, never rotated (only a rotation dates it)
	// Previous is the key the last rotation replaced while it still
	// verifies the access tokens it signed, until PreviousUntil.
	Previous      string    `json:"previous,omitempty"`
	PreviousUntil time.Time `json:"previous_until,omitzero"`
}

func keyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:6])
}

// OAuthKey describes the access-token keys as of now: a previous key
// whose overlap ended is not listed.
func (s *Store) OAuthKey() OAuthKey {
	k := s.oauth.Load()
	d := OAuthKey{ID: keyID(k.cur), Created: k.created}
	if k.previous != nil && s.now().Before(k.previousUntil) {
		d.Previous, d.PreviousUntil = keyID(k.previous), k.previousUntil
	}
	return d
}

// loadOAuthKeys reads the access-token keys, making the key in use on
// first open.
func (s *Store) loadOAuthKeys() error {
	cur, err := loadSecret(s.db, keyOAuth, "the access-token key")
	if err != nil {
		return err
	}
	k := &oauthKeys{cur: cur}
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		k.created = unixNanos(meta.Get(keyOAuthCreated))
		if p := meta.Get(keyOAuthPrevious); len(p) == 32 {
			k.previous, k.previousUntil = bytes.Clone(p), unixNanos(meta.Get(keyOAuthPreviousUntil))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loading the access-token keys: %w", err)
	}
	s.oauth.Store(k)
	return nil
}

// RotateOAuthKey makes a new access-token key. The access tokens the key
// in use signed keep working for overlap (0: not at all, the leak case),
// and those of a key an earlier rotation replaced stop at once: one
// previous key is kept. Both keys and the overlap's end are in the data
// file before the new key signs, so that a restart keeps them.
func (s *Store) RotateOAuthKey(overlap time.Duration) (OAuthKey, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	old := s.oauth.Load()
	now := s.now()
	k := &oauthKeys{cur: newSecret(), created: now}
	if overlap > 0 {
		k.previous, k.previousUntil = old.cur, now.Add(overlap)
	}
	err := s.commits.do(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyOAuth, k.cur); err != nil {
			return err
		}
		if err := meta.Put(keyOAuthCreated, nanosOf(k.created)); err != nil {
			return err
		}
		if k.previous == nil {
			if err := meta.Delete(keyOAuthPrevious); err != nil {
				return err
			}
			return meta.Delete(keyOAuthPreviousUntil)
		}
		if err := meta.Put(keyOAuthPrevious, k.previous); err != nil {
			return err
		}
		return meta.Put(keyOAuthPreviousUntil, nanosOf(k.previousUntil))
	})
	if err != nil {
		return OAuthKey{}, fmt.Errorf("storing a new access-token key: %w", err)
	}
	s.oauth.Store(k)
	return s.OAuthKey(), nil
}

// keyEventRetiring lists, space-separated, the public keys of event-signing
// seeds a rotation replaced that the event stream may not have retired yet
// (keys rotate events, cut short): the next rotation, or the next start,
// retires them.
var keyEventRetiring = []byte("event_signing_retiring")

// RotateEventSigningSeed makes a new event-signing seed and stores it in
// the data file, durably, before it returns it (and before the caller
// signs with it): a front end restarted after a rotation signs with the
// new key, never again with the one it replaced. In the same write,
// replaced (the public key of the seed in use; "" for one retired
// already) is listed as to be retired (EventKeysRetiring), so that a
// rotation cut short by a crash is finished at the next start.
func (s *Store) RotateEventSigningSeed(replaced string) ([]byte, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	seed := newSecret()
	if err := s.commits.do(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		retiring := strings.Fields(string(meta.Get(keyEventRetiring)))
		if replaced != "" && !slices.Contains(retiring, replaced) {
			retiring = append(retiring, replaced)
		}
		if err := meta.Put(keyEventRetiring, []byte(strings.Join(retiring, " "))); err != nil {
			return err
		}
		return meta.Put(keyEventSigning, seed)
	}); err != nil {
		return nil, fmt.Errorf("storing a new event-signing key: %w", err)
	}
	s.eventSeed = seed
	return bytes.Clone(seed), nil
}

// EventKeysRetiring returns the public keys a rotation replaced that are
// not known to be retired in the event stream yet, oldest first.
func (s *Store) EventKeysRetiring() ([]string, error) {
	var keys []string
	err := s.db.View(func(tx *bolt.Tx) error {
		keys = strings.Fields(string(tx.Bucket(bucketMeta).Get(keyEventRetiring)))
		return nil
	})
	return keys, err
}

// EventKeyRetired records that the event stream retired key.
func (s *Store) EventKeyRetired(key string) error {
	return s.commits.do(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		retiring := slices.DeleteFunc(strings.Fields(string(meta.Get(keyEventRetiring))), func(k string) bool { return k == key })
		if len(retiring) == 0 {
			return meta.Delete(keyEventRetiring)
		}
		return meta.Put(keyEventRetiring, []byte(strings.Join(retiring, " ")))
	})
}

// newSecret returns 32 random bytes.
func newSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

func nanosOf(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

// unixNanos reads what nanosOf wrote; the zero time when v is not that.
func unixNanos(v []byte) time.Time {
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
}
