// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

const entraFixture = "testdata/entra-requests.json"

// TestEntraContract sends every request of the Entra fixture, in order,
// through the handler over the in-memory backend, and checks each answer
// against the documented status and response (scimtest.CheckEntraResponse).
func TestEntraContract(t *testing.T) {
	ts := newTestServer(t, Options{})
	scimtest.ReplayEntra(t, scimtest.LoadEntraSteps(t, entraFixture), func(method, path, body string) scimtest.Answer {
		r := ts.do(method, path, body)
		return scimtest.Answer{Status: r.status, Header: r.header, Body: r.body}
	})
}

// entraEffect is what the documentation says a request body does, checked
// on the parsed and applied request: the resource afterwards (attribute
// path → JSON of its value) and the membership operations.
type entraEffect struct {
	want    map[string]string
	members string // JSON of the membership operations; "" = none
}

var entraEffects = map[string]entraEffect{
	"create-user": {want: map[string]string{"userName": `"Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`, "active": "true",
		"roles": "", "meta": "" /* server-owned; meta.resourceType in the body is ignored */}},
	"create-user-legacy-nulls": {want: map[string]string{"userName": `"jyoung@testuser.com"`, "addresses": "", "phoneNumbers": "", "title": "",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": ""}}, // nulls are unassigned, not refused
	"create-group": {want: map[string]string{"displayName": `"displayName"`, "members": ""}}, // created without members
	"patch-user-multivalued": {want: map[string]string{"emails": `[{"primary":true,"type":"work","value":"updatedEmail@microsoft.com"}]`,
		"name.familyName": `"updatedFamilyName"`}},
	"patch-user-singlevalued": {want: map[string]string{"userName": `"5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"`}},
	"disable-user":            {want: map[string]string{"active": "false"}},
	"disable-user-legacy":     {want: map[string]string{"active": "false"}}, // "False" is the boolean false
	"disable-user-flag":       {want: map[string]string{"active": "false"}},
	"add-single-value-legacy": {want: map[string]string{"nickName": `"Babs"`}},
	"add-single-value-flag":   {want: map[string]string{"nickName": `"Babs"`}},
	"replace-multi-legacy": {want: map[string]string{"displayName": `"Pvlo"`, "name.givenName": `"Gtfd"`, "name.familyName": `"Pkqf"`, "externalId": `"Eqpj"`,
		"emails": `[{"primary":true,"type":"work","value":"TestBcwqnm@test.microsoft.com"}]`,
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.employeeNumber": `"Eqpj"`}},
	"replace-multi-flag": {want: map[string]string{"displayName": `"Bjfe"`, "name.givenName": `"Kkom"`, "name.familyName": `"Unua"`,
		"emails": `[{"primary":true,"type":"work","value":"TestMhvaes@test.microsoft.com"}]`,
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.employeeNumber": `"Aklq"`}},
	// An un-prefixed manager as an array of one reference.
	"patch-manager-legacy":    {want: map[string]string{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager": `{"$ref":"http://.../scim/Users/00aa00aa-bb11-cc22-dd33-44ee44ee44ee","value":"00aa00aa-bb11-cc22-dd33-44ee44ee44ee"}`}},
	"patch-group-displayname": {want: map[string]string{"displayName": `"1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"`}},
	// "$ref": null is accepted and dropped.
	"patch-group-add-members": {members: `[{"kind":"add","members":[{"value":"f648f8d5ea4e4cd38e9c"}]}]`},
	// A value array under path "members" removes those members, not all.
	"patch-group-remove-members": {members: `[{"kind":"remove","members":[{"value":"f648f8d5ea4e4cd38e9c"}]}]`},
	"remove-member-legacy":       {members: `[{"kind":"remove","members":[{"value":"u1091"}]}]`},
	// members[value eq "x"] names the member it removes.
	"remove-member-flag": {members: `[{"kind":"remove","members":[{"value":"7f4bc1a3-285e-48ae-8202-5accb43efb0e"}]}]`},
}

// TestEntraRequests applies every request body Entra is documented to send
// and checks what the documentation says it does (entraEffects); it also
// compares the resulting resource, changes and membership operations with
// testdata/entra/<step>.golden (go test -run TestEntraRequests -update
// rewrites them; review the diff).
func TestEntraRequests(t *testing.T) {
	n := 0
	for _, s := range scimtest.LoadEntraSteps(t, entraFixture) {
		if s.RequestBody == nil {
			continue
		}
		n++
		t.Run(s.ID, func(t *testing.T) {
			rt := s.ResourceType()
			effect, ok := entraEffects[s.ID]
			if !ok {
				t.Fatalf("no documented effect for %s in entraEffects", s.ID)
			}
			var golden entraGolden
			switch s.Method {
			case "POST":
				r, err := ParseResource(rt, []byte(s.Body()))
				if err != nil {
					t.Fatalf("ParseResource: %v", err)
				}
				golden.Resource = r
			case "PATCH":
				base := Fixture(t, UserResourceType, BaseUserJSON)
				if rt == GroupResourceType {
					base = Fixture(t, GroupResourceType, BaseGroupJSON)
				}
				before := base.AppendJSON(nil)
				p, err := ParsePatch(rt, []byte(s.Body()))
				if err != nil {
					t.Fatalf("ParsePatch: %v", err)
				}
				u, err := p.Apply(base)
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				if after := base.AppendJSON(nil); !bytes.Equal(before, after) {
					t.Fatalf("Apply modified its input:\nbefore %s\nafter  %s", before, after)
				}
				if !u.Changed() {
					t.Fatalf("documented Entra request %s changed nothing", s.ID)
				}
				golden = entraGolden{Resource: u.Resource, Changes: u.Changes}
				if len(u.Members) > 0 {
					golden.Members = MemberOpsJSON(u.Members)
				}
				if rt == UserResourceType && len(u.Members) > 0 {
					t.Fatalf("a User PATCH produced membership operations: %+v", u.Members)
				}
			default:
				t.Fatalf("unexpected method %s with a body", s.Method)
			}
			checkEffect(t, golden, effect)
			scimtest.Golden(t, filepath.Join("testdata", "entra", s.ID+".golden"), goldenJSON(t, golden))
		})
	}
	if n != len(entraEffects) {
		t.Fatalf("%d request bodies in %s, %d documented effects", n, entraFixture, len(entraEffects))
	}
}

// entraGolden is what a documented request turns into. Empty parts are
// left out: a User PATCH has no membership operations to show.
type entraGolden struct {
	Changes  []Change  `json:"changes,omitempty"`
	Members  any       `json:"members,omitempty"`
	Resource *Resource `json:"resource"`
}

func checkEffect(t *testing.T, g entraGolden, e entraEffect) {
	t.Helper()
	var attrs map[string]any
	if err := json.Unmarshal(g.Resource.AppendJSON(nil), &attrs); err != nil {
		t.Fatal(err)
	}
	for path, want := range e.want {
		got := ""
		if v := valueAt(attrs, path); v != nil {
			b, _ := json.Marshal(v)
			got = string(b)
		}
		if got != want {
			t.Errorf("%s: %s, want %s", path, orAbsent(got), orAbsent(want))
		}
	}
	got := ""
	if g.Members != nil {
		b, _ := json.Marshal(g.Members)
		got = string(b)
	}
	if got != e.members {
		t.Errorf("membership operations %s, want %s", orAbsent(got), orAbsent(e.members))
	}
}

// valueAt returns the value at a dotted path; an extension URN is one step.
func valueAt(obj map[string]any, path string) any {
	var v any = obj
	if rest, ok := strings.CutPrefix(path, EnterpriseUserSchema); ok {
		if v, path = obj[EnterpriseUserSchema], strings.TrimPrefix(rest, "."); path == "" {
			return v
		}
	}
	for _, p := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	return v
}

func orAbsent(s string) string {
	if s == "" {
		return "absent"
	}
	return s
}

func goldenJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}
