// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// browser is a console user: a cookie jar, redirects not followed (the
// tests check them), the CSRF token of the last page that had one.
type browser struct {
	t      *testing.T
	base   string
	client *http.Client
	csrf   string
	header http.Header // sent with every request
}

func newBrowser(t *testing.T, p *relayProc) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: p.adminURL, header: http.Header{}, client: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// page is a console answer.
type page struct {
	status int
	header http.Header
	body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	for k, v := range b.header {
		req.Header[k] = v
	}
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	if m := csrfField.FindSubmatch(body); m != nil {
		b.csrf = html.UnescapeString(string(m[1]))
	}
	return page{res.StatusCode, res.Header, string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, err := http.NewRequest("GET", b.base+path, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

// post submits a form with the CSRF token the browser holds (unless the
// form sets csrf itself).
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, set := form["csrf"]; !set {
		form.Set("csrf", b.csrf)
	}
	req, err := http.NewRequest("POST", b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (p page) want(t *testing.T, status int, says ...string) page {
	t.Helper()
	if p.status != status {
		t.Fatalf("status %d, want %d:\n%s", p.status, status, p.body)
	}
	for _, s := range says {
		if !strings.Contains(p.body, s) {
			t.Fatalf("the page does not say %q:\n%s", s, p.body)
		}
	}
	return p
}

// redirect checks a 303 to location.
func (p page) redirect(t *testing.T, location string) string {
	t.Helper()
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), location) {
		t.Fatalf("status %d to %q, want 303 to %s:\n%s", p.status, p.header.Get("Location"), location, p.body)
	}
	return p.header.Get("Location")
}

// signIn signs in with an admin token.
func (b *browser) signIn(token string) page {
	b.t.Helper()
	b.get("/ui/login").want(b.t, http.StatusOK, "Admin token")
	return b.post("/ui/login", url.Values{"token": {token}})
}

// consoleRelay is a relay with one sink posting to receiver, and a signed-in browser.
func consoleRelay(t *testing.T, edit func(*config.Config), opts ...serverOption) (*relayProc, *browser) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	if edit != nil {
		edit(cfg)
	}
	p := startRelay(t, cfg, roleAll, opts...)
	b := newBrowser(t, p)
	b.signIn(adminSecret).redirect(t, "/ui/")
	return p, b
}

// securityHeaders are on every console answer.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":         "DENY",
	"Referrer-Policy":         "no-referrer",
	"X-Content-Type-Options":  "nosniff",
}

func checkHeaders(t *testing.T, what string, p page) {
	t.Helper()
	for k, v := range securityHeaders {
		if got := p.header.Get(k); got != v {
			t.Errorf("%s: %s is %q, want %q", what, k, got, v)
		}
	}
	if cc := p.header.Get("Cache-Control"); cc != "no-store" && !strings.HasPrefix(what, "GET /ui/static/") {
		t.Errorf("%s: Cache-Control %q, want no-store", what, cc)
	}
}

// TestConsoleSignIn: the admin token is exchanged for a session cookie
// (HttpOnly, SameSite=Strict, Secure over TLS); a wrong one is refused, and
// so is a sign-in form that another service on the host planted and sent
// from its page; signing out ends the session, even for a copy of its
// cookie.
func TestConsoleSignIn(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	b := newBrowser(t, p)
	b.get("/ui/").redirect(t, "/ui/login")
	b.get("/ui").want(t, http.StatusMovedPermanently)
	login := b.get("/ui/login").want(t, http.StatusOK, `type="password"`, `<label for="token">Admin token</label>`)
	checkHeaders(t, "GET /ui/login", login)

	b.post("/ui/login", url.Values{"token": {"wrong-token"}}).want(t, http.StatusUnauthorized, "not the admin token")
	b.post("/ui/login", url.Values{"token": {adminSecret}, "csrf": {"forged"}}).want(t, http.StatusForbidden, "out of date")
	b.get("/ui/").redirect(t, "/ui/login")
	// A pair of cookie and field that the console did not give out, such as
	// one another service on the host made up and planted (cookies ignore
	// ports), is refused: the console signs its tokens.
	planted := newBrowser(t, p)
	loginURL, _ := url.Parse(p.adminURL + "/ui/login")
	planted.client.Jar.SetCookies(loginURL, []*http.Cookie{{Name: "scimrelay_console_login", Value: "abc", Path: "/ui/login"}})
	if res := planted.post("/ui/login", url.Values{"token": {adminSecret}, "csrf": {"abc"}}).want(t, http.StatusForbidden, "out of date"); cookieNamed(res.header, "scimrelay_console") != nil {
		t.Fatal("a planted sign-in token pair started a session")
	}
	// The signature does not stop such a service: it can fetch a good pair
	// from the sign-in page and plant that. What refuses the form it then
	// sends from its page, on another port (same-site, so SameSite=Strict
	// lets the cookie go), is the cross-origin check: by Sec-Fetch-Site, or
	// by Origin from a browser that sends none. The same pair sent from the
	// console's own page signs in.
	fetched := newBrowser(t, p)
	fetched.get("/ui/login").want(t, http.StatusOK)
	victim := newBrowser(t, p)
	victim.client.Jar.SetCookies(loginURL, fetched.client.Jar.Cookies(loginURL))
	port, _ := strconv.Atoi(loginURL.Port())
	otherPort := fmt.Sprintf("http://%s:%d", loginURL.Hostname(), port+1)
	for name, header := range map[string]map[string]string{
		"a browser":                        {"Origin": otherPort, "Sec-Fetch-Site": "same-site"},
		"a browser without Sec-Fetch-Site": {"Origin": otherPort},
	} {
		req, _ := http.NewRequest("POST", victim.base+"/ui/login", strings.NewReader(url.Values{"token": {adminSecret}, "csrf": {fetched.csrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		if res := victim.do(req); res.status != http.StatusForbidden || !strings.Contains(res.body, "cross-origin requests are refused") || cookieNamed(res.header, "scimrelay_console") != nil {
			t.Errorf("a fetched pair planted and sent from another port's page by %s: %d, want 403 cross-origin and no session:\n%s", name, res.status, res.body)
		}
	}
	victim.post("/ui/login", url.Values{"token": {adminSecret}, "csrf": {fetched.csrf}}).redirect(t, "/ui/")

	ok := b.signIn(adminSecret)
	ok.redirect(t, "/ui/")
	var session *http.Cookie
	for _, c := range (&http.Response{Header: ok.header}).Cookies() {
		if c.Name == "scimrelay_console" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/ui/" || session.Secure || session.MaxAge != 0 {
		t.Fatalf("session cookie over plain HTTP: %+v", session)
	}
	b.get("/ui/").want(t, http.StatusOK, "Health", "Tenants", "Sinks")

	// Behind a TLS proxy the cookie is Secure.
	tls := newBrowser(t, p)
	tls.header.Set("X-Forwarded-Proto", "https")
	res := tls.signIn(adminSecret)
	if c := (&http.Response{Header: res.header}).Cookies(); len(c) == 0 || !c[len(c)-1].Secure {
		t.Fatalf("session cookie behind TLS: %v", res.header["Set-Cookie"])
	}

	// Sign-out needs the form's token; then the session is gone, also for
	// a copy of its cookie.
	b.post("/ui/logout", url.Values{"csrf": {"nope"}}).want(t, http.StatusForbidden)
	b.get("/ui/").want(t, http.StatusOK)
	b.post("/ui/logout", nil).redirect(t, "/ui/login")
	replay := newBrowser(t, p)
	u, _ := url.Parse(p.adminURL + "/ui/")
	replay.client.Jar.SetCookies(u, []*http.Cookie{{Name: "scimrelay_console", Value: session.Value, Path: "/ui/"}})
	replay.get("/ui/").redirect(t, "/ui/login")
	b.get("/ui/").redirect(t, "/ui/login")

	// Sessions live in the process: a restart signs everyone out.
	b.signIn(adminSecret).redirect(t, "/ui/")
	var kept string
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == "scimrelay_console" {
			kept = c.Value
		}
	}
	p.stop()
	p = startRelay(t, p.srv.cfg, roleAll)
	again := newBrowser(t, p)
	u, _ = url.Parse(p.adminURL + "/ui/")
	again.client.Jar.SetCookies(u, []*http.Cookie{{Name: "scimrelay_console", Value: kept, Path: "/ui/"}})
	again.get("/ui/").redirect(t, "/ui/login")
}

// TestConsoleStaleSignInPage: a sign-in page older than an hour, or than
// a restart of the relay, is refused with 403 asking to reload it (its
// token was signed for an hour, with the key of the process that made
// it); reloaded, it signs in.
func TestConsoleStaleSignInPage(t *testing.T) {
	const reload = "this form is out of date or did not come from this console: reload the page and try again"
	clock := newTestClock()
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll, withClock(clock.now))
	b := newBrowser(t, p)
	b.get("/ui/login").want(t, http.StatusOK)
	clock.add(time.Hour)
	b.post("/ui/login", url.Values{"token": {adminSecret}}).want(t, http.StatusForbidden, reload)
	b.signIn(adminSecret).redirect(t, "/ui/")

	stale := newBrowser(t, p)
	stale.get("/ui/login").want(t, http.StatusOK)
	p.stop()
	p = startRelay(t, p.srv.cfg, roleAll, withClock(clock.now))
	stale.base = p.adminURL // the cookie goes along: cookies ignore ports
	stale.post("/ui/login", url.Values{"token": {adminSecret}}).want(t, http.StatusForbidden, reload)
	stale.signIn(adminSecret).redirect(t, "/ui/")
}

// TestConsoleSessionExpiry: a session ends after admin.session_idle
// without a request (the live tail's stream, and its reconnects, are no
// request of a person's), and 12 hours after sign-in whatever its use.
func TestConsoleSessionExpiry(t *testing.T) {
	clock := newTestClock()
	_, b := consoleRelay(t, func(c *config.Config) { c.Admin.SessionIdle = config.Duration(30 * time.Minute) }, withClock(clock.now))
	for range 3 { // used every 29 minutes: kept
		clock.add(29 * time.Minute)
		b.get("/ui/").want(t, http.StatusOK)
	}
	// Watching the live tail is not activity: the idle session ends it.
	tail := openTail(t, b, "/ui/events/stream")
	defer tail.close()
	clock.add(31 * time.Minute)
	tail.next(t, "signed-out")
	b.get("/ui/").redirect(t, "/ui/login")

	// Nor is the stream reconnecting, as the browser does by itself when
	// a proxy cuts a long connection: each reconnect kept the session
	// alive, a tab left open on the tail signed in for 12 hours.
	b.signIn(adminSecret).redirect(t, "/ui/")
	b.get("/ui/events").want(t, http.StatusOK)
	clock.add(20 * time.Minute)
	openTail(t, b, "/ui/events/stream").close() // reconnected, 20 minutes on
	clock.add(20 * time.Minute)                 // 40 minutes after the page
	req, _ := http.NewRequest("GET", b.base+"/ui/events/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	if res, err := b.client.Do(req); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the stream reconnecting 40 minutes after the page: %v %v, want 401: the session ended", res, err)
	} else {
		res.Body.Close()
	}
	b.get("/ui/").redirect(t, "/ui/login")

	b.signIn(adminSecret).redirect(t, "/ui/")
	for range 12 * 60 / 20 { // used every 20 minutes for 12 hours
		b.get("/ui/sinks").want(t, http.StatusOK)
		clock.add(20 * time.Minute)
	}
	b.get("/ui/").redirect(t, "/ui/login")
}

// TestConsoleRateLimit: sign-in attempts are limited per client address,
// before the token is checked: guessing costs budget, and once it is spent
// even the right token waits.
func TestConsoleRateLimit(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	b := newBrowser(t, p)
	for i := range 10 {
		b.signIn(fmt.Sprintf("guess-%d", i)).want(t, http.StatusUnauthorized)
	}
	res := b.signIn(adminSecret).want(t, http.StatusTooManyRequests, "too many sign-in attempts")
	if res.header.Get("Retry-After") == "" {
		t.Fatalf("429 without Retry-After: %v", res.header)
	}
	checkHeaders(t, "429", res)
	b.get("/ui/").redirect(t, "/ui/login")
}

// TestConsoleOff: with admin.console false the admin listener has no /ui/.
func TestConsoleOff(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Admin.Console = false
	p := startRelay(t, cfg, roleAll)
	newBrowser(t, p).get("/ui/login").want(t, http.StatusNotFound)
}

// TestConsoleTokens: the tenant page gives the Tenant URL and generates a
// token whose secret is shown exactly once (never in the answer to the
// POST, never again after its page, on no other page); rotation and
// revocation take effect on the SCIM endpoint.
func TestConsoleTokens(t *testing.T) {
	p, b := consoleRelay(t, nil)
	tenantURL := p.scimURL + "/scim/v2/acme"
	b.get("/ui/tenants/acme").want(t, http.StatusOK, `value="`+tenantURL+`"`, "Generate token", `value="90"`, "Provisioning Mode", "Test Connection", "Create client")

	res := b.post("/ui/tenants/acme/tokens", url.Values{"name": {"entra"}, "days": {"30"}})
	issued := res.redirect(t, "/ui/secrets/")
	if strings.Contains(res.body, relay.TokenPrefix) {
		t.Fatalf("the answer to the POST holds the secret:\n%s", res.body)
	}
	shown := b.get(strings.TrimPrefix(issued, p.adminURL)).want(t, http.StatusOK, "Secret Token", "Tenant URL", "shown only this once")
	secret := regexp.MustCompile(`value="(scimrelay_[^"]+)"`).FindStringSubmatch(shown.body)
	if secret == nil {
		t.Fatalf("no secret on its page:\n%s", shown.body)
	}
	if shown.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("the secret's page may be cached: %v", shown.header)
	}
	p.scim("acme", secret[1], "GET", "/Users", "").want(t, 200)
	var list []relay.Token
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		var err error
		list, err = p.srv.store.Tokens().List(context.Background(), "acme")
		list = storedOnly(list)
		if err != nil || len(list) != 1 || list[0].Name != "entra" {
			return fmt.Errorf("tokens %+v %v", list, err)
		}
		return nil
	})
	if d := time.Until(list[0].Expires); d < 29*24*time.Hour || d > 30*24*time.Hour {
		t.Fatalf("expiry in %s, want 30 days", d)
	}

	// Shown once: not again, and on no page of the console.
	b.get(strings.TrimPrefix(issued, p.adminURL)).want(t, http.StatusGone, "shown once")
	for _, path := range []string{"/ui/", "/ui/tenants/acme", "/ui/tenants/globex", "/ui/log", "/ui/sinks", "/ui/events", "/ui/keys", "/ui/tenants/acme/tokens/" + list[0].ID + "/revoke"} {
		if pg := b.get(path).want(t, http.StatusOK); strings.Contains(pg.body, secret[1]) {
			t.Fatalf("%s shows the secret", path)
		}
	}

	// Never, and bad expiries.
	b.post("/ui/tenants/acme/tokens", url.Values{"name": {"forever"}, "days": {"90"}, "never": {"1"}}).redirect(t, "/ui/secrets/")
	b.get("/ui/tenants/acme").want(t, http.StatusOK, "forever", "never")
	for _, days := range []string{"0", "-3", "ninety", "99999"} {
		b.post("/ui/tenants/acme/tokens", url.Values{"days": {days}}).want(t, http.StatusBadRequest, "number of days")
	}
	b.post("/ui/tenants/initech/tokens", url.Values{"days": {"90"}}).want(t, http.StatusNotFound, "no such tenant")
	b.post("/ui/tenants/acme/secrets", url.Values{"days": {"90"}}).want(t, http.StatusNotFound)

	// Rotation: a new token; the others expire after the overlap.
	rotated := b.post("/ui/tenants/acme/tokens/rotate", url.Values{"name": {"next"}, "days": {"90"}, "overlap": {"2"}}).redirect(t, "/ui/secrets/")
	sum := sha256.Sum256([]byte(acmeToken))
	staticID := "yaml_" + hex.EncodeToString(sum[:6])
	b.get(strings.TrimPrefix(rotated, p.adminURL)).want(t, http.StatusOK, "keep working until the overlap ends", list[0].ID,
		"These tokens written in relay.yaml keep working after the overlap", staticID)
	after, _ := p.srv.store.Tokens().List(context.Background(), "acme")
	for _, tok := range after {
		if tok.Name != "next" && tok.Source == "" && (tok.Expires.IsZero() || time.Until(tok.Expires) > 2*time.Hour) {
			t.Errorf("token %s (%s) expires %s, want within the 2h overlap", tok.ID, tok.Name, tok.Expires)
		}
	}

	// acme's relay.yaml token is listed, without a way to revoke it here.
	pg := b.get("/ui/tenants/acme").want(t, http.StatusOK, staticID, "tenants[0].tokens[0]", "in relay.yaml", "remove it from relay.yaml and reload")
	if strings.Contains(pg.body, staticID+"/revoke") || strings.Contains(pg.body, acmeToken) {
		t.Fatalf("the tenant page offers to revoke the relay.yaml token, or shows it:\n%s", pg.body)
	}
	b.post("/ui/tenants/acme/tokens/"+staticID+"/revoke", nil).want(t, http.StatusConflict, "remove it from relay.yaml and reload the relay")
	p.scim("acme", acmeToken, "GET", "/Users", "").want(t, 200)

	// Revocation asks first, then takes effect at once.
	b.get("/ui/tenants/acme/tokens/"+list[0].ID+"/revoke").want(t, http.StatusOK, "stops working at once", list[0].ID)
	b.get("/ui/tenants/globex/tokens/"+list[0].ID+"/revoke").want(t, http.StatusNotFound)
	b.post("/ui/tenants/acme/tokens/"+list[0].ID+"/revoke", nil).redirect(t, "/ui/tenants/acme")
	b.get("/ui/tenants/acme").want(t, http.StatusOK, "Revoked token "+list[0].ID, "revoked")
	p.scim("acme", secret[1], "GET", "/Users", "").want(t, 401)

	// OAuth clients: Entra's three fields, the secret once.
	issued = b.post("/ui/tenants/acme/clients", url.Values{"name": {"entra-oauth"}, "days": {"90"}}).redirect(t, "/ui/secrets/")
	shown = b.get(strings.TrimPrefix(issued, p.adminURL)).want(t, http.StatusOK, "OAuth2 Client Credentials Grant", "Token Endpoint", "Client Identifier", "Client Secret",
		`value="`+p.scimURL+`/oauth2/acme/token"`)
	clientSecret := regexp.MustCompile(`value="(scimrelay_secret_[^"]+)"`).FindStringSubmatch(shown.body)
	clientID := regexp.MustCompile(`value="(cli_[^"]+)"`).FindStringSubmatch(shown.body)
	if clientSecret == nil || clientID == nil {
		t.Fatalf("client id or secret missing:\n%s", shown.body)
	}
	tok := p.tokenRequest("acme", grant(), clientID[1]+":"+clientSecret[1]).accessToken(t)
	p.scim("acme", tok, "GET", "/Users", "").want(t, 200)
	if pg := b.get("/ui/tenants/acme").want(t, http.StatusOK, clientID[1]); strings.Contains(pg.body, clientSecret[1]) {
		t.Fatal("the tenant page shows the client secret")
	}
}

// TestConsoleCSRF: every form that changes something is refused (403,
// nothing done) without the session's token, with another session's, or
// when sent from another site's page.
func TestConsoleCSRF(t *testing.T) {
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", "http://127.0.0.1:1/hook", nil) })
	other := newBrowser(t, p)
	other.signIn(adminSecret).redirect(t, "/ui/")
	other.get("/ui/")
	b.get("/ui/")
	if other.csrf == b.csrf || b.csrf == "" {
		t.Fatalf("two sessions share a CSRF token %q", b.csrf)
	}
	_, kept, err := p.srv.store.Tokens().Create(context.Background(), "acme", "kept", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	forms := []struct {
		path string
		form url.Values
	}{
		{"/ui/tenants/acme/tokens", url.Values{"days": {"90"}}},
		{"/ui/tenants/acme/tokens/rotate", url.Values{"days": {"90"}}},
		{"/ui/tenants/acme/clients", url.Values{"days": {"90"}}},
		{"/ui/tenants/acme/tokens/" + kept.ID + "/revoke", nil},
		{"/ui/sinks/crm/redrive", url.Values{"all": {"1"}}},
		{"/ui/sinks/crm/replay", url.Values{"since": {"1h"}}},
		{"/ui/logout", nil},
	}
	for _, f := range forms {
		for name, token := range map[string][]string{"no token": {""}, "a forged one": {"forged"}, "another session's": {other.csrf}} {
			form := url.Values{"csrf": token}
			for k, v := range f.form {
				form[k] = v
			}
			res := b.post(f.path, form)
			if res.status != http.StatusForbidden || !strings.Contains(res.body, "out of date") {
				t.Errorf("POST %s with %s: %d", f.path, name, res.status)
			}
			checkHeaders(t, "POST "+f.path, res)
		}
		// The right token from another site's page.
		req, _ := http.NewRequest("POST", b.base+f.path, strings.NewReader(url.Values{"csrf": {b.csrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if res := b.do(req); res.status != http.StatusForbidden || !strings.Contains(res.body, "cross-origin") {
			t.Errorf("cross-site POST %s: %d", f.path, res.status)
		}
	}
	// A form past 64 KiB is not read: 413 naming the limit, whether it is
	// URL-encoded or multipart, with its token or not, and nothing done.
	big := strings.Repeat("x", 70<<10)
	b.post("/ui/tenants/acme/tokens", url.Values{"days": {"90"}, "name": {big}}).want(t, http.StatusRequestEntityTooLarge, "larger than the console takes (64 KiB)", "nothing was done")
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, v := range map[string]string{"csrf": b.csrf, "days": "90", "name": big} {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", b.base+"/ui/tenants/acme/tokens", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	checkHeaders(t, "an oversized multipart form", b.do(req).want(t, http.StatusRequestEntityTooLarge, "64 KiB"))
	newBrowser(t, p).post("/ui/login", url.Values{"token": {adminSecret}, "pad": {big}}).want(t, http.StatusRequestEntityTooLarge, "64 KiB")
	all, _ := p.srv.store.Tokens().List(context.Background(), "acme")
	all = storedOnly(all)
	clients, _ := p.srv.store.Clients().List(context.Background(), "")
	if len(all) != 1 || !all[0].Live(time.Now()) || !all[0].Expires.IsZero() || len(clients) != 0 {
		t.Fatalf("a refused form changed something: tokens %+v, clients %+v", all, clients)
	}
	b.get("/ui/").want(t, http.StatusOK) // still signed in
}

// TestConsoleHeaders: every answer of the console, pages, assets,
// redirects and errors, carries the security headers, and nothing but a
// versioned asset may be cached.
func TestConsoleHeaders(t *testing.T) {
	_, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", "http://127.0.0.1:1/hook", nil) })
	home := b.get("/ui/")
	asset := regexp.MustCompile(`/ui/static/app\.js\?v=[0-9a-f]+`).FindString(home.body)
	if asset == "" {
		t.Fatalf("no versioned script:\n%s", home.body)
	}
	for _, path := range []string{"/ui/", "/ui/login", "/ui/tenants/acme", "/ui/tenants/nope", "/ui/log", "/ui/log?status=teapot", "/ui/log/zz", "/ui/sinks",
		"/ui/sinks/crm", "/ui/sinks/nope", "/ui/jobs/job_nope", "/ui/events", "/ui/keys", "/ui/nothing", "/ui/static/app.css", "/ui/static/nope.js", asset} {
		res := b.get(path)
		checkHeaders(t, "GET "+path, res)
		if strings.Contains(res.body, "style=") || regexp.MustCompile(`<script>|<script [^>]*>[^<]`).MatchString(res.body) {
			t.Errorf("GET %s has inline style or script", path)
		}
	}
	if res := b.get(asset); !strings.Contains(res.header.Get("Cache-Control"), "immutable") || res.header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("versioned asset: %v", res.header)
	}
	// Only the current version is cached: an asset asked for without one,
	// or with another (a page from before an upgrade), is not kept.
	for _, path := range []string{"/ui/static/app.js", "/ui/static/app.js?v=0123456789abcdef"} {
		if cc := b.get(path).header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", path, cc)
		}
	}
	b.get("/ui/log?status=teapot").want(t, http.StatusBadRequest, "status:")
	b.get("/ui/sinks/nope").want(t, http.StatusNotFound, "no such sink")
	b.get("/ui/nothing").want(t, http.StatusNotFound)
}

// TestConsoleLogSinksAndEvents: a SCIM request appears in the log, found
// by user, email, status and operation; its detail has what it changed, its
// event and the event's delivery per sink; a failing sink's dead letter is
// redriven from its page once the receiver is back; the live tail streams
// events and ends when the session does.
func TestConsoleLogSinksAndEvents(t *testing.T) {
	hook := newFlakyHook(t)
	p, b := consoleRelay(t, func(c *config.Config) {
		withSink(c, "crm", hook.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(50 * time.Millisecond)} })
	})
	tail := openTail(t, b, "/ui/events/stream?tenant=acme&type=user.*")
	defer tail.close()

	hook.fail(http.StatusGone)
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann","emails":[{"value":"ann@acme.example","type":"work","primary":true}]}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 409)
	if line := tail.next(t, "cloudevent"); !strings.Contains(line, `"type":"io.scimrelay.user.created"`) || !strings.Contains(line, uid) {
		t.Fatalf("live tail: %s", line)
	}

	var key string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		res := b.get("/ui/log?user=ann%40ACME&operation=create&status=2xx")
		m := regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindAllStringSubmatch(res.body, -1)
		if len(m) != 1 {
			return fmt.Errorf("%d entries found by email", len(m))
		}
		key = m[0][1]
		return nil
	})
	// The log is written in batches: the refused create may be in the next.
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if res := b.get("/ui/log?status=4xx"); res.status != http.StatusOK || !strings.Contains(res.body, "uniqueness") {
			return fmt.Errorf("the 4xx page answers %d without the refused create", res.status)
		}
		return nil
	})
	eventstest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		res := b.get("/ui/log/" + key)
		for _, want := range []string{"user.created", "Users/" + uid, "Sink <a href=\"/ui/sinks/crm\">crm</a>", "dead_lettered", ">410<"} {
			if !strings.Contains(res.body, want) {
				return fmt.Errorf("the detail does not say %q yet", want)
			}
		}
		return nil
	})
	b.get("/ui/").want(t, http.StatusOK, `href="/ui/sinks/crm#dead-letters" class="bad">1<`)
	sink := b.get("/ui/sinks/crm").want(t, http.StatusOK, "Redrive all 1", "410")

	// Redrive the one dead letter once the receiver is back.
	hook.fail(0)
	id := regexp.MustCompile(`name="id" value="([^"]+)"`).FindStringSubmatch(sink.body)
	if id == nil {
		t.Fatalf("no redrive form for the dead letter:\n%s", sink.body)
	}
	job := b.post("/ui/sinks/crm/redrive", url.Values{"id": {id[1]}}).redirect(t, "/ui/jobs/")
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if res := b.get(strings.TrimPrefix(job, p.adminURL)); !strings.Contains(res.body, `data-state="done"`) || !strings.Contains(res.body, "1 delivered") {
			return fmt.Errorf("job page:\n%s", res.body)
		}
		return nil
	})
	if hook.delivered() != 1 {
		t.Fatalf("the receiver got %d deliveries, want the redriven one", hook.delivered())
	}
	b.get("/ui/sinks/crm").want(t, http.StatusOK, "None.")
	// A second redrive of an empty queue, and a replay, are jobs too.
	b.post("/ui/sinks/crm/redrive", url.Values{"all": {"1"}}).redirect(t, "/ui/jobs/")
	replay := b.post("/ui/sinks/crm/replay", url.Values{"since": {"1h"}}).redirect(t, "/ui/jobs/")
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if res := b.get(strings.TrimPrefix(replay, p.adminURL)); !strings.Contains(res.body, `data-state="done"`) || !strings.Contains(res.body, "1 delivered") {
			return fmt.Errorf("replay page:\n%s", res.body)
		}
		return nil
	})
	b.post("/ui/sinks/crm/replay", url.Values{"since": {"yesterday"}}).want(t, http.StatusBadRequest, "since:")
	b.post("/ui/sinks/crm/redrive", url.Values{}).want(t, http.StatusBadRequest, "either an id or all")

	// The tail filters by type, and ends when the session does.
	p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g"}`).want(t, 201)
	p.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`).want(t, 200)
	if line := tail.next(t, "cloudevent"); !strings.Contains(line, "io.scimrelay.user.deactivated") {
		t.Fatalf("the tail let another type through or missed one: %s", line)
	}
	b.post("/ui/logout", nil).redirect(t, "/ui/login")
	tail.next(t, "signed-out")
	b.get("/ui/events/stream").redirect(t, "/ui/login")
}

// TestConsoleTailShowsALargeEvent: an event in the stream up to what NATS
// takes (the embedded server's max_payload is 8 MiB; a PATCH of large
// attributes made such events until resources were bounded, and an event
// an earlier release stored stays for the stream's retention) is shown by
// the live tail, which goes on to the next event. The tail read the admin
// API's lines up to 4 MiB and stopped at a longer one ("token too long"),
// and the page's script does not reconnect after a failure: one large
// PATCH by a tenant's SCIM client ended every operator's tail, and a tail
// started with "the last hour" stopped at it again for that hour (from an
// attack round on the console).
func TestConsoleTailShowsALargeEvent(t *testing.T) {
	p, b := consoleRelay(t, nil)
	tail := openTail(t, b, "/ui/events/stream")
	defer tail.close()
	publishUserEvent(t, p, events.UserUpdated, "big", "", strings.Repeat("a", 2200<<10), strings.Repeat("b", 2200<<10))
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"small"}`).want(t, 201)
	for _, want := range []string{"user.updated", "user.created"} {
		if e := tail.next(t, "cloudevent"); !strings.Contains(e, `"type":"io.scimrelay.`+want+`"`) {
			t.Fatalf("want the %s event, got %.300s", want, e)
		}
	}
}

// sseTail reads a console event stream.
type sseTail struct {
	events chan [2]string // event name, data
	close  func()
}

func openTail(t *testing.T, b *browser, path string) *sseTail {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	client := *b.client
	client.Timeout = 0
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", res.StatusCode, res.Header)
	}
	s := &sseTail{events: make(chan [2]string, 64), close: func() { cancel(); res.Body.Close() }}
	go func() {
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 64<<20) // an event up to NATS's largest message
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				s.events <- [2]string{name, strings.TrimPrefix(line, "data: ")}
			}
		}
		close(s.events)
	}()
	if e := s.next(t, "ready"); e == "" {
		t.Fatal("no ready event")
	}
	return s
}

// next returns the data of the next event, which must be named name.
func (s *sseTail) next(t *testing.T, name string) string {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatalf("the stream ended before a %s event", name)
		}
		if e[0] != name {
			t.Fatalf("event %s (%s), want %s", e[0], e[1], name)
		}
		return e[1]
	case <-time.After(20 * time.Second):
		t.Fatalf("no %s event within 20s", name)
	}
	return ""
}

// flakyHook is a webhook receiver told what to answer.
type flakyHook struct {
	URL    string
	mu     sync.Mutex
	answer int    // 0: take the delivery
	count  int    // deliveries taken
	last   string // the ce-subject of the last delivery taken
}

func newFlakyHook(t *testing.T) *flakyHook {
	h := &flakyHook{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.answer != 0 {
			w.WriteHeader(h.answer)
			return
		}
		h.count++
		h.last = r.Header.Get("ce-subject")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// fail makes the receiver answer status to everything; 0 makes it take them.
func (h *flakyHook) fail(status int) { h.mu.Lock(); h.answer = status; h.mu.Unlock() }

// delivered counts the deliveries taken.
func (h *flakyHook) delivered() int { h.mu.Lock(); defer h.mu.Unlock(); return h.count }

// lastTaken is the ce-subject of the last delivery taken.
func (h *flakyHook) lastTaken() string { h.mu.Lock(); defer h.mu.Unlock(); return h.last }

// TestConsoleRequestOfManyEvents: a request whose events are more than its
// log entry keeps the ids of says how many it made, and shows the first.
func TestConsoleRequestOfManyEvents(t *testing.T) {
	p, b := consoleRelay(t, nil)
	var members []string
	for i := range 40 {
		id := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"m%d"}`, i)).want(t, 201).str("id")
		members = append(members, `{"value":"`+id+`"}`)
	}
	gid := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"many"}`).want(t, 201).str("id")
	p.scim("acme", acmeToken, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[`+strings.Join(members, ",")+`]}]}`).want(t, 204)
	var key []string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		list := b.get("/ui/log?tenant=acme&operation=patch").body
		if key = regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindStringSubmatch(list); key == nil {
			return fmt.Errorf("the PATCH is not in the log")
		}
		if !strings.Contains(list, "<td>40</td>") {
			return fmt.Errorf("the log does not count the PATCH's 40 events:\n%s", list)
		}
		return nil
	})
	var body string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		body = b.get("/ui/log/"+key[1]).want(t, http.StatusOK, "The request produced 40 events; its log entry keeps the ids of the first 32, shown here.").body
		if n := strings.Count(body, `<article class="card event">`); n != 32 {
			return fmt.Errorf("%d events shown, want 32", n)
		}
		return nil
	})
}

// TestConsoleShowsParkedBacklog: while a receiver is down, the events of
// its sink wait parked, neither pending nor in flight; the overview, the
// sinks page and the sink's page say how many resources are parked and
// how old the oldest undelivered event is, not "0 events"; an attempt that
// got no status says why, in a word, where the status would be, and so
// does a dead letter whose last attempt got none.
func TestConsoleShowsParkedBacklog(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	nowhere := httptest.NewServer(http.NotFoundHandler())
	nowhere.Close()
	p, b := consoleRelay(t, func(c *config.Config) {
		withSink(c, "crm", down.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
		withSink(c, "nowhere", nowhere.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Hour)} })
		withSink(c, "unreachable", nowhere.URL, func(s *config.Sink) { s.Retry = []config.Duration{config.Duration(time.Millisecond)} })
	})
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, sink := range []string{"crm", "nowhere"} {
			if res := b.get("/ui/sinks/" + sink); !strings.Contains(res.body, "1 resources parked") {
				return fmt.Errorf("the page of sink %s does not say the resource is parked yet", sink)
			}
		}
		return nil
	})
	// An attempt without a status says why it failed, in a word, where
	// the status would be.
	// The attempts log is written without waiting for NATS: the pages
	// show an attempt a moment after the resource is parked.
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for path, says := range map[string][]string{
			"/ui/sinks":         {`retry</span> 503 `, `retry</span> connection refused `},
			"/ui/":              {`retry</span> 503 `, `retry</span> connection refused `},
			"/ui/sinks/nowhere": {"<td>connection refused</td>"},
		} {
			res := b.get(path)
			for _, s := range says {
				if res.status != http.StatusOK || !strings.Contains(res.body, s) {
					return fmt.Errorf("%s (%d) does not say %q yet:\n%s", path, res.status, s, res.body)
				}
			}
		}
		return nil
	})
	// So does a dead letter, in its queue's table.
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(b.get("/ui/sinks/unreachable").body, "<td>acme</td><td>connection refused</td>") {
			return fmt.Errorf("the dead letter of sink unreachable does not say why it got no answer")
		}
		return nil
	})
	key := regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindStringSubmatch(b.get("/ui/log?tenant=acme&operation=create").body)
	if key == nil {
		t.Fatal("the POST is not in the log")
	}
	b.get("/ui/log/"+key[1]).want(t, http.StatusOK, "<td>503</td>", "<td>connection refused</td>")
	stored := regexp.MustCompile(`stored \d+s ago`)
	for page, want := range map[string]string{
		"/ui/sinks/crm": "0 events waiting in the stream, 0 being delivered; 1 resources parked",
		"/ui/sinks":     "0 events, 1 resources parked, oldest stored",
		"/ui/":          "0 events, 1 resources parked, oldest stored",
	} {
		if res := b.get(page).want(t, http.StatusOK, want); !stored.MatchString(res.body) {
			t.Fatalf("%s does not say how old the oldest undelivered event is", page)
		}
	}
}

// TestConsoleOfAWorkerShowsAnIdleSinksBacklog: a delivery worker (role
// sinks, README's NATS permissions for two sinks) reloaded with a sink
// added before the front end was: its reload gives up waiting for the
// sink's bucket and leaves the sink idle until its next reload (README,
// Who can reach what). The front end's reload then makes the sink's
// consumers, and events wait in them. The worker's console pages and
// sinks list say the sink is not set up there; they said 0 events
// waiting (a review of the console on a worker).
func TestConsoleOfAWorkerShowsAnIdleSinksBacklog(t *testing.T) {
	publish := workerPublish
	for _, s := range workerPublish {
		if strings.Contains(s, "-crm") {
			publish = append(publish, strings.ReplaceAll(s, "-crm", "-erp"))
		}
	}
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "front", Password: "front-secret"},
			{Username: "worker", Password: "worker-secret", Permissions: &natsserver.Permissions{
				Publish:   &natsserver.SubjectPermission{Allow: publish},
				Subscribe: &natsserver.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}
	})
	hook := newHook(t)
	down := newFlakyHook(t) // erp's receiver; it never gets a delivery here anyway
	frontPath, workerPath := filepath.Join(t.TempDir(), "relay.yaml"), filepath.Join(t.TempDir(), "relay.yaml")
	frontData, workerData := t.TempDir(), t.TempDir()
	write := func(path, dataDir, user, sinks string) {
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  url: %s\n  user: %s\n  password: %s-secret\ntenants:\n  - name: acme\n    tokens: [%s]\nsinks:\n%s",
			dataDir, adminSecret, ns.ClientURL(), user, user, acmeToken, sinks)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	crm := sinkYAML("crm", hook.URL)
	both := crm + sinkYAML("erp", down.URL)
	write(frontPath, frontData, "front", crm)
	write(workerPath, workerData, "worker", crm)
	front := startReloadableAs(t, frontPath, roleSCIM, io.Discard)
	worker := startReloadableAs(t, workerPath, roleSinks, io.Discard, withMaxReload(2*time.Second))
	// The worker is reloaded first: it gives up on erp, idle since.
	write(workerPath, workerData, "worker", both)
	if _, err := worker.srv.reload(context.Background()); err == nil {
		t.Fatal("the worker's reload set erp up before the front end made its bucket")
	}
	write(frontPath, frontData, "front", both)
	if _, err := front.srv.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	front.createUser(t, "ann")
	front.createUser(t, "bob")
	waitDelivered(t, hook, 2) // crm delivered both; erp's two wait
	fb := newBrowser(t, front)
	fb.signIn(adminSecret).redirect(t, "/ui/")
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if pg := fb.get("/ui/sinks/erp"); !strings.Contains(pg.body, "2 events waiting in the stream") {
			return fmt.Errorf("the front end's page of sink erp does not say 2 events wait:\n%s", pg.body)
		}
		return nil
	})
	wb := newBrowser(t, worker)
	wb.signIn(adminSecret).redirect(t, "/ui/")
	for _, page := range []string{"/ui/sinks/erp", "/ui/sinks", "/ui/"} {
		res := wb.get(page).want(t, http.StatusOK, "not known here: this relay has not set the sink up")
		if strings.Contains(res.body, "0 events waiting") {
			t.Errorf("%s on the worker says 0 events wait for erp", page)
		}
	}
	code, out, stderr := cli(t, "sinks", "list", "--config", cliConfig(t, worker, adminSecret))
	if code != exitOK || !regexp.MustCompile(`(?m)^erp .* not set up +- +- +- `).MatchString(out) {
		t.Errorf("sinks list on the worker (exit %d) does not say erp is not set up there:\n%s%s", code, out, stderr)
	}
}

// TestConsoleKeys: the keys page shows what scimrelay keys list does, and
// follows rotations: with NATS embedded it says events are not signed and
// shows the access-token key, then, once rotated, the key it replaced and
// when its tokens stop working; on an external NATS the key that signs,
// and after a rotation the new one signing and the old one retired at its
// bound. No secret is on it.
func TestConsoleKeys(t *testing.T) {
	p, b := consoleRelay(t, nil)
	newBrowser(t, p).get("/ui/keys").redirect(t, "/ui/login") // signed out: the sign-in page, no keys
	before := p.srv.store.OAuthKey()
	b.get("/ui/keys").want(t, http.StatusOK, admin.NotSignedNote, "signed with the key <code>"+before.ID+"</code>")
	if code, _, stderr := cli(t, "keys", "rotate", "oauth", "--config", cliConfig(t, p, adminSecret)); code != exitOK {
		t.Fatalf("keys rotate oauth: code %d, %s", code, stderr)
	}
	after := p.srv.store.OAuthKey()
	b.get("/ui/keys").want(t, http.StatusOK, "signed with the key <code>"+after.ID+"</code>",
		"the key it replaced, <code>"+before.ID+"</code>, keep working until "+after.PreviousUntil.UTC().Format("2006-01-02 15:04:05"))

	if testing.Short() {
		return
	}
	ns := natsWithWorkerUser(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", newHook(t)), roleSCIM)
	fb := newBrowser(t, front)
	fb.signIn(adminSecret).redirect(t, "/ui/")
	old := front.srv.signer.PublicKey()
	pg := fb.get("/ui/keys").want(t, http.StatusOK, "signs the events it publishes with <code>"+old+"</code>",
		"<td><code>"+old+`</code></td><td><span class="badge ok">signing</span>`)
	front.createUser(t, "ann")
	if code, _, stderr := cli(t, "keys", "rotate", "events", "--config", cliConfig(t, front, adminSecret)); code != exitOK {
		t.Fatalf("keys rotate events: code %d, %s", code, stderr)
	}
	rotated := front.srv.signer.PublicKey()
	pg = fb.get("/ui/keys").want(t, http.StatusOK, "signs the events it publishes with <code>"+rotated+"</code>",
		"<td><code>"+rotated+`</code></td><td><span class="badge ok">signing</span>`,
		"<td><code>"+old+"</code></td><td>1</td>")
	for _, secret := range []string{string(front.srv.store.EventSigningSeed()), adminSecret} {
		if strings.Contains(pg.body, secret) {
			t.Fatal("the keys page shows a secret")
		}
	}
}

// TestConsoleKeysPageLeakAdviceRefusesTheLeakedKey: the keys page's advice
// after a leak, followed as written, refuses access tokens the leaked
// copy's key signs (README, Keys: "--overlap 0"). It said "scimrelay keys
// rotate oauth [--overlap 1h]", which left the leaked key opening every
// tenant for an hour (found by the console review).
func TestConsoleKeysPageLeakAdviceRefusesTheLeakedKey(t *testing.T) {
	p, b := consoleRelay(t, nil)
	cl := createClient(t, p, "acme")
	// What whoever holds the copy can sign at will.
	leaked := p.tokenRequest("acme", grant(), cl.id+":"+cl.secret).accessToken(t)
	p.scim("acme", leaked, "GET", "/Users", "").want(t, 200)

	page := html.UnescapeString(b.get("/ui/keys").want(t, http.StatusOK, "leaked").body)
	m := regexp.MustCompile(`<code>scimrelay (keys rotate oauth[^<]*)</code>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the keys page gives no access-token key rotation:\n%s", page)
	}
	if code, out, stderr := cli(t, append(strings.Fields(m[1]), "--config", cliConfig(t, p, adminSecret))...); code != exitOK {
		t.Fatalf("scimrelay %s: exit %d %s %s", m[1], code, out, stderr)
	}
	if r := p.scim("acme", leaked, "GET", "/Users", ""); r.status != http.StatusUnauthorized {
		t.Errorf("the keys page says after a leak: scimrelay %s; followed, the leaked key's access token gets %d, want 401", m[1], r.status)
	}
}

// TestReadingALogEntryLeavesNoConsumer: each read of a provisioning-log
// entry (the console's /ui/log/<key>, GET /admin/v1/log/<key>) looks its
// events up through a consumer on the event stream, deleted once read.
// It was left to its five minutes of inactivity: 20 reads of one entry,
// 20 consumers left on the server.
func TestReadingALogEntryLeavesNoConsumer(t *testing.T) {
	p, b := consoleRelay(t, nil)
	uid := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id")
	var key string
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		m := regexp.MustCompile(`href="/ui/log/([0-9a-f]{32})"`).FindAllStringSubmatch(b.get("/ui/log?operation=create").body, -1)
		if len(m) != 1 {
			return fmt.Errorf("%d entries", len(m))
		}
		key = m[0][1]
		return nil
	})
	consumers := func() int {
		st, err := p.srv.js.Stream(context.Background(), events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	base := consumers()
	for range 10 {
		b.get("/ui/log/"+key).want(t, http.StatusOK, "Users/"+uid)
	}
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got := consumers(); got > base {
			return fmt.Errorf("the event stream has %d consumers after 10 reads of a log entry, %d before", got, base)
		}
		return nil
	})
}
