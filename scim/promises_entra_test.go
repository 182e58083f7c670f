// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
)

// Tests for promises of the README's "Connecting Microsoft Entra ID"
// section that no other test held.

// README, Tenant URL: appending ?aadOptscim062020 is optional, the relay
// accepts Entra's requests with and without it. A client that keeps the
// flag on the requests it builds from the Tenant URL (or its older
// spelling, AzureAdScimPatch062020) is answered as one that does not.
func TestEntraFlagInTheQueryIsIgnored(t *testing.T) {
	ts := newTestServer(t, Options{})
	for _, flag := range []string{"aadOptscim062020", "AzureAdScimPatch062020"} {
		t.Run(flag, func(t *testing.T) {
			name := "flag-" + strings.ToLower(flag) + "@contoso.com"
			id := ts.do("POST", "/Users?"+flag, `{`+userSchemas+`,"userName":"`+name+`","active":true}`).want(t, 201).str("id")
			r := ts.do("GET", "/Users?"+flag+"&"+filterQuery(`userName eq "`+name+`"`), "").want(t, 200)
			if r.str("totalResults") != "1" || r.str("Resources.0.id") != id {
				t.Fatalf("matching with the flag in the query: %s", r.body)
			}
			if r := ts.do("PATCH", "/Users/"+id+"?"+flag, entraBody(t, "disable-user-flag")).want(t, 200); r.str("active") != "false" {
				t.Fatalf("disable with the flag in the query: %s", r.body)
			}
			gid := ts.do("POST", "/Groups?"+flag, entraBody(t, "create-group")).want(t, 201).str("id")
			ts.do("PATCH", "/Groups/"+gid+"?"+flag, strings.ReplaceAll(entraBody(t, "patch-group-add-members"), "f648f8d5ea4e4cd38e9c", id)).want(t, 204)
			if g := ts.do("GET", "/Groups/"+gid+"?"+flag, "").want(t, 200); g.str("members.0.value") != id {
				t.Fatalf("group after the flagged PATCH: %s", g.body)
			}
			ts.do("DELETE", "/Groups/"+gid+"?"+flag, "").want(t, 204)
			ts.do("DELETE", "/Users/"+id+"?"+flag, "").want(t, 204)
		})
	}
}

// README, "What the relay does with what Entra sends": manager as an
// object, an array or a bare id, under the unqualified name Entra's legacy
// mapping uses and under the enterprise URN current Entra sends, in a PATCH
// path, a path-less replace and a POST body. Each is stored as the one
// complex value {"value": id}; two values or a number are refused.
func TestEntraManagerForms(t *testing.T) {
	ts := newTestServer(t, Options{})
	const ent = EnterpriseUserSchema
	boss := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"boss@contoso.com"}`).want(t, 201).str("id")
	managerOf := func(r response) string {
		t.Helper()
		ext, _ := r.json[ent].(map[string]any)
		b, _ := json.Marshal(ext["manager"])
		return string(b)
	}
	want := `{"value":"` + boss + `"}`

	patches := map[string]string{
		"URN path, bare id":            `{"op":"Add","path":"` + ent + `:manager","value":"` + boss + `"}`,
		"URN path, object":             `{"op":"Replace","path":"` + ent + `:manager","value":{"value":"` + boss + `"}}`,
		"unqualified path, bare id":    `{"op":"Add","path":"manager","value":"` + boss + `"}`,
		"unqualified path, object":     `{"op":"replace","path":"manager","value":{"value":"` + boss + `"}}`,
		"unqualified path, array":      `{"op":"Add","path":"manager","value":[{"$ref":null,"value":"` + boss + `"}]}`,
		"path-less, URN-qualified key": `{"op":"replace","value":{"` + ent + `:manager":"` + boss + `"}}`,
		"path-less, extension object":  `{"op":"replace","value":{"` + ent + `":{"manager":{"value":"` + boss + `"}}}}`,
	}
	for name, op := range patches {
		t.Run("PATCH "+name, func(t *testing.T) {
			id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"`+strings.ReplaceAll(name, " ", "-")+`"}`).want(t, 201).str("id")
			if got := managerOf(ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[`+op+`]}`).want(t, 200)); got != want {
				t.Fatalf("manager %s, want %s", got, want)
			}
			if got := managerOf(ts.do("GET", "/Users/"+id, "").want(t, 200)); got != want {
				t.Fatalf("stored manager %s, want %s", got, want)
			}
			// Entra clears a manager by removing it.
			if got := managerOf(ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Remove","path":"`+ent+`:manager"}]}`).want(t, 200)); got != "null" {
				t.Fatalf("manager after its removal: %s", got)
			}
		})
	}
	posts := map[string]string{
		"bare id in the extension object": `"` + ent + `":{"manager":"` + boss + `"}`,
		"array in the extension object":   `"` + ent + `":{"manager":[{"value":"` + boss + `"}]}`,
		"URN-qualified key, bare id":      `"` + ent + `:manager":"` + boss + `"`,
	}
	for name, attr := range posts {
		t.Run("POST "+name, func(t *testing.T) {
			r := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`","`+ent+`"],"userName":"`+strings.ReplaceAll(name, " ", "-")+`",`+attr+`}`).want(t, 201)
			if got := managerOf(r); got != want {
				t.Fatalf("manager %s, want %s", got, want)
			}
		})
	}
	id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"refused@contoso.com"}`).want(t, 201).str("id")
	ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Add","path":"manager","value":[{"value":"a"},{"value":"b"}]}]}`).
		wantError(t, 400, "invalidValue", "single-valued")
	ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Add","path":"`+ent+`:manager","value":7}]}`).
		wantError(t, 400, "invalidValue", "manager")
	if got := managerOf(ts.do("GET", "/Users/"+id, "").want(t, 200)); got != "null" {
		t.Fatalf("a refused PATCH set the manager to %s", got)
	}

	// A manager is kept as sent: the manager's rename, then deletion, leave
	// a report's manager, its version (no event) and the filter on it as
	// they were; Entra sends the report's own PATCH when its manager changes.
	report := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`","`+ent+`"],"userName":"report@contoso.com","`+ent+`":{"manager":"`+boss+`"}}`).want(t, 201)
	for _, c := range []struct {
		change, method, body string
		status               int
	}{
		{"rename", "PATCH", `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"userName","value":"boss2@contoso.com"}]}`, 200},
		{"deletion", "DELETE", "", 204},
	} {
		change := c.change
		ts.do(c.method, "/Users/"+boss, c.body).want(t, c.status)
		after := ts.do("GET", "/Users/"+report.str("id"), "").want(t, 200)
		if got := managerOf(after); got != want || after.str("meta.version") != report.str("meta.version") {
			t.Fatalf("after the manager's %s: manager %s, version %s (was %s), want %s unchanged", change, got, after.str("meta.version"), report.str("meta.version"), want)
		}
	}
	q := url.QueryEscape(`userName eq "report@contoso.com" and ` + ent + `:manager.value eq "` + boss + `"`)
	if n := ts.do("GET", "/Users?filter="+q, "").want(t, 200).str("totalResults"); n != "1" {
		t.Fatalf("the filter on the deleted manager's id found %s users, want the report", n)
	}
}

// README, Mappings: Entra's default attribute mappings work as they are.
// A user is created the way Entra sends one with every default mapping
// filled in, then each mapping is updated the way Entra sends an update
// (the target attribute as the PATCH path, capitalised op); every value
// lands where the mapping says.
func TestEntraDefaultMappings(t *testing.T) {
	ts := newTestServer(t, Options{})
	const ent = EnterpriseUserSchema
	boss := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"boss@contoso.com"}`).want(t, 201).str("id")
	create := `{"schemas":["` + UserSchema + `","` + ent + `"],
		"externalId":"ann","userName":"ann@contoso.com","active":true,"displayName":"Ann Lee","title":"Engineer",
		"emails":[{"primary":true,"type":"work","value":"ann@contoso.com"}],"preferredLanguage":"en-US",
		"name":{"givenName":"Ann","familyName":"Lee","formatted":"Ann Lee"},
		"addresses":[{"type":"work","formatted":"1 Main St, Oslo","streetAddress":"1 Main St","locality":"Oslo","region":"Oslo","postalCode":"0150","country":"NO","primary":true}],
		"phoneNumbers":[{"type":"work","value":"+47 1"},{"type":"mobile","value":"+47 2"},{"type":"fax","value":"+47 3"}],
		"` + ent + `":{"employeeNumber":"7","department":"Ops","costCenter":"CC1","organization":"Contoso","division":"North","manager":{"value":"` + boss + `"}}}`
	r := ts.do("POST", "/Users", create).want(t, 201)
	id := r.str("id")

	// mapping → [value after the create, PATCH path, value after the update]
	mappings := []struct{ path, created, patchPath, updated string }{
		{"userName", "ann@contoso.com", "userName", "ann.lee@contoso.com"},
		{"active", "true", "active", "false"},
		{"displayName", "Ann Lee", "displayName", "Ann B. Lee"},
		{"title", "Engineer", "title", "Lead"},
		{`emails[type eq "work"].value`, "ann@contoso.com", `emails[type eq "work"].value`, "ann.lee@contoso.com"},
		{"preferredLanguage", "en-US", "preferredLanguage", "nb-NO"},
		{"name.givenName", "Ann", "name.givenName", "Anna"},
		{"name.familyName", "Lee", "name.familyName", "Li"},
		{"name.formatted", "Ann Lee", "name.formatted", "Anna Li"},
		{`addresses[type eq "work"].formatted`, "1 Main St, Oslo", `addresses[type eq "work"].formatted`, "2 Quay, Bergen"},
		{`addresses[type eq "work"].streetAddress`, "1 Main St", `addresses[type eq "work"].streetAddress`, "2 Quay"},
		{`addresses[type eq "work"].locality`, "Oslo", `addresses[type eq "work"].locality`, "Bergen"},
		{`addresses[type eq "work"].region`, "Oslo", `addresses[type eq "work"].region`, "Vestland"},
		{`addresses[type eq "work"].postalCode`, "0150", `addresses[type eq "work"].postalCode`, "5003"},
		{`addresses[type eq "work"].country`, "NO", `addresses[type eq "work"].country`, "SE"},
		{`phoneNumbers[type eq "work"].value`, "+47 1", `phoneNumbers[type eq "work"].value`, "+46 1"},
		{`phoneNumbers[type eq "mobile"].value`, "+47 2", `phoneNumbers[type eq "mobile"].value`, "+46 2"},
		{`phoneNumbers[type eq "fax"].value`, "+47 3", `phoneNumbers[type eq "fax"].value`, "+46 3"},
		{"externalId", "ann", "externalId", "ann-lee"},
		{"employeeNumber", "7", ent + ":employeeNumber", "8"},
		{"department", "Ops", ent + ":department", "Sales"},
		{"costCenter", "CC1", ent + ":costCenter", "CC2"},
		{"organization", "Contoso", ent + ":organization", "Fabrikam"},
		{"division", "North", ent + ":division", "South"},
		{"manager", boss, ent + ":manager", id}, // a bare id, as Entra sends a manager reference
	}
	for _, m := range mappings {
		if got := mappedValue(t, r.json, m.path); got != m.created {
			t.Errorf("after the create, %s is %q, want %q", m.path, got, m.created)
		}
	}
	var ops []string
	for _, m := range mappings {
		v, _ := json.Marshal(m.updated)
		if m.path == "active" {
			v = []byte(`"False"`) // Entra without aadOptscim062020
		}
		op, _ := json.Marshal(m.patchPath)
		ops = append(ops, `{"op":"Replace","path":`+string(op)+`,"value":`+string(v)+`}`)
	}
	ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[`+strings.Join(ops, ",")+`]}`).want(t, 200)
	r = ts.do("GET", "/Users/"+id, "").want(t, 200)
	for _, m := range mappings {
		if got := mappedValue(t, r.json, m.path); got != m.updated {
			t.Errorf("after the update, %s is %q, want %q", m.path, got, m.updated)
		}
	}
	// One work address and one value per phone type: the updates changed
	// the values in place, never added a second.
	if n := len(r.json["addresses"].([]any)); n != 1 {
		t.Errorf("%d addresses after the update, want 1: %s", n, r.str("addresses"))
	}
	if n := len(r.json["phoneNumbers"].([]any)); n != 3 {
		t.Errorf("%d phone numbers after the update, want 3: %s", n, r.str("phoneNumbers"))
	}
}

// mappedValue reads the value an Entra mapping target names in a User's
// JSON: a plain or dotted path, attr[type eq "t"].sub, or an enterprise
// attribute by its bare name. Non-strings are rendered as JSON; "" when
// absent.
func mappedValue(t *testing.T, user map[string]any, path string) string {
	t.Helper()
	var v any
	switch attr, rest, filtered := strings.Cut(path, `[type eq "`); {
	case filtered:
		typ, sub, _ := strings.Cut(rest, `"].`)
		list, _ := user[attr].([]any)
		for _, el := range list {
			if m, _ := el.(map[string]any); m["type"] == typ {
				v = m[sub]
			}
		}
	case strings.Contains(path, "."):
		parent, sub, _ := strings.Cut(path, ".")
		m, _ := user[parent].(map[string]any)
		v = m[sub]
	case user[path] != nil:
		v = user[path]
	default:
		ext, _ := user[EnterpriseUserSchema].(map[string]any)
		v = ext[path]
		if m, ok := v.(map[string]any); ok && path == "manager" {
			v = m["value"]
		}
	}
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// README, "What the relay does with what Entra sends": Entra jobs without
// the aadOptscim062020 fix (customappsso) write an extension attribute with
// "." after the schema URN (…:2.0:User.department); it is read as ":"
// wherever a path is read: a POST body, a PATCH path, a filter, attributes
// and excludedAttributes.
func TestEntraDotAfterSchemaURN(t *testing.T) {
	ts := newTestServer(t, Options{})
	const dept = EnterpriseUserSchema + ".department"
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann@contoso.com","`+dept+`":"Sales"}`).want(t, 201)
	if ext, _ := r.json[EnterpriseUserSchema].(map[string]any); ext["department"] != "Sales" {
		t.Fatalf("after the POST: %s", r.body)
	}
	id := r.str("id")
	boss := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"boss@contoso.com"}`).want(t, 201).str("id")
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Replace","path":"`+dept+`","value":"X"},`+
		`{"op":"Add","path":"`+EnterpriseUserSchema+`.manager","value":"`+boss+`"}]}`).want(t, 200)
	ext, _ := r.json[EnterpriseUserSchema].(map[string]any)
	if m, _ := ext["manager"].(map[string]any); ext["department"] != "X" || m["value"] != boss {
		t.Fatalf("after the PATCH: %s", r.body)
	}
	r = ts.do("GET", "/Users?"+filterQuery(dept+` eq "X"`), "").want(t, 200)
	if r.str("totalResults") != "1" || r.str("Resources.0.id") != id {
		t.Fatalf("filter %s eq \"X\": %s", dept, r.body)
	}
	r = ts.do("GET", "/Users/"+id+"?attributes="+url.QueryEscape(dept), "").want(t, 200)
	if ext, _ := r.json[EnterpriseUserSchema].(map[string]any); len(ext) != 1 || ext["department"] != "X" || r.str("userName") != "" {
		t.Fatalf("attributes=%s: %s", dept, r.body)
	}
	r = ts.do("GET", "/Users/"+id+"?excludedAttributes="+url.QueryEscape(dept), "").want(t, 200)
	if ext, _ := r.json[EnterpriseUserSchema].(map[string]any); ext["department"] != nil || ext["manager"] == nil {
		t.Fatalf("excludedAttributes=%s: %s", dept, r.body)
	}
}

// README, "What the relay does with what Entra sends": an attribute an admin
// maps that the relay's schema lacks (mailNickname) is left out and named
// in the provisioning log, in the POST that creates the user and in every
// PATCH after it. Entra PATCHes all of a user's changed attributes in one
// request; refusing it over the unknown one failed the others too, on
// every cycle, until Entra quarantined the job.
func TestEntraUnknownMappedAttribute(t *testing.T) {
	ts := newTestServer(t, Options{})
	logged := func() RequestInfo {
		t.Helper()
		infos := ts.requests()
		return infos[len(infos)-1]
	}
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann@contoso.com","displayName":"Ann","mailNickname":"ann"}`).want(t, 201)
	if got := logged().Detail; got != "ignored unknown attributes: mailNickname" {
		t.Errorf("POST logged %q", got)
	}
	id := r.str("id")
	if r := ts.do("GET", "/Users/"+id, "").want(t, 200); strings.Contains(string(r.body), "mailNickname") {
		t.Fatalf("the unknown attribute was stored: %s", r.body)
	}
	// With aadOptscim062020: one op per attribute.
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Replace","path":"mailNickname","value":"ann.lee"},`+
		`{"op":"Replace","path":"displayName","value":"Ann Lee"}]}`).want(t, 200)
	if r.str("displayName") != "Ann Lee" || strings.Contains(string(r.body), "mailNickname") {
		t.Fatalf("after the PATCH: %s", r.body)
	}
	if info := logged(); info.Detail != "ignored unknown attributes: mailNickname" || len(info.EventIDs) != 1 {
		t.Errorf("PATCH logged detail %q, events %v", info.Detail, info.EventIDs)
	}
	// Without it: a path-less replace.
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Replace","value":{"mailNickname":"lee","displayName":"A. Lee"}}]}`).want(t, 200)
	if r.str("displayName") != "A. Lee" {
		t.Fatalf("after the path-less PATCH: %s", r.body)
	}
	if got := logged().Detail; got != "ignored unknown attributes: mailNickname" {
		t.Errorf("path-less PATCH logged %q", got)
	}
	// A PATCH of the unknown attribute alone changes nothing: no new
	// version, no event.
	version := r.header.Get("ETag")
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"Replace","path":"mailNickname","value":"x"}]}`).want(t, 200)
	if r.header.Get("ETag") != version {
		t.Errorf("a PATCH of only an unknown attribute made version %s from %s", r.header.Get("ETag"), version)
	}
	if info := logged(); info.Detail != "ignored unknown attributes: mailNickname" || len(info.EventIDs) != 0 {
		t.Errorf("PATCH of only the unknown attribute logged detail %q, events %v", info.Detail, info.EventIDs)
	}
}
