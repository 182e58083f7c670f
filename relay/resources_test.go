// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// scimClient returns a function that sends a request to h for a tenant,
// with a bearer token, checks the answer's status and returns its JSON.
func scimClient(t *testing.T, h http.Handler, tenant, token string) func(method, path, body string, status int) map[string]any {
	return func(method, path, body string, status int) map[string]any {
		t.Helper()
		req := httptest.NewRequest(method, "/scim/v2/"+tenant+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/scim+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != status {
			t.Fatalf("%s %s: %d %s, want %d", method, path, rec.Code, rec.Body, status)
		}
		return out
	}
}

// servedTenant serves the SCIM handler over a store in t.TempDir() that
// holds the one tenant, through scimClient.
func servedTenant(t *testing.T, tenant TenantOptions) (*Store, func(method, path, body string, status int) map[string]any) {
	t.Helper()
	const token = "served-static-token-0123456789"
	tenant.StaticTokens = []string{token}
	s, err := Open(filepath.Join(t.TempDir(), "scimrelay.db"), Options{Tenants: []TenantOptions{tenant}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), tenant.Name, token)
}

// workEmailTenant serves a tenant "safe" that makes the work email unique
// (unique: email).
func workEmailTenant(t *testing.T) (*Store, func(method, path, body string, status int) map[string]any) {
	t.Helper()
	return servedTenant(t, TenantOptions{Name: "safe", Unique: UniqueEmail})
}

// userBody is a User's JSON with the given userName and emails (JSON objects).
func userBody(userName string, emails ...string) string {
	return `{"schemas":["` + scim.UserSchema + `"],"userName":"` + userName + `","emails":[` + strings.Join(emails, ",") + `]}`
}

// byWorkEmail lists the ids Entra's matching filter finds.
func byWorkEmail(do func(method, path, body string, status int) map[string]any, email string) []string {
	list := do("GET", "/Users?filter="+url.QueryEscape(`emails[type eq "work"].value eq "`+email+`"`), "", http.StatusOK)
	var ids []string
	for _, r := range list["Resources"].([]any) {
		ids = append(ids, r.(map[string]any)["id"].(string))
	}
	return ids
}

// TestEveryWorkEmailIsUnique: in a tenant whose work email is unique, a
// user's second work email counts as its first does. A POST, a PUT and a
// PATCH (adding a work email) that would give a user a work email another
// user has as a work email are 409 uniqueness, and change nothing: no
// user, no new version, no event. Before, only the first work email was
// indexed and checked, so Entra, matching on emails[type eq "work"].value,
// found two users (its DuplicateTargetEntries error).
func TestEveryWorkEmailIsUnique(t *testing.T) {
	s, do := workEmailTenant(t)
	const taken = `email "DUP@x.com" is already taken`
	d1 := do("POST", "/Users", userBody("d1", `{"type":"work","value":"dup@x.com"}`), http.StatusCreated)
	refused := func(method, path, body string) {
		t.Helper()
		n := len(outbox(t, s))
		r := do(method, path, body, http.StatusConflict)
		if d, _ := r["detail"].(string); r["scimType"] != "uniqueness" || !strings.Contains(d, taken) {
			t.Fatalf("%s %s: %v, want uniqueness saying %s", method, path, r, taken)
		}
		if got := len(outbox(t, s)); got != n {
			t.Fatalf("%s %s: %d events after the refusal, want %d", method, path, got, n)
		}
	}

	refused("POST", "/Users", userBody("d2", `{"type":"work","value":"d2@x.com"}`, `{"type":"work","value":"DUP@x.com"}`))
	list := do("GET", "/Users?filter="+url.QueryEscape(`userName eq "d2"`), "", http.StatusOK)
	if list["totalResults"] != 0.0 {
		t.Fatalf("the refused POST created a user: %v", list)
	}

	d2 := do("POST", "/Users", userBody("d2", `{"type":"work","value":"d2@x.com"}`), http.StatusCreated)
	id := d2["id"].(string)
	refused("PUT", "/Users/"+id, userBody("d2", `{"type":"work","value":"d2@x.com"}`, `{"type":"Work","value":"DUP@x.com"}`))
	refused("PATCH", "/Users/"+id, `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+
		`{"op":"add","path":"emails","value":[{"type":"WORK","value":"DUP@x.com"}]}]}`)
	got := do("GET", "/Users/"+id, "", http.StatusOK)
	if !jsonEqual(got["emails"], d2["emails"]) || !jsonEqual(got["meta"], d2["meta"]) {
		t.Fatalf("after the refusals d2 is %v, want %v", got, d2)
	}
	if ids := byWorkEmail(do, "dup@x.com"); len(ids) != 1 || ids[0] != d1["id"] {
		t.Fatalf("the work email matches %v, want d1 alone", ids)
	}
}

// TestMatchingOnASecondWorkEmail: Entra's matching filter finds a user by
// its second work email (typed "work" in any case), and that email is then
// taken, so the filter never finds a second user.
func TestMatchingOnASecondWorkEmail(t *testing.T) {
	_, do := workEmailTenant(t)
	a := do("POST", "/Users", userBody("a", `{"type":"work","value":"a@x.com"}`, `{"type":"home","value":"a@home.com"}`, `{"type":"WORK","value":"second@x.com"}`), http.StatusCreated)
	if ids := byWorkEmail(do, "Second@X.com"); len(ids) != 1 || ids[0] != a["id"] {
		t.Fatalf("matching on the second work email finds %v, want a", ids)
	}
	do("POST", "/Users", userBody("b", `{"type":"work","value":"SECOND@x.com"}`), http.StatusConflict)
	// An untyped email is the work email only of a user without one typed
	// work, so a's home email is no one's work email yet.
	do("POST", "/Users", userBody("c", `{"value":"a@home.com","primary":true}`), http.StatusCreated)
	if ids := byWorkEmail(do, "second@x.com"); len(ids) != 1 || ids[0] != a["id"] {
		t.Fatalf("after a second user, matching on a's second work email finds %v, want a alone", ids)
	}
}

// TestMatchingFindsAWorkEmailNotTypedSo: in a tenant whose work email is
// unique, a user none of whose emails is typed "work" has its primary
// (else first) email as its work email, which uniqueness holds; Entra's
// matching filter finds the user by it too. Otherwise the filter found
// nobody, Entra's POST of the person was refused as a duplicate (409),
// and Entra, which does not link on a 409, tried again every cycle (a
// probe of Entra's requests found it). The answer shows the emails as
// stored. A tenant whose userName is unique filters as RFC 7644 reads:
// no email typed "work", no match.
func TestMatchingFindsAWorkEmailNotTypedSo(t *testing.T) {
	_, do := workEmailTenant(t)
	untyped := do("POST", "/Users", userBody("untyped", `{"value":"Untyped@contoso.com","primary":true}`), http.StatusCreated)
	home := do("POST", "/Users", userBody("home", `{"type":"home","value":"homey@contoso.com"}`), http.StatusCreated)
	for email, want := range map[string]map[string]any{"untyped@contoso.com": untyped, "HOMEY@contoso.com": home} {
		if ids := byWorkEmail(do, email); len(ids) != 1 || ids[0] != want["id"] {
			t.Errorf("Entra's matching filter on %s finds %v, want %s", email, ids, want["userName"])
		}
		do("POST", "/Users", userBody("newperson", `{"type":"work","value":"`+email+`","primary":true}`), http.StatusConflict)
	}
	list := do("GET", "/Users?filter="+url.QueryEscape(`emails[type eq "work"].value eq "homey@contoso.com"`), "", http.StatusOK)
	if found := list["Resources"].([]any); len(found) != 1 || !jsonEqual(found[0].(map[string]any)["emails"], home["emails"]) {
		t.Errorf("the answer is %v, want home's emails as stored: %v", found, home["emails"])
	}
	// Its home email is still home, not work alone.
	if list := do("GET", "/Users?filter="+url.QueryEscape(`emails[type eq "home"].value eq "homey@contoso.com"`), "", http.StatusOK); list["totalResults"] != 1.0 {
		t.Errorf("the home email filter finds %v", list["totalResults"])
	}
	// A user with an email typed work has that one as its work email: its
	// other emails are not matched as work emails.
	both := do("POST", "/Users", userBody("both", `{"type":"work","value":"w@contoso.com"}`, `{"value":"other@contoso.com","primary":true}`), http.StatusCreated)
	if ids := byWorkEmail(do, "other@contoso.com"); len(ids) != 0 {
		t.Errorf("matching on %s's untyped email finds %v; it has a work email", both["userName"], ids)
	}

	// A tenant whose userName is unique: the filter reads types as they are.
	s, _, _ := openStore(t)
	r := create(t, s, "acme", user(t, `"userName":"plain","emails":[{"value":"plain@contoso.com","primary":true}]`))
	f, err := scim.ParseFilter(scim.UserResourceType, `emails[type eq "work"].value eq "plain@contoso.com"`)
	if err != nil {
		t.Fatal(err)
	}
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, Count: 10})
	if err != nil || page.Total != 0 {
		t.Errorf("in a tenant unique by userName the filter finds %d (%v); want none for %s", page.Total, err, r.ID())
	}
}

// TestEmailUniqueTenantSaysUserNameIsNotUnique: a tenant whose users are
// unique by work email takes two users of one userName, and its User
// schema says userName is not unique, where RFC 7643's says "server" (a
// probe of Entra's requests found the schema claiming what the tenant
// does not hold).
func TestEmailUniqueTenantSaysUserNameIsNotUnique(t *testing.T) {
	_, do := workEmailTenant(t)
	do("POST", "/Users", userBody("alice@contoso.com", `{"type":"work","value":"a1@contoso.com"}`), http.StatusCreated)
	do("POST", "/Users", userBody("alice@contoso.com", `{"type":"work","value":"a2@contoso.com"}`), http.StatusCreated)
	uniqueness := func(schema map[string]any) any {
		for _, a := range schema["attributes"].([]any) {
			if a := a.(map[string]any); a["name"] == "userName" {
				return a["uniqueness"]
			}
		}
		return nil
	}
	if got := uniqueness(do("GET", "/Schemas/"+scim.UserSchema, "", http.StatusOK)); got != "none" {
		t.Errorf("the User schema of a tenant unique by email says userName's uniqueness is %v, want none", got)
	}
	list := do("GET", "/Schemas", "", http.StatusOK)
	for _, s := range list["Resources"].([]any) {
		if s := s.(map[string]any); s["id"] == scim.UserSchema && uniqueness(s) != "none" {
			t.Errorf("/Schemas lists userName's uniqueness as %v, want none", uniqueness(s))
		}
	}
	// The schema itself is shared: another tenant still reads "server".
	if scim.UserResourceType.Schema.Attribute("userName").Uniqueness != "server" {
		t.Error("the shared User schema was changed")
	}
}

// TestSchemasSayWhatATenantRequires: an attribute a tenant requires
// (tenants[].required, at start or by a reload; emails in a tenant unique
// by email) is refused when missing, and the tenant's /Schemas says it is
// required (RFC 7643 §7), with the complex attribute a required
// sub-attribute belongs to; before, every tenant's schema said what RFC
// 7643's does, and a client reading it could not know what it would be
// refused.
func TestSchemasSayWhatATenantRequires(t *testing.T) {
	const token = "acme-static-token-0123456789"
	s, err := Open(filepath.Join(t.TempDir(), "scimrelay.db"), Options{Tenants: []TenantOptions{
		{Name: "acme", StaticTokens: []string{token}},
		{Name: "globex", StaticTokens: []string{"globex-static-token-0123456789"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	h := scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100})
	acme, globex := scimClient(t, h, "acme", token), scimClient(t, h, "globex", "globex-static-token-0123456789")
	if err := s.SetTenants([]TenantOptions{
		{Name: "acme", StaticTokens: []string{token}, Required: []string{"emails", "name.givenName", scim.EnterpriseUserSchema + ":employeeNumber", "externalId"}},
		{Name: "globex", StaticTokens: []string{"globex-static-token-0123456789"}},
	}); err != nil {
		t.Fatal(err)
	}
	acme("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"noemail"}`, http.StatusBadRequest)

	// required gives each attribute's required, and each sub-attribute's
	// as "name.sub", of a schema document.
	required := func(schema map[string]any) map[string]any {
		out := map[string]any{}
		for _, a := range schema["attributes"].([]any) {
			a := a.(map[string]any)
			out[a["name"].(string)] = a["required"]
			subs, _ := a["subAttributes"].([]any)
			for _, sub := range subs {
				sub := sub.(map[string]any)
				out[a["name"].(string)+"."+sub["name"].(string)] = sub["required"]
			}
		}
		return out
	}
	want := func(who string, got map[string]any, attrs map[string]bool) {
		t.Helper()
		for name, w := range attrs {
			if got[name] != w {
				t.Errorf("%s: %s's required is %v, want %v", who, name, got[name], w)
			}
		}
	}
	user := required(acme("GET", "/Schemas/"+scim.UserSchema, "", http.StatusOK))
	want("acme's User schema", user, map[string]bool{"userName": true, "emails": true, "name": true, "name.givenName": true, "name.familyName": false, "displayName": false})
	want("acme's enterprise schema", required(acme("GET", "/Schemas/"+scim.EnterpriseUserSchema, "", http.StatusOK)), map[string]bool{"employeeNumber": true, "department": false})
	for _, sc := range acme("GET", "/Schemas", "", http.StatusOK)["Resources"].([]any) {
		if sc := sc.(map[string]any); sc["id"] == scim.UserSchema {
			want("acme's /Schemas", required(sc), map[string]bool{"emails": true, "name.givenName": true})
		}
	}
	want("globex's User schema", required(globex("GET", "/Schemas/"+scim.UserSchema, "", http.StatusOK)), map[string]bool{"userName": true, "emails": false, "name": false, "name.givenName": false})
	// And /ResourceTypes, which said the enterprise extension was optional
	// where a User without it is refused (a schema-driven hunt).
	extensionRequired := func(rt map[string]any) any {
		for _, e := range rt["schemaExtensions"].([]any) {
			if e := e.(map[string]any); e["schema"] == scim.EnterpriseUserSchema {
				return e["required"]
			}
		}
		return nil
	}
	for who, c := range map[string]struct {
		get  func(method, path, body string, status int) map[string]any
		want bool
	}{"acme": {acme, true}, "globex": {globex, false}} {
		one := c.get("GET", "/ResourceTypes/User", "", http.StatusOK)
		var listed map[string]any
		for _, rt := range c.get("GET", "/ResourceTypes", "", http.StatusOK)["Resources"].([]any) {
			if rt := rt.(map[string]any); rt["id"] == "User" {
				listed = rt
			}
		}
		if got, inList := extensionRequired(one), extensionRequired(listed); got != c.want || inList != c.want {
			t.Errorf("%s's /ResourceTypes/User says the enterprise extension's required is %v (%v in the list), want %v", who, got, inList, c.want)
		}
	}

	// A tenant unique by email refuses a User without one.
	_, safe := workEmailTenant(t)
	safe("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"noemail"}`, http.StatusBadRequest)
	want("the email-unique tenant's User schema", required(safe("GET", "/Schemas/"+scim.UserSchema, "", http.StatusOK)), map[string]bool{"emails": true, "name": false})

	// The schema itself is shared: it is not changed.
	if scim.UserResourceType.Schema.Attribute("emails").Required {
		t.Error("the shared User schema was changed")
	}
}

// jsonEqual reports whether a and b, decoded JSON, are the same.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestOktaPutRepeatingTheUserInAnotherOrderEmitsNothing: Okta's profile
// push is a PUT of the whole user. One that lists the same emails and
// phone numbers in another order, or spells out the "primary": false that
// the stored values leave out, repeats the stored user: it must change
// nothing (no event, no new version), as README promises for a PUT that
// changes nothing.
func TestOktaPutRepeatingTheUserInAnotherOrderEmitsNothing(t *testing.T) {
	const core = "urn:ietf:params:scim:schemas:core:2.0:User"
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	const stored = `"emails":[{"primary":true,"value":"USER@x.org","type":"work"},{"value":"USER@home.org","type":"home"}],` +
		`"phoneNumbers":[{"value":"+1 555 0100","type":"work"},{"value":"+1 555 0199","type":"mobile"}]`
	for _, tt := range []struct{ user, put string }{
		{"reordered", `"emails":[{"value":"USER@home.org","type":"home","display":""},{"primary":true,"value":"USER@x.org","type":"work","display":""}],` +
			`"phoneNumbers":[{"value":"+1 555 0199","type":"mobile"},{"value":"+1 555 0100","type":"work"}]`},
		{"primaryfalse", `"emails":[{"primary":true,"value":"USER@x.org","type":"work"},{"primary":false,"value":"USER@home.org","type":"home"}],` +
			`"phoneNumbers":[{"value":"+1 555 0100","type":"work","primary":false},{"value":"+1 555 0199","type":"mobile","primary":false}]`},
	} {
		fill := func(s string) string { return strings.ReplaceAll(s, "USER", tt.user) }
		id := do("POST", "/Users", fill(`{"schemas":["`+core+`"],"userName":"USER@x.org","active":true,`+stored+`,"groups":[],"password":"p"}`), 201)["id"].(string)
		n := len(outbox(t, s))
		put := do("PUT", "/Users/"+id, fill(`{"schemas":["`+core+`"],"id":"`+id+`","userName":"USER@x.org","active":true,`+tt.put+`,"groups":[],"meta":{"resourceType":"User"}}`), 200)
		if v := put["meta"].(map[string]any)["version"]; v != `W/"1"` {
			t.Errorf("%s: version %v, want W/\"1\"", tt.user, v)
		}
		for _, e := range since(t, s, n) {
			var paths []string
			for _, c := range e.data.Changes {
				paths = append(paths, c.Path+": "+string(c.Old)+" -> "+string(c.New))
			}
			t.Errorf("%s: %s, want no event; changes:\n  %s", tt.user, e.action, strings.Join(paths, "\n  "))
		}
	}
}

// TestResourceSizeIsBounded: a user or group larger than MaxResourceBytes
// as stored cannot be made, by a create or by a write that grows one
// (400 invalidValue, nothing stored); one an earlier release stored
// larger can still be deactivated and shrunk; and a write is charged
// every BytesPerRequest of the resource it read and stored. A
// one-attribute PATCH of a user of 2.4 MB held the committer, which every
// tenant's writes wait for, about 250 ms at the cost of one request (an
// attack round).
func TestResourceSizeIsBounded(t *testing.T) {
	s, _, _ := openStore(t)
	charges := recordCharges(s)
	take := func() int { return charges()["acme"] }
	nextPhone := 0
	phones := func(n int) string { // n numbers, each new
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(`{"value":"+1 555 %07d"}`, nextPhone)
			nextPhone++
		}
		return "[" + strings.Join(out, ",") + "]"
	}
	// 27 bytes a phone number as stored: 9,600 are under the bound, 10,000 over.
	_, err := s.Create(ctx, "acme", user(t, `"userName":"big","phoneNumbers":`+phones(10_000)))
	wantErr(t, err, scim.ErrInvalidValue, "the limit is 262144")
	u := create(t, s, "acme", user(t, `"userName":"near","phoneNumbers":`+phones(9_600)))
	created := take()
	if created < 28 || created > 36 { // about 260 KiB stored: 31 or so
		t.Errorf("creating a user of about 260 KiB charged %d requests, want about 32", created)
	}
	_, err = patch(t, s, "acme", scim.UserResourceType, u.ID(), `{"op":"add","path":"phoneNumbers","value":`+phones(500)+`}`)
	wantErr(t, err, scim.ErrInvalidValue, "the limit is 262144")
	if n := take(); n < 2*created-4 { // read and encoded: about twice the create
		t.Errorf("a refused PATCH reading and encoding the user charged %d requests, want about %d", n, 2*created)
	}
	if got, err := s.Get(ctx, "acme", scim.UserResourceType, u.ID()); err != nil || len(got.Attrs["phoneNumbers"].([]any)) != 9_600 {
		t.Fatalf("after the refused PATCH: %v", err)
	}

	// A user an earlier release stored larger (written here as it would
	// have been): deactivated, then shrunk; grown, refused.
	old := create(t, s, "acme", user(t, `"userName":"old","active":true`))
	if err := s.commits.do(func(tx *bolt.Tx) error {
		tb, _, err := s.tenantBucket(tx, "acme")
		if err != nil {
			return err
		}
		rec, err := getRecord(tb, scim.UserResourceType, old.ID())
		if err != nil {
			return err
		}
		var list []any
		if err := json.Unmarshal([]byte(phones(20_000)), &list); err != nil {
			return err
		}
		rec.res.Attrs["phoneNumbers"] = list
		return putRecord(tb, rec)
	}); err != nil {
		t.Fatal(err)
	}
	mustPatch(t, s, "acme", scim.UserResourceType, old.ID(), `{"op":"replace","path":"active","value":false}`)
	_, err = patch(t, s, "acme", scim.UserResourceType, old.ID(), `{"op":"add","path":"title","value":"`+strings.Repeat("t", 1000)+`"}`)
	wantErr(t, err, scim.ErrInvalidValue, "the limit is 262144")
	mustPatch(t, s, "acme", scim.UserResourceType, old.ID(), `{"op":"remove","path":"phoneNumbers"}`)
	mustPatch(t, s, "acme", scim.UserResourceType, old.ID(), `{"op":"add","path":"title","value":"`+strings.Repeat("t", 1000)+`"}`)
}

// TestListFilterWorkIsCharged: a list's filter tests every resource no
// index narrows it to, each term reading the values it names anew; every
// MiB of resources tested, times the filter's terms, costs its tenant one
// request more (ComparedBytesPerRequest). A 100-term filter of `co`s over
// one user holding a 1 MiB value took 2 s of CPU at the cost of one
// request (an attack round). A filter an index answers reads only what
// it names.
func TestListFilterWorkIsCharged(t *testing.T) {
	s, _, _ := openStore(t)
	take := recordCharges(s)
	for i := range 4 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d","title":"%s"`, i, strings.Repeat("t", 200<<10))))
	}
	take()
	list := func(filter string) {
		t.Helper()
		f, err := scim.ParseFilter(scim.UserResourceType, filter)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil {
			t.Fatal(err)
		}
	}
	terms := make([]string, 10)
	for i := range terms {
		terms[i] = fmt.Sprintf(`title co "z%d"`, i)
	}
	list(strings.Join(terms, " or ")) // 4 × 200 KiB × 10 terms: 7.8 MiB
	if got := take(); got["acme"] != 7 || len(got) != 1 {
		t.Errorf("a 10-term filter testing 800 KiB of users charged %v, want acme 7", got)
	}
	list(`userName eq "u1"`) // the index names one user
	if got := take(); len(got) != 0 {
		t.Errorf("a filter the userName index answers charged %v", got)
	}
}

// TestListPageIsBoundedByItsBytes: a page of a list ends at the first
// resource that takes it past MaxPageBytes as stored (itemsPerPage says
// how many it holds; totalResults stays exact), whether listed whole,
// filtered or sorted: a resource takes some 18 times its stored size in
// heap decoded, and one GET of 1,000 users at MaxResourceBytes about
// 4.7 GiB (an attack round). A sorted list with no filter decodes every
// resource for its sort key, and is charged as a one-term filter is.
func TestListPageIsBoundedByItsBytes(t *testing.T) {
	s, _, _ := openStore(t)
	take := recordCharges(s)
	const n, size = 24, 250 << 10
	for i := range n {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%02d","title":"%s"`, i, strings.Repeat("t", size))))
	}
	fits := MaxPageBytes/size + 1 // the one that takes it past the bound is in
	f, err := scim.ParseFilter(scim.UserResourceType, `title pr`)
	if err != nil {
		t.Fatal(err)
	}
	sort, err := scim.UserResourceType.ParsePath("userName")
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]scim.Query{
		"whole":    {StartIndex: 1, Count: 100},
		"filtered": {Filter: f, StartIndex: 1, Count: 100},
		"sorted":   {SortBy: &sort, StartIndex: 1, Count: 100},
	} {
		page, err := s.List(ctx, "acme", scim.UserResourceType, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Resources) != fits || page.Total != n {
			t.Errorf("%s: a page of %d of %d users of %d KiB, want %d of %d", name, len(page.Resources), page.Total, size>>10, fits, n)
		}
		if page.Bytes < fits*size {
			t.Errorf("%s: a page of %d users of %d KiB says it holds %d bytes", name, len(page.Resources), size>>10, page.Bytes)
		}
	}
	take()
	if _, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{SortBy: &sort, StartIndex: 1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if want, charged := n*(size+300)/ComparedBytesPerRequest, take()["acme"]; charged < want-1 {
		t.Errorf("a sorted list decoding %d users of %d KiB charged %d, want about %d", n, size>>10, charged, want)
	}
}

// TestDateTimeSubstringFiltersCompareTheStoredText: co, sw and ew on a
// dateTime compare the stored text (README, Filters), so that
// meta.created sw "2026-12-06" finds the users created that day. RFC 7644
// §3.4.2.2 refuses them only for boolean and binary attributes; they were
// 400 unless the value was a whole RFC 3339 time.
func TestDateTimeSubstringFiltersCompareTheStoredText(t *testing.T) {
	_, do := servedTenant(t, TenantOptions{Name: "acme"})
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann"}`, http.StatusCreated)
	created := u["meta"].(map[string]any)["created"].(string)
	for _, f := range []string{
		`meta.created sw "` + created[:10] + `"`, // the day it was created
		`meta.lastModified sw "` + created[:7] + `"`,
		`meta.created co "T"`,
		`meta.created ew "Z"`,
		`meta.created ew "` + created[len(created)-5:] + `"`,
	} {
		if list := do("GET", "/Users?filter="+url.QueryEscape(f), "", http.StatusOK); list["totalResults"] != 1.0 {
			t.Errorf("%s (created %s): %v, want the user", f, created, list)
		}
	}
	if list := do("GET", "/Users?filter="+url.QueryEscape(`meta.created sw "1999"`), "", http.StatusOK); list["totalResults"] != 0.0 {
		t.Errorf("meta.created sw 1999: %v, want none", list)
	}
}

// TestPatchRemovingARequiredAttributeIsMutability: RFC 7644 §3.5.2.2, "If
// an attribute is removed or becomes unassigned and is defined as a
// required attribute or a read-only attribute, the server SHALL return
// ... a "scimType" error code of "mutability"", as /Schemas says userName
// and a group's displayName are required; the resource keeps it.
func TestPatchRemovingARequiredAttributeIsMutability(t *testing.T) {
	_, do := servedTenant(t, TenantOptions{Name: "acme"})
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann"}`, http.StatusCreated)
	g := do("POST", "/Groups", `{"schemas":["`+scim.GroupSchema+`"],"displayName":"g"}`, http.StatusCreated)
	for _, c := range []struct{ path, op, attr, want string }{
		{"/Users/" + u["id"].(string), `{"op":"remove","path":"userName"}`, "userName", "ann"},
		{"/Users/" + u["id"].(string), `{"op":"replace","path":"userName","value":null}`, "userName", "ann"},
		{"/Groups/" + g["id"].(string), `{"op":"remove","path":"displayName"}`, "displayName", "g"},
	} {
		if e := do("PATCH", c.path, `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+c.op+`]}`, http.StatusBadRequest); e["scimType"] != "mutability" {
			t.Errorf("PATCH %s %s: %v, want mutability", c.path, c.op, e)
		}
		if got := do("GET", c.path, "", http.StatusOK)[c.attr]; got != c.want {
			t.Errorf("%s after the refused PATCH: %s %v, want %q", c.path, c.attr, got, c.want)
		}
	}
	// A blank value removes nothing: it is an invalid value, as in a PUT.
	if e := do("PATCH", "/Users/"+u["id"].(string), `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"replace","path":"userName","value":"   "}]}`, http.StatusBadRequest); e["scimType"] != "invalidValue" {
		t.Errorf("PATCH userName to blanks: %v, want invalidValue", e)
	}
	// Removed and given again in one PATCH: taken.
	do("PATCH", "/Users/"+u["id"].(string), `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"remove","path":"userName"},{"op":"add","path":"userName","value":"ann2"}]}`, http.StatusOK)
}

// TestSchemasMustBeStrings: RFC 7643 §3 makes schemas "an array of
// Strings containing URIs"; a body whose schemas holds anything else is
// 400 invalidSyntax, as one whose schemas is not an array already is,
// and creates nothing.
func TestSchemasMustBeStrings(t *testing.T) {
	_, do := servedTenant(t, TenantOptions{Name: "acme"})
	for _, schemas := range []string{`["` + scim.UserSchema + `",5]`, `["` + scim.UserSchema + `",null]`, `[{"id":"x"},"` + scim.UserSchema + `"]`} {
		if e := do("POST", "/Users", `{"schemas":`+schemas+`,"userName":"ann"}`, http.StatusBadRequest); e["scimType"] != "invalidSyntax" {
			t.Errorf("POST with schemas %s: %v, want invalidSyntax", schemas, e)
		}
	}
	if list := do("GET", "/Users", "", http.StatusOK); list["totalResults"] != 0.0 {
		t.Errorf("the refused POSTs created %v", list["totalResults"])
	}
}
