// SPDX-License-Identifier: Apache-2.0

package scim

import "testing"

// TestFilterUnknownAttributeTypes: an attribute no schema here defines (of
// an unknown extension) holds whatever JSON type its client sent, and a
// filter's value is typed by its text, so the two are compared as the
// filter's type: postalCode eq 98052, unquoted, finds the "98052" Entra
// stores, and floor eq "3" the number 3. They used to match only when the
// JSON types agreed.
func TestFilterUnknownAttributeTypes(t *testing.T) {
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	r := fixture(t, UserResourceType, `{`+userSchemas+`,"id":"u1","userName":"ann",
		"`+custom+`":{"postalCode":"98052","floor":3,"remote":true,"badge":"TRUE","empId":9007199254740993,
		"huge":2e400,"inf":"Infinity","hex":"0x1p4"}}`)
	tests := []struct {
		filter string
		want   bool
	}{
		{`postalCode eq 98052`, true},
		{`postalCode eq "98052"`, true},
		{`postalCode ne 98052`, false},
		{`postalCode gt 98051`, true},
		{`postalCode eq 98053`, false},
		{`postalCode eq true`, false},
		{`floor eq "3"`, true},
		{`floor sw "3"`, true},
		{`floor eq 3`, true},
		{`floor eq "three"`, false},
		{`remote eq "True"`, true},
		{`remote eq true`, true},
		{`badge eq true`, true},
		{`badge eq false`, false},
		// Numbers by their value, exactly: as float64, 9007199254740993
		// was 9007199254740992 (until 2026-12-07).
		{`empId eq 9007199254740993`, true},
		{`empId eq 9007199254740992`, false},
		{`empId gt 9007199254740992`, true},
		{`empId le 9.007199254740992e15`, false},
		{`empId lt 9007199254740993.5`, true},
		// Past float64's range a number still (1e400 compared as text);
		// what no JSON number writes is not one (Go's ParseFloat reads
		// "Infinity" and "0x1p4").
		{`huge gt 1e400`, true},
		{`huge lt 1e400`, false},
		{`floor lt 1e400`, true},
		{`inf gt 5`, false},
		{`hex eq 16`, false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(UserResourceType, custom+":"+tt.filter)
			if err != nil {
				t.Fatalf("ParseFilter: %v", err)
			}
			if got := f.Match(r); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestPatchValueFilterComparesNumbersExactly: a PATCH's value filter
// compares numbers as the list's filter does: removing the element whose
// id is 9007199254740992 removed 9007199254740993's too (until
// 2026-12-07), an element the request did not name.
func TestPatchValueFilterComparesNumbersExactly(t *testing.T) {
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	stored := fixture(t, UserResourceType, `{`+userSchemas+`,"id":"u1","userName":"ann",
		"`+custom+`":{"accounts":[{"id":9007199254740993,"name":"keep"},{"id":9007199254740992,"name":"drop"}]}}`)
	p, err := ParsePatch(UserResourceType, []byte(patchBody(`{"op":"remove","path":"`+custom+`:accounts[id eq 9007199254740992]"}`)))
	if err != nil {
		t.Fatal(err)
	}
	u, err := p.Apply(stored)
	if err != nil {
		t.Fatal(err)
	}
	if got := extensionOrError(u.Resource, custom, nil); got != `{"accounts":[{"id":9007199254740993,"name":"keep"}]}` {
		t.Errorf("after removing accounts[id eq 9007199254740992]: %s", got)
	}
}
