// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// TestRotateOAuthKey: after a rotation with no overlap, an access token
// of the old key is refused and a new one works; with an overlap, the old
// key's tokens work until it ends, by the store's clock, and not a second
// longer; the key replaced before is refused at once. A restart keeps both
// keys and the overlap's end. The description names no key.
func TestRotateOAuthKey(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "x.db")
	s, err := Open(path, testOptions(c))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	secret, cl, err := s.Clients().Create(ctx, "acme", "entra", c.now().Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	issue := func() string {
		t.Helper()
		at, err := s.IssueAccessToken(ctx, "acme", cl.ID, secret, 2*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return at.Token
	}
	accepted := func(token string) error { return s.Authenticate(ctx, "acme", token) }
	first := issue()
	k0 := s.OAuthKey()

	k1, err := s.RotateOAuthKey(0)
	if err != nil || k1.ID == k0.ID || k1.Previous != "" || !k1.Created.Equal(c.now()) {
		t.Fatalf("RotateOAuthKey(0): %+v, %v; want a new key dated now, and none previous", k1, err)
	}
	wantErr(t, accepted(first), scim.ErrUnauthorized, "invalid bearer token")
	second := issue()
	if err := accepted(second); err != nil {
		t.Fatal(err)
	}

	k2, err := s.RotateOAuthKey(time.Hour)
	if err != nil || k2.Previous != k1.ID || !k2.PreviousUntil.Equal(c.now().Add(time.Hour)) {
		t.Fatalf("RotateOAuthKey(1h): %+v, %v; want %s accepted until %s", k2, err, k1.ID, c.now().Add(time.Hour))
	}
	third := issue()
	if err := accepted(second); err != nil {
		t.Errorf("a token of the previous key inside the overlap: %v", err)
	}
	wantErr(t, accepted(first), scim.ErrUnauthorized, "invalid bearer token")

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, testOptions(c)); err != nil {
		t.Fatal(err)
	}
	if got := s.OAuthKey(); got.ID != k2.ID || got.Previous != k1.ID || !got.PreviousUntil.Equal(k2.PreviousUntil) || !got.Created.Equal(k2.Created) {
		t.Errorf("after a restart the keys are %+v, want %+v", got, k2)
	}
	c.add(time.Hour - time.Second)
	for _, tok := range []string{second, third} {
		if err := accepted(tok); err != nil {
			t.Errorf("after a restart, a second before the overlap ends: %v", err)
		}
	}
	c.add(time.Second)
	wantErr(t, accepted(second), scim.ErrUnauthorized, "invalid bearer token")
	if err := accepted(third); err != nil {
		t.Error(err)
	}
	if got := s.OAuthKey(); got.Previous != "" {
		t.Errorf("the overlap ended, and the keys still list %s", got.Previous)
	}
}
