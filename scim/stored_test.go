// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

const storedBase = "https://relay.example.com/scim/v2/acme"

// storedCorpus is users as a backend stores them: the users of every
// create Entra's documentation shows, and users holding what else the copy
// must get right (escapes, every multi-valued attribute, the manager,
// unknown extensions with nested values, no groups, no group, groups).
func storedCorpus(t testing.TB) []StoredResource {
	t.Helper()
	var bodies []string
	for _, s := range loadEntraSteps(t) {
		if s.Method == "POST" && strings.HasSuffix(s.Path, "/Users") && s.RequestBody != nil {
			bodies = append(bodies, *s.RequestBody)
		}
	}
	if len(bodies) < 2 {
		t.Fatalf("the Entra fixture has %d user creates", len(bodies))
	}
	bodies = append(bodies, baseUserJSON,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"Ünïcødé \"q\" \\ <b>&amp;","displayName":"日本語 😀","nickName":"","active":false,
		 "name":{"familyName":"Lee","givenName":"Ann","middleName":"M","honorificPrefix":"Dr","formatted":"Dr Ann M Lee"},
		 "phoneNumbers":[{"value":"+1 555","type":"work"},{"value":"+1 556","type":"mobile","primary":true}],
		 "addresses":[{"type":"work","streetAddress":"1 Main St","locality":"Town","region":"R","postalCode":"12345","country":"US","formatted":"1 Main St\nTown\t\u2028\u0001","primary":true}],
		 "ims":[{"value":"ann","type":"xmpp"}],"photos":[{"value":"https://example.com/a.jpg","type":"photo"}],
		 "entitlements":[{"value":"e1"}],"roles":[{"value":"admin","display":"Admin","type":"t","primary":true}],"x509Certificates":[{"value":"TUlJ"}],
		 "title":"Eng","userType":"Employee","preferredLanguage":"en-US","locale":"en-US","timezone":"Europe/Berlin","profileUrl":"https://example.com/ann",
		 "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"1","costCenter":"c","organization":"o","division":"d","department":"x","manager":{"value":"26118915-6090-4610-87e4-49d8ca9f808d"}},
		 "urn:ietf:params:scim:schemas:extension:zz:2.0:User":{"b":[1,2.5e3,-0,{"y":null,"x":true}],"a":{"é":"v","e":"w"}},
		 "urn:ietf:params:scim:schemas:extension:aa:2.0:User":{"n":12345678901234567890}}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bare"}`,
	)
	groups := [][]any{nil, {}, {
		map[string]any{"value": "0198f3c2-0000-7000-8000-000000000001", "display": "Sales", "type": "direct"},
		map[string]any{"value": "0198f3c2-0000-7000-8000-000000000002", "display": "Süpport \"2\"", "type": "indirect"},
	}}
	var out []StoredResource
	for i, body := range bodies {
		r, err := ParseResource(UserResourceType, []byte(body))
		if err != nil {
			t.Fatalf("body %d: %v\n%s", i, err, body)
		}
		id := fmt.Sprintf("0198f3c2-%04d-7000-8000-000000000000", i)
		r.Attrs["id"] = id
		r.Attrs["meta"] = map[string]any{"resourceType": "User", "created": "2026-12-01T10:00:00Z", "lastModified": "2026-12-01T10:00:01.5Z", "version": `W/"7"`}
		for _, g := range groups {
			out = append(out, StoredResource{Type: UserResourceType, ID: id, JSON: r.AppendJSON(nil), Groups: g})
		}
	}
	return out
}

func storedLinks(s StoredResource) *links {
	return &links{location: Location(storedBase, s.Type, s.ID), base: storedBase}
}

// decodedAnswer is what the handler writes for s when it decodes it.
func decodedAnswer(t testing.TB, s StoredResource) ([]byte, error) {
	t.Helper()
	res, err := s.Resource()
	if err != nil {
		return nil, err
	}
	jw := &jsonWriter{}
	c := &call{tenant: "acme", rt: s.Type, base: storedBase}
	if err := (&Handler{}).writeResource(context.Background(), jw, c, res, wholeResource); err != nil {
		t.Fatal(err)
	}
	return jw.buf, nil
}

// TestStoredAnswerIsTheDecodedAnswer: a stored user written straight into
// an answer gives the very bytes the handler writes for it decoded.
func TestStoredAnswerIsTheDecodedAnswer(t *testing.T) {
	for _, s := range storedCorpus(t) {
		want, err := decodedAnswer(t, s)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte(`[`)
		got, ok := appendStored(prefix, s, storedLinks(s))
		if !ok {
			t.Errorf("%s was not copied:\n%s", s.ID, s.JSON)
			continue
		}
		if string(got[1:]) != string(want) {
			t.Errorf("%s copied\n%s\nwant\n%s", s.ID, got[1:], want)
		}
		if string(got[:1]) != "[" {
			t.Errorf("the copy overwrote what its buffer held: %q", got[:1])
		}
	}
}

// storedMutations are stored users the copy must refuse, each for the
// reason its name gives, from a user holding a little of everything.
func storedMutations() map[string]string {
	const u = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"u1","meta":{"resourceType":"User","version":"W/\"1\""},"userName":"ann","name":{"givenName":"Ann"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"x"}}`
	swap := func(old, new string) string {
		if !strings.Contains(u, old) {
			panic(old)
		}
		return strings.Replace(u, old, new, 1)
	}
	return map[string]string{
		"members out of order":         swap(`"id":"u1","meta":{"resourceType":"User","version":"W/\"1\""}`, `"meta":{"resourceType":"User","version":"W/\"1\""},"id":"u1"`),
		"sub-attributes out of order":  swap(`"meta":{"resourceType":"User","version":"W/\"1\""}`, `"meta":{"version":"W/\"1\"","resourceType":"User"}`),
		"a location stored":            swap(`"version":`, `"location":"https://old/Users/u1","version":`),
		"groups stored":                swap(`"userName":"ann"`, `"userName":"ann","groups":[{"value":"g"}]`),
		"a password stored":            swap(`"name":`, `"password":"p","name":`),
		"an unknown sub-attribute":     swap(`{"givenName":"Ann"}`, `{"givenName":"Ann","shoeSize":"9"}`),
		"an unknown attribute":         swap(`"userName":"ann"`, `"userName":"ann","shoeSize":"9"`),
		"a name in another case":       swap(`"userName":"ann"`, `"UserName":"ann"`),
		"an escaped name":              swap(`"userName":"ann"`, `"user\u004eame":"ann"`),
		"a repeated name":              swap(`"userName":"ann"`, `"userName":"ann","userName":"bob"`),
		"schemas without an extension": swap(`,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]`, `]`),
		"schemas with one too many":    swap(`:2.0:User"]`, `:2.0:User","urn:x"]`),
		"schemas not first":            swap(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"u1",`, `{"id":"u1","schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],`),
		"another id":                   swap(`"id":"u1"`, `"id":"u2"`),
		"no id":                        swap(`"id":"u1",`, ``),
		"meta not an object":           swap(`"meta":{"resourceType":"User","version":"W/\"1\""}`, `"meta":"m"`),
		"an extension not an object":   swap(`{"department":"x"}`, `"x"`),
		"an extension in another case": swap(`:2.0:User":{"department"`, `:2.0:USER":{"department"`),
		"unknown extensions unsorted":  strings.Replace(swap(`{"department":"x"}}`, `{"department":"x"},"urn:b":{},"urn:a":{}}`), `:2.0:User"]`, `:2.0:User","urn:b","urn:a"]`, 1),
		"unsorted names in an unknown": strings.Replace(swap(`{"department":"x"}}`, `{"department":"x"},"urn:a":{"b":1,"a":2}}`), `:2.0:User"]`, `:2.0:User","urn:a"]`, 1),
		"invalid UTF-8":                swap(`"Ann"`, "\"A\xffn\""),
		"data after the object":        u + `{}`,
		"not JSON":                     u[:len(u)-1],
		"an array":                     `[` + u + `]`,
	}
}

// TestStoredAnswerRefusesWhatItCannotCopy: a stored user in any other form
// than appendJSON's is left to the decoding path, and the buffer is left as
// it was.
func TestStoredAnswerRefusesWhatItCannotCopy(t *testing.T) {
	for name, data := range storedMutations() {
		s := StoredResource{Type: UserResourceType, ID: "u1", JSON: []byte(data)}
		if got, ok := appendStored([]byte("x"), s, storedLinks(s)); ok || string(got) != "x" {
			t.Errorf("%s: copied (%v) as %s", name, ok, got)
		}
	}
	// Without its mutation, the same user is copied.
	const u = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"u1","meta":{"resourceType":"User","version":"W/\"1\""},"userName":"ann","name":{"givenName":"Ann"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"x"}}`
	s := StoredResource{Type: UserResourceType, ID: "u1", JSON: []byte(u)}
	if _, ok := appendStored(nil, s, storedLinks(s)); !ok {
		t.Fatal("the user the mutations start from is not copied")
	}
	sorted := StoredResource{Type: UserResourceType, ID: "u1", JSON: []byte(strings.Replace(strings.Replace(u, `{"department":"x"}}`, `{"department":"x"},"urn:a":{"a":2,"b":1},"urn:b":{}}`, 1), `:2.0:User"]`, `:2.0:User","urn:a","urn:b"]`, 1))}
	if _, ok := appendStored(nil, sorted, storedLinks(sorted)); !ok {
		t.Fatal("the user with its unknown extensions sorted is not copied")
	}
	// An extension attribute returned never (none of the built-in schemas
	// has one) is left out of the answer, so a record holding it is not
	// copied.
	secretive := &ResourceType{Name: "User", Endpoint: "/Users", Schema: UserResourceType.Schema, Extensions: []Extension{{Schema: newSchema("urn:example:secret:2.0:User", "Secret", "",
		attr("pin", String, "", writeOnlyNever), attr("note", String, ""))}}}
	for data, want := range map[string]bool{
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:example:secret:2.0:User"],"id":"u1","userName":"ann","urn:example:secret:2.0:User":{"note":"n"}}`:           true,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:example:secret:2.0:User"],"id":"u1","userName":"ann","urn:example:secret:2.0:User":{"pin":"1","note":"n"}}`: false,
	} {
		s := StoredResource{Type: secretive, ID: "u1", JSON: []byte(data)}
		if _, ok := appendStored(nil, s, storedLinks(s)); ok != want {
			t.Errorf("copied %v, want %v: %s", ok, want, data)
		}
	}
	// A Group's answer streams its members: never copied.
	g := StoredResource{Type: GroupResourceType, ID: "g1", JSON: []byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g1","displayName":"G"}`)}
	if _, ok := appendStored(nil, g, storedLinks(g)); ok {
		t.Fatal("a group was copied")
	}
}

// FuzzStoredAnswer: whatever a record holds, a copy, when it is made, says
// what the decoding path says, and is the same bytes when the record is in
// appendJSON's form.
func FuzzStoredAnswer(f *testing.F) {
	for _, s := range storedCorpus(f) {
		f.Add(s.JSON, s.Groups != nil)
	}
	for _, data := range storedMutations() {
		f.Add([]byte(data), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, withGroups bool) {
		var probe struct {
			ID any `json:"id"`
		}
		_ = json.Unmarshal(data, &probe)
		id, _ := probe.ID.(string)
		if id == "" {
			id = "u1"
		}
		s := StoredResource{Type: UserResourceType, ID: id, JSON: data}
		if withGroups {
			s.Groups = []any{map[string]any{"value": "g1", "display": "G", "type": "direct"}}
		}
		got, ok := appendStored(nil, s, storedLinks(s))
		if !ok {
			return
		}
		want, err := decodedAnswer(t, s)
		if err != nil {
			t.Fatalf("copied a record the decoding path refuses (%v): %q", err, data)
		}
		// Strict JSON (valid UTF-8, no name twice in an object), then the
		// same values, numbers compared as written.
		if !jsontext.Value(got).IsValid() {
			t.Fatalf("the copy is not strict JSON: %q", got)
		}
		var g, w any
		for _, v := range []struct {
			data []byte
			into *any
		}{{got, &g}, {want, &w}} {
			dec := json.NewDecoder(bytes.NewReader(v.data))
			dec.UseNumber()
			if err := dec.Decode(v.into); err != nil {
				t.Fatalf("%v: %q", err, v.data)
			}
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("copy\n%s\ndecoded\n%s", got, want)
		}
		if res, _ := UnmarshalResource(UserResourceType, data); string(res.AppendJSON(nil)) == string(data) && string(got) != string(want) {
			t.Fatalf("a record in appendJSON's form copied as\n%s\nnot\n%s", got, want)
		}
	})
}

// BenchmarkAnswerStoredUser answers an Entra user with two groups from its
// stored JSON: copied, and decoded then written as before.
func BenchmarkAnswerStoredUser(b *testing.B) {
	res := storedUser(b)
	groups := res.Attrs["groups"].([]any)
	delete(res.Attrs, "groups")
	s := StoredResource{Type: UserResourceType, ID: res.ID(), JSON: res.AppendJSON(nil), Groups: groups}
	l := storedLinks(s)
	b.Run("copied", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			if _, ok := appendStored(buf[:0], s, l); !ok {
				b.Fatal("not copied")
			}
		}
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		jw := &jsonWriter{buf: make([]byte, 0, 4096)}
		c := &call{tenant: "acme", rt: s.Type, base: storedBase}
		proj := wholeResource
		for b.Loop() {
			jw.buf = jw.buf[:0]
			res, err := s.Resource()
			if err != nil {
				b.Fatal(err)
			}
			if err := (&Handler{}).writeResource(context.Background(), jw, c, res, proj); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSchemaNamesNeedNoEscape: appendName writes the names of attributes,
// sub-attributes and schemas as they are, which is what appendString
// writes for each of them.
func TestSchemaNamesNeedNoEscape(t *testing.T) {
	var check func(a *Attribute)
	check = func(a *Attribute) {
		if got, want := string(appendName(nil, a.Name)), string(appendString(nil, a.Name)); got != want {
			t.Errorf("%s: %s, want %s", a.Name, got, want)
		}
		for _, sa := range a.SubAttributes {
			check(sa)
		}
	}
	for _, rt := range ResourceTypes {
		for _, m := range topLevelOf(rt).members {
			if got, want := string(appendName(nil, m.name)), string(appendString(nil, m.name)); got != want {
				t.Errorf("%s: %s, want %s", m.name, got, want)
			}
			if m.attr != nil {
				check(m.attr)
			}
			if m.ext != nil {
				for _, a := range m.ext.Attributes {
					check(a)
				}
			}
		}
	}
}
