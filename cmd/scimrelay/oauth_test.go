// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// testClock is a settable clock for a relay under test.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now()} }

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// oauthClient is a client as scimrelay client create prints it.
type oauthClient struct{ id, secret, endpoint string }

// createClient runs scimrelay client create and reads its three lines.
func createClient(t *testing.T, p *relayProc, tenant string, extra ...string) oauthClient {
	t.Helper()
	code, out, stderr := cli(t, append([]string{"client", "create", "--tenant", tenant, "--config", cliConfig(t, p, adminSecret)}, extra...)...)
	if code != exitOK {
		t.Fatalf("client create: %d %s", code, stderr)
	}
	var c oauthClient
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "client_id":
			c.id = v
		case "client_secret":
			c.secret = v
		case "token_endpoint":
			c.endpoint = v
		}
	}
	if !strings.HasPrefix(c.id, "cli_") || !strings.HasPrefix(c.secret, relay.ClientSecretPrefix) || !strings.HasSuffix(c.endpoint, "/oauth2/"+tenant+"/token") {
		t.Fatalf("client create printed %q", out)
	}
	return c
}

// tokenReply is a token endpoint answer.
type tokenReply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// tokenRequest posts a form to a tenant's token endpoint; basic, when not
// empty, is "id:secret" for client_secret_basic.
func (p *relayProc) tokenRequest(tenant string, form url.Values, basic string) tokenReply {
	p.t.Helper()
	req, err := http.NewRequest("POST", p.scimURL+"/oauth2/"+tenant+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(basic)))
	}
	return doToken(p.t, req)
}

func doToken(t testing.TB, req *http.Request) tokenReply {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := tokenReply{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("token endpoint answered %d with non-JSON %q", res.StatusCode, raw)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("token endpoint Content-Type %q", ct)
	}
	// RFC 6749 §5.1: never cached, success or not.
	if res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("Pragma") != "no-cache" {
		t.Errorf("token endpoint answer without Cache-Control: no-store and Pragma: no-cache: %v", res.Header)
	}
	return r
}

// wantError checks an RFC 6749 §5.2 error answer.
func (r tokenReply) wantError(t *testing.T, status int, code, detail string) {
	t.Helper()
	if r.status != status || r.body["error"] != code || !strings.Contains(fmt.Sprint(r.body["error_description"]), detail) {
		t.Fatalf("got %d %s, want %d %s with a description containing %q", r.status, r.raw, status, code, detail)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("401 without a Basic challenge: %v", r.header)
	}
}

func (r tokenReply) accessToken(t *testing.T) string {
	t.Helper()
	if r.status != 200 || r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(3600) {
		t.Fatalf("token answer %d %s", r.status, r.raw)
	}
	tok, _ := r.body["access_token"].(string)
	if !strings.HasPrefix(tok, relay.AccessTokenPrefix) {
		t.Fatalf("access token %q", tok)
	}
	return tok
}

func grant(extra ...string) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// TestOAuthClientCredentials runs RFC 6749 §4.4 against the running relay:
// a client from the CLI gets access tokens by both client authentication
// methods and provisions with them; a wrong secret, a revoked client, an
// expired access token (by an injected clock) and cross-tenant use are
// refused; the failures are in the provisioning log without secrets.
func TestOAuthClientCredentials(t *testing.T) {
	clock := newTestClock()
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll, withClock(clock.now))
	acme := createClient(t, p, "acme", "--name", "entra")
	globex := createClient(t, p, "globex")

	// client_secret_basic and client_secret_post both work.
	tok := p.tokenRequest("acme", grant(), acme.id+":"+acme.secret).accessToken(t)
	postTok := p.tokenRequest("acme", grant("client_id", acme.id, "client_secret", acme.secret, "scope", "scim"), "").accessToken(t)
	uid := p.scim("acme", tok, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"oauth@x.com"}`).want(t, 201).str("id")
	p.scim("acme", postTok, "GET", "/Users/"+uid, "").want(t, 200)

	// Refusals of RFC 6749 §5.2.
	p.tokenRequest("acme", grant("client_secret", acme.secret), acme.id+":"+acme.secret).wantError(t, 400, "invalid_request", "use one method")
	p.tokenRequest("acme", grant(), acme.id+":"+acme.secret+"x").wantError(t, 401, "invalid_client", "invalid client credentials")
	p.tokenRequest("acme", grant("client_id", acme.id, "client_secret", "nope"), "").wantError(t, 401, "invalid_client", "invalid client credentials")
	p.tokenRequest("acme", grant(), "").wantError(t, 401, "invalid_client", "no client authentication")
	p.tokenRequest("acme", grant("grant_type", "password"), acme.id+":"+acme.secret).wantError(t, 400, "unsupported_grant_type", "client_credentials")
	p.tokenRequest("acme", url.Values{}, acme.id+":"+acme.secret).wantError(t, 400, "invalid_request", "grant_type is missing")
	// A client of another tenant: authenticated, but not for this endpoint;
	// the same answer at a name that is no tenant, so that a client's holder
	// cannot tell tenants from other names.
	p.tokenRequest("globex", grant(), acme.id+":"+acme.secret).wantError(t, 400, "unauthorized_client", "not a client of this tenant")
	p.tokenRequest("initech", grant(), acme.id+":"+acme.secret).wantError(t, 400, "unauthorized_client", "not a client of this tenant")
	// A SCIM bearer token is no client secret.
	p.tokenRequest("acme", grant("client_id", "tok_x", "client_secret", acmeToken), "").wantError(t, 401, "invalid_client", "invalid client credentials")
	bad := func(method, ctype, query, body string) tokenReply {
		req, _ := http.NewRequest(method, p.scimURL+"/oauth2/acme/token"+query, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return doToken(t, req)
	}
	bad("POST", "application/json", "", `{"grant_type":"client_credentials"}`).wantError(t, 400, "invalid_request", "x-www-form-urlencoded")
	bad("POST", "application/x-www-form-urlencoded", "?client_secret="+acme.secret, "grant_type=client_credentials&client_id="+acme.id).wantError(t, 400, "invalid_request", "not in the URL")
	bad("POST", "application/x-www-form-urlencoded", "", "grant_type=client_credentials&grant_type=client_credentials").wantError(t, 400, "invalid_request", "given 2 times")
	bad("GET", "", "", "").wantError(t, 405, "invalid_request", "POST")
	bad("POST", "application/x-www-form-urlencoded", "", strings.Repeat("a=b&", 5000)).wantError(t, 400, "invalid_request", "larger than")

	// Access tokens are bound to their tenant.
	p.scim("globex", tok, "GET", "/Users", "").want(t, 401)
	globexTok := p.tokenRequest("globex", grant(), globex.id+":"+globex.secret).accessToken(t)
	p.scim("acme", globexTok, "GET", "/Users/"+uid, "").want(t, 401)
	p.scim("globex", globexTok, "GET", "/Users/"+uid, "").want(t, 404)
	// A client secret is no bearer token.
	p.scim("acme", acme.secret, "GET", "/Users", "").want(t, 401)

	// Expiry: an hour later the access token is refused, saying why, and a
	// new one works. A restart keeps tokens valid.
	clock.add(59 * time.Minute)
	p.scim("acme", tok, "GET", "/Users", "").want(t, 200)
	clock.add(time.Minute)
	if r := p.scim("acme", tok, "GET", "/Users", "").want(t, 401); !strings.Contains(r.str("detail"), "access token expired") {
		t.Fatalf("expired access token: %s", r.raw)
	}
	fresh := p.tokenRequest("acme", grant(), acme.id+":"+acme.secret).accessToken(t)
	p.stop()
	p = startRelay(t, cfg, roleAll, withClock(clock.now))
	p.scim("acme", fresh, "GET", "/Users", "").want(t, 200)

	// Revoking the client ends its tokens and its Basic credentials.
	p.scim("acme", "", "GET", "/Users", "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(acme.id+":"+acme.secret))).want(t, 200)
	if code, out, stderr := cli(t, "client", "revoke", acme.id, "--config", cliConfig(t, p, adminSecret)); code != exitOK || !strings.Contains(out, "revoked client "+acme.id) {
		t.Fatalf("client revoke: %d %s %s", code, out, stderr)
	}
	if r := p.scim("acme", fresh, "GET", "/Users", "").want(t, 401); !strings.Contains(r.str("detail"), "was revoked") {
		t.Fatalf("token of a revoked client: %s", r.raw)
	}
	p.tokenRequest("acme", grant(), acme.id+":"+acme.secret).wantError(t, 401, "invalid_client", "was revoked")
	p.scim("acme", "", "GET", "/Users", "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(acme.id+":"+acme.secret))).want(t, 401)

	// The provisioning log has the failures, with the client id and the
	// reason, and no secret anywhere.
	var entries []relay.LogEntry
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		entries, err = p.srv.reqLog.Query(context.Background(), relay.LogQuery{})
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Operation == "token" && e.Status == 401 && strings.Contains(e.Detail, "was revoked") {
				return nil
			}
		}
		return fmt.Errorf("the revoked client's token request is not in the log yet")
	})
	all, _ := json.Marshal(entries)
	for _, secret := range []string{acme.secret, globex.secret, tok, fresh, globexTok, acmeToken} {
		if strings.Contains(string(all), secret) {
			t.Fatalf("the provisioning log holds a secret")
		}
	}
	var refused []string
	for _, e := range entries {
		if e.Operation == "token" && e.Status >= 400 {
			refused = append(refused, e.Detail)
			if e.Tenant == "initech" {
				t.Errorf("an unknown tenant labels a log entry: %+v", e)
			}
		}
	}
	if len(refused) < 10 || !strings.HasPrefix(refused[0], "invalid_request") {
		t.Fatalf("token failures in the log: %q", refused)
	}
}

// TestOAuthRateLimit: the token endpoint charges a token issued to its
// client's bucket and every other outcome to the caller's address's;
// requests beyond a bucket get 429 with Retry-After. Failures never keep a
// client from its token, are limited the same at any tenant name, and
// affect neither another client nor SCIM.
func TestOAuthRateLimit(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.OAuth.Rate, cfg.OAuth.Burst = 1, 3
	p := startRelay(t, cfg, roleAll)
	acme := createClient(t, p, "acme")
	globex := createClient(t, p, "globex")
	counts := map[int]int{}
	var limited tokenReply
	for i := 0; i < 8; i++ {
		r := p.tokenRequest("acme", grant(), acme.id+":wrong-secret")
		counts[r.status]++
		if r.status == 429 {
			limited = r
		}
	}
	if counts[401] < 3 || counts[429] < 4 || counts[401]+counts[429] != 8 {
		t.Fatalf("statuses %v: want the burst of 3 (plus what refilled) checked, the rest refused", counts)
	}
	if limited.header.Get("Retry-After") != "1" || limited.body["error"] != "invalid_request" {
		t.Fatalf("429 answer: %v %s", limited.header, limited.raw)
	}
	// Failures from an address spend that address's bucket, not the
	// tenant's: the client with its right secret still gets its token,
	// so that whoever knows a tenant's name cannot keep its Entra from
	// getting tokens.
	p.tokenRequest("acme", grant(), acme.id+":"+acme.secret).accessToken(t)
	p.tokenRequest("globex", grant(), globex.id+":"+globex.secret).accessToken(t)
	p.scim("acme", acmeToken, "GET", "/Users", "").want(t, 200)
	// Failures are limited the same whatever name they give, a tenant's or
	// not, so that the limit cannot tell tenants from other names.
	for _, name := range []string{"nosuch", "globex"} {
		if r := p.tokenRequest(name, grant(), acme.id+":wrong-secret"); r.status != 429 {
			t.Errorf("a wrong secret at %s from the address that spent its bucket: %d, want 429", name, r.status)
		}
	}
	// A client's own requests have a bucket of their own: past its burst
	// it is refused, and another client is not.
	counts = map[int]int{}
	for range 8 {
		counts[p.tokenRequest("globex", grant(), globex.id+":"+globex.secret).status]++
	}
	if counts[200] < 2 || counts[429] < 4 || counts[200]+counts[429] != 8 {
		t.Fatalf("one client's statuses %v: want the rest of its burst of 3 (plus what refilled) issued, the rest refused", counts)
	}
	p.tokenRequest("acme", grant(), acme.id+":"+acme.secret).accessToken(t)
}

// TestTokenEndpointAdvertised: ServiceProviderConfig lists the oauth2
// scheme with the tenant's token endpoint, and that endpoint works.
func TestTokenEndpointAdvertised(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll)
	c := createClient(t, p, "globex")
	sp := p.scim("globex", globexToken, "GET", "/ServiceProviderConfig", "").want(t, 200)
	var endpoint string
	for _, s := range sp.body["authenticationSchemes"].([]any) {
		m := s.(map[string]any)
		if m["type"] == "oauth2" {
			desc := m["description"].(string)
			i := strings.Index(desc, "http://")
			endpoint = strings.Fields(desc[i:])[0]
		}
	}
	if endpoint != p.scimURL+"/oauth2/globex/token" {
		t.Fatalf("advertised token endpoint %q in %s", endpoint, sp.raw)
	}
	req, _ := http.NewRequest("POST", endpoint, strings.NewReader(grant().Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.id, c.secret)
	doToken(t, req).accessToken(t)
}

// TestCLIClients: the client commands have the lifecycle of the token
// commands: list (never a secret), rotate with an overlap in which both
// clients work, revoke, clear errors; the expiry metric shows clients.
func TestCLIClients(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	old := createClient(t, p, "acme", "--name", "entra", "--expires", "30d")

	code, out, _ := cli(t, "client", "list", "--tenant", "acme", "--config", cfg)
	if code != exitOK || !strings.Contains(out, old.id) || !strings.Contains(out, "entra") || strings.Contains(out, old.secret) {
		t.Fatalf("client list: %d\n%s", code, out)
	}
	code, out, _ = cli(t, "client", "list", "--json", "--config", cfg)
	var list []relay.Token
	if code != exitOK || jsonLines(out, &list) != nil || len(list) != 1 || list[0].Kind != relay.KindClient {
		t.Fatalf("client list --json: %d\n%s", code, out)
	}
	if code, out, _ := cli(t, "token", "list", "--json", "--config", cfg); code != exitOK || strings.Contains(out, old.id) {
		t.Fatalf("a client among the tokens: %s", out)
	}

	code, out, stderr := cli(t, "client", "rotate", "--tenant", "acme", "--overlap", "1h", "--config", cfg)
	if code != exitOK || !strings.Contains(stderr, "client "+old.id) || !strings.Contains(out, "client_secret: "+relay.ClientSecretPrefix) {
		t.Fatalf("client rotate: %d %s %s", code, out, stderr)
	}
	fresh := strings.TrimPrefix(strings.Split(out, "\n")[0], "client_id: ")
	secret := strings.TrimPrefix(strings.Split(out, "\n")[1], "client_secret: ")
	// Inside the overlap the old client still gets tokens, which end with it.
	if r := p.tokenRequest("acme", grant(), old.id+":"+old.secret); r.status != 200 || r.body["expires_in"].(float64) > 3600 || r.body["expires_in"].(float64) < 3590 {
		t.Fatalf("old client inside the overlap: %d %s", r.status, r.raw)
	}
	// The expiry metric carries clients, by kind (the old one while it is
	// the one used last: the identity provider still holds it).
	res, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), `scimrelay_token_expiry_timestamp_seconds{kind="client",name="entra",tenant="acme",token="`+old.id+`"}`) {
		t.Fatalf("no expiry series for the client:\n%s", metrics)
	}
	p.tokenRequest("acme", grant(), fresh+":"+secret).accessToken(t)

	if code, out, _ := cli(t, "client", "revoke", old.id, "--config", cfg); code != exitOK || !strings.Contains(out, "revoked client "+old.id) {
		t.Fatalf("client revoke: %d %s", code, out)
	}
	if code, _, stderr := cli(t, "client", "revoke", "cli_nope", "--config", cfg); code != exitError || !strings.Contains(stderr, "no such client") {
		t.Errorf("unknown client: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "token", "revoke", fresh, "--config", cfg); code != exitError || !strings.Contains(stderr, "no such token") {
		t.Errorf("a client revoked as a token: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "client", "create", "--tenant", "initech", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "--tenant initech: no such tenant") {
		t.Errorf("unknown tenant: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, "client", "create", "--config", cfg); code != exitUsage || !strings.Contains(stderr, "tenant") {
		t.Errorf("missing --tenant: %d %s", code, stderr)
	}
}

// TestExpiredClientRefusalsAreLogged: requests refused with an expired
// OAuth client are logged once a client an hour, naming the tenant and
// the command that issues a new one, as an expired SCIM token's are
// (README: clients have "the same warnings"). Entra's token requests and
// Okta's Basic were refused with nothing in the log (a review of the
// token endpoint).
func TestExpiredClientRefusalsAreLogged(t *testing.T) {
	clock := newTestClock()
	log := &eventstest.Log{}
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll,
		slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard, withClock(clock.now))
	c := createClient(t, p, "acme", "--name", "entra", "--expires", "10d")
	clock.add(10*24*time.Hour + time.Minute)
	for range 4 {
		p.tokenRequest("acme", grant(), c.id+":"+c.secret).wantError(t, 401, "invalid_client", "expired")
	}
	p.scim("acme", "", "GET", "/Users", "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.id+":"+c.secret))).want(t, 401)
	var refused []string
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, "expired OAuth client") {
			refused = append(refused, l)
		}
	}
	if len(refused) != 1 || !strings.Contains(refused[0], "token="+c.id) || !strings.Contains(refused[0], "tenant=acme") ||
		!strings.Contains(refused[0], "scimrelay client rotate --tenant acme") {
		t.Fatalf("want one Warn line for the five requests refused with the expired client %s, naming it, the tenant and the command; log:\n%s", c.id, log)
	}
	clock.add(time.Hour)
	p.tokenRequest("acme", grant(), c.id+":"+c.secret).wantError(t, 401, "invalid_client", "expired")
	if n := strings.Count(log.String(), "expired OAuth client"); n != 2 || !strings.Contains(log.String(), "refused=5\n") {
		t.Errorf("an hour on, want a second line counting the four held back and this one:\n%s", log)
	}
}
