// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"os"
	"testing"
)

// entraStep is one request of testdata/entra-requests.json: what Microsoft
// documents that Entra sends, in both aadOptscim062020 forms. The external
// tests read the whole fixture with scimtest.LoadEntraSteps; the internal
// ones (fuzz seeds, benchmarks) need only the requests.
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
