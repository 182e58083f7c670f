// SPDX-License-Identifier: Apache-2.0

package console

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
)

// TestLoginToken: the sign-in form's token is taken only as this process
// made it, the cookie's and the form's the same, before its hour is over.
// A pair planted by whoever can set the console's cookies (any value, a
// token of another process, one with its expiry moved) is refused.
func TestLoginToken(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	c, err := New(Options{Admin: http.NotFoundHandler(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(Options{Admin: http.NotFoundHandler(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	check := func(cookie, form string) error {
		r := httptest.NewRequest("POST", Prefix+"login", strings.NewReader(url.Values{"csrf": {form}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: loginCookie, Value: cookie})
		}
		return c.checkLoginToken(r)
	}
	good := c.newLoginToken()
	if err := check(good, good); err != nil {
		t.Fatalf("the console's own token is refused: %v", err)
	}
	b, _ := base64.RawURLEncoding.DecodeString(good)
	binary.BigEndian.PutUint64(b[16:24], uint64(now.Add(365*24*time.Hour).Unix()))
	extended := base64.RawURLEncoding.EncodeToString(b)
	foreign := other.newLoginToken()
	for name, pair := range map[string][2]string{
		"a planted pair":          {"abc", "abc"},
		"another process's token": {foreign, foreign},
		"its expiry moved":        {extended, extended},
		"no cookie":               {"", good},
		"another cookie":          {c.newLoginToken(), good},
		"nothing":                 {"", ""},
	} {
		if err := check(pair[0], pair[1]); !errors.Is(err, errCSRF) {
			t.Errorf("%s: %v, want errCSRF", name, err)
		}
	}
	now = now.Add(loginTokenLife)
	if err := check(good, good); !errors.Is(err, errCSRF) {
		t.Errorf("a token past its hour: %v, want errCSRF", err)
	}
}

// TestSignInRefusalIsLoggedUnderTheRequestID: a wrong admin token at
// sign-in is logged ("admin token refused") under the id of the console's
// request, the one its answer carries.
func TestSignInRefusalIsLoggedUnderTheRequestID(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	c, err := New(Options{Admin: admin.NewHandler(admin.Options{Token: "the-admin-token-0123456789", Logger: log}), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tok := c.newLoginToken()
	r := httptest.NewRequest("POST", Prefix+"login", strings.NewReader(url.Values{"csrf": {tok}, "token": {"a-wrong-token-0123456789"}}.Encode()))
	r.Host = "127.0.0.1"
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(&http.Cookie{Name: loginCookie, Value: tok})
	w := httptest.NewRecorder()
	admin.KnownHostsOnly(c, nil, slog.New(slog.DiscardHandler)).ServeHTTP(w, r) // as serve guards the admin listener
	id := w.Header().Get("X-Request-Id")
	if w.Code != http.StatusUnauthorized || id == "" {
		t.Fatalf("a wrong token at sign-in: %d, X-Request-Id %q", w.Code, id)
	}
	if !strings.Contains(logBuf.String(), `where="console sign-in" path=/ui/login request_id=`+id+"\n") {
		t.Fatalf("no refusal logged under request_id %s:\n%s", id, logBuf.String())
	}
}
