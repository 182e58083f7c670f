// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// acmeStatic is tenant acme's relay.yaml token in testOptions.
const acmeStatic = "acme-static-token-0123456789"

func acmeStaticID() string {
	sum := sha256.Sum256([]byte(acmeStatic))
	return "yaml_" + hex.EncodeToString(sum[:6])
}

// TestStaticTokensListed: token list shows a tenant's relay.yaml tokens,
// marked, with an id from their digest and their relay.yaml key, never the
// token; their last use is recorded as a stored token's is, and survives
// a restart.
func TestStaticTokensListed(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "x.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	_, stored, _ := s.Tokens().Create(ctx, "acme", "entra", time.Time{})
	c.add(time.Minute)
	if err := s.Authenticate(ctx, "acme", acmeStatic); err != nil {
		t.Fatal(err)
	}
	used := c.now()
	check := func(when string) {
		t.Helper()
		list, err := s.Tokens().List(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		want := Token{Kind: KindToken, ID: acmeStaticID(), Tenant: "acme", Name: "tenants[0].tokens[0]", Source: SourceConfig, LastUsed: used}
		if len(list) != 2 || !list[0].LastUsed.Equal(want.LastUsed) || list[0].ID != want.ID || list[0].Name != want.Name || list[0].Source != want.Source || list[1].ID != stored.ID || list[1].Source != "" {
			t.Fatalf("%s: acme's tokens %+v, want first %+v, then %s", when, list, want, stored.ID)
		}
		if st := list[0].State(c.now()); st != "live (relay.yaml)" {
			t.Errorf("%s: state %q", when, st)
		}
		all, _ := s.Tokens().List(ctx, "")
		b, _ := json.Marshal(all)
		if strings.Contains(string(b), acmeStatic) || !strings.Contains(string(b), `"source":"relay.yaml"`) {
			t.Fatalf("%s: list %s", when, b)
		}
	}
	check("before a flush")
	if list, _ := s.Tokens().List(ctx, "globex"); len(list) != 0 {
		t.Errorf("globex has no relay.yaml token; its list: %+v", list)
	}
	if list, _ := s.Clients().List(ctx, "acme"); len(list) != 0 {
		t.Errorf("a relay.yaml token among the OAuth clients: %+v", list)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, testOptions(c)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("after a restart")
}

// TestStaticTokenOutlivesRotation: rotation expires the stored tokens and
// leaves the relay.yaml ones; revoking one of these is refused, saying
// what to do instead.
func TestStaticTokenOutlivesRotation(t *testing.T) {
	s, c, _ := openStore(t)
	old, _, _ := s.Tokens().Create(ctx, "acme", "entra", time.Time{})
	fresh, _, expiring, err := s.Tokens().Rotate(ctx, "acme", "fresh", time.Time{}, time.Hour)
	if err != nil || len(expiring) != 1 {
		t.Fatalf("rotating: %v, %d shortened", err, len(expiring))
	}
	c.add(2 * time.Hour)
	wantErr(t, s.Authenticate(ctx, "acme", old), scim.ErrUnauthorized, "expired")
	for _, secret := range []string{acmeStatic, fresh} {
		if err := s.Authenticate(ctx, "acme", secret); err != nil {
			t.Fatalf("after the overlap: %v", err)
		}
	}
	_, _, err = s.Tokens().Revoke(ctx, acmeStaticID())
	if !errors.Is(err, ErrStaticToken) || !strings.Contains(err.Error(), "tenants[0].tokens[0] in relay.yaml (tenant acme)") || !strings.Contains(err.Error(), "remove it from relay.yaml and reload the relay") {
		t.Fatalf("revoking a relay.yaml token: %v", err)
	}
	if err := s.Authenticate(ctx, "acme", acmeStatic); err != nil {
		t.Fatalf("after a refused revocation: %v", err)
	}
}

// TestStaticTokenRemovedByReload: a relay.yaml token taken out by a
// reload stops working, leaves the list, and its id is no longer one.
func TestStaticTokenRemovedByReload(t *testing.T) {
	s, c, _ := openStore(t)
	if err := s.Authenticate(ctx, "acme", acmeStatic); err != nil {
		t.Fatal(err)
	}
	o := testOptions(c)
	o.Tenants[0].StaticTokens = []string{"acme-next-token-0123456789"}
	if err := s.SetTenants(o.Tenants); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Authenticate(ctx, "acme", acmeStatic), scim.ErrUnauthorized, "invalid bearer token")
	if err := s.Authenticate(ctx, "acme", "acme-next-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	list, _ := s.Tokens().List(ctx, "acme")
	if len(list) != 1 || list[0].ID == acmeStaticID() || list[0].Source != SourceConfig {
		t.Fatalf("after the reload: %+v", list)
	}
	if _, _, err := s.Tokens().Revoke(ctx, acmeStaticID()); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("revoking a relay.yaml token no longer configured: %v", err)
	}
	// The record of the removed token's use goes with the next flush.
	if err := s.flushTokenUse(); err != nil {
		t.Fatal(err)
	}
	s.tokens.mu.RLock()
	_, kept := s.tokens.staticUse[acmeStaticID()]
	s.tokens.mu.RUnlock()
	if kept {
		t.Error("the last use of a token no longer in relay.yaml is kept")
	}
	// Every relay.yaml token removed, with no stored credential: the
	// tenant is given a token as a new tenant is (README, Tokens: revoke
	// it to shut the tenant out), and none again once that is revoked.
	o.Tenants[0].StaticTokens = nil
	if err := s.SetTenants(o.Tenants); err != nil {
		t.Fatal(err)
	}
	secret, created, err := s.EnsureToken(ctx, "acme", nil)
	if err != nil || !created {
		t.Fatalf("the tenant left with no credential: EnsureToken %t %v, want a token", created, err)
	}
	if err := s.Authenticate(ctx, "acme", secret); err != nil {
		t.Fatal(err)
	}
	list, _ = s.Tokens().List(ctx, "acme")
	if len(list) != 1 || list[0].Name != "generated" {
		t.Fatalf("the tenant's tokens: %+v, want the one generated", list)
	}
	if _, _, err := s.Tokens().Revoke(ctx, list[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, created, err := s.EnsureToken(ctx, "acme", nil); err != nil || created {
		t.Fatalf("after its generated token was revoked: EnsureToken %t %v, want none", created, err)
	}
}
