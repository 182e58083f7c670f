// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestConformanceOverHTTP runs the conformance cases public SCIM suites
// check against the running relay (bbolt, JetStream, HTTP), each citing the
// RFC section it rests on; docs/decisions.md (SCIM) has the choices.
func TestConformanceOverHTTP(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	scim := func(method, path, body string, header ...string) reply {
		t.Helper()
		return p.scim("acme", acmeToken, method, path, body, header...)
	}
	wantError := func(r reply, status int, scimType, detail string) {
		t.Helper()
		if r.status != status || r.str("status") != fmt.Sprint(status) || r.str("scimType") != scimType && scimType != "" || !strings.Contains(r.str("detail"), detail) {
			t.Fatalf("got %d %s, want %d %s containing %q", r.status, r.raw, status, scimType, detail)
		}
	}

	// RFC 7643 §2.4: primary "MUST appear no more than once": refused on
	// POST and PUT; a PATCH making another value primary clears the old
	// one (RFC 7644 §3.5.2).
	two := `"emails":[{"value":"a@x.com","type":"work","primary":true},{"value":"b@x.com","type":"home","primary":true}]`
	wantError(scim("POST", "/Users", `{`+userSchema+`,"userName":"prim@x.com",`+two+`}`), 400, "invalidValue", "2 values marked primary")
	uid := scim("POST", "/Users", `{`+userSchema+`,"userName":"prim@x.com","emails":[{"value":"a@x.com","type":"work","primary":true}]}`).want(t, 201).str("id")
	wantError(scim("PUT", "/Users/"+uid, `{`+userSchema+`,"userName":"prim@x.com","phoneNumbers":[{"value":"1","primary":true},{"value":"2","primary":true}]}`), 400, "invalidValue", "phoneNumbers has 2 values marked primary")
	r := scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"add","path":"emails","value":[{"value":"b@x.com","type":"home","primary":true}]}]}`).want(t, 200)
	if r.str("emails") != `[{"primary":false,"type":"work","value":"a@x.com"},{"primary":true,"type":"home","value":"b@x.com"}]` {
		t.Fatalf("PATCH of a new primary: %s", r.str("emails"))
	}

	// RFC 7643 §2.4 with RFC 7644 §3.5.2.1: repeated {value, type} pairs
	// are one value, on POST and PUT as on PATCH.
	r = scim("PUT", "/Users/"+uid, `{`+userSchema+`,"userName":"prim@x.com","emails":[{"value":"a@x.com","type":"work"},{"value":"A@X.COM","type":"Work","primary":true}]}`).want(t, 200)
	if r.str("emails") != `[{"primary":true,"type":"Work","value":"A@X.COM"}]` {
		t.Fatalf("PUT with a repeated email: %s", r.str("emails"))
	}

	// RFC 7644 §3.5.2: members of an operation besides op, path and value
	// are ignored.
	scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"title","value":"Eng","name":"setTitle"}]}`).want(t, 200)

	// RFC 7643 §4.2: members have value, $ref, type and display; other
	// sub-attributes are ignored.
	gid := scim("POST", "/Groups", `{`+groupSchema+`,"displayName":"conf","members":[{"value":"`+uid+`","displayName":"P"}]}`).want(t, 201).str("id")
	scim("PATCH", "/Groups/"+gid, `{`+patchSchema+`,"Operations":[{"op":"remove","path":"members","value":[{"value":"`+uid+`","displayName":"P"}]}]}`).want(t, 204)

	// RFC 7644 §3.3/§3.5.1: an attribute a known schema does not define is
	// dropped and noted in the provisioning log; an unknown extension is
	// kept as sent.
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	r = scim("POST", "/Users", `{`+userSchema+`,"userName":"extra@x.com","favouriteColour":"red","`+custom+`":{"badge":"42"}}`, "X-Request-Id", "conf-unknown").want(t, 201)
	if strings.Contains(string(r.raw), "favouriteColour") || !strings.Contains(string(r.raw), `"badge":"42"`) {
		t.Fatalf("unknown attribute handling: %s", r.raw)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		entries, err := p.srv.reqLog.Query(context.Background(), relay.LogQuery{Tenant: "acme"})
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.ClientRequestID == "conf-unknown" {
				if e.Status != 201 || e.Detail != "ignored unknown attributes: favouriteColour" {
					t.Fatalf("log entry %+v", e)
				}
				return nil
			}
		}
		return fmt.Errorf("no log entry yet")
	})

	// RFC 7644 §3.2: endpoints in any case; an encoded slash stays in the
	// id's segment and never reaches the collection.
	scim("GET", "/users/"+uid, "").want(t, 200)
	scim("GET", "/GROUPS", "").want(t, 200)
	for _, path := range []string{"/Users/%2F", "/users/%2F", "/USERS/%2f"} {
		req, _ := http.NewRequest("GET", p.scimURL+"/scim/v2/acme"+path, nil)
		req.URL.Opaque = "/scim/v2/acme" + path
		req.Header.Set("Authorization", "Bearer "+acmeToken)
		if r := do(t, req); r.status != 404 {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
	}

	// Kept on purpose: 200 with the user for user PATCH (Entra's guide),
	// 400 for a member that references nothing (RFC 7644 §3.5.2.1 leaves
	// it to the service provider), and the work email created by a replace
	// that matches nothing (Entra relies on it; RFC 7644 §3.5.2.3 would
	// say noTarget).
	r = scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"emails[type eq \"other\"].value","value":"o@x.com"}]}`).want(t, 200)
	if !strings.Contains(r.str("emails"), `{"type":"other","value":"o@x.com"}`) {
		t.Fatalf("filtered replace matching nothing: %s", r.str("emails"))
	}
	wantError(scim("PATCH", "/Groups/"+gid, `{`+patchSchema+`,"Operations":[{"op":"add","path":"members","value":[{"value":"00000000-0000-7000-8000-000000000000"}]}]}`), 400, "invalidValue", "00000000-0000-7000-8000-000000000000")
}

// TestServiceProviderConfigIsTruthful reads ServiceProviderConfig, then
// checks that every feature it advertises works, as advertised, and that
// what it does not advertise is refused (RFC 7643 §5, RFC 7644 §4).
func TestServiceProviderConfigIsTruthful(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.BulkMaxOperations, cfg.Limits.BulkMaxPayload = 3, 8<<10
	p := startRelay(t, cfg, roleAll)
	scim := func(method, path, body string, header ...string) reply {
		t.Helper()
		return p.scim("acme", acmeToken, method, path, body, header...)
	}
	sp := scim("GET", "/ServiceProviderConfig", "").want(t, 200).body
	feature := func(name string) map[string]any { return sp[name].(map[string]any) }
	for _, f := range []string{"patch", "bulk", "filter", "changePassword", "sort", "etag"} {
		if _, ok := feature(f)["supported"].(bool); !ok {
			t.Fatalf("%s.supported missing: %v", f, sp)
		}
	}
	for _, f := range []string{"patch", "bulk", "filter", "sort", "etag"} {
		if feature(f)["supported"] != true {
			t.Fatalf("%s is not advertised; this test expects it to be", f)
		}
	}
	uid := scim("POST", "/Users", `{`+userSchema+`,"userName":"b@x.com"}`).want(t, 201).str("id")
	scim("POST", "/Users", `{`+userSchema+`,"userName":"a@x.com"}`).want(t, 201)

	// patch
	scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"title","value":"x"}]}`).want(t, 200)
	// bulk: maxOperations and maxPayloadSize, as advertised.
	maxOps, maxPayload := int(feature("bulk")["maxOperations"].(float64)), int(feature("bulk")["maxPayloadSize"].(float64))
	if maxOps != 3 || maxPayload != 8<<10 {
		t.Fatalf("bulk limits advertised %d, %d; relay.yaml says 3, 8KiB", maxOps, maxPayload)
	}
	var ops []string
	for i := 0; i <= maxOps; i++ {
		ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Groups","data":{`+groupSchema+`,"displayName":"g%d"}}`, i))
	}
	if got := bulkStatuses(t, scim("POST", "/Bulk", bulkRequest(0, ops[:maxOps]...)).want(t, 200)); got != "201 201 201" {
		t.Fatalf("bulk at maxOperations: %s", got)
	}
	scim("POST", "/Bulk", bulkRequest(0, ops...)).want(t, 413)
	scim("POST", "/Bulk", bulkRequest(0, `{"method":"POST","path":"/Users","data":{`+userSchema+`,"userName":"big","title":"`+strings.Repeat("x", maxPayload)+`"}}`)).want(t, 413)
	// filter, with maxResults capping a page.
	maxResults := int(feature("filter")["maxResults"].(float64))
	if r := scim("GET", "/Users?filter="+url.QueryEscape(`userName sw "a"`)+fmt.Sprintf("&count=%d", maxResults+1), "").want(t, 200); r.str("totalResults") != "1" {
		t.Fatalf("filter: %s", r.raw)
	}
	// sort
	if r := scim("GET", "/Users?sortBy=userName&sortOrder=descending", "").want(t, 200); !strings.Contains(string(r.raw), `"userName":"b@x.com"`) ||
		strings.Index(string(r.raw), "b@x.com") > strings.Index(string(r.raw), "a@x.com") {
		t.Fatalf("sort descending: %s", r.raw)
	}
	// etag
	got := scim("GET", "/Users/"+uid, "").want(t, 200)
	etag := got.header.Get("ETag")
	scim("GET", "/Users/"+uid, "", "If-None-Match", etag).want(t, 200) // never 304: groups change without a new version
	scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"title","value":"y"}]}`, "If-Match", `W/"1"`).want(t, 412)
	// changePassword is not supported: a PATCH of the password is refused
	// (a password in a POST or PUT body is accepted and discarded).
	if feature("changePassword")["supported"] != false {
		t.Fatal("changePassword is advertised")
	}
	if r := scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","path":"password","value":"hunter2"}]}`).want(t, 400); r.str("scimType") != "mutability" || !strings.Contains(r.str("detail"), "changePassword") {
		t.Fatalf("password change: %s", r.raw)
	}
	scim("PATCH", "/Users/"+uid, `{`+patchSchema+`,"Operations":[{"op":"replace","value":{"password":"hunter2"}}]}`).want(t, 400)

	// authenticationSchemes: each advertised one works; others are refused.
	c := createClient(t, p, "acme")
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(c.id+":"+c.secret))
	seen := map[string]bool{}
	for _, s := range sp["authenticationSchemes"].([]any) {
		m := s.(map[string]any)
		seen[m["type"].(string)] = true
		switch m["type"] {
		case "oauthbearertoken":
			scim("GET", "/Users", "").want(t, 200)
		case "oauth2":
			tok := p.tokenRequest("acme", grant(), c.id+":"+c.secret).accessToken(t)
			if !strings.Contains(m["description"].(string), p.scimURL+"/oauth2/acme/token") {
				t.Errorf("oauth2 scheme does not name the token endpoint: %v", m)
			}
			p.scim("acme", tok, "GET", "/Users", "").want(t, 200)
		case "httpbasic":
			p.scim("acme", "", "GET", "/Users", "", "Authorization", basic).want(t, 200)
		default:
			t.Errorf("scheme %v advertised; this test does not know how to use it", m["type"])
		}
	}
	if !seen["oauthbearertoken"] || !seen["oauth2"] || !seen["httpbasic"] {
		t.Fatalf("advertised schemes %v", seen)
	}
	p.scim("acme", "", "GET", "/Users", "", "Authorization", `Digest username="x"`).want(t, 401)

	// Discovery: every resource type's endpoint and every schema it names
	// work; what is not offered (/Me, filters on discovery) is refused.
	rts := scim("GET", "/ResourceTypes", "").want(t, 200).body["Resources"].([]any)
	for _, rt := range rts {
		m := rt.(map[string]any)
		scim("GET", m["endpoint"].(string), "").want(t, 200)
		scim("GET", "/ResourceTypes/"+m["id"].(string), "").want(t, 200)
		scim("GET", "/Schemas/"+m["schema"].(string), "").want(t, 200)
	}
	scim("GET", "/Me", "").want(t, 501)
	scim("GET", "/Schemas?filter="+url.QueryEscape(`id pr`), "").want(t, 403)

	// With basic_auth off, httpbasic is neither advertised nor accepted.
	p.stop()
	cfg.OAuth.BasicAuth = false
	p = startRelay(t, cfg, roleAll)
	if r := p.scim("acme", acmeToken, "GET", "/ServiceProviderConfig", "").want(t, 200); strings.Contains(string(r.raw), "httpbasic") {
		t.Fatalf("httpbasic advertised with basic_auth off: %s", r.raw)
	}
	p.scim("acme", "", "GET", "/Users", "", "Authorization", basic).want(t, 401)
}
