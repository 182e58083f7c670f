// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SourceConfig is the Source of a token written in relay.yaml (a tenant's
// tokens), which token list shows beside the stored ones: only an edit of
// relay.yaml and a reload take it away, never rotate or revoke.
const SourceConfig = "relay.yaml"

// StaticIDPrefix starts the id of a relay.yaml token. The rest is the
// first 12 hex digits of the token's SHA-256, so that an operator can tell
// which line it is (printf %s "$TOKEN" | sha256sum) and the id stays the
// same when the list is reordered; the token itself is never shown.
const StaticIDPrefix = "yaml_"

// ErrStaticToken means a change was asked of a token written in
// relay.yaml, which only relay.yaml changes.
var ErrStaticToken = errors.New("a relay.yaml token cannot be revoked here: remove it from relay.yaml and reload the relay (SIGHUP or scimrelay reload)")

// staticToken is a tenant's token from relay.yaml.
type staticToken struct {
	hash  [32]byte
	id    string // staticID(hash)
	field string // its relay.yaml key: tenants[0].tokens[1]
}

func staticID(h [32]byte) string { return StaticIDPrefix + hex.EncodeToString(h[:6]) }

// keyStaticUse holds in meta the last use of each relay.yaml token: a JSON
// object from its id to a time. Stored credentials keep theirs in their
// record; a relay.yaml token has none.
var keyStaticUse = []byte("static_token_use")

// loadStaticUse reads the recorded last uses of relay.yaml tokens.
func loadStaticUse(tx *bolt.Tx) (map[string]time.Time, error) {
	use := map[string]time.Time{}
	if v := tx.Bucket(bucketMeta).Get(keyStaticUse); v != nil {
		if err := json.Unmarshal(v, &use); err != nil {
			return nil, fmt.Errorf("decoding the last use of relay.yaml tokens: %w", err)
		}
	}
	return use, nil
}

// trackStatic gives each relay.yaml token of tenants an entry for its last
// use, as every stored credential has.
func (c *tokenCache) trackStatic(tenants map[string]*tenant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tenants {
		for _, st := range t.static {
			if c.used[st.id] == nil {
				c.used[st.id] = &lastUse{}
			}
		}
	}
}

// refuseShared refuses a relay.yaml token of tenants that is the secret
// of a credential stored for another tenant (a `token create` secret
// pasted under the wrong tenant): it would open both, as a token given to
// two tenants in relay.yaml would (resolve refuses that).
func (c *tokenCache) refuseShared(tenants map[string]*tenant) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var errs []error
	for name, t := range tenants {
		for _, st := range t.static {
			if other := c.byHash[st.hash]; other != nil && other.Tenant != name {
				// Not quoting the token: it is a secret.
				errs = append(errs, fmt.Errorf("%s: is the secret of %s %s of tenant %s; each tenant needs tokens of its own", st.field, other.Kind, other.ID, other.Tenant))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return fmt.Errorf("%w: %w", ErrSharedToken, errors.Join(errs...))
}

// ErrSharedToken: a relay.yaml token of a tenant is another tenant's
// stored credential (refuseShared); the file is wrong, not the relay.
var ErrSharedToken = errors.New("relay.yaml gives a tenant another tenant's stored credential")

// staticTokens lists the relay.yaml tokens of a tenant ("" for every
// tenant), by tenant and then in relay.yaml's order, as Tokens; the caller
// holds the cache's read lock.
func (s *Store) staticTokens(tenantName string) []Token {
	tenants := s.tenantMap()
	names := make([]string, 0, len(tenants))
	for name := range tenants {
		if tenantName == "" || name == tenantName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []Token
	for _, name := range names {
		for _, st := range tenants[name].static {
			out = append(out, Token{
				Kind: KindToken, ID: st.id, Tenant: name, Name: st.field, Source: SourceConfig,
				LastUsed: s.tokens.lastUseOf(st.id, s.tokens.staticUse[st.id]),
			})
		}
	}
	return out
}

// refuseStatic says why the relay.yaml token id cannot be revoked, or
// returns nil when id is no relay.yaml token.
func (s *Store) refuseStatic(id string) error {
	for name, t := range s.tenantMap() {
		for _, st := range t.static {
			if st.id == id {
				return fmt.Errorf("token %s is %s in relay.yaml (tenant %s): %w", id, st.field, name, ErrStaticToken)
			}
		}
	}
	return nil
}

// putStaticUse records the last use of relay.yaml tokens, changed merged
// into those recorded; the records of tokens no longer in relay.yaml are
// dropped. The caller holds writeMu.
func (s *Store) putStaticUse(changed map[string]time.Time) error {
	c := s.tokens
	c.mu.RLock()
	use := make(map[string]time.Time, len(c.staticUse)+len(changed))
	for id, at := range c.staticUse {
		use[id] = at
	}
	c.mu.RUnlock()
	for id, at := range changed {
		use[id] = at
	}
	configured := map[string]bool{}
	for _, t := range s.tenantMap() {
		for _, st := range t.static {
			configured[st.id] = true
		}
	}
	for id := range use {
		if !configured[id] {
			delete(use, id)
		}
	}
	v, err := json.Marshal(use)
	if err != nil {
		return err
	}
	if err := s.commits.do(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyStaticUse, v) }); err != nil {
		return fmt.Errorf("recording the last use of relay.yaml tokens: %w", err)
	}
	c.mu.Lock()
	c.staticUse = use
	c.mu.Unlock()
	return nil
}
