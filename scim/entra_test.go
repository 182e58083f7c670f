// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// entraStep is one request of testdata/entra-requests.json, a copy of
// ../shared/reference/entra-requests.json: what Microsoft documents that
// Entra sends, in both aadOptscim062020 forms.
type entraStep struct {
	ID          string  `json:"id"`
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	RequestBody *string `json:"request_body"`
}

func loadEntraSteps(t testing.TB) []entraStep {
	t.Helper()
	data, err := os.ReadFile("testdata/entra-requests.json")
	if err != nil {
		t.Fatal(err)
	}
	var steps []entraStep
	if err := json.Unmarshal(data, &steps); err != nil {
		t.Fatal(err)
	}
	return steps
}

// Fixtures the PATCH bodies apply to: a provisioned user with a work email,
// a manager-less enterprise extension and a custom extension, and a group.
const (
	baseUserJSON = `{
		"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
		"id": "5171a35d82074e068ce2",
		"externalId": "58342554-38d6-4ec8-948c-50044d0a33fd",
		"userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
		"active": true,
		"name": {"givenName": "givenName", "familyName": "familyName", "formatted": "givenName familyName"},
		"emails": [{"value": "Test_User_11bb11bb@testuser.com", "type": "work", "primary": true}],
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "department": "Tour Operations"},
		"urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User": {"postalCode": "98052"}
	}`
	baseGroupJSON = `{
		"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
		"id": "a99962b9f99d4c4fac67",
		"externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
		"displayName": "displayName"
	}`
)

// fixture parses a resource and gives it the id and meta a backend would.
func fixture(t testing.TB, rt *ResourceType, body string) *Resource {
	t.Helper()
	r, err := ParseResource(rt, []byte(body))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(body), &raw)
	r.Attrs["id"] = raw["id"]
	r.Attrs["meta"] = map[string]any{"resourceType": rt.Name, "version": `W/"1"`}
	return r
}

// TestEntraRequests applies every request body Entra is documented to send
// and compares the resulting resource, changes and membership operations
// with testdata/entra/<step>.golden (go test -run TestEntraRequests -update
// rewrites them; review the diff).
func TestEntraRequests(t *testing.T) {
	steps := loadEntraSteps(t)
	n := 0
	for _, s := range steps {
		if s.RequestBody == nil {
			continue
		}
		n++
		t.Run(s.ID, func(t *testing.T) {
			rt := UserResourceType
			if strings.Contains(s.Path, "/Groups") {
				rt = GroupResourceType
			}
			var got []byte
			switch s.Method {
			case "POST":
				r, err := ParseResource(rt, []byte(*s.RequestBody))
				if err != nil {
					t.Fatalf("ParseResource: %v", err)
				}
				got = goldenJSON(t, map[string]any{"resource": r})
			case "PATCH":
				base := fixture(t, UserResourceType, baseUserJSON)
				if rt == GroupResourceType {
					base = fixture(t, GroupResourceType, baseGroupJSON)
				}
				before := base.AppendJSON(nil)
				p, err := ParsePatch(rt, []byte(*s.RequestBody))
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
				got = goldenJSON(t, map[string]any{"resource": u.Resource, "changes": u.Changes, "members": memberOpsJSON(u.Members)})
			default:
				t.Fatalf("unexpected method %s with a body", s.Method)
			}
			scimtest.Golden(t, filepath.Join("testdata", "entra", s.ID+".golden"), got)
		})
	}
	if n < 15 {
		t.Fatalf("only %d request bodies in testdata/entra-requests.json; the reference has 15", n)
	}
}

type memberOpJSON struct {
	Kind    string   `json:"kind"`
	Members []Member `json:"members,omitempty"`
	Filter  string   `json:"filter,omitempty"`
}

func memberOpsJSON(ops []MemberOp) []memberOpJSON {
	names := map[MemberOpKind]string{AddMembers: "add", RemoveMembers: "remove", RemoveAllMembers: "removeAll", RemoveMatchingMembers: "removeMatching"}
	out := []memberOpJSON{}
	for _, op := range ops {
		j := memberOpJSON{Kind: names[op.Kind], Members: op.Members}
		if op.Filter != nil {
			j.Filter = op.Filter.String()
		}
		out = append(out, j)
	}
	return out
}

func goldenJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}
