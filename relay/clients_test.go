// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestClientSecrets: a client's id is cli_ and 16 hex digits, its secret
// scimrelay_secret_ and base64url of 32 random bytes, and only the secret's
// SHA-256 is in the file.
func TestClientSecrets(t *testing.T) {
	s, _, _ := openStore(t)
	secret, cl, err := s.Clients().Create(ctx, "acme", "entra", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, ClientSecretPrefix))
	if !strings.HasPrefix(secret, ClientSecretPrefix) || err != nil || len(raw) != 32 || cl.Kind != KindClient || !strings.HasPrefix(cl.ID, "cli_") || len(cl.ID) != 20 {
		t.Fatalf("secret %q, client %+v", secret, cl)
	}
	var stored []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		stored = append(stored, tx.Bucket(bucketTokens).Get([]byte(cl.ID))...)
		return nil
	})
	sum := sha256.Sum256([]byte(secret))
	if strings.Contains(string(stored), strings.TrimPrefix(secret, ClientSecretPrefix)) || !strings.Contains(string(stored), base64.StdEncoding.EncodeToString(sum[:])) {
		t.Fatalf("stored client record %s", stored)
	}
	// Clients and tokens are listed, revoked and rotated apart.
	if list, _ := s.Tokens().List(ctx, ""); len(list) != 1 || list[0].Source != SourceConfig { // acme's relay.yaml token alone
		t.Fatalf("a client listed among tokens: %+v", list)
	}
	if list, _ := s.Clients().List(ctx, "acme"); len(list) != 1 || list[0].ID != cl.ID {
		t.Fatalf("clients: %+v", list)
	}
	if _, _, err := s.Tokens().Revoke(ctx, cl.ID); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("token revoke of a client id: %v", err)
	}
	tokSecret, tok, _ := s.Tokens().Create(ctx, "acme", "t", time.Time{})
	if _, _, old, _ := s.Clients().Rotate(ctx, "acme", "new", time.Time{}, time.Hour); len(old) != 1 || old[0].ID != cl.ID {
		t.Fatalf("client rotation shortened %+v", old)
	}
	if list, _ := s.Tokens().List(ctx, "acme"); !list[1].Expires.IsZero() || list[1].ID != tok.ID { // after the relay.yaml token
		t.Fatalf("client rotation touched a token: %+v", list)
	}
	// A client secret is no bearer token, and a token no client secret.
	wantErr(t, s.Authenticate(ctx, "acme", secret), scim.ErrUnauthorized, "invalid bearer token")
	if _, err := s.IssueAccessToken(ctx, "acme", tok.ID, tokSecret, 0); !errors.Is(err, ErrInvalidClient) {
		t.Fatalf("a token used as client credentials: %v", err)
	}
}

// TestAccessTokens follows an access token through its life: issued for a
// tenant, refused on another, after it expires, and once its client is
// revoked; a restart keeps it valid.
func TestAccessTokens(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "x.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	secret, cl, _ := s.Clients().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	at, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour)
	if err != nil || at.ExpiresIn != time.Hour || !strings.HasPrefix(at.Token, AccessTokenPrefix) || at.ClientID != cl.ID {
		t.Fatalf("IssueAccessToken: %+v %v", at, err)
	}
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "globex", at.Token), scim.ErrUnauthorized, "invalid bearer token")
	// Tampering with the claims or the signature breaks it.
	signed, sig, _ := strings.Cut(at.Token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, AccessTokenPrefix))
	forged := AccessTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"acme"`, `"globex"`, 1))) + "." + sig
	wantErr(t, s.Authenticate(ctx, "globex", forged), scim.ErrUnauthorized, "invalid bearer token")
	wantErr(t, s.Authenticate(ctx, "acme", at.Token[:len(at.Token)-2]+"AA"), scim.ErrUnauthorized, "invalid bearer token")
	wantErr(t, s.Authenticate(ctx, "acme", AccessTokenPrefix+"garbage"), scim.ErrUnauthorized, "invalid bearer token")
	// A signature's last character holds two bits no byte uses: a token
	// differing there is another string, not the one issued.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, at.Token[len(at.Token)-1])
	wantErr(t, s.Authenticate(ctx, "acme", at.Token[:len(at.Token)-1]+alphabet[last^1:last^1+1]), scim.ErrUnauthorized, "invalid bearer token")
	// One that says it lives longer than any the relay issues was not
	// issued by it, even with a valid signature (the key is in backups).
	longPayload, _ := json.Marshal(accessClaims{Tenant: "acme", Client: cl.ID, Expires: c.now().Add(30 * 24 * time.Hour).Unix()})
	long := AccessTokenPrefix + base64.RawURLEncoding.EncodeToString(longPayload)
	long += "." + base64.RawURLEncoding.EncodeToString(s.sign(long))
	wantErr(t, s.Authenticate(ctx, "acme", long), scim.ErrUnauthorized, "invalid bearer token")

	// A restart keeps the key, so the token stays valid.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, testOptions(c)); err != nil {
		t.Fatal(err)
	}
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	c.add(time.Hour)
	wantErr(t, s.Authenticate(ctx, "acme", at.Token), scim.ErrUnauthorized, "access token expired at 2026-11-23T10:00:00Z")

	// A tenant removed from relay.yaml (a reload) ends its live access
	// tokens, as it does its static and stored tokens: its clients stay in
	// the file, and come back with the tenant.
	at, _ = s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour)
	opts := testOptions(c)
	if err := s.SetTenants(opts.Tenants[1:]); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "acme", at.Token), scim.ErrNotFound, `no tenant "acme"`)
	if err := s.SetTenants(opts.Tenants); err != nil {
		t.Fatal(err)
	}
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatalf("after acme was added again: %v", err)
	}

	// Revoking the client ends its live tokens at once.
	if _, _, err := s.Clients().Revoke(ctx, cl.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "acme", at.Token), scim.ErrUnauthorized, "client "+cl.ID+" was revoked")
	if _, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour); !errors.Is(err, ErrInvalidClient) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked client got a token: %v", err)
	}
}

// TestClientAuthentication: what the token endpoint and HTTP Basic refuse.
func TestClientAuthentication(t *testing.T) {
	s, c, _ := openStore(t)
	secret, cl, _ := s.Clients().Create(ctx, "acme", "entra", c.now().Add(2*time.Hour))
	tests := []struct {
		name, tenant, id, secret string
		want                     error
		detail                   string
	}{
		{"wrong secret", "acme", cl.ID, secret + "x", ErrInvalidClient, "invalid client credentials"},
		{"unknown client", "acme", "cli_0000000000000000", secret, ErrInvalidClient, "invalid client credentials"},
		{"another tenant", "globex", cl.ID, secret, ErrClientTenant, "not a client of this tenant"},
		{"a name that is no tenant", "initech", cl.ID, secret, ErrClientTenant, "not a client of this tenant"},
		{"empty secret", "acme", cl.ID, "", ErrInvalidClient, "invalid client credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.IssueAccessToken(ctx, tt.tenant, tt.id, tt.secret, time.Hour)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail) || strings.Contains(err.Error(), secret) {
				t.Fatalf("got %v, want %v containing %q (and no secret)", err, tt.want, tt.detail)
			}
			if err := s.AuthenticateBasic(ctx, tt.tenant, tt.id, tt.secret); err == nil {
				t.Fatal("Basic accepted what the token endpoint refuses")
			}
		})
	}
	if err := s.AuthenticateBasic(ctx, "acme", cl.ID, secret); err != nil {
		t.Fatal(err)
	}
	// An unknown tenant is answered as a wrong credential: names cannot be probed.
	wantErr(t, s.AuthenticateBasic(ctx, "initech", cl.ID, secret), scim.ErrUnauthorized, "invalid client credentials")
	// An access token never outlives its client.
	at, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, 24*time.Hour)
	if err != nil || at.ExpiresIn != 2*time.Hour {
		t.Fatalf("access token of a client expiring in 2h: %+v %v", at, err)
	}
	c.add(2 * time.Hour)
	if _, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour); !errors.Is(err, ErrInvalidClient) || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("an expired client: %v", err)
	}
	wantErr(t, s.AuthenticateBasic(ctx, "acme", cl.ID, secret), scim.ErrUnauthorized, "expired at")
}

// TestClientLifecycle: clients count as a way in for EnsureToken, show in
// the expiry metric's source with their kind, and record their last use.
func TestClientLifecycle(t *testing.T) {
	s, c, _ := openStore(t)
	secret, cl, _ := s.Clients().Create(ctx, "globex", "entra", c.now().Add(10*24*time.Hour))
	if _, created, err := s.EnsureToken(ctx, "globex", nil); created || err != nil {
		t.Fatalf("EnsureToken for a tenant with a live client: %v %v", created, err)
	}
	exp := s.TokenExpiries()
	if len(exp) != 1 || exp[0].ID != cl.ID || exp[0].Kind != KindClient {
		t.Fatalf("TokenExpiries: %+v", exp)
	}
	c.add(time.Minute)
	if _, err := s.IssueAccessToken(ctx, "globex", cl.ID, secret, 0); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.Clients().List(ctx, "globex"); !list[0].LastUsed.Equal(c.now()) {
		t.Fatalf("last used %v", list[0].LastUsed)
	}
	if _, _, err := s.Clients().Revoke(ctx, cl.ID); err != nil {
		t.Fatal(err)
	}
	if _, created, _ := s.EnsureToken(ctx, "globex", nil); created {
		t.Fatal("a first token once the only client was revoked: the revocation is the operator's")
	}
}

// TestExpiryWarnings: tokens and clients that expire within ExpiryWarning
// are warned about, each with the command that replaces it; later ones not.
func TestExpiryWarnings(t *testing.T) {
	s, c, _ := openStore(t)
	_, tok, _ := s.Tokens().Create(ctx, "acme", "entra-token", c.now().Add(10*24*time.Hour))
	_, cl, _ := s.Clients().Create(ctx, "acme", "entra-client", c.now().Add(3*24*time.Hour))
	// README: "From 14 days" before it expires.
	_, late, _ := s.Clients().Create(ctx, "acme", "later", c.now().Add(14*24*time.Hour+time.Hour))
	_, edge, _ := s.Tokens().Create(ctx, "acme", "edge", c.now().Add(14*24*time.Hour-time.Hour))
	var buf bytes.Buffer
	done, cancel := context.WithCancel(ctx)
	cancel() // one round of warnings, then return
	s.WarnExpiringTokens(done, slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Contains(out, late.ID) || !strings.Contains(out, edge.ID) {
		t.Fatalf("warnings, want the three expiring within 14 days:\n%s", out)
	}
	if !strings.Contains(lines[0], cl.ID) || !strings.Contains(lines[0], "scimrelay client rotate") || !strings.Contains(lines[0], "days_left=3") ||
		!strings.Contains(lines[1], tok.ID) || !strings.Contains(lines[1], "scimrelay token rotate") {
		t.Fatalf("warnings:\n%s", out)
	}

	// The warnings repeat every period (serve's is a day), not once.
	repeated := &eventstest.Log{}
	stop, cancelRepeats := context.WithCancel(ctx)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		s.WarnExpiringTokens(stop, slog.New(slog.NewTextHandler(repeated, nil)), 10*time.Millisecond)
	}()
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := strings.Count(repeated.String(), tok.ID); n < 3 {
			return fmt.Errorf("the token's warning was logged %d times", n)
		}
		return nil
	})
	cancelRepeats()
	<-ended
}

// TestAccessTokenIssuedInItsClientsLastSecond: a client live at the
// request (it expires 700 ms later) is given an access token. The token
// endpoint answers 200 with it, so it must work until the client expires
// ("never past its client's expiry"), with an expires_in above 0; the
// relay instead truncates the client's expiry to the second, below the
// issue time, and hands out a token that is expired as it is issued
// (expires_in 0). It is refused as an expired client is instead.
func TestAccessTokenIssuedInItsClientsLastSecond(t *testing.T) {
	s, c, _ := openStore(t)
	c.add(200 * time.Millisecond) // 09:00:00.2
	secret, cl, err := s.Clients().Create(ctx, "acme", "okta", c.now().Add(700*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	at, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour)
	if err != nil {
		if !errors.Is(err, ErrInvalidClient) || !strings.Contains(err.Error(), "client rotate") {
			t.Fatalf("a client in its last second: %v; want invalid_client, saying what to do", err)
		}
		return // refused, as an expired client is: Entra asks again, and is told
	}
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil || at.ExpiresIn <= 0 {
		t.Fatalf("a token issued to a live client at %s (client expires %s): expires_in %s, and its first use: %v",
			c.now().Format("15:04:05.000"), cl.Expires.Format("15:04:05.000"), at.ExpiresIn, err)
	}
}

// TestAccessTokenAfterAClockStepBack: with oauth.token_lifetime 24h (the
// most the relay allows), Entra fetches an access token; the relay's wall
// clock then steps back 5 minutes (NTP), in a running relay or as its host
// boots. The token this relay issued a moment ago, still within its
// lifetime, is taken (until a hunt found it, it was refused as "invalid
// bearer token" for 4 minutes, every SCIM request failing 401 with no
// reason anyone saw). One issued while the clock ran 30 days ahead (a bad
// RTC) is refused once NTP corrects the clock: it would live a month
// (from a review of a first fix, which kept the latest expiry issued in
// memory: that let it, and forgot it at a restart).
func TestAccessTokenAfterAClockStepBack(t *testing.T) {
	s, c, path := openStore(t)
	secret, cl, err := s.Clients().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	at, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, MaxAccessTokenLifetime)
	if err != nil {
		t.Fatal(err)
	}
	c.add(-5 * time.Minute)
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatalf("the access token issued a moment ago (24h lifetime) is refused once the wall clock stepped back 5 minutes: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.add(-5 * time.Minute) // and 5 more as the host boots
	if s, err = Open(path, testOptions(c)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Authenticate(ctx, "acme", at.Token); err != nil {
		t.Fatalf("the access token is refused after a restart, the clock stepped back 10 minutes since it was issued: %v", err)
	}

	c.add(30 * 24 * time.Hour) // the clock runs 30 days ahead
	ahead, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.add(-30 * 24 * time.Hour) // NTP corrects it
	c.add(2 * time.Hour)        // past the token's lifetime
	if err := s.Authenticate(ctx, "acme", ahead.Token); err == nil {
		t.Fatal("an access token issued with a 1 h lifetime while the clock ran 30 days ahead is taken 2 h after NTP corrected the clock: it would live a month")
	}
}
