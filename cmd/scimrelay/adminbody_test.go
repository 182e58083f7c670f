// SPDX-License-Identifier: Apache-2.0

package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestActionsThatTakeNoBodyRefuseOne: README (Operating): "Any other body
// the endpoint cannot take is 400 … A body whose Content-Type is not
// application/json is 415". The purge of a removed tenant, the forgetting
// of a removed sink, the revocation of a token or client and the removal
// of a subscriber take none; each acted on any body, {"dry_run":true} or
// text saying not to, and audited what it did (an admin API review). Now
// each is refused and nothing is done, then done without a body. So is
// a query (?dry_run=true was ignored, and the action done, until
// 2026-12-07).
func TestActionsThatTakeNoBodyRefuseOne(t *testing.T) {
	crm, _ := goneHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write("log:\n  level: info\n  format: json\n" + twoTenants + "sinks:\n" + sinkYAML("crm", crm.URL))
	var logs eventstest.Log
	p := startReloadable(t, f.path, &logs)
	admin := func(method, path, contentType, body string) reply {
		t.Helper()
		req, err := http.NewRequest(method, p.adminURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminSecret)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return do(t, req)
	}
	tok := admin("POST", "/admin/v1/tokens", "application/json", `{"tenant":"acme","name":"t1"}`).want(t, 201)
	tokID := tok.body["token"].(map[string]any)["id"].(string)
	cl := admin("POST", "/admin/v1/clients", "application/json", `{"tenant":"acme","name":"c1"}`).want(t, 201)
	clID := cl.body["token"].(map[string]any)["id"].(string)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	admin("POST", "/admin/v1/subscribers", "application/json", `{"name":"sub1","public_key":"`+pub+`"}`).want(t, 201)
	// globex and crm removed: what purge and forget act on.
	f.write("log:\n  level: info\n  format: json\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	admin("POST", "/admin/v1/reload", "", "").want(t, 200)

	actions := []struct{ method, path string }{
		{"POST", "/admin/v1/tenants/globex/purge"},
		{"POST", "/admin/v1/sinks/crm/forget"},
		{"DELETE", "/admin/v1/tokens/" + tokID},
		{"DELETE", "/admin/v1/clients/" + clID},
		{"DELETE", "/admin/v1/subscribers/sub1"},
	}
	before := len(logs.String())
	for _, a := range actions {
		for _, body := range []struct {
			contentType, text string
			status            int
		}{
			{"application/json", `{"dry_run":true}`, 400},
			{"application/json", `[1,2`, 400},
			{"text/plain", "please do not", 415},
		} {
			if r := admin(a.method, a.path, body.contentType, body.text); r.status != body.status {
				t.Errorf("%s %s (%s) %q: %d %s, want %d and nothing done", a.method, a.path, body.contentType, body.text, r.status, r.raw, body.status)
			}
		}
		// Nor a query: ?dry_run=true was ignored and the action done.
		if r := admin(a.method, a.path+"?dry_run=true", "", ""); r.status != http.StatusBadRequest || !strings.Contains(string(r.raw), "dry_run") {
			t.Errorf("%s %s?dry_run=true: %d %s, want 400 naming dry_run and nothing done", a.method, a.path, r.status, r.raw)
		}
	}
	if after := logs.String()[before:]; strings.Contains(after, `"admin action"`) {
		t.Fatalf("refused requests were acted on:\n%s", after)
	}
	for _, a := range actions {
		if r := admin(a.method, a.path, "", ""); r.status/100 != 2 {
			t.Errorf("%s %s without a body: %d %s", a.method, a.path, r.status, r.raw)
		}
	}
}
