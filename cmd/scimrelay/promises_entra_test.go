// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// Tests for promises of the README's "Connecting Microsoft Entra ID" and
// "Connecting Okta" sections that no other test held, against the running
// relay.

// README, Mappings: custom attributes go under an extension URN ending in
// :User; they are kept as sent and appear in events. Entra sends them
// nested under the URN in a POST (the URN listed in schemas), as a
// URN-qualified PATCH path without aadOptscim062020, and as a URN-qualified
// key of a path-less replace with it.
func TestCustomExtensionAttributesInEvents(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	scim := func(method, path, body string) reply {
		t.Helper()
		return p.scim("acme", acmeToken, method, path, body)
	}
	id := scim("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+custom+`"],`+
		`"userName":"ann@contoso.com","`+custom+`":{"postalCode":"98052","badgeColour":"Green"}}`).want(t, 201).str("id")
	// Without the flag: the attribute as the path.
	scim("PATCH", "/Users/"+id, `{`+patchSchema+`,"Operations":[{"op":"Replace","path":"`+custom+`:postalCode","value":"10115"}]}`).want(t, 200)
	// With the flag: a path-less replace whose key is the qualified name.
	scim("PATCH", "/Users/"+id, `{`+patchSchema+`,"Operations":[{"op":"replace","value":{"`+custom+`:costCenter":"CC-7","displayName":"Ann"}}]}`).want(t, 200)

	want := `{"badgeColour":"Green","costCenter":"CC-7","postalCode":"10115"}`
	if got := scim("GET", "/Users/"+id, "").want(t, 200).str(custom); got != want {
		t.Fatalf("stored %s: %s, want %s", custom, got, want)
	}

	evs := readStream(t, p.srv.js, 3)
	if evs[0].action != events.UserCreated {
		t.Fatalf("first event %s, want user.created", evs[0].action.Type())
	}
	var created map[string]json.RawMessage
	if err := json.Unmarshal(evs[0].data.Resource, &created); err != nil {
		t.Fatal(err)
	}
	if got := string(created[custom]); got != `{"badgeColour":"Green","postalCode":"98052"}` {
		t.Errorf("user.created carries %s: %s, want the attributes as sent", custom, orNone(got))
	}
	if !strings.Contains(string(created["schemas"]), custom) {
		t.Errorf("user.created lists schemas %s, without %s", created["schemas"], custom)
	}
	wantChanges := []string{
		`[{"path":"` + custom + `:postalCode","old":"98052","new":"10115"}]`,
		`[{"path":"displayName","new":"Ann"},{"path":"` + custom + `:costCenter","new":"CC-7"}]`,
	}
	for i, want := range wantChanges {
		e := evs[i+1]
		b, _ := json.Marshal(e.data.Changes)
		if e.action != events.UserUpdated || !sameChanges(t, string(b), want) {
			t.Errorf("event %d: %s with changes %s, want user.updated with %s", i+2, e.action.Type(), b, want)
		}
		var res map[string]json.RawMessage
		if err := json.Unmarshal(e.data.Resource, &res); err != nil {
			t.Fatal(err)
		}
		if res[custom] == nil {
			t.Errorf("event %d: the resource lost %s: %s", i+2, custom, e.data.Resource)
		}
	}
}

// sameChanges compares two JSON lists of changes regardless of their order.
func sameChanges(t *testing.T, got, want string) bool {
	t.Helper()
	norm := func(s string) map[string]bool {
		var list []json.RawMessage
		if err := json.Unmarshal([]byte(s), &list); err != nil {
			t.Fatalf("changes %s: %v", s, err)
		}
		out := map[string]bool{}
		for _, c := range list {
			out[string(c)] = true
		}
		return out
	}
	g, w := norm(got), norm(want)
	if len(g) != len(w) {
		return false
	}
	for k := range w {
		if !g[k] {
			return false
		}
	}
	return true
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// README, Test Connection: Entra queries a user that does not exist, a
// random GUID as the value of whichever matching attribute is configured,
// and expects 200 with an empty ListResponse; it also fetches a group. With
// users and groups in the tenant, each such query answers exactly that,
// and writes nothing.
func TestEntraTestConnectionOnEveryMatchingAttribute(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	scim := func(method, path, body string) reply {
		t.Helper()
		return p.scim("acme", acmeToken, method, path, body)
	}
	uid := scim("POST", "/Users", entraBodies(t)["create-user"]).want(t, 201).str("id")
	scim("POST", "/Groups", strings.ReplaceAll(entraBodies(t)["create-group"], `"displayName": "displayName"`, `"displayName": "Sales", "members": [{"value": "`+uid+`"}]`)).want(t, 201)
	const guid = "3f1c9e2a-6b7d-4c5e-8f90-a1b2c3d4e5f6"
	for _, query := range []string{
		"/Users?" + q(`userName eq "`+guid+`"`),
		"/Users?" + q(`externalId eq "`+guid+`"`),
		"/Users?" + q(`externalId eq `+guid), // unquoted, as the documentation prints it
		"/Users?" + q(`emails[type eq "work"].value eq "`+guid+`"`),
		"/Groups?excludedAttributes=members&" + q(`displayName eq "`+guid+`"`),
		"/Groups?excludedAttributes=members&" + q(`externalId eq "`+guid+`"`),
	} {
		r := scim("GET", query, "").want(t, 200)
		var body struct {
			Schemas      []string
			TotalResults *int
			StartIndex   *int
			ItemsPerPage *int
			Resources    []any
		}
		if err := json.Unmarshal(r.raw, &body); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if len(body.Schemas) != 1 || body.Schemas[0] != "urn:ietf:params:scim:api:messages:2.0:ListResponse" ||
			body.TotalResults == nil || *body.TotalResults != 0 || body.StartIndex == nil || *body.StartIndex != 1 ||
			body.ItemsPerPage == nil || *body.ItemsPerPage != 0 || body.Resources == nil || len(body.Resources) != 0 {
			t.Errorf("%s: %s, want an empty ListResponse", url.PathEscape(query), r.raw)
		}
	}
	// The user, the group and its member: the queries wrote nothing.
	readStream(t, p.srv.js, 3)
}

// README, Admin Credentials: scimrelay client create prints the three
// values Entra asks for, the Token Endpoint under public_url; the secret
// is shown once, and the endpoint it prints is where the client gets an
// access token that provisions.
func TestEntraClientCredentialsAsPrinted(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.PublicURL = "https://relay.example.com"
	p := startRelay(t, cfg, roleAll)
	// The CLI's relay.yaml, with the public_url the printed endpoint uses.
	path := cliConfig(t, p, adminSecret)
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append([]byte("public_url: https://relay.example.com\n"), text...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, "client", "create", "--tenant", "acme", "--name", "entra", "--config", path)
	if code != exitOK {
		t.Fatalf("client create: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "client_id: cli_") || !strings.HasPrefix(lines[1], "client_secret: scimrelay_secret_") ||
		lines[2] != "token_endpoint: https://relay.example.com/oauth2/acme/token" {
		t.Fatalf("client create printed %q, want client_id: cli_…, client_secret: scimrelay_secret_…, token_endpoint: https://relay.example.com/oauth2/acme/token", out)
	}
	if !strings.Contains(stderr, "shown only now") {
		t.Errorf("client create does not say the secret is shown once: %q", stderr)
	}
	id, secret := strings.TrimPrefix(lines[0], "client_id: "), strings.TrimPrefix(lines[1], "client_secret: ")
	// Behind the TLS terminator, public_url's path is the relay's path.
	tok := p.tokenRequest("acme", grant(), id+":"+secret).accessToken(t)
	p.scim("acme", tok, "GET", "/Users?"+q(`userName eq "x"`), "").want(t, 200)
	if code, out, _ := cli(t, "client", "list", "--tenant", "acme", "--config", path); code != exitOK || strings.Contains(out, secret) {
		t.Fatalf("client list shows the secret: %d %s", code, out)
	}
}

// README, Connecting Okta: Okta's OAuth 2 mode is not supported, since it
// uses the authorization code grant; the relay offers the client
// credentials grant only. An authorization code is refused, and there is
// no authorization endpoint to send a user to.
func TestOktaAuthorizationCodeRefused(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	c := createClient(t, p, "acme", "--name", "okta")
	p.tokenRequest("acme", url.Values{"grant_type": {"authorization_code"}, "code": {"abc"}, "redirect_uri": {"https://okta.example.com/cb"}}, c.id+":"+c.secret).
		wantError(t, 400, "unsupported_grant_type", "client_credentials")
	p.tokenRequest("acme", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"abc"}}, c.id+":"+c.secret).
		wantError(t, 400, "unsupported_grant_type", "client_credentials")
	for _, path := range []string{"/oauth2/acme/authorize", "/oauth2/acme/authorize?response_type=code&client_id=" + c.id} {
		req, err := http.NewRequest("GET", p.scimURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res := do(t, req); res.status != 404 {
			t.Errorf("GET %s: %d %s, want 404: the relay has no authorization endpoint", path, res.status, res.raw)
		}
	}
}

// README, Entra section: the figures it quotes are the defaults a relay
// runs with: sortBy sorts up to 50,000 matches (limits.max_sort_matches),
// /Bulk takes 1,000 operations and 1 MiB (limits.bulk_max_operations,
// limits.bulk_max_payload), advertised as such in ServiceProviderConfig,
// and an access token is valid an hour (oauth.token_lifetime).
func TestEntraSectionDefaults(t *testing.T) {
	d := config.Default()
	if d.Limits.MaxSortMatches != 50_000 || scim.DefaultMaxSortMatches != 50_000 {
		t.Errorf("max_sort_matches defaults to %d (scim: %d); the README says 50,000", d.Limits.MaxSortMatches, scim.DefaultMaxSortMatches)
	}
	if d.Limits.BulkMaxOperations != 1000 || scim.DefaultBulkMaxOperations != 1000 {
		t.Errorf("bulk_max_operations defaults to %d (scim: %d); the README says 1,000", d.Limits.BulkMaxOperations, scim.DefaultBulkMaxOperations)
	}
	if d.Limits.BulkMaxPayload != 1<<20 || scim.DefaultBulkMaxPayload != 1<<20 {
		t.Errorf("bulk_max_payload defaults to %d (scim: %d); the README says 1 MiB", d.Limits.BulkMaxPayload, scim.DefaultBulkMaxPayload)
	}
	if time.Duration(d.OAuth.TokenLifetime) != time.Hour || relay.DefaultAccessTokenLifetime != time.Hour {
		t.Errorf("oauth.token_lifetime defaults to %s (relay: %s); the README says an hour", time.Duration(d.OAuth.TokenLifetime), relay.DefaultAccessTokenLifetime)
	}
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	sp := p.scim("acme", acmeToken, "GET", "/ServiceProviderConfig", "").want(t, 200)
	bulk, _ := sp.body["bulk"].(map[string]any)
	if bulk["maxOperations"] != float64(1000) || bulk["maxPayloadSize"] != float64(1<<20) {
		t.Errorf("ServiceProviderConfig advertises bulk %v, want maxOperations 1000 and maxPayloadSize 1048576", bulk)
	}
	c := createClient(t, p, "acme", "--name", "entra")
	p.tokenRequest("acme", grant(), c.id+":"+c.secret).accessToken(t) // expires_in 3600
}

// TestEntraDeactivatesUsersStoredBeforeATenantRequiredMore: `required` and
// `unique` change on a reload or restart. A user stored before, without
// what the tenant now asks, must still be deactivated when Entra sends
// its PATCH of active (a leaver, an unassignment): refusing it leaves the
// person active downstream, with no user.deactivated, on every cycle.
func TestEntraDeactivatesUsersStoredBeforeATenantRequiredMore(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*config.Tenant)
	}{
		{"required emails", func(tn *config.Tenant) { tn.Required = []string{"emails"} }},
		{"unique email", func(tn *config.Tenant) { tn.Unique = "email" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startRelay(t, testConfig(t, dir), roleAll)
			a := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a@x.com"}`).want(t, 201).str("id")
			p.stop()
			cfg := testConfig(t, dir)
			c.edit(&cfg.Tenants[0])
			p = startRelay(t, cfg, roleAll)
			ps := func(ops string) string { return `{` + patchSchema + `,"Operations":[` + ops + `]}` }
			if r := p.scim("acme", acmeToken, "PATCH", "/Users/"+a, ps(`{"op":"Replace","path":"active","value":"False"}`)); r.status != 200 {
				t.Fatalf("Entra's deactivation: %d %s, want 200", r.status, r.raw)
			}
			evs := readStream(t, p.srv.js, 2)
			if evs[1].action != events.UserDeactivated {
				t.Errorf("second event %s, want user.deactivated", evs[1].action.Type())
			}
			// What the tenant requires still cannot be removed from a user that has it.
			b := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"b@x.com","emails":[{"type":"work","value":"b@x.com"}]}`).want(t, 201).str("id")
			p.scim("acme", acmeToken, "PATCH", "/Users/"+b, ps(`{"op":"Remove","path":"emails"}`)).want(t, 400)
			// Nor may a new user lack it.
			p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"c@x.com"}`).want(t, 400)
		})
	}
}
