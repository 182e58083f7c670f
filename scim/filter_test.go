// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// filterUser is the resource the match table evaluates filters against.
const filterUser = `{
	"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
	"id": "2819c223-7f76-453a-919d-413861904646",
	"externalId": "jyoung",
	"userName": "Joy.Young@Contoso.com",
	"displayName": "Joy Young",
	"title": "Tour Guide",
	"active": true,
	"name": {"givenName": "Joy", "familyName": "Young"},
	"emails": [
		{"value": "joy@contoso.com", "type": "work", "primary": true},
		{"value": "joy@home.example", "type": "home"}
	],
	"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984", "manager": {"value": "boss-1"}},
	"urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User": {"postalCode": "98052", "floor": 3}
}`

func filterFixture(t testing.TB) *Resource {
	r := fixture(t, UserResourceType, filterUser)
	r.Attrs["meta"] = map[string]any{"resourceType": "User", "created": "2024-05-13T04:42:34.000Z", "lastModified": "2025-01-02T03:04:05.000Z"}
	return r
}

func TestFilterMatch(t *testing.T) {
	r := filterFixture(t)
	tests := []struct {
		filter string
		want   bool
	}{
		// Entra's matching queries.
		{`userName eq "Joy.Young@Contoso.com"`, true},
		{`userName eq "joy.young@contoso.com"`, true}, // userName is case-insensitive
		{`userName eq "00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`, false},
		{`externalId eq jyoung`, true},    // unquoted, as Entra's docs print it
		{`externalId eq "JYOUNG"`, false}, // externalId is caseExact
		{`emails[type eq "work"].value eq "JOY@contoso.com"`, true},
		{`emails[type eq "home"].value eq "joy@contoso.com"`, false},
		{`userName eq "joy.young@contoso.com" and emails[type eq "work"].value eq "joy@contoso.com"`, true},
		{`displayName eq "Joy Young"`, true},
		// Operators.
		{`userName ne "x"`, true},
		{`userName ne "joy.young@contoso.com"`, false},
		{`title co "guide"`, true},
		{`title sw "Tour"`, true},
		{`title ew "GUIDE"`, true},
		{`title ew "Tour"`, false},
		{`title gt "Tour"`, true},
		{`title lt "Tour"`, false},
		{`title ge "Tour Guide"`, true},
		{`title le "tour guide"`, true},
		{`title pr`, true},
		{`nickName pr`, false},
		// A complex attribute without a value sub-attribute is present
		// when one of its sub-attributes is.
		{`name pr`, true},
		{`not (name pr)`, false},
		{`addresses pr`, false},
		{`meta pr`, true},
		{`nickName eq null`, true},
		{`title ne null`, true},
		{`active eq true`, true},
		{`active eq "True"`, true}, // Entra's boolean strings
		{`active ne true`, false},
		{`meta.lastModified gt "2025-01-01T00:00:00Z"`, true},
		{`meta.lastModified lt "2025-01-01T00:00:00+01:00"`, false},
		{`meta.created ge "2024-05-13T04:42:34Z"`, true},
		{`meta.lastModified gt "2025-01-01t00:00:00z"`, true}, // RFC 3339 §5.6: "t" and "z" too
		// Multi-valued attributes: any value matches.
		{`emails.value eq "joy@home.example"`, true},
		{`emails co "contoso"`, true}, // a complex attribute compares by its value
		{`emails[type eq "work" and primary eq true]`, true},
		{`emails[type eq "home" and primary eq true]`, false},
		{`emails[not (type eq "work")]`, true},
		// Logic and grouping.
		{`title pr and (userName eq "x" or externalId eq "jyoung")`, true},
		{`not (active eq true)`, false},
		{`not(active eq false) and not (title pr)`, false},
		{`userName eq "x" or userName eq "y" or title sw "T"`, true},
		{`USERNAME EQ "joy.young@contoso.com" AND Title Pr`, true}, // names and operators in any case
		// Extensions.
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "boss-1"`, true},
		{`employeeNumber eq "701984"`, true}, // unqualified enterprise attribute
		// "." after the URN, as Entra without aadOptscim062020 writes it.
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.employeeNumber eq "701984"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.manager.value eq "boss-1"`, true},
		{`urn:ietf:params:scim:schemas:core:2.0:User.name.givenName eq "Joy"`, true},
		{`urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:postalCode eq "98052"`, true},
		{`urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:floor gt 2`, true},
		{`urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:floor lt 2`, false},
		// schemas, RFC 7644 §3.4.2.2's own example: the URIs the resource's
		// extensions imply, compared ignoring case.
		{`schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`, true},
		{`SCHEMAS EQ "URN:IETF:params:scim:schemas:core:2.0:user"`, true},
		{`schemas eq "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"`, true},
		{`schemas eq "urn:ietf:params:scim:schemas:core:2.0:Group"`, false},
		{`schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0"`, false},
		{`schemas ne "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`, false},
		{`schemas ne "urn:ietf:params:scim:schemas:core:2.0:Group"`, true},
		{`schemas co "ENTERPRISE"`, true},
		{`schemas co "Space"`, false},
		{`schemas sw "urn:ietf:params:scim:schemas:extension:custom"`, true},
		{`schemas ew ":group"`, false},
		{`schemas pr`, true},
		{`not (schemas pr)`, false},
		{`schemas eq null`, false},
		{`schemas ne null`, true},
		{`userName eq "joy.young@contoso.com" and not (schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")`, false},
		// Escapes inside strings.
		{`displayName eq "Joy \u0059oung"`, true},
		{`id eq "2819c223-7f76-453a-919d-413861904646"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(UserResourceType, tt.filter)
			if err != nil {
				t.Fatalf("ParseFilter: %v", err)
			}
			if got := f.Match(r); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterErrors(t *testing.T) {
	tests := []struct {
		filter string
		detail string
	}{
		{`bogus eq "x"`, `unknown attribute "bogus"`},
		{`name.nick eq "x"`, `unknown attribute "nick"`},
		{`userName zz "x"`, `unknown operator "zz"`},
		{`userName eq`, "expected a value"},
		{`userName`, "expected an operator"},
		{`(userName eq "a"`, `expected ")"`},
		{`userName eq "a")`, "unexpected"},
		{`userName eq "unterminated`, "unterminated string"},
		{`not userName eq "a"`, `expected "(" after not`},
		{`active gt true`, "supports only eq and ne"},
		{`active eq "maybe"`, "is a boolean"},
		{`meta.created gt "yesterday"`, "RFC 3339"},
		{`name eq "x"`, "is complex"},
		{`emails[type eq "work"`, `expected "]"`},
		{`emails[value[x eq "y"]]`, "cannot nest"},
		{`userName[value eq "x"]`, "not a complex attribute"},
		{`and`, `unknown attribute "and"`},
		{``, "expected an attribute"},
		{`userName co null`, "cannot compare with null"},
		{`schemas gt "urn"`, "compare it with eq, ne, co, sw, ew or pr, not gt"},
		{`schemas co null`, "cannot compare with null"},
		{`schemas[value eq "x"]`, "schemas is a list of URIs"},
		{`schemas.value eq "x"`, "schemas is a list of URIs"},
		{`schemas eq`, "expected a value after schemas eq"},
		{`schemas`, "expected an operator after schemas"},
		{`emails[schemas eq "x"]`, `unknown attribute "schemas"`},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:shoeSize eq "9"`, "shoeSize"},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.shoeSize eq "9"`, "shoeSize"},
		{`urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User.postalCode eq "9"`, "unknown schema"},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr`, "names a whole extension"},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User eq "x"`, "names a whole extension"},
		{strings.Repeat(`userName eq "a" or `, 120) + `userName eq "b"`, "more than 100 terms"},
		{strings.Repeat(`userName eq "a" or `, 100) + `userName eq "b"`, "more than 100 terms"}, // 101
		{strings.Repeat("(", 40) + `userName eq "a"` + strings.Repeat(")", 40), "deeper than 32"},
		{strings.Repeat("a", MaxFilterLength+1), "limit is 4096"},
		{"userName eq \"\xff\"", "not valid UTF-8"},
		// The links an answer adds are not stored: a filter on them
		// matched nothing while every answer showed them.
		{`meta.location pr`, "meta.location is a link the answer makes from the URL the client used, not stored, and no filter matches it; filter on id"},
		{`META.Location eq "https://x/scim/v2/t/Users/1"`, "filter on id"},
		{`groups.$ref pr`, "groups.$ref is a link the answer makes from the URL the client used, not stored, and no filter matches it; filter on groups.value"},
		{`groups[$REF co "/Groups/"]`, "filter on groups.value"},
		{`groups[type eq "direct"].$ref pr`, "filter on groups.value"},
		{`urn:ietf:params:scim:schemas:core:2.0:User:groups.$ref pr`, "filter on groups.value"},
	}
	for _, tt := range tests {
		name := tt.filter
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			_, err := ParseFilter(UserResourceType, tt.filter)
			assertSCIMError(t, err, ErrInvalidFilter, tt.detail)
		})
	}
}

// TestFilterOnAMembersLinkIsRefused: as a group's link in a user's groups
// (TestFilterErrors), a member's $ref is not stored, in a list's filter
// and in a PATCH path's alike.
func TestFilterOnAMembersLinkIsRefused(t *testing.T) {
	members, err := GroupResourceType.ParsePath("members")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`members.$ref pr`, `members[$ref ew "/Users/1" and type eq "User"]`, `members[type eq "User"].$Ref pr`} {
		_, err := ParseFilter(GroupResourceType, f)
		assertSCIMError(t, err, ErrInvalidFilter, "members.$ref is a link the answer makes from the URL the client used, not stored, and no filter matches it; filter on members.value")
	}
	_, err = ParseValueFilter(GroupResourceType, members, `$ref co "/Users/"`)
	assertSCIMError(t, err, ErrInvalidFilter, "filter on members.value")
}

// TestFilterOfAHundredTerms: a filter may have 100 terms (README), however
// they are joined; before, and, or and not counted as terms too, and 51
// comparisons joined by or were refused as "more than 100 terms".
func TestFilterOfAHundredTerms(t *testing.T) {
	for _, join := range []string{" or ", " and ", " or not "} {
		terms := make([]string, MaxFilterTerms)
		for i := range terms {
			terms[i] = fmt.Sprintf(`(userName eq "u%d")`, i)
		}
		f := strings.Join(terms, join)
		if len(f) > MaxFilterLength {
			t.Fatalf("the filter of %d terms is %d bytes", len(terms), len(f))
		}
		if _, err := ParseFilter(UserResourceType, f); err != nil {
			t.Errorf("%d terms joined by %q (%d bytes): %v", len(terms), join, len(f), err)
		}
	}
}

// TestFilterOfValuePathsCountsComparisons: a value path is not a term of
// its own, its comparisons are; 60 `emails[type eq "tN"]` joined by or
// were refused as "more than 100 terms" (a review).
func TestFilterOfValuePathsCountsComparisons(t *testing.T) {
	terms := make([]string, 60)
	for i := range terms {
		terms[i] = fmt.Sprintf(`emails[type eq "t%d"]`, i)
	}
	f := strings.Join(terms, " or ")
	if len(f) > MaxFilterLength {
		t.Fatalf("the filter is %d bytes", len(f))
	}
	if _, err := ParseFilter(UserResourceType, f); err != nil {
		t.Errorf("%d comparisons in value paths joined by or (%d bytes): %v", len(terms), len(f), err)
	}
	// 101 comparisons inside value paths are still too many.
	over := strings.Repeat(`emails[type eq "a" and value eq "b"] or `, 50) + `title eq "c"`
	if _, err := ParseFilter(UserResourceType, over); err == nil || !strings.Contains(err.Error(), "more than 100 terms") {
		t.Errorf("101 comparisons, 100 of them in value paths: %v, want more than 100 terms", err)
	}
}

func TestFilterEqualities(t *testing.T) {
	tests := []struct {
		rt     *ResourceType
		filter string
		want   []Equality
	}{
		{UserResourceType, `userName eq "Ann@X.com"`, []Equality{{"userName", "Ann@X.com"}}},
		{UserResourceType, `externalId eq jyoung`, []Equality{{"externalId", "jyoung"}}},
		{UserResourceType, `id eq "1"`, []Equality{{"id", "1"}}},
		{UserResourceType, `emails[type eq "work"].value eq "a@x"`, []Equality{{"emails.value", "a@x"}}},
		{UserResourceType, `emails[type eq "work" and value eq "a@x"]`, []Equality{{"emails.value", "a@x"}}},
		{UserResourceType, `emails.value eq "a@x"`, []Equality{{"emails.value", "a@x"}}},
		{UserResourceType, `userName eq "a" and emails[type eq "work"].value eq "b"`, []Equality{{"userName", "a"}, {"emails.value", "b"}}},
		{UserResourceType, `userName eq "a" and title co "x"`, []Equality{{"userName", "a"}}},
		{GroupResourceType, `displayName eq "Sales"`, []Equality{{"displayName", "Sales"}}},
		{GroupResourceType, `members.value eq "u1"`, []Equality{{"members.value", "u1"}}},
		{GroupResourceType, `members[value eq "u1"]`, []Equality{{"members.value", "u1"}}},
		{GroupResourceType, `id eq "g1" and members eq "u1"`, []Equality{{"id", "g1"}, {"members.value", "u1"}}},
		{UserResourceType, `emails eq "a@x"`, []Equality{{"emails.value", "a@x"}}},
		// Nothing implied: these need a scan.
		{UserResourceType, `userName eq "a" or userName eq "b"`, nil},
		{UserResourceType, `not (userName eq "a")`, nil},
		{UserResourceType, `userName ne "a"`, nil},
		{UserResourceType, `userName sw "a"`, nil},
		{UserResourceType, `title eq "a"`, nil},
		{UserResourceType, `emails[type eq "work"]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(tt.rt, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Equalities(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Equalities = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEqualitiesAreImplied checks the contract a store relies on: whenever a
// filter matches a resource, the resource satisfies every implied equality.
func TestEqualitiesAreImplied(t *testing.T) {
	r := filterFixture(t)
	for _, f := range []string{
		`userName eq "joy.young@contoso.com" and title pr`,
		`emails[type eq "work"].value eq "JOY@CONTOSO.COM"`,
		`externalId eq "jyoung" and (title pr or nickName pr)`,
	} {
		pf, err := ParseFilter(UserResourceType, f)
		if err != nil {
			t.Fatal(err)
		}
		if !pf.Match(r) {
			t.Fatalf("%s should match the fixture", f)
		}
		for _, eq := range pf.Equalities() {
			term, err := ParseFilter(UserResourceType, fmt.Sprintf("%s eq %q", eq.Path, eq.Value))
			if err != nil {
				t.Fatal(err)
			}
			if !term.Match(r) {
				t.Errorf("%s matches but its implied term %s = %q does not", f, eq.Path, eq.Value)
			}
		}
	}
}

func TestFilterReferences(t *testing.T) {
	f, err := ParseFilter(GroupResourceType, `displayName eq "a" or members[value eq "u"]`)
	if err != nil {
		t.Fatal(err)
	}
	if !f.References("members") {
		t.Error("References(members) = false for a filter on members")
	}
	if f.References("externalId") {
		t.Error("References(externalId) = true for a filter that does not read it")
	}
}

func TestValueFilter(t *testing.T) {
	members, err := GroupResourceType.ParsePath("members")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseValueFilter(GroupResourceType, members, `value eq "U1" or display co "ann"`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		member map[string]any
		want   bool
	}{
		{map[string]any{"value": "U1"}, true},
		{map[string]any{"value": "u1"}, false}, // members.value is caseExact
		{map[string]any{"value": "x", "display": "Joanne"}, true},
		{map[string]any{"value": "x"}, false},
	} {
		if got := f.MatchValue(tt.member); got != tt.want {
			t.Errorf("MatchValue(%v) = %v, want %v", tt.member, got, tt.want)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`,
		`externalId eq jyoung`,
		`displayName eq "displayName"`,
		`emails[type eq "work" and primary eq true].value eq "a@b"`,
		`not (active eq false) or (title co "x" and meta.lastModified gt "2011-05-13T04:42:34Z")`,
		`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m"`,
		`userName eq "a\"b\\c\u00e9"`,
		`(((userName pr)))`,
	} {
		f.Add(s)
	}
	r := filterFixture(f)
	f.Fuzz(func(t *testing.T, s string) {
		for _, rt := range ResourceTypes {
			pf, err := ParseFilter(rt, s)
			if err != nil {
				var se *Error
				if !asSCIM(err, &se) || se.Type != "invalidFilter" {
					t.Fatalf("ParseFilter(%q) returned %v, not an invalidFilter error", s, err)
				}
				continue
			}
			pf.Match(r)
			pf.Equalities()
		}
	})
}

func BenchmarkParseFilter(b *testing.B) {
	const entra = `userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseFilter(UserResourceType, entra); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseFilterWorkEmail(b *testing.B) {
	const entra = `emails[type eq "work"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseFilter(UserResourceType, entra); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFilterMatch(b *testing.B) {
	r := filterFixture(b)
	f, err := ParseFilter(UserResourceType, `userName eq "joy.young@contoso.com" and emails[type eq "work"].value eq "joy@contoso.com"`)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !f.Match(r) {
			b.Fatal("no match")
		}
	}
}
