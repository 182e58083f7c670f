// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
)

// TestProjectionAnswers: attributes naming only unknown attributes return
// only what is always returned, as when an unknown name comes with a known
// one; a sub-attribute projection leaves out the elements lacking it, and
// the attribute when none has it. Each holds for a resource read by id,
// for a list page the backend answers with stored resources (userName eq
// alone), and for a group's streamed members.
func TestProjectionAnswers(t *testing.T) {
	ts := newTestServer(t, Options{})
	uid := ts.do("POST", "/Users", fmt.Sprintf(`{"schemas":[%q],"userName":"ann","title":"t",
		"emails":[{"value":"a@x","type":"work"},{"value":"b@x","display":"B"},{"value":"c@x"}],
		"phoneNumbers":[{"value":"1"}]}`, UserSchema)).want(t, 201).str("id")
	bob := ts.do("POST", "/Users", fmt.Sprintf(`{"schemas":[%q],"userName":"bob"}`, UserSchema)).want(t, 201).str("id")
	gid := ts.do("POST", "/Groups", fmt.Sprintf(`{"schemas":[%q],"displayName":"g","members":[{"value":%q},{"value":%q,"display":"Bob"}]}`, GroupSchema, uid, bob)).want(t, 201).str("id")
	one := func(r response) map[string]any {
		if res, ok := r.json["Resources"].([]any); ok {
			if len(res) != 1 {
				t.Fatalf("%d resources: %s", len(res), r.body)
			}
			return res[0].(map[string]any)
		}
		return r.json
	}
	byName := "?filter=" + url.QueryEscape(`userName eq "ann"`) + "&attributes="
	for _, tt := range []struct {
		path   string
		keys   []string
		emails string // JSON of the emails answered, "" for none
	}{
		{"/Users/" + uid + "?attributes=nosuch", []string{"id", "schemas"}, ""},
		{"/Users" + byName + "nosuch", []string{"id", "schemas"}, ""},
		{"/Users/" + uid + "?attributes=nosuch,other", []string{"id", "schemas"}, ""},
		{"/Users/" + uid + "?attributes=nosuch,userName", []string{"id", "schemas", "userName"}, ""},
		{"/Users/" + uid + "?attributes=emails.display", []string{"emails", "id", "schemas"}, `[{"display":"B"}]`},
		{"/Users" + byName + "emails.display", []string{"emails", "id", "schemas"}, `[{"display":"B"}]`},
		{"/Users/" + uid + "?attributes=emails.display,emails.type", []string{"emails", "id", "schemas"}, `[{"type":"work"},{"display":"B"}]`},
		{"/Users/" + uid + "?attributes=phoneNumbers.display", []string{"id", "schemas"}, ""},
		{"/Users/" + uid + "?attributes=emails.primary,userName", []string{"id", "schemas", "userName"}, ""},
	} {
		res := one(ts.do("GET", tt.path, "").want(t, 200))
		if got := slices.Sorted(maps.Keys(res)); !slices.Equal(got, tt.keys) {
			t.Errorf("%s: keys %v, want %v", tt.path, got, tt.keys)
		}
		got := ""
		if e, ok := res["emails"]; ok {
			got = jsonString(t, e)
		}
		if got != tt.emails {
			t.Errorf("%s: emails %s, want %s", tt.path, got, tt.emails)
		}
	}
	r := ts.do("GET", "/Groups/"+gid+"?attributes=nosuch", "").want(t, 200)
	if got := slices.Sorted(maps.Keys(r.json)); !slices.Equal(got, []string{"id", "schemas"}) {
		t.Errorf("group, attributes=nosuch: keys %v", got)
	}
	// A backend may keep members without display (the relay keeps what
	// the client sent).
	ts.noDisplay(uid)
	r = ts.do("GET", "/Groups/"+gid+"?attributes=members.display", "").want(t, 200)
	if got := jsonString(t, r.json["members"]); got != `[{"display":"Bob"}]` {
		t.Errorf("attributes=members.display: members %s", got)
	}
	ts.noDisplay(uid, bob)
	r = ts.do("GET", "/Groups/"+gid+"?attributes=members.display", "").want(t, 200)
	if got := slices.Sorted(maps.Keys(r.json)); !slices.Equal(got, []string{"id", "schemas"}) {
		t.Errorf("attributes=members.display, no member with one: %s", r.body)
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestProjectionNamesAreBounded: attributes and excludedAttributes give at
// most MaxProjectionAttributes different names each, in a query or a
// search body; a name repeated counts once. A write with too many is
// refused before it writes.
func TestProjectionNamesAreBounded(t *testing.T) {
	ts := newTestServer(t, Options{})
	id := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201).str("id")
	names := func(n int, format string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(format, i)
		}
		return out
	}
	tooMany := names(MaxProjectionAttributes+1, "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:a%d")
	enough := names(MaxProjectionAttributes, "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:a%d")
	query := func(param string, list []string) string {
		return param + "=" + url.QueryEscape(strings.Join(list, ","))
	}
	search := func(param string, list []string) string {
		j, _ := json.Marshal(map[string]any{"schemas": []string{SearchRequestSchema}, param: list})
		return string(j)
	}
	detail := fmt.Sprintf("names more than %d attributes", MaxProjectionAttributes)

	ts.do("GET", "/Users?"+query("attributes", enough), "").want(t, 200)
	ts.do("GET", "/Users?"+query("attributes", tooMany), "").wantError(t, 400, "invalidValue", "attributes "+detail)
	ts.do("GET", "/Users/"+id+"?"+query("excludedAttributes", tooMany), "").wantError(t, 400, "invalidValue", "excludedAttributes "+detail)
	ts.do("POST", "/Users/.search", search("attributes", tooMany)).wantError(t, 400, "invalidValue", "attributes "+detail)
	ts.do("POST", "/Users/.search", search("excludedAttributes", tooMany)).wantError(t, 400, "invalidValue", "excludedAttributes "+detail)
	// The same name in any spelling, however often, is one name.
	repeated := slices.Repeat([]string{"name.givenName", "NAME.GIVENNAME"}, 5000)
	if got := ts.do("POST", "/Users/.search", search("attributes", append(repeated, "userName"))).want(t, 200).str("Resources.0.userName"); got != "ann" {
		t.Errorf("userName = %q with repeated names", got)
	}
	// Refused before anything is written.
	ts.do("POST", "/Users?"+query("attributes", tooMany), `{"schemas":["`+UserSchema+`"],"userName":"bob"}`).wantError(t, 400, "invalidValue", detail)
	ts.do("PATCH", "/Users/"+id+"?"+query("attributes", tooMany), PatchBody(`{"op":"replace","path":"title","value":"x"}`)).wantError(t, 400, "invalidValue", detail)
	if r := ts.do("GET", "/Users/"+id, "").want(t, 200); r.str("title") != "" {
		t.Errorf("the refused PATCH wrote title %q", r.str("title"))
	}
	if n := ts.do("GET", "/Users", "").str("totalResults"); n != "1" {
		t.Errorf("totalResults = %s after a refused POST, want 1", n)
	}
}

// TestProjectionRefusesWhatIsNotAName: attributes and excludedAttributes
// name attributes; what is not a name (a filter, brackets, an empty
// sub-attribute) is 400 invalidValue naming the parameter, in a query or a
// search body, before a write is made, where it was ignored and the answer
// held only id. A well-formed name the schemas lack is still ignored
// (TestProjectionAnswers).
func TestProjectionRefusesWhatIsNotAName(t *testing.T) {
	ts := newTestServer(t, Options{})
	id := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann","emails":[{"value":"a@x","type":"work"}]}`).want(t, 201).str("id")
	for _, name := range []string{`emails[type eq "work"]`, `emails[type eq "work"].value`, "emails.", "name..givenName", "1title", "user name", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager[value pr]"} {
		for _, param := range []string{"attributes", "excludedAttributes"} {
			q := "?" + param + "=" + url.QueryEscape("userName,"+name)
			detail := param + ": " + strconv.Quote(name) + " is not an attribute name"
			ts.do("GET", "/Users/"+id+q, "").wantError(t, 400, "invalidValue", detail)
			ts.do("GET", "/Users"+q, "").wantError(t, 400, "invalidValue", detail)
			body, _ := json.Marshal(map[string]any{"schemas": []string{SearchRequestSchema}, param: []string{"userName", name}})
			ts.do("POST", "/Users/.search", string(body)).wantError(t, 400, "invalidValue", detail)
			ts.do("PATCH", "/Users/"+id+q, PatchBody(`{"op":"replace","path":"title","value":"x"}`)).wantError(t, 400, "invalidValue", detail)
			// A DELETE answers no body, but the parameter is refused the
			// same, before the user is deleted (before, it was).
			ts.do("DELETE", "/Users/"+id+q, "").wantError(t, 400, "invalidValue", detail)
		}
	}
	if r := ts.do("GET", "/Users/"+id, "").want(t, 200); r.str("title") != "" || r.header.Get("ETag") != `W/"1"` {
		t.Errorf("a refused PATCH wrote: %s", r.body)
	}
	// Names the schemas lack, in any form a name takes, are not refused.
	for _, name := range []string{"nosuch", "emails.nosuch", "title.sub", "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:badge", "urn:ietf:params:scim:schemas:extension:Custom:2.0:User"} {
		if r := ts.do("GET", "/Users/"+id+"?attributes="+url.QueryEscape("userName,"+name), "").want(t, 200); r.str("userName") != "ann" {
			t.Errorf("attributes=userName,%s: %s", name, r.body)
		}
	}
}

// TestProjectionLeavesTheResourceAlone: Apply shares values with the
// resource it projects and changes none of them, for every pair of
// names in attributes and excludedAttributes, nested and overlapping
// ones (a whole attribute or extension beside one of its sub-attributes)
// included.
func TestProjectionLeavesTheResourceAlone(t *testing.T) {
	body := `{"schemas":["` + UserSchema + `","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","urn:custom:ext:1.0:User"],"id":"x","userName":"ann","name":{"givenName":"Ann","familyName":"Lee"},"emails":[{"value":"a@x.com","type":"work"},{"type":"home","display":"B","value":"b@x.com"}],"addresses":[{"locality":"Oslo"},{"country":"NO","type":"work"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"7","manager":{"value":"m1"}},"urn:custom:ext:1.0:User":{"tags":["a",{"x":1}],"badge":{"Level":3}}}`
	names := []string{"name", "name.givenName", "emails", "emails.value", "emails.display", "addresses.locality", "addresses", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", "urn:custom:ext:1.0:User", "urn:custom:ext:1.0:User:tags.x", "urn:custom:ext:1.0:User:badge.level", "URN:custom:ext:1.0:user", "userName", "id", "meta"}
	for _, a := range names {
		for _, b := range names {
			for _, ex := range []string{"", a, b} {
				for _, attrs := range []string{a + "," + b, ""} {
					r, _, err := ParseResourceNoting(UserResourceType, []byte(body))
					if err != nil {
						t.Fatal(err)
					}
					before := r.AppendJSON(nil)
					p, err := ParseProjection(UserResourceType, attrs, ex)
					if err != nil {
						t.Fatal(err)
					}
					p.Apply(r).AppendJSON(nil)
					if after := r.AppendJSON(nil); !bytes.Equal(before, after) {
						t.Errorf("attributes=%s excluded=%s changed the resource:\n%s\n%s", attrs, ex, before, after)
					}
				}
			}
		}
	}
}
