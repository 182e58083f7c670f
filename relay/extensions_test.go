// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
)

// TestCustomNamespacesThroughTheHandler replays what Okta sends for custom
// attributes in a namespace an admin chose, through the SCIM handler on the
// relay's store: a POST and PUT listing the namespace in schemas are
// answered with the extension under exactly that URN (also in schemas),
// GET and the events carry it so, a PATCH may name it, and a filter on it
// is a 400 that says why. Before, the POST was 400 for
// "urn:ietf:params:scim:schemas:custom:Space", and
// "urn:okta:app:1.0:user:custom" was stored as
// "urn:okta:app:1.0:user":{"custom":{…}}.
func TestCustomNamespacesThroughTheHandler(t *testing.T) {
	const (
		core  = "urn:ietf:params:scim:schemas:core:2.0:User"
		space = "urn:ietf:params:scim:schemas:custom:Space"
		okta  = "urn:okta:app:1.0:user:custom"
	)
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	// schemasAndExtensions checks an answer's (or an event's) schemas and
	// extension objects.
	schemasAndExtensions := func(what string, r map[string]any, want map[string]string) {
		t.Helper()
		var schemas []string
		for _, s := range r["schemas"].([]any) {
			schemas = append(schemas, s.(string))
		}
		wantSchemas := []string{core}
		for urn, obj := range want {
			wantSchemas = append(wantSchemas, urn)
			if got, _ := json.Marshal(r[urn]); string(got) != obj {
				t.Errorf("%s: %s is %s, want %s", what, urn, got, obj)
			}
		}
		slices.Sort(wantSchemas[1:])
		if !slices.Equal(schemas, wantSchemas) {
			t.Errorf("%s: schemas %v, want %v", what, schemas, wantSchemas)
		}
		if _, ok := r["urn:okta:app:1.0:user"]; ok {
			t.Errorf("%s: the namespace was cut at :user:", what)
		}
	}

	n := len(outbox(t, s))
	created := do("POST", "/Users", `{"schemas":["`+core+`","`+space+`","`+okta+`"],"userName":"n1@x.com",`+
		`"`+space+`":{"custom1":"v"},"`+okta+`":{"favColor":"blue"}}`, 201)
	id := created["id"].(string)
	schemasAndExtensions("POST answer", created, map[string]string{space: `{"custom1":"v"}`, okta: `{"favColor":"blue"}`})
	schemasAndExtensions("GET", do("GET", "/Users/"+id, "", 200), map[string]string{space: `{"custom1":"v"}`, okta: `{"favColor":"blue"}`})

	put := do("PUT", "/Users/"+id, `{"schemas":["`+core+`","`+space+`","`+okta+`"],"id":"`+id+`","userName":"n1@x.com",`+
		`"`+space+`":{"custom1":"w"},"`+okta+`":{"favColor":"blue"}}`, 200)
	schemasAndExtensions("PUT answer", put, map[string]string{space: `{"custom1":"w"}`, okta: `{"favColor":"blue"}`})
	patched := do("PATCH", "/Users/"+id, `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"replace","path":"`+okta+`:favColor","value":"red"}]}`, 200)
	schemasAndExtensions("PATCH answer", patched, map[string]string{space: `{"custom1":"w"}`, okta: `{"favColor":"red"}`})

	evs := since(t, s, n)
	if got := actionsOf(evs); got != "user.created user.updated user.updated" {
		t.Fatalf("events %s", got)
	}
	var res map[string]any
	if err := json.Unmarshal(evs[0].data.Resource, &res); err != nil {
		t.Fatal(err)
	}
	schemasAndExtensions("user.created", res, map[string]string{space: `{"custom1":"v"}`, okta: `{"favColor":"blue"}`})
	for i, want := range []string{space + `:custom1 "v" "w"`, okta + `:favColor "blue" "red"`} {
		c := evs[i+1].data.Changes
		if len(c) != 1 || c[0].Path+" "+string(c[0].Old)+" "+string(c[0].New) != want {
			t.Errorf("event %d changes %+v, want %s", i+1, c, want)
		}
	}

	// A filter has no resource to learn where such a URN ends from.
	for _, f := range []string{space + `:custom1 eq "w"`, okta + `:favColor eq "red"`} {
		r := do("GET", "/Users?filter="+url.QueryEscape(f), "", http.StatusBadRequest)
		if d, _ := r["detail"].(string); r["scimType"] != "invalidFilter" || !strings.Contains(d, "a filter, read before any resource, names such an extension only by a URN ending with :User") {
			t.Errorf("filter %s: %v", f, r)
		}
	}
}

// TestFilterOnSchemas runs RFC 7644 §3.4.2.2's own example, `schemas eq
// "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`, and the
// other comparisons on schemas, through the handler on the relay's store:
// GET and POST .search, on Users and Groups, alone (a scan) and beside an
// indexed equality (the index picks, the filter tests). Until 2026-12-03
// each was 400 invalidFilter, unknown attribute "schemas".
func TestFilterOnSchemas(t *testing.T) {
	const (
		ent    = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
		custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	)
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"plain"}`, 201)
	do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+ent+`"],"userName":"ent","`+ent+`":{"department":"D"}}`, 201)
	do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+custom+`"],"userName":"custom","`+custom+`":{"postalCode":"98052"}}`, 201)
	do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"G"}`, 201)
	names := func(list map[string]any) string {
		var out []string
		for _, r := range list["Resources"].([]any) {
			r := r.(map[string]any)
			out = append(out, cmp.Or(r["userName"], r["displayName"]).(string))
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	for _, tt := range []struct{ endpoint, filter, want string }{
		{"/Users", `schemas eq "` + ent + `"`, "ent"},
		{"/Users", `schemas eq "` + strings.ToUpper(ent) + `"`, "ent"},
		{"/Users", `schemas ne "` + ent + `"`, "custom plain"},
		{"/Users", `schemas eq "` + custom + `"`, "custom"},
		{"/Users", `schemas co "extension"`, "custom ent"},
		{"/Users", `schemas sw "urn:ietf:params:scim:schemas:core:2.0:"`, "custom ent plain"},
		{"/Users", `schemas ew ":Group"`, ""},
		{"/Users", `schemas pr`, "custom ent plain"},
		{"/Users", `userName eq "ent" and schemas eq "` + ent + `"`, "ent"},
		{"/Users", `userName eq "plain" and schemas eq "` + ent + `"`, ""},
		{"/Users", `userName eq "plain" or schemas eq "` + custom + `"`, "custom plain"},
		{"/Groups", `schemas eq "urn:ietf:params:scim:schemas:core:2.0:group"`, "G"},
		{"/Groups", `schemas eq "` + ent + `"`, ""},
	} {
		got := names(do("GET", tt.endpoint+"?filter="+url.QueryEscape(tt.filter), "", http.StatusOK))
		if got != tt.want {
			t.Errorf("GET %s filter %s: %q, want %q", tt.endpoint, tt.filter, got, tt.want)
		}
		body, _ := json.Marshal(map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:SearchRequest"}, "filter": tt.filter})
		if got := names(do("POST", tt.endpoint+"/.search", string(body), http.StatusOK)); got != tt.want {
			t.Errorf("POST %s/.search filter %s: %q, want %q", tt.endpoint, tt.filter, got, tt.want)
		}
	}
	for _, f := range []string{`schemas[value eq "x"]`, `schemas gt "urn"`, `emails[schemas eq "x"]`} {
		r := do("GET", "/Users?filter="+url.QueryEscape(f), "", http.StatusBadRequest)
		if r["scimType"] != "invalidFilter" {
			t.Errorf("filter %s: %v", f, r)
		}
	}
}

// TestPutNamesAnUnknownExtensionsAttributeOnceWhateverItsCase: names match
// in any case, an unknown extension's included (README), and a PUT carries
// the changes a PATCH of the same change would (Okta's profile push). A PUT
// spelling a custom attribute's URN or name in another case than the one
// stored reported the attribute twice, or a removal beside an addition
// (which a consumer folding case applied as: no postal code at all); a PUT
// changing only the case emitted an update.
func TestPutNamesAnUnknownExtensionsAttributeOnceWhateverItsCase(t *testing.T) {
	const token = "acme-static-token-0123456789"
	const urn = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	for _, tt := range []struct{ name, urn, key string }{
		{"urn in lower case", strings.ToLower(urn[:len(urn)-4]) + "User", "postalCode"},
		{"attribute in another case", urn, "PostalCode"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := openStore(t)
			do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", token)
			u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`","`+urn+`"],"userName":"ann","`+urn+`":{"postalCode":"2"}}`, 201)
			id := u["id"].(string)

			n := len(outbox(t, s))
			put := `{"schemas":["` + scim.UserSchema + `","` + tt.urn + `"],"userName":"ann","` + tt.urn + `":{"` + tt.key + `":"%s"}}`
			do("PUT", "/Users/"+id, fmt.Sprintf(put, "2"), 200)
			if got := since(t, s, n); len(got) != 0 {
				t.Fatalf("a PUT changing only the name's case emitted %s", actionsOf(got))
			}
			do("PUT", "/Users/"+id, fmt.Sprintf(put, "3"), 200)
			got := since(t, s, n)
			if actionsOf(got) != "user.updated" {
				t.Fatalf("the PUT emitted %q, want one user.updated", actionsOf(got))
			}
			var changes []string
			for _, c := range got[0].data.Changes {
				changes = append(changes, fmt.Sprintf("%s %s → %s", c.Path, c.Old, c.New))
			}
			if c := got[0].data.Changes; len(c) != 1 || !strings.EqualFold(c[0].Path, urn+":postalCode") || string(c[0].Old) != `"2"` || string(c[0].New) != `"3"` {
				t.Errorf("the PUT changing postalCode 2 → 3 reports\n  %s\nwant one change, postalCode \"2\" → \"3\"", strings.Join(changes, "\n  "))
			}
		})
	}
}

// TestPutSpellingOfANestedUnknownKeyEmitsNothing: the names inside a
// custom namespace's objects match in any case too: a PUT spelling one in
// another case, changing no value, emits nothing and keeps the version (it
// emitted user.updated with old and new differing only in the key's case).
func TestPutSpellingOfANestedUnknownKeyEmitsNothing(t *testing.T) {
	const space = "urn:ietf:params:scim:schemas:custom:Space"
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	body := `{"schemas":["` + scim.UserSchema + `","` + space + `"],"userName":"ann","` + space + `":{"badge":"A1","info":%s}}`
	id := do("POST", "/Users", fmt.Sprintf(body, `{"floor":3,"rooms":[{"wing":"N"}]}`), 201)["id"].(string)
	n := len(outbox(t, s))
	put := do("PUT", "/Users/"+id, fmt.Sprintf(body, `{"Floor":3,"rooms":[{"WING":"N"}]}`), 200)
	if got := since(t, s, n); len(got) != 0 {
		t.Errorf("a PUT changing only the case of nested names emitted %s %+v", actionsOf(got), got[0].data.Changes)
	}
	if v := put["meta"].(map[string]any)["version"]; v != `W/"1"` {
		t.Errorf("a PUT changing only the case of nested names moved the version to %v", v)
	}
	do("PUT", "/Users/"+id, fmt.Sprintf(body, `{"Floor":4,"rooms":[{"WING":"N"}]}`), 200)
	if got := since(t, s, n); actionsOf(got) != "user.updated" {
		t.Errorf("a PUT changing a nested value emitted %q, want user.updated", actionsOf(got))
	}
}

// TestEmptyStringOfACustomAttributeIsUnassigned: README, "What the relay
// does with what Entra sends": "Empty strings
// count as unassigned", and "A request that changes nothing emits
// nothing". An attribute of Entra's custom extension (README, Mappings:
// urn:…:CustomExtensionName:2.0:User:postalCode, the SAFE guide's custom
// field) given as "" is unassigned like any other: an add or replace of ""
// on a user that has no value writes no version and no event, a replace of
// "" on one that has a value removes it (a change without `new`), and a
// POST does not store it.
func TestEmptyStringOfACustomAttributeIsUnassigned(t *testing.T) {
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	patch := func(id, op string) map[string]any {
		t.Helper()
		return do("PATCH", "/Users/"+id, `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+op+`]}`, 200)
	}
	ext := func(r map[string]any) string {
		b, _ := json.Marshal(r[custom])
		return string(b)
	}

	// A POST: "" is not stored, as "nickName":"" is not.
	created := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`","`+custom+`"],"userName":"ann@contoso.com","nickName":"",`+
		`"`+custom+`":{"postalCode":"","badge":"green"}}`, 201)
	id := created["id"].(string)
	if got := ext(created); got != `{"badge":"green"}` {
		t.Errorf("POST stored %s %s, want {\"badge\":\"green\"}", custom, got)
	}

	// Entra's PATCH of "" on an attribute the user does not have: nothing changes.
	n := len(outbox(t, s))
	for _, op := range []string{
		`{"op":"Replace","path":"` + custom + `:costCenter","value":""}`,
		`{"op":"Add","path":"` + custom + `:division","value":""}`,
		`{"op":"replace","value":{"` + custom + `:org":""}}`,
	} {
		r := patch(id, op)
		if v := r["meta"].(map[string]any)["version"]; v != `W/"1"` {
			t.Errorf("%s: version %v, want W/\"1\" (no change); %s is %s", op, v, custom, ext(r))
		}
	}
	for _, e := range since(t, s, n) {
		c, _ := json.Marshal(e.data.Changes)
		t.Errorf("a PATCH of \"\" on an unassigned attribute emitted %s %s", e.action, c)
	}

	// Clearing a value with "": removed, as a core attribute is.
	patch(id, `{"op":"Replace","path":"`+custom+`:badge","value":"blue"}`)
	n = len(outbox(t, s))
	if got := ext(patch(id, `{"op":"Replace","path":"`+custom+`:badge","value":""}`)); got != "null" {
		t.Errorf("after a replace of \"\", %s is %s, want it gone", custom, got)
	}
	evs := since(t, s, n)
	if len(evs) != 1 || len(evs[0].data.Changes) != 1 || evs[0].data.Changes[0].New != nil {
		for _, e := range evs {
			c, _ := json.Marshal(e.data.Changes)
			t.Errorf("clearing %s:badge emitted %s %s, want one user.updated whose change has no new", custom, e.action, c)
		}
	}
}

// TestProjectionOfUnknownSubAttributeInAnyCase: names match in any case,
// the sub-attributes of an extension the relay does not know included
// (README), so excludedAttributes=…:nested.a leaves out the "A" stored
// under "Nested", and attributes=…:nested.a answers it; the projection
// compared them exactly, and answered the excluded value (a fuzz review).
func TestProjectionOfUnknownSubAttributeInAnyCase(t *testing.T) {
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	const urn = "urn:okta:custom:1.0:user"
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`","`+urn+`"],"userName":"ann",
		"`+urn+`":{"Badge":"7","Nested":{"A":"secret","b":"2"}}}`, http.StatusCreated)
	id := u["id"].(string)
	nested := func(res map[string]any) map[string]any {
		ext, _ := res[urn].(map[string]any)
		n, _ := ext["Nested"].(map[string]any)
		return n
	}
	if got := do("GET", "/Users/"+id+"?excludedAttributes="+url.QueryEscape(urn+":Nested.A"), "", http.StatusOK); nested(got)["A"] != nil {
		t.Fatalf("exact case: excluded sub-attribute still there: %v", got[urn])
	}
	if got := do("GET", "/Users/"+id+"?excludedAttributes="+url.QueryEscape(urn+":nested.a"), "", http.StatusOK); nested(got)["A"] != nil {
		t.Errorf("excludedAttributes=%s:nested.a answers %v; Nested.A should be left out", urn, got[urn])
	}
	if got := do("GET", "/Users/"+id+"?attributes="+url.QueryEscape(urn+":nested.a"), "", http.StatusOK); nested(got)["A"] != "secret" {
		t.Errorf("attributes=%s:nested.a answers %v; want Nested.A", urn, got)
	}
}

// TestRefSubAttributeInAnyCase: "$ref" is a sub-attribute name like any
// other, matched in any case (RFC 7643 §2.1): members.$Ref is
// members.$ref in attributes, excludedAttributes and filters (it was 400).
func TestRefSubAttributeInAnyCase(t *testing.T) {
	s, _, _ := openStore(t)
	h := scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100})
	do := scimClient(t, h, "acme", "acme-static-token-0123456789")
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann"}`, http.StatusCreated)
	g := do("POST", "/Groups", `{"schemas":["`+scim.GroupSchema+`"],"displayName":"G","members":[{"value":"`+u["id"].(string)+`"}]}`, http.StatusCreated)
	gid := g["id"].(string)
	get := func(path string) (int, string) {
		req := httptest.NewRequest("GET", "/scim/v2/acme"+path, nil)
		req.Header.Set("Authorization", "Bearer acme-static-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	// Each spelling answers what the lower-case one does.
	for variant, canonical := range map[string]string{
		"/Groups/" + gid + "?excludedAttributes=members.$Ref": "/Groups/" + gid + "?excludedAttributes=members.$ref",
		"/Groups/" + gid + "?excludedAttributes=MEMBERS.$REF": "/Groups/" + gid + "?excludedAttributes=members.$ref",
		"/Groups/" + gid + "?attributes=members.$REF":         "/Groups/" + gid + "?attributes=members.$ref",
	} {
		wantCode, want := get(canonical)
		if code, got := get(variant); wantCode != http.StatusOK || code != wantCode || got != want {
			t.Errorf("GET %s: %d %s\nwant as GET %s: %d %s", variant, code, got, canonical, wantCode, want)
		}
	}
}

// TestFiltersOnLinksAreRefused: the links an answer adds (a member's and a
// group's $ref, meta.location) are made from the URL the client used and
// not stored. A list filtering on one matched nothing and a PATCH removing
// the members a $ref filter names answered 204 and removed none, while
// every answer showed the links (a groups differential hunt): each is 400
// naming what to filter on (invalidFilter; invalidPath for the PATCH, as
// any bad filter in its path), and nothing changes; sortBy on
// meta.location is 400 invalidValue.
func TestFiltersOnLinksAreRefused(t *testing.T) {
	_, do := servedTenant(t, TenantOptions{Name: "acme"})
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`"],"userName":"ann"}`, http.StatusCreated)
	uid := u["id"].(string)
	g := do("POST", "/Groups", `{"schemas":["`+scim.GroupSchema+`"],"displayName":"G","members":[{"value":"`+uid+`"}]}`, http.StatusCreated)
	gid := g["id"].(string)
	ref := g["members"].([]any)[0].(map[string]any)["$ref"].(string)
	for _, c := range []struct{ method, path, body, detail string }{ // PATCH: invalidPath, else invalidFilter
		{"GET", "/Groups?filter=" + url.QueryEscape(`members.$ref eq "`+ref+`"`), "", "filter on members.value"},
		{"GET", "/Groups?filter=" + url.QueryEscape(`members.$Ref pr`), "", "filter on members.value"},
		{"GET", "/Users?filter=" + url.QueryEscape(`groups[$ref ew "`+gid+`"]`), "", "filter on groups.value"},
		{"GET", "/Users?filter=" + url.QueryEscape(`meta.location pr`), "", "filter on id"},
		{"POST", "/Groups/.search", `{"schemas":["` + scim.SearchRequestSchema + `"],"filter":"members.$ref pr"}`, "filter on members.value"},
		{"PATCH", "/Groups/" + gid, `{"schemas":["` + scim.PatchOpSchema + `"],"Operations":[{"op":"remove","path":"members[$ref co \"/Users/\"]"}]}`, "filter on members.value"},
	} {
		e := do(c.method, c.path, c.body, http.StatusBadRequest)
		want := map[bool]string{true: "invalidPath", false: "invalidFilter"}[c.method == "PATCH"]
		if e["scimType"] != want || !strings.Contains(fmt.Sprint(e["detail"]), c.detail) {
			t.Errorf("%s %s: %v, want a 400 %s saying %q", c.method, c.path, e, want, c.detail)
		}
	}
	e := do("GET", "/Users?sortBy=meta.location", "", http.StatusBadRequest)
	if e["scimType"] != "invalidValue" || !strings.Contains(fmt.Sprint(e["detail"]), "sort by id") {
		t.Errorf("sortBy=meta.location: %v, want 400 invalidValue saying to sort by id", e)
	}
	if got := do("GET", "/Groups/"+gid, "", http.StatusOK); len(got["members"].([]any)) != 1 || got["meta"].(map[string]any)["version"] != g["meta"].(map[string]any)["version"] {
		t.Errorf("the group after the refused PATCH: %v, want it unchanged (%v)", got, g)
	}
}

// TestPatchRemoveValueFromUnknownExtensionArray: "A remove with a value
// removes that value" (docs/decisions.md), and an add to an unknown
// extension's array adds each value not held. A remove with a value of one
// element of such an array removes that element; it answered 200 and
// changed nothing, so the value stayed while the client saw success.
func TestPatchRemoveValueFromUnknownExtensionArray(t *testing.T) {
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	const x = "urn:example:custom:2.0:User"
	u := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`","`+x+`"],"userName":"ann","`+x+`":{"tags":["a","b"]}}`, http.StatusCreated)
	got := do("PATCH", "/Users/"+u["id"].(string), `{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[{"op":"remove","path":"`+x+`:tags","value":["a"]}]}`, http.StatusOK)
	tags, _ := json.Marshal(got[x].(map[string]any)["tags"])
	if string(tags) != `["b"]` {
		t.Fatalf("remove of value \"a\" from tags [\"a\",\"b\"] leaves %s, want [\"b\"]", tags)
	}
}

// TestOktaCustomAppPutsDeactivation: an Okta app of its own (not from the
// catalogue) sends every change as a PUT of the whole user, deactivation
// too: `"active": false` is user.deactivated, true again
// user.reactivated, each with the other changes of the PUT in `changes`,
// and a PUT that leaves `active` out of an inactive user reactivates it
// (README, Connecting Okta; the event table).
func TestOktaCustomAppPutsDeactivation(t *testing.T) {
	s, _, _ := openStore(t)
	do := scimClient(t, scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100}), "acme", "acme-static-token-0123456789")
	body := `{"schemas":["` + scim.UserSchema + `"],"userName":"ann@x.com","displayName":%q%s}`
	id := do("POST", "/Users", fmt.Sprintf(body, "Ann", `,"active":true`), 201)["id"].(string)
	for _, step := range []struct{ display, active, want, paths string }{
		{"Ann", `,"active":false`, "user.deactivated", "active"},
		{"Ann", `,"active":false`, "", ""},
		{"Ann B", `,"active":true`, "user.reactivated", "displayName active"},
		{"Ann B", `,"active":false`, "user.deactivated", "active"},
		{"Ann B", ``, "user.reactivated", "active"},
	} {
		n := len(outbox(t, s))
		got := do("PUT", "/Users/"+id, fmt.Sprintf(body, step.display, step.active), 200)
		evs := since(t, s, n)
		var paths []string
		for _, e := range evs {
			for _, c := range e.data.Changes {
				paths = append(paths, c.Path)
			}
		}
		if actionsOf(evs) != step.want || strings.Join(paths, " ") != step.paths {
			t.Errorf("PUT %s%s: %q changing %v, want %q changing %q (answered active %v)", step.display, step.active, actionsOf(evs), paths, step.want, step.paths, got["active"])
		}
	}
}

// TestProjectionOfAWholeExtensionAndOneOfItsAttributes: attributes
// naming a whole extension keeps it whole; naming one of its
// sub-attributes too removes nothing of it from the answer (until
// 2026-12-07 its tags were left out of a GET's answer and the whole
// extension out of a POST's, and the projection wrote into the stored
// resource's maps), and the event is the whole user.
func TestProjectionOfAWholeExtensionAndOneOfItsAttributes(t *testing.T) {
	s, do := servedTenant(t, TenantOptions{Name: "acme"})
	const ext = "urn:custom:ext:1.0:User"
	uid := do("POST", "/Users", `{"schemas":["`+scim.UserSchema+`","`+ext+`"],"userName":"ann","`+ext+`":{"tags":["a","b"],"badge":{"level":3}}}`, http.StatusCreated)["id"].(string)
	q := "attributes=" + ext + "," + ext + ":tags.x"
	res := do("GET", "/Users/"+uid+"?"+q, "", http.StatusOK)
	e, _ := res[ext].(map[string]any)
	if tags, _ := e["tags"].([]any); len(tags) != 2 {
		t.Errorf("GET ?%s: %s holds %v, want its tags [a b] kept, the whole extension being asked for", q, ext, res[ext])
	}
	// The same projection on a POST's answer: the answer, not the event.
	n := mark(t, s)
	res = do("POST", "/Users?"+q, `{"schemas":["`+scim.UserSchema+`","`+ext+`"],"userName":"bob","`+ext+`":{"tags":["a","b"]}}`, http.StatusCreated)
	e, _ = res[ext].(map[string]any)
	if tags, _ := e["tags"].([]any); len(tags) != 2 {
		t.Errorf("POST ?%s: answered %s %v, want its tags", q, ext, res[ext])
	}
	evs := eventsAfter(t, s, n)
	if len(evs) != 1 || !strings.Contains(string(evs[0].data.Resource), `"tags":["a","b"]`) {
		t.Errorf("the POST's event is not the whole user: %d events, %s", len(evs), evs[0].data.Resource)
	}
}
