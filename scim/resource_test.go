// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const userSchemas = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]`

func TestParseResource(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // the canonical JSON
	}{
		{
			name: "attribute names in any case come out canonical",
			body: `{` + userSchemas + `,"USERNAME":"ann@x.com","Name":{"GIVENNAME":"Ann"},"EMAILS":[{"VALUE":"ann@x.com","Type":"work"}]}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann@x.com","name":{"givenName":"Ann"},"emails":[{"value":"ann@x.com","type":"work"}]}`,
		},
		{
			name: "True and False strings become booleans",
			body: `{` + userSchemas + `,"userName":"a","active":"False","emails":[{"value":"a@x","primary":"True"}]}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","active":false,"emails":[{"value":"a@x","primary":true}]}`,
		},
		{
			name: "nulls and empty arrays are unassigned",
			body: `{` + userSchemas + `,"userName":"a","title":null,"roles":[],"addresses":null,"name":{"givenName":null}}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a"}`,
		},
		{
			name: "read-only id, meta and groups are ignored; password is discarded",
			body: `{` + userSchemas + `,"id":"x","meta":{"resourceType":"User"},"groups":[{"value":"g"}],"userName":"a","password":"hunter2"}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a"}`,
		},
		{
			name: "manager as a bare string",
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":"m1"}}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m1"}}}`,
		},
		{
			name: "manager as a one-element array, displayName is the server's",
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":[{"value":"m1","displayName":"Boss"}]}}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m1"}}}`,
		},
		{
			name: "enterprise attributes URN-qualified at the top level or unqualified",
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"7","department":"Ops"}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"7","department":"Ops"}}`,
		},
		{
			name: `"." after a known schema's URN reads as ":" (Entra without aadOptscim062020)`,
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.department":"Sales","urn:ietf:params:scim:schemas:core:2.0:User.title":"Boss"}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","title":"Boss","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales"}}`,
		},
		{
			name: "an unknown extension is kept as sent (SAFE's custom attributes)",
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User":{"postalCode":"98052","n":12345678901234567890}}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User":{"n":12345678901234567890,"postalCode":"98052"}}`,
		},
		{
			name: "an unknown extension attribute URN-qualified at the top level",
			body: `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:postalCode":"98052"}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User":{"postalCode":"98052"}}`,
		},
		{
			name: "a single object where a list belongs is one element",
			body: `{` + userSchemas + `,"userName":"a","emails":{"value":"a@x"}}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","emails":[{"value":"a@x"}]}`,
		},
		{
			name: "unicode and control characters survive outside identifiers",
			body: `{` + userSchemas + `,"userName":"zoë","title":"zoë\u2028\"q\"\\\n"}`,
			want: `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"zoë","title":"zoë\u2028\"q\"\\\n"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseResource(UserResourceType, []byte(tt.body))
			if err != nil {
				t.Fatalf("ParseResource: %v", err)
			}
			got := string(r.AppendJSON(nil))
			if got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("output is not valid JSON: %s", got)
			}
		})
	}
}

func TestParseResourceErrors(t *testing.T) {
	tests := []struct {
		name   string
		rt     *ResourceType
		body   string
		kind   *Error
		detail string
	}{
		{"malformed JSON", UserResourceType, `{"userName":`, ErrInvalidSyntax, "not valid JSON"},
		{"trailing data", UserResourceType, `{` + userSchemas + `,"userName":"a"} {}`, ErrInvalidSyntax, "after the JSON object"},
		{"not an object", UserResourceType, `["a"]`, ErrInvalidSyntax, "must be a JSON object"},
		{"no schemas", UserResourceType, `{"userName":"a"}`, ErrInvalidSyntax, "no schemas attribute"},
		{"wrong core schema", UserResourceType, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"a"}`, ErrInvalidSyntax, "must include urn:ietf:params:scim:schemas:core:2.0:User"},
		{"schemas not an array", UserResourceType, `{"schemas":"x","userName":"a"}`, ErrInvalidSyntax, "array"},
		{"missing userName", UserResourceType, `{` + userSchemas + `,"displayName":"a"}`, ErrInvalidValue, "userName is required"},
		{"blank userName", UserResourceType, `{` + userSchemas + `,"userName":"  "}`, ErrInvalidValue, "userName is required"},
		{"missing displayName", GroupResourceType, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]}`, ErrInvalidValue, "displayName is required"},
		{"number for a string", UserResourceType, `{` + userSchemas + `,"userName":42}`, ErrInvalidValue, "userName must be a string, got a number"},
		{"object for active", UserResourceType, `{` + userSchemas + `,"userName":"a","active":{"x":1}}`, ErrInvalidValue, "active must be a boolean, got an object"},
		{"string that is not a boolean", UserResourceType, `{` + userSchemas + `,"userName":"a","active":"yes"}`, ErrInvalidValue, "active must be a boolean"},
		{"string for a complex value", UserResourceType, `{` + userSchemas + `,"userName":"a","name":"Ann"}`, ErrInvalidValue, "name must be a JSON object"},
		{"two values for a single complex", UserResourceType, `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":[{"value":"a"},{"value":"b"}]}}`, ErrInvalidValue, "single-valued"},
		{"same attribute twice", UserResourceType, `{` + userSchemas + `,"userName":"a","USERNAME":"b"}`, ErrInvalidValue, "given twice"},
		{"same name twice", UserResourceType, `{` + userSchemas + `,"userName":"a","active":"False","active":true}`, ErrInvalidSyntax, `the name "active" is given twice`},
		{"same name twice in a complex value", UserResourceType, `{` + userSchemas + `,"userName":"a","name":{"givenName":"A","givenName":"B"}}`, ErrInvalidSyntax, `the name "givenName" is given twice`},
		{"extension that is not an object", UserResourceType, `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"x"}`, ErrInvalidValue, "must be a JSON object"},
		{"an unknown schema URN without the resource type's anchor", UserResourceType, `{` + userSchemas + `,"userName":"a","urn:a:b:c":"x"}`, ErrInvalidValue, "unknown schema"},
		{`"." after an unknown extension's URN is not read as ":"`, UserResourceType, `{` + userSchemas + `,"userName":"a","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User.postalCode":"x"}`, ErrInvalidValue, "unknown schema"},
		{"two primary emails (RFC 7643 §2.4)", UserResourceType, `{` + userSchemas + `,"userName":"a","emails":[{"value":"a@x","primary":true},{"value":"b@x","primary":true}]}`, ErrInvalidValue, "emails has 2 values marked primary"},
		{"two primary phone numbers (RFC 7643 §2.4)", UserResourceType, `{` + userSchemas + `,"userName":"a","phoneNumbers":[{"value":"1","type":"work","primary":"True"},{"value":"2","type":"mobile","primary":true}]}`, ErrInvalidValue, "phoneNumbers has 2 values marked primary"},
		{"empty userName", UserResourceType, `{` + userSchemas + `,"userName":""}`, ErrInvalidValue, "userName is required"},
		{"bad base64 certificate", UserResourceType, `{` + userSchemas + `,"userName":"a","x509Certificates":[{"value":"%%%"}]}`, ErrInvalidValue, "base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseResource(tt.rt, []byte(tt.body))
			assertSCIMError(t, err, tt.kind, tt.detail)
		})
	}
}

// assertSCIMError checks that err is a SCIM error of kind whose detail contains detail.
func assertSCIMError(t *testing.T, err error, kind *Error, detail string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d %s containing %q", kind.Status, kind.Type, detail)
	}
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("got %T %v, want a *scim.Error", err, err)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("got %d %q (%s), want %d %q", se.Status, se.Type, se.Detail, kind.Status, kind.Type)
	}
	if !strings.Contains(se.Detail, detail) {
		t.Fatalf("detail %q does not contain %q", se.Detail, detail)
	}
}

func TestResourceAccessors(t *testing.T) {
	r, err := ParseResource(UserResourceType, []byte(`{`+userSchemas+`,"userName":"a","active":false,
		"emails":[{"value":"home@x","type":"home"},{"value":"prim@x","primary":true},{"value":"work@x","type":"Work"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.WorkEmail(); got != "work@x" {
		t.Errorf("WorkEmail = %q, want work@x", got)
	}
	if got := strings.Join(r.Emails(), ","); got != "home@x,prim@x,work@x" {
		t.Errorf("Emails = %q", got)
	}
	if active, set := r.Active(); active || !set {
		t.Errorf("Active = %v, %v; want false, true", active, set)
	}
	noWork, _ := ParseResource(UserResourceType, []byte(`{`+userSchemas+`,"userName":"a","emails":[{"value":"h@x"},{"value":"p@x","primary":true}]}`))
	if got := noWork.WorkEmail(); got != "p@x" {
		t.Errorf("WorkEmail without a work email = %q, want the primary p@x", got)
	}
	twoWork, _ := ParseResource(UserResourceType, []byte(`{`+userSchemas+`,"userName":"a",
		"emails":[{"value":"p@x","primary":true},{"value":"w1@x","type":"work"},{"value":"h@x","type":"home"},{"value":"W2@x","type":"WORK"}]}`))
	if got := strings.Join(twoWork.WorkEmails(), ","); got != "w1@x,W2@x" {
		t.Errorf("WorkEmails = %q, want every email typed work: w1@x,W2@x", got)
	}
	if got := strings.Join(noWork.WorkEmails(), ","); got != "p@x" {
		t.Errorf("WorkEmails without a work email = %q, want the primary p@x alone", got)
	}
	none, _ := ParseResource(UserResourceType, []byte(`{`+userSchemas+`,"userName":"a"}`))
	if got := none.WorkEmails(); got != nil || none.WorkEmail() != "" {
		t.Errorf("WorkEmails without emails = %q, want none", got)
	}
	clone := r.Clone()
	clone.Attrs["emails"].([]any)[0].(map[string]any)["value"] = "changed"
	if r.Emails()[0] != "home@x" {
		t.Error("Clone shares nested values with the original")
	}
}

// asSCIM is errors.As for *Error, for fuzz targets that must not t.Fatal through helpers.
func asSCIM(err error, target **Error) bool { return errors.As(err, target) }

// TestExtensionsListedInSchemas: a body's schemas lists every schema the
// resource uses (RFC 7643 §3), so a top-level key equal to a listed URN
// that holds an object is that whole extension, kept under exactly that
// URN whatever its form. Okta lets an admin give custom attributes any
// namespace ("urn:ietf:params:scim:schemas:custom:Space" in its own
// guide); before, one not ending in :User refused the whole user, and one
// with ":user:" inside was cut there and stored under another key. A key
// that schemas does not list keeps the :User rule.
func TestExtensionsListedInSchemas(t *testing.T) {
	const (
		core  = `"urn:ietf:params:scim:schemas:core:2.0:User"`
		space = "urn:ietf:params:scim:schemas:custom:Space"
		okta  = "urn:okta:app:1.0:user:custom"
	)
	tests := []struct {
		name string
		body string
		want string // the canonical JSON, or the error's detail after "error: "
	}{
		{
			name: "Okta's custom namespace",
			body: `{"schemas":[` + core + `,"` + space + `"],"userName":"n1@x.com","` + space + `":{"custom1":"v"}}`,
			want: `{"schemas":[` + core + `,"` + space + `"],"userName":"n1@x.com","` + space + `":{"custom1":"v"}}`,
		},
		{
			name: `a namespace with ":user:" inside is not cut there`,
			body: `{"schemas":[` + core + `,"` + okta + `"],"userName":"a","` + okta + `":{"favColor":"blue"}}`,
			want: `{"schemas":[` + core + `,"` + okta + `"],"userName":"a","` + okta + `":{"favColor":"blue"}}`,
		},
		{
			name: "listed in another case, kept under the key as sent",
			body: `{"schemas":[` + core + `,"URN:IETF:PARAMS:SCIM:SCHEMAS:CUSTOM:SPACE"],"userName":"a","` + space + `":{"custom1":"v","n":null}}`,
			want: `{"schemas":[` + core + `,"` + space + `"],"userName":"a","` + space + `":{"custom1":"v"}}`,
		},
		{
			name: "beside Entra's form and the enterprise extension",
			body: `{"schemas":[` + core + `,"` + space + `"],"userName":"a","` + space + `":{"custom1":"v"},` +
				`"urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User:postalCode":"98052","department":"Ops"}`,
			want: `{"schemas":[` + core + `,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","` + space + `","urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"],"userName":"a",` +
				`"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Ops"},"` + space + `":{"custom1":"v"},"urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User":{"postalCode":"98052"}}`,
		},
		{
			name: "a known extension listed is still read by its schema",
			body: `{"schemas":[` + core + `,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":"m1","shoeSize":"9"}}`,
			want: `{"schemas":[` + core + `,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":"a","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m1"}}}`,
		},
		{
			// Until 2026-12-04 the URN-qualified key was read by the
			// :User rule alone: "unknown schema", or cut at ":user:".
			name: "an attribute by a key its listed URN qualifies",
			body: `{"schemas":[` + core + `,"` + space + `","` + okta + `"],"userName":"a","` + space + `:badge":"B1","` + okta + `:favColor":"blue"}`,
			want: `{"schemas":[` + core + `,"` + space + `","` + okta + `"],"userName":"a","` + space + `":{"badge":"B1"},"` + okta + `":{"favColor":"blue"}}`,
		},
		{
			name: "not listed: the :User rule",
			body: `{"schemas":[` + core + `],"userName":"a","` + space + `":{"custom1":"v"}}`,
			want: "error: unknown schema",
		},
		{
			name: "listed, but not an object",
			body: `{"schemas":[` + core + `,"` + space + `"],"userName":"a","` + space + `":"v"}`,
			want: "error: extension " + space + " must be a JSON object",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseResource(UserResourceType, []byte(tt.body))
			if detail, ok := strings.CutPrefix(tt.want, "error: "); ok {
				assertSCIMError(t, err, ErrInvalidValue, detail)
				return
			}
			if err != nil {
				t.Fatalf("ParseResource: %v", err)
			}
			if got := string(r.AppendJSON(nil)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			// What the relay writes reads back the same (GET, then a PUT of it).
			back, err := ParseResource(UserResourceType, r.AppendJSON(nil))
			if err != nil || string(back.AppendJSON(nil)) != tt.want {
				t.Errorf("written and read back: %v %s", err, back.AppendJSON(nil))
			}
		})
	}
}

// TestBinaryAndReferenceValuesAreCaseExact: RFC 7643 §2.3.6 "A binary is
// case exact" and §2.3.7 "A reference is case exact" (erratum 6001 asks
// §8.7.1's listing to say so). Two certificates, or two photo URLs, that
// differ only in case are different values: a create keeps both, a
// filter does not find one by the other, a PATCH removing one leaves the
// other, and /Schemas says so.
func TestBinaryAndReferenceValuesAreCaseExact(t *testing.T) {
	// "QUJD" is base64 of "ABC"; "qujd" is another, equally valid, base64 text.
	r, err := ParseResource(UserResourceType, []byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u",
		"x509Certificates":[{"value":"QUJD"},{"value":"qujd"}],
		"photos":[{"value":"https://cdn.example.com/p/Ab.png","type":"photo"},{"value":"https://cdn.example.com/p/aB.png","type":"photo"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"x509Certificates", "photos"} {
		if list, _ := r.Attrs[name].([]any); len(list) != 2 {
			t.Errorf("a create with two %s differing in case kept %v: one was merged away", name, r.Attrs[name])
		}
	}

	u := fixture(t, UserResourceType, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u",
		"x509Certificates":[{"value":"qujd"}],"profileUrl":"https://example.com/Ann"}`)
	for _, filter := range []string{`x509Certificates.value eq "QUJD"`, `profileUrl eq "https://example.com/ann"`} {
		f, err := ParseFilter(UserResourceType, filter)
		if err != nil {
			t.Fatal(err)
		}
		if f.Match(u) {
			t.Errorf("%s matches a user who holds the value in another case", filter)
		}
	}
	p, err := ParsePatch(UserResourceType, []byte(patchBody(`{"op":"remove","path":"x509Certificates[value eq \"QUJD\"]"}`)))
	if err != nil {
		t.Fatal(err)
	}
	up, err := p.Apply(u)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := up.Resource.Attrs["x509Certificates"]; !ok {
		t.Error(`PATCH remove x509Certificates[value eq "QUJD"] removed the certificate "qujd"`)
	}

	for _, a := range []*Attribute{
		UserResourceType.Schema.Attribute("x509Certificates").Sub("value"),
		UserResourceType.Schema.Attribute("photos").Sub("value"),
		UserResourceType.Schema.Attribute("profileUrl"),
	} {
		if !a.CaseExact {
			t.Errorf("/Schemas says %s (%s) is not case exact", a.Name, a.Type)
		}
	}
}
