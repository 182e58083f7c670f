// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/lograte"
	"github.com/scimrelay/scimrelay/scim"
)

// TokenPrefix starts every token the relay issues, so that secret scanners
// and people can tell what it is.
const TokenPrefix = "scimrelay_"

// DefaultTokenLifetime is how long a generated token lives: 90 days, as the
// SAFE guide's default.
const DefaultTokenLifetime = 90 * 24 * time.Hour

// Kind says what a stored credential is.
type Kind string

// Kinds of credential. Both share one lifecycle (issue, list, rotate with
// overlap, revoke, expiry warnings and metric) and one bucket.
const (
	// KindToken is a SCIM bearer token, sent as Authorization: Bearer.
	KindToken Kind = "token"
	// KindClient is an OAuth 2.0 client: its id is the client_id, its
	// secret the client_secret of the client credentials grant (and the
	// password of HTTP Basic).
	KindClient Kind = "client"
)

// Token describes a stored credential, a SCIM bearer token or an OAuth
// client; the secret itself is never stored.
type Token struct {
	Kind    Kind      `json:"kind"`
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Created time.Time `json:"created,omitzero"` // zero: a relay.yaml token
	Expires time.Time `json:"expires,omitzero"` // zero: never
	Revoked time.Time `json:"revoked,omitzero"`
	// Replaced is when a rotation issued this credential's successor
	// (TokenExpiries); zero for one never replaced.
	Replaced time.Time `json:"replaced,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
	// Source is SourceConfig for a token written in relay.yaml, which
	// works until it is removed from there and the relay reloaded; empty
	// for a stored credential.
	Source string `json:"source,omitempty"`
}

// Live reports whether the token is neither revoked nor expired at now.
func (t Token) Live(now time.Time) bool {
	return t.Revoked.IsZero() && (t.Expires.IsZero() || now.Before(t.Expires))
}

// State says whether the credential works at now, for people: "revoked",
// "expired", "expires in Nd" from ExpiryWarning before its expiry, "live
// (relay.yaml)" for a token written in relay.yaml, else "live".
func (t Token) State(now time.Time) string {
	switch {
	case t.Source == SourceConfig:
		return "live (relay.yaml)"
	case !t.Revoked.IsZero():
		return "revoked"
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return "expired"
	case !t.Expires.IsZero() && t.Expires.Sub(now) < ExpiryWarning:
		return "expires in " + remaining(t.Expires.Sub(now))
	}
	return "live"
}

// remaining says how long is left in the largest whole unit that is not
// zero: days, else hours, else minutes ("0d" would read as "now").
func remaining(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dm", max(int(d/time.Minute), 1))
}

// ErrTokenNotFound means no credential of the kind asked for has the given id.
var ErrTokenNotFound = errors.New("no such credential")

// noSuchCredential is ErrTokenNotFound for one id, said once: "no such
// token tok_x", not "no such token tok_x: not found".
type noSuchCredential struct{ kind, id string }

func (e noSuchCredential) Error() string        { return "no such " + e.kind + " " + e.id }
func (e noSuchCredential) Is(target error) bool { return target == ErrTokenNotFound }

// ClientSecretPrefix starts every OAuth client secret, as TokenPrefix starts
// tokens; the prefixes differ so that one pasted where the other belongs
// is recognisable.
const ClientSecretPrefix = "scimrelay_secret_"

// Credentials manages one kind of stored credential of a store.
type Credentials struct {
	s    *Store
	kind Kind
}

// Tokens manages the store's SCIM bearer tokens.
func (s *Store) Tokens() Credentials { return Credentials{s, KindToken} }

// Clients manages the store's OAuth 2.0 clients.
func (s *Store) Clients() Credentials { return Credentials{s, KindClient} }

type storedToken struct {
	Token
	Hash []byte `json:"hash"` // SHA-256 of the secret
}

// tokenCache mirrors the tokens bucket in memory; the store is its only
// writer. Writers hold writeMu from reading the cache to updating it, so
// that a last-use flush cannot write back a token a revocation changed
// meanwhile. A request reads it under the read lock alone: its token by
// digest, and its last use noted atomically (written by the next flush).
type tokenCache struct {
	writeMu sync.Mutex
	mu      sync.RWMutex
	byID    map[string]*storedToken
	// byHash finds a credential by the SHA-256 of its secret. A map lookup
	// by digest leaks nothing a comparison in constant time would hide:
	// timing can at most tell something about the digest of a guess, and
	// learning a digest does not give its secret.
	byHash map[[32]byte]*storedToken
	used   map[string]*lastUse // by id; an entry per credential, never removed
	// staticUse is the last use of each relay.yaml token as written (by
	// id, see staticID); its records live in meta, not in the bucket.
	staticUse map[string]time.Time
	// expiredUse keeps the warning that an expired token was refused to
	// one a token an hour (ExpiredRefusalWarnEvery), by id.
	expiredUse *lograte.Limiter[string]
	// seen is when each tenant's credentials were last accepted and
	// refused, for the refusal alert.
	seen authSeenMap
}

// lastUse is a credential's last use not yet written, in unix nanoseconds
// (0: none since the last flush).
type lastUse struct{ at atomic.Int64 }

// put adds or replaces a credential; the caller holds mu for writing.
func (c *tokenCache) put(st *storedToken) {
	if old, ok := c.byID[st.ID]; ok && len(old.Hash) == sha256.Size {
		delete(c.byHash, [32]byte(old.Hash))
	}
	c.byID[st.ID] = st
	if len(st.Hash) == sha256.Size {
		c.byHash[[32]byte(st.Hash)] = st
	}
	if c.used[st.ID] == nil {
		c.used[st.ID] = &lastUse{}
	}
}

// lastUseOf returns when the credential id was last used, written (at) or
// not.
func (c *tokenCache) lastUseOf(id string, at time.Time) time.Time {
	if u := c.used[id]; u != nil {
		if ns := u.at.Load(); ns != 0 && time.Unix(0, ns).After(at) {
			return time.Unix(0, ns)
		}
	}
	return at
}

func hashToken(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// StoredCredentialOf returns the stored credential, a tenant's token or an
// OAuth client, whose secret is secret (revoked or expired too), if any:
// serve refuses an admin token that is one, since the tenant's identity
// provider holds it.
func (s *Store) StoredCredentialOf(secret string) (Token, bool) {
	c := s.tokens
	c.mu.RLock()
	defer c.mu.RUnlock()
	if st := c.byHash[hashToken(strings.TrimSpace(secret))]; st != nil {
		return st.Token, true
	}
	return Token{}, false
}

func loadTokens(db *bolt.DB) (*tokenCache, error) {
	c := &tokenCache{byID: map[string]*storedToken{}, byHash: map[[32]byte]*storedToken{}, used: map[string]*lastUse{},
		expiredUse: lograte.New[string](ExpiredRefusalWarnEvery)}
	err := db.View(func(tx *bolt.Tx) (err error) {
		if c.staticUse, err = loadStaticUse(tx); err != nil {
			return err
		}
		stored, err := tokenRecords(tx)
		for _, st := range stored {
			c.put(st)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading tokens: %w", err)
	}
	return c, nil
}

// tenantKind groups a tenant's credentials of one kind: what one of them
// is replaced by, or stands beside, is one of the same group.
type tenantKind struct {
	tenant string
	kind   Kind
}

// group is the credential's tenantKind.
func (t Token) group() tenantKind { return tenantKind{t.Tenant, t.Kind} }

// keyReplacedMarked in the meta bucket says markReplacedOnce has run on
// the data file.
var keyReplacedMarked = []byte("tokens-replaced-marked")

// markReplacedOnce, at the first start of a release that records
// rotations (Token.Replaced) on a data file an earlier one wrote, marks
// the credentials those rotations replaced (markReplacedBefore) and
// writes them, once: each rotation made before the upgrade kept the
// expiry alert firing through its overlap. Only once: run at every start,
// it took a second token made on purpose for another identity provider
// as the first one's successor, and hid the first from the alert.
func markReplacedOnce(db *bolt.DB, c *tokenCache) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyReplacedMarked) != nil {
			return nil
		}
		if err := putTokenRecords(tx, c.markReplacedBefore()...); err != nil {
			return err
		}
		return meta.Put(keyReplacedMarked, []byte{1})
	})
}

// putTokenRecords writes credentials' records in tx.
func putTokenRecords(tx *bolt.Tx, list ...*storedToken) error {
	b := tx.Bucket(bucketTokens)
	for _, st := range list {
		v, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(st.ID), v); err != nil {
			return err
		}
	}
	return nil
}

// markReplacedBefore gives each credential an earlier release's rotation
// replaced the Replaced this release would have written, and returns them:
// the creation of the first credential of its tenant and kind made after
// it, while it was unexpired, that outlives it (not revoked).
func (c *tokenCache) markReplacedBefore() []*storedToken {
	groups := map[tenantKind][]*storedToken{}
	for _, st := range c.byID {
		groups[st.group()] = append(groups[st.group()], st)
	}
	var marked []*storedToken
	for _, group := range groups {
		for _, st := range group {
			if !st.Replaced.IsZero() || !st.Revoked.IsZero() || st.Expires.IsZero() {
				continue
			}
			for _, o := range group {
				outlives := o.Expires.IsZero() || o.Expires.After(st.Expires)
				if o.Created.After(st.Created) && o.Created.Before(st.Expires) && outlives && o.Revoked.IsZero() &&
					(st.Replaced.IsZero() || o.Created.Before(st.Replaced)) {
					st.Replaced = o.Created
				}
			}
			if !st.Replaced.IsZero() {
				marked = append(marked, st)
			}
		}
	}
	return marked
}

// Authenticate checks a bearer token for a tenant: one of its relay.yaml
// tokens, else a stored one. Secrets are compared as SHA-256 digests in
// constant time; the answer says why a token that was once valid no longer
// is.
//
// An unknown tenant costs the same work as a wrong token, so that the
// answer's timing does not tell which tenants exist.
func (s *Store) Authenticate(_ context.Context, tenantName, secret string) error {
	t, known := s.tenantMap()[tenantName]
	h := hashToken(secret)
	var static *staticToken
	if known {
		for i := range t.static {
			if subtle.ConstantTimeCompare(h[:], t.static[i].hash[:]) == 1 {
				static = &t.static[i]
			}
		}
	}
	if static != nil {
		s.noteUse(tenantName, static.id, s.now())
		return nil
	}
	c := s.tokens
	c.mu.RLock()
	match := c.byHash[h]
	c.mu.RUnlock()
	// A stored token is looked up first: one in 262,144 of them begins as
	// an access token does ("scimrelay_" and three random characters).
	if match == nil && strings.HasPrefix(secret, AccessTokenPrefix) {
		return s.authenticateAccessToken(tenantName, known, secret)
	}
	if match != nil && (match.Kind != KindToken || match.Tenant != tenantName) {
		match = nil
	}
	if !known {
		return scim.Errorf(scim.ErrNotFound, "no tenant %q", tenantName)
	}
	if match == nil {
		return scim.Errorf(scim.ErrUnauthorized, "invalid bearer token")
	}
	now := s.now()
	switch {
	case !match.Revoked.IsZero():
		s.noteRefused(match.Token, now)
		return scim.Errorf(scim.ErrUnauthorized, "token %s was revoked at %s", match.ID, match.Revoked.UTC().Format(time.RFC3339))
	case !match.Expires.IsZero() && !now.Before(match.Expires):
		s.warnExpiredRefused(match.Token, now)
		s.noteRefused(match.Token, now)
		return scim.Errorf(scim.ErrUnauthorized, "token %s expired at %s; issue a new one with scimrelay token create", match.ID, match.Expires.UTC().Format(time.RFC3339))
	}
	s.noteUse(tenantName, match.ID, now)
	return nil
}

// Create issues a credential for a tenant and returns its secret, which is
// shown once and never stored. A zero expires means it never expires.
func (c Credentials) Create(ctx context.Context, tenantName, name string, expires time.Time) (string, Token, error) {
	s := c.s
	// The tenant is checked holding writeMu, which a purge's removal of
	// the tenant's credentials takes: a credential written after that,
	// by a create that found the tenant configured before it was
	// removed, outlived the purge and let in the tenant added again
	// under the name.
	s.tokens.writeMu.Lock()
	defer s.tokens.writeMu.Unlock()
	if _, ok := s.tenantMap()[tenantName]; !ok {
		return "", Token{}, scim.Errorf(scim.ErrNotFound, "no tenant %q", tenantName)
	}
	return c.create(ctx, tenantName, name, expires)
}

// create issues a credential; the caller holds writeMu.
func (c Credentials) create(ctx context.Context, tenantName, name string, expires time.Time) (string, Token, error) {
	secret, st, err := c.issue(tenantName, name, expires)
	if err != nil {
		return "", Token{}, err
	}
	if err := c.s.putTokens(ctx, st); err != nil {
		return "", Token{}, err
	}
	c.s.warnShortLived(st.Token, "issued")
	return secret, st.Token, nil
}

// issue makes a new credential and its secret without storing it.
func (c Credentials) issue(tenantName, name string, expires time.Time) (string, *storedToken, error) {
	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (Go 1.24+)
	prefix, idPrefix, idLen := TokenPrefix, "tok_", 6
	if c.kind == KindClient {
		prefix, idPrefix, idLen = ClientSecretPrefix, "cli_", 8
	}
	idb := make([]byte, idLen)
	_, _ = rand.Read(idb) // crypto/rand.Read never fails (Go 1.24+)
	secret := prefix + base64.RawURLEncoding.EncodeToString(raw[:])
	h := hashToken(secret)
	st := &storedToken{
		Token: Token{Kind: c.kind, ID: idPrefix + hex.EncodeToString(idb), Tenant: tenantName, Name: name, Created: c.s.now().UTC(), Expires: expires.UTC()},
		Hash:  h[:],
	}
	if expires.IsZero() {
		st.Expires = time.Time{}
	}
	return secret, st, nil
}

// putTokens writes token records and then updates the cache; the caller
// holds writeMu.
func (s *Store) putTokens(ctx context.Context, list ...*storedToken) error {
	_, err := s.write(ctx, "", func(tx *bolt.Tx, _ *txWrite) error {
		return putTokenRecords(tx, list...)
	})
	if err != nil {
		return fmt.Errorf("storing tokens: %w", err)
	}
	s.tokens.mu.Lock()
	for _, st := range list {
		s.tokens.put(st)
	}
	s.tokens.mu.Unlock()
	return nil
}

// List lists a tenant's credentials ("" for all) without secrets: for
// tokens, the tenants' relay.yaml tokens first (Source SourceConfig), then
// the stored ones, oldest first.
func (c Credentials) List(_ context.Context, tenantName string) ([]Token, error) {
	tc := c.s.tokens
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	out := []Token{}
	for _, st := range tc.byID {
		if st.Kind != c.kind || tenantName != "" && st.Tenant != tenantName {
			continue
		}
		t := st.Token
		t.LastUsed = tc.lastUseOf(st.ID, st.LastUsed)
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	if c.kind == KindToken {
		out = append(c.s.staticTokens(tenantName), out...)
	}
	return out, nil
}

// Revoke revokes a credential at once, and reports whether this call did
// (false: it was revoked already, and keeps that revocation's time).
// Access tokens issued to a revoked client stop working with it. A
// relay.yaml token is refused with ErrStaticToken.
func (c Credentials) Revoke(ctx context.Context, id string) (Token, bool, error) {
	s := c.s
	if c.kind == KindToken && strings.HasPrefix(id, StaticIDPrefix) {
		if err := s.refuseStatic(id); err != nil {
			return Token{}, false, err
		}
	}
	s.tokens.writeMu.Lock()
	defer s.tokens.writeMu.Unlock()
	s.tokens.mu.RLock()
	st, ok := s.tokens.byID[id]
	s.tokens.mu.RUnlock()
	if !ok || st.Kind != c.kind {
		return Token{}, false, noSuchCredential{string(c.kind), scim.Truncate(id, 64)}
	}
	cp := *st
	if !cp.Revoked.IsZero() {
		return cp.Token, false, nil
	}
	cp.Revoked = s.now().UTC()
	if err := s.putTokens(ctx, &cp); err != nil {
		return Token{}, false, err
	}
	return cp.Token, true, nil
}

// Rotate issues a new credential for a tenant and makes every other live
// stored one of the same kind of the tenant expire after overlap, so that
// the new one can be pasted into the identity provider before the old one
// stops working. The tenant's relay.yaml tokens are not changed: they work
// until relay.yaml no longer has them and the relay is reloaded.
func (c Credentials) Rotate(ctx context.Context, tenantName, name string, expires time.Time, overlap time.Duration) (string, Token, []Token, error) {
	s := c.s
	if overlap < 0 {
		return "", Token{}, nil, fmt.Errorf("rotating %ss of %s: overlap %s is negative", c.kind, tenantName, overlap)
	}
	s.tokens.writeMu.Lock() // before the tenant is checked, as in Create
	defer s.tokens.writeMu.Unlock()
	if _, ok := s.tenantMap()[tenantName]; !ok {
		return "", Token{}, nil, scim.Errorf(scim.ErrNotFound, "no tenant %q", tenantName)
	}
	secret, fresh, err := c.issue(tenantName, name, expires)
	if err != nil {
		return "", Token{}, nil, err
	}
	now := s.now()
	cutoff := now.Add(overlap).UTC()
	changed := []*storedToken{fresh}
	var old []Token
	s.tokens.mu.RLock()
	for _, st := range s.tokens.byID {
		if st.Kind != c.kind || st.Tenant != tenantName || !st.Live(now) {
			continue
		}
		cp := *st
		cp.Replaced = now.UTC()
		if cp.Expires.IsZero() || cp.Expires.After(cutoff) {
			cp.Expires = cutoff
			old = append(old, cp.Token)
		}
		changed = append(changed, &cp)
	}
	s.tokens.mu.RUnlock()
	if err := s.putTokens(ctx, changed...); err != nil {
		return "", Token{}, nil, err
	}
	s.warnShortLived(fresh.Token, "rotated")
	return secret, fresh.Token, old, nil
}

// EnsureToken gives a tenant its first token: when it has no static token
// and has never had a stored credential (token or OAuth client; or was
// purged since), it issues a token named "generated" that expires after
// DefaultTokenLifetime and returns its secret with created true. A tenant
// whose credentials were all revoked or expired gets none: a revocation is
// the operator's (it was undone by the next start or reload, which issued
// a new token), and an expired one is renewed with token rotate. show,
// when not nil, is given the secret before the token is stored, and a
// failure of it stores nothing: a token whose secret could not be shown
// (a full disk under data_dir/initial-token) would be one nobody has, and
// the tenant, having had a credential, would get none at the next start.
func (s *Store) EnsureToken(ctx context.Context, tenantName string, show func(secret string) error) (string, bool, error) {
	s.tokens.writeMu.Lock() // before the tenant is checked, as in Create
	defer s.tokens.writeMu.Unlock()
	t, ok := s.tenantMap()[tenantName]
	if !ok {
		return "", false, scim.Errorf(scim.ErrNotFound, "no tenant %q", tenantName)
	}
	if len(t.static) > 0 {
		return "", false, nil
	}
	now := s.now()
	s.tokens.mu.RLock()
	for _, st := range s.tokens.byID {
		if st.Tenant == tenantName {
			s.tokens.mu.RUnlock()
			return "", false, nil
		}
	}
	s.tokens.mu.RUnlock()
	secret, st, err := s.Tokens().issue(tenantName, "generated", now.Add(DefaultTokenLifetime))
	if err != nil {
		return "", false, err
	}
	if show != nil {
		if err := show(secret); err != nil {
			return "", false, err
		}
	}
	if err := s.putTokens(ctx, st); err != nil {
		return "", false, err
	}
	s.warnShortLived(st.Token, "issued")
	return secret, true, nil
}

// TokenExpiries returns the stored credentials (tokens and OAuth clients)
// the expiry metric shows (Expiries), with their last use as the relay
// knows it now.
func (s *Store) TokenExpiries() []Token {
	configured := s.tenantMap()
	s.tokens.mu.RLock()
	list := make([]Token, 0, len(s.tokens.byID))
	for _, st := range s.tokens.byID {
		t := st.Token
		t.LastUsed = s.tokens.lastUseOf(st.ID, st.LastUsed)
		list = append(list, t)
	}
	s.tokens.mu.RUnlock()
	return Expiries(list, func(tenant string) bool { _, ok := configured[tenant]; return ok }, s.now())
}

// Expiries returns, of list (credentials with their last use), those that
// expire and are not revoked, soonest first, for the expiry metric, the
// daily warnings and the console (DueForRotation): the live ones, and
// those that expired less than ExpiredKept ago, so that an alert on the
// metric goes on firing when the credential expires (the moment the
// identity provider starts being refused) rather than resolving then. A
// revoked credential is left out: it was ended on purpose. So are those
// that never expire, relay.yaml tokens, and those of a tenant no longer
// configured (configured says; removed, not yet purged): they open
// nothing, and the remedy the alert names (token rotate) refuses the
// tenant. The console's overview chose its own and asked to rotate both
// (TestConsoleOverviewDoesNotAskToRotateAHandedOverToken,
// TestConsoleOverviewAsksNotToRotateARemovedTenantsToken).
func Expiries(list []Token, configured func(tenant string) bool, now time.Time) []Token {
	// An expired credential stays while its tenant has no live one of its
	// kind: the identity provider is being refused. One a rotation
	// replaced (its overlap over, the new one live) goes, or the alert on
	// this metric would fire for a month after every routine rotation.
	// Within the overlap it goes too while its successor is live and the
	// identity provider has not used it since the rotation: the alert,
	// whose advice is to rotate, fired through every overlap, and
	// following it again cut the token just put into Entra to the overlap.
	// Used since, it stays: the identity provider still holds it.
	// Used since, but the identity provider has used a successor after
	// that (the new one pasted in after a cycle or two with the old one),
	// it goes again: the identity provider no longer uses it.
	// Only where the rotation replaced that one credential alone: one that
	// replaced several (a token per identity provider, Entra's and
	// Okta's) issued one successor for all of them, whose use by one
	// identity provider says nothing of the others.
	live, successor := map[tenantKind]bool{}, map[tenantKind]bool{}
	successorUsed := map[tenantKind]time.Time{}
	type rotation struct {
		group tenantKind
		at    int64
	}
	replacedBy := map[rotation]int{}
	for _, t := range list {
		if t.Source == "" && !t.Replaced.IsZero() && t.Revoked.IsZero() {
			replacedBy[rotation{t.group(), t.Replaced.UnixNano()}]++
		}
		if t.Source == "" && t.Live(now) {
			live[t.group()] = true
			if t.Replaced.IsZero() {
				successor[t.group()] = true
				if t.LastUsed.After(successorUsed[t.group()]) {
					successorUsed[t.group()] = t.LastUsed
				}
			}
		}
	}
	handedOver := func(t Token) bool {
		return !t.Replaced.IsZero() && successor[t.group()] &&
			(!t.LastUsed.After(t.Replaced) ||
				replacedBy[rotation{t.group(), t.Replaced.UnixNano()}] == 1 && successorUsed[t.group()].After(t.LastUsed))
	}
	var out []Token
	for _, t := range list {
		if t.Source != "" || !configured(t.Tenant) || !t.Revoked.IsZero() || t.Expires.IsZero() {
			continue
		}
		if t.Live(now) && !handedOver(t) || !live[t.group()] && now.Before(t.Expires.Add(ExpiredKept)) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Expires.Equal(out[j].Expires) {
			return out[i].Expires.Before(out[j].Expires)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// DueForRotation returns those of expiries (Expiries) that have not
// expired and expire within ExpiryWarning: what the daily warning names
// and the console's overview asks to rotate. One that expired is refused
// already, and warned about when presented (warnExpiredRefused).
func DueForRotation(expiries []Token, now time.Time) []Token {
	var out []Token
	for _, t := range expiries {
		if left := t.Expires.Sub(now); left > 0 && left <= ExpiryWarning {
			out = append(out, t)
		}
	}
	return out
}

// flushTokenUse writes the last-use times gathered since the last flush:
// a stored credential's in its record, a relay.yaml token's in meta. Each
// stays in memory until its write has committed, and goes then unless a
// newer use came: taken out before, a replaced token the identity
// provider still used read for that while as unused since its rotation,
// and left the expiry metric. One a write fails to store stays for the
// next flush.
func (s *Store) flushTokenUse() error {
	c := s.tokens
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.RLock()
	var list []*storedToken
	static := map[string]time.Time{}
	taken := map[string]int64{} // id → the use this flush writes
	for id, u := range c.used {
		ns := u.at.Load()
		if ns == 0 {
			continue
		}
		taken[id] = ns
		at := time.Unix(0, ns).UTC()
		if st, ok := c.byID[id]; ok {
			if at.After(st.LastUsed) {
				cp := *st
				cp.LastUsed = at
				list = append(list, &cp)
			}
		} else if at.After(c.staticUse[id]) {
			static[id] = at
		}
	}
	c.mu.RUnlock()
	var errs []error
	if len(list) > 0 {
		if err := s.putTokens(context.Background(), list...); err != nil {
			errs = append(errs, err)
			for _, st := range list {
				delete(taken, st.ID)
			}
		}
	}
	if len(static) > 0 {
		if err := s.putStaticUse(static); err != nil {
			errs = append(errs, err)
			for id := range static {
				delete(taken, id)
			}
		}
	}
	c.mu.RLock()
	for id, ns := range taken {
		if u, ok := c.used[id]; ok {
			u.at.CompareAndSwap(ns, 0)
		}
	}
	c.mu.RUnlock()
	return errors.Join(errs...)
}
