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
		"`+custom+`":{"postalCode":"98052","floor":3,"remote":true,"badge":"TRUE"}}`)
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
