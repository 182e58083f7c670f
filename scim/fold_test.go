// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzFold: two strings fold alike exactly when strings.EqualFold calls
// them equal, so that an index keyed by Fold and the filter's
// case-insensitive eq give the same answers.
func FuzzFold(f *testing.F) {
	for _, p := range [][2]string{{"Ann", "aNN"}, {"\u212Aelvin", "kelvin"}, {"ſ", "S"}, {"Σ", "ς"}, {"ß", "SS"}, {"\xff", "\xfe"}, {"\uFFFD", "\xff"}, {"İ", "i"}, {"", ""}, {"Ä Big\u212Aey ſ", "ä bigkey S"}, {"é\xffZ", "É\xfez"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if (Fold(a) == Fold(b)) != strings.EqualFold(a, b) {
			t.Fatalf("Fold(%q)=%q, Fold(%q)=%q, EqualFold=%v", a, Fold(a), b, Fold(b), strings.EqualFold(a, b))
		}
		if !strings.EqualFold(Fold(a), a) {
			t.Fatalf("Fold(%q)=%q is not EqualFold to it", a, Fold(a))
		}
	})
}

func TestLookupLowerFindsWhatToLowerFinds(t *testing.T) {
	m := map[string]int{"username": 1, "emails": 2, "ünïcode": 3, strings.Repeat("x", 40): 4}
	for _, name := range []string{"userName", "USERNAME", "username", "Emails", "ÜNÏCODE", strings.Repeat("X", 40), "", "name", "user\x00Name", "\xff"} {
		want, wantOK := m[strings.ToLower(name)]
		got, ok := lookupLower(m, name)
		if got != want || ok != wantOK {
			t.Errorf("lookupLower(%q) = %d, %v; map[strings.ToLower] gives %d, %v", name, got, ok, want, wantOK)
		}
	}
	if n := testing.AllocsPerRun(100, func() { lookupLower(m, "userName") }); n != 0 {
		t.Errorf("looking up a short ASCII name made %v allocations, want 0", n)
	}
}

// TestUnknownExtensionKeysAreNotReadPerKey: setting each key of an unknown
// extension's object, from a POST or a PATCH, reads no other key, or n keys
// cost n² (a 3.3 MB POST took more than 11 CPU-minutes). Counted through
// readingAllKeys, not timed.
func TestUnknownExtensionKeysAreNotReadPerKey(t *testing.T) {
	const n = 2000
	const urn = "urn:ietf:params:scim:schemas:extension:Custom:2.0:User"
	keys := func(prefix string, sep string, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `,"%s%sK%d":%d`, prefix, sep, i, i)
		}
		return b.String()[1:]
	}
	stored := `{` + userSchemas + `,"userName":"a","` + urn + `":{` + keys("", "", n) + `}}`
	var ops strings.Builder
	for i := range MaxPatchOperations {
		fmt.Fprintf(&ops, `{"op":"add","path":"%s:new%d","value":%d},`, urn, i, i)
	}
	tests := []struct {
		name  string
		post  string // a body to parse, or
		patch string // operations to apply to stored
	}{
		{name: "POST with an extension object", post: `{"schemas":["` + UserSchema + `","` + urn + `"],"userName":"a","` + urn + `":{` + keys("", "", n) + `}}`},
		{name: "POST with URN-qualified keys", post: `{"schemas":["` + UserSchema + `","` + urn + `"],"userName":"a",` + keys(urn, ":", n) + `}`},
		{name: "path-less PATCH add", patch: `{"op":"add","value":{"` + urn + `":{` + keys("new", "", n) + `}}}`},
		{name: "PATCH replace of the extension", patch: `{"op":"replace","path":"` + urn + `","value":{` + keys("New", "", n) + `}}`},
		{name: "PATCH of many paths", patch: strings.TrimSuffix(ops.String(), ",")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := 0
			readingAllKeys = func(n int) { read += n }
			defer func() { readingAllKeys = nil }()
			if tt.post != "" {
				if _, err := ParseResource(UserResourceType, []byte(tt.post)); err != nil {
					t.Fatal(err)
				}
			} else {
				base := fixture(t, UserResourceType, stored)
				read = 0
				p, err := ParsePatch(UserResourceType, []byte(patchBody(tt.patch)))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.Apply(base); err != nil {
					t.Fatal(err)
				}
			}
			if read > n {
				t.Errorf("setting %d keys read %d keys one at a time; want at most %d", n, read, n)
			}
		})
	}
}

// TestUnknownExtensionKeySpellings: a key of an unknown extension is one
// attribute in any spelling, as findKeyFold reads it: given twice it is
// refused in a body, changed it keeps the spelling it has, and so is a
// member of an object inside it; keys stored in two spellings (which no
// request makes) are each found.
func TestUnknownExtensionKeySpellings(t *testing.T) {
	const urn = "urn:ietf:params:scim:schemas:extension:Custom:2.0:User"
	schemas := `"schemas":["` + UserSchema + `","` + urn + `"],"userName":"a"`
	posts := []struct{ name, body, want string }{
		{"two spellings in one object", `{` + schemas + `,"` + urn + `":{"a":1,"A":2}}`, "invalidValue given twice"},
		{"in the object and URN-qualified", `{` + schemas + `,"` + urn + `":{"a":1},"` + urn + `:A":2}`, "invalidValue given twice"},
		{"a null beside its other spelling", `{` + schemas + `,"` + urn + `":{"a":null,"A":2}}`, `{"A":2}`},
		{"two spellings of the URN", `{` + schemas + `,"` + urn + `":{"a":1},"` + strings.ToUpper(urn) + `":{"b":2}}`, `{"a":1,"b":2}`},
		// Inside an object too (until 2026-12-07 stored as given, so
		// which of the two counted depended on the reader).
		{"a sub-attribute in two spellings", `{` + schemas + `,"` + urn + `":{"badge":{"level":"1","LEVEL":"2"}}}`, "invalidValue given twice"},
		{"a sub-attribute in two spellings in an array", `{` + schemas + `,"` + urn + `":{"badges":[{"id":1},{"id":2,"ID":3}]}}`, "invalidValue given twice"},
	}
	for _, tt := range posts {
		t.Run("POST "+tt.name, func(t *testing.T) {
			r, err := ParseResource(UserResourceType, []byte(tt.body))
			if got := extensionOrError(r, urn, err); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	patches := []struct{ name, stored, ops, want string }{
		{"a path-less add in other spellings", `{"Foo":1}`, `{"op":"add","value":{"` + urn + `":{"FOO":2,"bar":3}}}`, `{"Foo":2,"bar":3}`},
		{"a replace in another spelling", `{"Foo":1}`, `{"op":"replace","path":"` + urn + `:fOO","value":5}`, `{"Foo":5}`},
		{"a replace of the extension with a null", `{"Foo":1,"b":2}`, `{"op":"replace","path":"` + urn + `","value":{"FOO":null}}`, `{"b":2}`},
		{"a remove then an add in another spelling", `{"Foo":1}`, `{"op":"remove","path":"` + urn + `:foo"},{"op":"add","path":"` + urn + `:FOO","value":7}`, `{"FOO":7}`},
		// Which of two spellings in one value would win is the order of
		// the keys: refused, as in a POST.
		{"the last key removed, then two spellings added", `{"Foo":1}`, `{"op":"remove","path":"` + urn + `:foo"},{"op":"add","value":{"` + urn + `":{"foo":8,"FOO":9}}}`, "invalidValue given twice"},
		{"a sub-attribute replaced in another spelling", `{"badge":{"level":"1"}}`, `{"op":"replace","path":"` + urn + `:badge.Level","value":"2"}`, `{"badge":{"level":"2"}}`},
		{"a sub-attribute removed in another spelling", `{"badge":{"level":"1","x":1}}`, `{"op":"remove","path":"` + urn + `:badge.LEVEL"}`, `{"badge":{"x":1}}`},
		{"a new sub-attribute keeps its spelling", `{"badge":{"level":"1"}}`, `{"op":"add","path":"` + urn + `:badge.Rank","value":3}`, `{"badge":{"Rank":3,"level":"1"}}`},
		// An object added onto one holding the member in another spelling
		// changes it (until 2026-12-07 both were kept, the old value too).
		{"an object added, its member held in another spelling", `{"badge":{"level":"1"}}`, `{"op":"add","path":"` + urn + `:badge","value":{"Level":"2","rank":3}}`, `{"badge":{"level":"2","rank":3}}`},
		{"a value replaced with two spellings in one object", `{"badge":{"level":"1"}}`, `{"op":"replace","path":"` + urn + `:badge","value":{"level":"2","Level":"3"}}`, "invalidValue given twice"},
		{"the extension removed, then added to", `{"Foo":1}`, `{"op":"remove","path":"` + urn + `"},{"op":"add","path":"` + urn + `:foo","value":4}`, `{"foo":4}`},
		{"keys stored in two spellings, both removed", `{"ab":1,"AB":2,"c":3}`, `{"op":"remove","path":"` + urn + `:Ab"},{"op":"remove","path":"` + urn + `:aB"}`, `{"c":3}`},
		{"keys stored in two spellings, one set exactly", `{"ab":1,"AB":2}`, `{"op":"replace","path":"` + urn + `:AB","value":5}`, `{"AB":5,"ab":1}`},
	}
	for _, tt := range patches {
		t.Run("PATCH "+tt.name, func(t *testing.T) {
			stored, err := UnmarshalResource(UserResourceType, []byte(`{`+schemas+`,"`+urn+`":`+tt.stored+`}`))
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePatch(UserResourceType, []byte(patchBody(tt.ops)))
			if err != nil {
				t.Fatal(err)
			}
			var r *Resource
			u, err := p.Apply(stored)
			if err == nil {
				r = u.Resource
			}
			if got := extensionOrError(r, urn, err); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// extensionOrError gives the object r holds for urn as JSON, or err's type
// and whether it says "given twice".
func extensionOrError(r *Resource, urn string, err error) string {
	if err != nil {
		var se *Error
		if asSCIM(err, &se) && strings.Contains(se.Detail, "given twice") {
			return se.Type + " given twice"
		}
		return err.Error()
	}
	for k, v := range r.Attrs {
		if strings.EqualFold(k, urn) {
			out, _ := json.Marshal(v)
			return string(out)
		}
	}
	return "no extension"
}

// TestExtensionSchemasPerResourceAreBounded: a resource holds at most
// maxTopLevel top-level attributes and extension objects, so that finding
// one (every top-level key read) cannot grow with the square of thousands
// a body names; past it a POST or a PATCH is 400 invalidValue naming the
// bound, and below it every extension is kept.
func TestExtensionSchemasPerResourceAreBounded(t *testing.T) {
	exts := func(n int) (schemas, objects string) {
		var s, o strings.Builder
		for i := range n {
			urn := fmt.Sprintf("urn:okta:app%d:1.0:user:custom", i)
			fmt.Fprintf(&s, `,%q`, urn)
			fmt.Fprintf(&o, `,%q:{"k":%d}`, urn, i)
		}
		return s.String(), o.String()
	}
	post := func(n int) (*Resource, int, error) {
		s, o := exts(n)
		read := 0
		readingAllKeys = func(n int) { read += n }
		defer func() { readingAllKeys = nil }()
		r, err := ParseResource(UserResourceType, []byte(`{"schemas":["`+UserSchema+`"`+s+`],"userName":"a"`+o+`}`))
		return r, read, err
	}
	r, read, err := post(200)
	if err != nil {
		t.Fatalf("200 extensions: %v", err)
	}
	kept := 0
	for k := range r.Attrs {
		if strings.HasPrefix(k, "urn:") {
			kept++
		}
	}
	if kept != 200 {
		t.Fatalf("%d of 200 extensions kept", kept)
	}
	if read > 200*maxTopLevel {
		t.Fatalf("200 extensions read %d keys one at a time", read)
	}
	_, read, err = post(5000)
	if !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d top-level attributes", maxTopLevel)) {
		t.Fatalf("5,000 extensions: %v; want 400 invalidValue naming the bound", err)
	}
	if read > (maxTopLevel+1)*maxTopLevel {
		t.Fatalf("5,000 extensions read %d keys one at a time before the refusal", read)
	}
	// A PATCH adding extensions one path at a time meets the same bound.
	stored, _, err := post(maxTopLevel - 2) // userName and the new extensions fill it
	if err != nil {
		t.Fatal(err)
	}
	var ops strings.Builder
	for i := range 5 {
		fmt.Fprintf(&ops, `{"op":"add","path":"urn:ietf:params:scim:schemas:extension:More%d:2.0:User:k","value":%d},`, i, i)
	}
	p, err := ParsePatch(UserResourceType, []byte(`{"schemas":["`+PatchOpSchema+`"],"Operations":[`+strings.TrimSuffix(ops.String(), ",")+`]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(stored); !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), "top-level attributes") {
		t.Fatalf("a PATCH past the bound: %v; want 400 invalidValue", err)
	}
}
