// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// OAuth 2.0 clients (RFC 6749 §4.4, client credentials) and the access
// tokens the relay issues to them.
//
// An access token is signed, not stored: AccessTokenPrefix, then the
// base64url JSON of {tenant, client, expiry}, a dot, and the base64url
// HMAC-SHA256 of what precedes the dot under a key kept in the data file
// (meta/"oauth_key", made on first open). Every use verifies the signature
// and the expiry, and then looks the client up, so that an access token
// stops working the moment its client is revoked or expires, with nothing
// to store or prune per token. Because the key and the client records live
// in the data file, tokens survive a restart exactly as the clients do, and
// a restored backup accepts the tokens of the clients it holds.
// scimrelay keys rotate oauth replaces the key, the old one verifying for
// an overlap (keys.go).

// AccessTokenPrefix starts every access token.
const AccessTokenPrefix = "scimrelay_at_"

// MaxAccessTokenLifetime is the longest an access token lives
// (oauth.token_lifetime at most). A token that says it lives longer was
// not issued by this relay, whoever signed it (the signing key is in the
// data file, and so in its backups).
const MaxAccessTokenLifetime = 24 * time.Hour

// clockStepBack is how far the wall clock may have stepped back (NTP
// correcting a clock that ran ahead, at boot too) since a token was issued
// for the relay still to take it: one expiring later than the longest
// lifetime from now by more than that is refused. No state, so a restart
// in between changes nothing; a token issued while the clock ran further
// ahead is refused, as one that would outlive its lifetime.
const clockStepBack = time.Hour

// DefaultAccessTokenLifetime is how long an access token lives unless
// configured otherwise: an hour, as is usual for client credentials.
const DefaultAccessTokenLifetime = time.Hour

// Errors of client authentication at the token endpoint. Both wrap a
// detail saying why; neither ever carries a secret.
var (
	// ErrInvalidClient: unknown client, wrong secret, revoked or expired
	// (RFC 6749 §5.2 invalid_client).
	ErrInvalidClient = errors.New("invalid client")
	// ErrClientTenant: the client authenticated, but belongs to another
	// tenant than the token endpoint it used (RFC 6749 §5.2
	// unauthorized_client).
	ErrClientTenant = errors.New("client not authorized for this tenant")
)

// clientError is a refusal of client credentials: its text is the reason
// alone, and it matches ErrInvalidClient or ErrClientTenant.
type clientError struct {
	reason string
	kind   error
}

func (e *clientError) Error() string { return e.reason }
func (e *clientError) Unwrap() error { return e.kind }

func refuseClient(kind error, format string, args ...any) error {
	return &clientError{reason: fmt.Sprintf(format, args...), kind: kind}
}

var keyOAuth = []byte("oauth_key")

// AccessToken is what the token endpoint hands out.
type AccessToken struct {
	Token     string
	ClientID  string
	ExpiresIn time.Duration
}

// accessClaims is the signed content of an access token.
type accessClaims struct {
	Tenant  string `json:"t"`
	Client  string `json:"c"`
	Expires int64  `json:"e"` // unix seconds
	// Issued is when the token was issued (unix seconds); 0 in a token
	// an earlier release issued.
	Issued int64 `json:"i,omitempty"`
}

// IssueAccessToken authenticates an OAuth client of tenant by its id and
// secret and issues an access token for the tenant that expires after
// lifetime, or when the client does if that is sooner. Errors wrap
// ErrInvalidClient or ErrClientTenant; an unknown tenant is ErrInvalidClient
// too, so that the endpoint says nothing about which tenants exist.
func (s *Store) IssueAccessToken(_ context.Context, tenantName, clientID, secret string, lifetime time.Duration) (AccessToken, error) {
	if lifetime <= 0 {
		lifetime = DefaultAccessTokenLifetime
	}
	st, err := s.authenticateClient(tenantName, clientID, secret)
	if err != nil {
		return AccessToken{}, err
	}
	now := s.now()
	// Expiry is in whole seconds, counted from the start of this second, so
	// that expires_in is exact and the token never outlives what it says.
	issued := now.Truncate(time.Second)
	exp := issued.Add(lifetime.Truncate(time.Second))
	if !st.Expires.IsZero() && st.Expires.Before(exp) {
		exp = st.Expires.Truncate(time.Second)
	}
	if !exp.After(issued) {
		// The client expires within this second: a token would be
		// expired as it is issued (expires_in 0).
		return AccessToken{}, refuseClient(ErrInvalidClient, "client %s expires at %s; issue a new one with scimrelay client rotate", st.ID, st.Expires.UTC().Format(time.RFC3339Nano))
	}
	payload, err := json.Marshal(accessClaims{Tenant: tenantName, Client: st.ID, Expires: exp.Unix(), Issued: issued.Unix()})
	if err != nil {
		return AccessToken{}, fmt.Errorf("encoding an access token: %w", err)
	}
	signed := AccessTokenPrefix + base64.RawURLEncoding.EncodeToString(payload)
	token := signed + "." + base64.RawURLEncoding.EncodeToString(s.sign(signed))
	s.noteUse(tenantName, st.ID, now)
	return AccessToken{Token: token, ClientID: st.ID, ExpiresIn: exp.Sub(issued)}, nil
}

// AuthenticateBasic checks HTTP Basic credentials on the SCIM endpoints: an
// OAuth client's id and secret, as at the token endpoint.
func (s *Store) AuthenticateBasic(_ context.Context, tenantName, user, password string) error {
	st, err := s.authenticateClient(tenantName, user, password)
	if err != nil {
		if errors.Is(err, ErrClientTenant) {
			return scim.Errorf(scim.ErrUnauthorized, "invalid client credentials")
		}
		return scim.Errorf(scim.ErrUnauthorized, "%v", err)
	}
	s.noteUse(tenantName, st.ID, s.now())
	return nil
}

// authenticateClient finds a live client by id and checks its secret.
func (s *Store) authenticateClient(tenantName, clientID, secret string) (*storedToken, error) {
	// An unknown tenant costs the same work as a wrong secret and gets the
	// same answer, so that neither tells which tenants exist.
	_, known := s.tenantMap()[tenantName]
	s.tokens.mu.RLock()
	st, ok := s.tokens.byID[clientID]
	s.tokens.mu.RUnlock()
	h := hashToken(secret)
	if !ok || subtle.ConstantTimeCompare(h[:], st.Hash) != 1 || st.Kind != KindClient {
		return nil, refuseClient(ErrInvalidClient, "invalid client credentials")
	}
	if err := s.clientLive(st, s.now()); err != nil {
		return nil, err
	}
	// A live client asking at another name's endpoint gets the same answer
	// whether that name is a tenant or not: its holder learns nothing about
	// which tenants exist.
	if st.Tenant != tenantName || !known {
		return nil, refuseClient(ErrClientTenant, "client %s is not a client of this tenant; use its own tenant's token endpoint", st.ID)
	}
	return st, nil
}

// clientLive says why a client no longer works, nil when it does. The
// refusals of an expired client are said once an hour, as an expired SCIM
// token's are (warnExpiredRefused).
func (s *Store) clientLive(st *storedToken, now time.Time) error {
	switch {
	case !st.Revoked.IsZero():
		s.noteRefused(st.Token, now)
		return refuseClient(ErrInvalidClient, "client %s was revoked at %s", st.ID, st.Revoked.UTC().Format(time.RFC3339))
	case !st.Expires.IsZero() && !now.Before(st.Expires):
		s.warnExpiredRefused(st.Token, now)
		s.noteRefused(st.Token, now)
		return refuseClient(ErrInvalidClient, "client %s expired at %s; issue a new one with scimrelay client rotate", st.ID, st.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}

// authenticateAccessToken checks an access token presented as a bearer
// token for a tenant, known when relay.yaml has it.
func (s *Store) authenticateAccessToken(tenantName string, known bool, token string) error {
	invalid := scim.Errorf(scim.ErrUnauthorized, "invalid bearer token")
	signed, sig, ok := strings.Cut(token, ".")
	mac, err := base64.RawURLEncoding.Strict().DecodeString(sig) // one string per token
	if !ok || err != nil || !s.oauth.Load().verifies(signed, mac, s.now()) {
		return invalid
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, AccessTokenPrefix))
	if err != nil {
		return invalid
	}
	var claims accessClaims
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Tenant != tenantName {
		return invalid
	}
	now := s.now()
	exp := time.Unix(claims.Expires, 0)
	if !now.Before(exp) {
		return scim.Errorf(scim.ErrUnauthorized, "access token expired at %s; request a new one from the token endpoint", exp.UTC().Format(time.RFC3339))
	}
	if exp.After(now.Add(MaxAccessTokenLifetime + clockStepBack)) {
		return invalid
	}
	s.tokens.mu.RLock()
	st, ok := s.tokens.byID[claims.Client]
	s.tokens.mu.RUnlock()
	if !ok || st.Kind != KindClient || st.Tenant != tenantName {
		return invalid
	}
	if err := s.clientLive(st, now); err != nil {
		return scim.Errorf(scim.ErrUnauthorized, "access token of a client that no longer works: %v", err)
	}
	if !known {
		// A tenant removed from relay.yaml keeps its clients in the file;
		// an access token issued before the removal must not outlive it.
		return scim.Errorf(scim.ErrNotFound, "no tenant %q", scim.Truncate(tenantName, 64))
	}
	if !st.Replaced.IsZero() && (claims.Issued == 0 || !time.Unix(claims.Issued, 0).After(st.Replaced)) {
		// An access token the client was issued before its rotation says
		// nothing of whether the identity provider holds the new client:
		// it keeps presenting the token it holds until it expires, and
		// only then asks the token endpoint, where a use of the old client
		// is noted. Counted as the client's use, it put the client
		// replaced back into the expiry alert for the whole overlap, whose
		// advice (rotate) then cut the client just put in to the overlap.
		s.noteAccepted(tenantName, now)
		return nil
	}
	s.noteUse(tenantName, st.ID, now)
	return nil
}

// sign returns the HMAC-SHA256 of signed under the access-token key in
// use.
func (s *Store) sign(signed string) []byte { return hmacOf(s.oauth.Load().cur, signed) }

// hmacOf returns the HMAC-SHA256 of signed under key.
func hmacOf(key []byte, signed string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// noteUse records a credential's last use, written by the next flush, and
// that a credential of tenant was accepted. It takes no write lock:
// requests authenticate in parallel.
func (s *Store) noteUse(tenant, id string, now time.Time) {
	s.noteAccepted(tenant, now)
	s.tokens.mu.RLock()
	u := s.tokens.used[id]
	var replaced time.Time
	if st := s.tokens.byID[id]; st != nil {
		replaced = st.Replaced
	}
	s.tokens.mu.RUnlock()
	// A use seen once the credential's rotation is in the cache came
	// after the rotation, whatever the wall clock says: stepped back
	// since (NTP correcting a clock that ran ahead), it would date the
	// use before the rotation, and Expiries would take the credential
	// the identity provider still uses for one handed over, out of the
	// expiry alert until its overlap ends.
	if !replaced.IsZero() && !now.After(replaced) {
		now = replaced.Add(time.Nanosecond)
	}
	if u != nil {
		u.at.Store(now.UnixNano())
	}
}
