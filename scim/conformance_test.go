// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"encoding/base64"
	"strings"
	"testing"

	. "github.com/scimrelay/scimrelay/scim"
)

// Conformance cases public SCIM test suites check, each citing the RFC
// section it rests on. Where the relay keeps a stricter or Entra-specific
// behaviour on purpose, the test says so (docs/decisions.md has the reasons).

const (
	groupSchemas = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]`
	patchSchemas = `"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]`
)

// RFC 7643 §2.4: the primary value "MUST appear no more than once". A POST
// or PUT naming two primaries is refused (there is no telling which one the
// client meant), and so is a PATCH whose filter selects two values and
// makes each primary; a PATCH that makes a value primary clears the
// others, as RFC 7644 §3.5.2 asks of PATCH.
func TestPrimaryAtMostOnce(t *testing.T) {
	ts := newTestServer(t, Options{})
	two := `"emails":[{"value":"a@x","type":"work","primary":true},{"value":"b@x","type":"home","primary":true}]`
	ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann",`+two+`}`).wantError(t, 400, "invalidValue", "emails has 2 values marked primary")
	ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann","phoneNumbers":[{"value":"1","primary":true},{"value":"2","primary":true}]}`).
		wantError(t, 400, "invalidValue", "phoneNumbers has 2 values marked primary")
	id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann","emails":[{"value":"a@x","type":"work","primary":true}]}`).want(t, 201).str("id")
	ts.do("PUT", "/Users/"+id, `{`+userSchemas+`,"userName":"ann",`+two+`}`).wantError(t, 400, "invalidValue", "emails has 2 values marked primary")
	if got := ts.do("GET", "/Users/"+id, "").want(t, 200).str("emails"); got != `[{"primary":true,"type":"work","value":"a@x"}]` {
		t.Fatalf("a refused PUT changed the user: %s", got)
	}
	r := ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"emails","value":[{"value":"b@x","type":"home","primary":true}]}]}`).want(t, 200)
	if got := r.str("emails"); got != `[{"primary":false,"type":"work","value":"a@x"},{"primary":true,"type":"home","value":"b@x"}]` {
		t.Fatalf("PATCH adding a primary: emails %s, want the new one alone primary", got)
	}
	// A new primary beside a repeat of the one primary now (a client
	// sending back the list it holds): the new one is primary. The
	// repeat, given without primary, took the flag back, and the relay
	// answered 200 with the old one primary (the PATCH review).
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"emails","value":[{"value":"c@x","type":"other","primary":true},{"value":"b@x","type":"home"}]}]}`).want(t, 200)
	if got := r.str("emails"); got != `[{"primary":false,"type":"work","value":"a@x"},{"primary":false,"type":"home","value":"b@x"},{"primary":true,"type":"other","value":"c@x"}]` {
		t.Errorf("PATCH adding a primary beside a repeat of the old one: emails %s, want the new one alone primary", got)
	}
	// A filter selecting two values, each made primary: which one the
	// client meant cannot be told, as for a POST naming two (it answered
	// 200 and kept the last).
	before := ts.do("GET", "/Users/"+id, "").want(t, 200).str("emails")
	for _, op := range []string{
		`{"op":"replace","path":"emails[type ne \"other\"].primary","value":true}`,
		`{"op":"replace","path":"emails[type ne \"other\"]","value":{"primary":true}}`,
		`{"op":"add","path":"emails[type ne \"other\"].primary","value":true}`,
	} {
		ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[`+op+`]}`).wantError(t, 400, "invalidValue", "selects 2 values of emails and marks each primary")
		if got := ts.do("GET", "/Users/"+id, "").want(t, 200).str("emails"); got != before {
			t.Fatalf("a refused PATCH %s changed the emails: %s, was %s", op, got, before)
		}
	}
	// One value selected and made primary clears the others.
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"replace","path":"emails[type eq \"work\"].primary","value":true}]}`).want(t, 200)
	if got := r.str("emails"); got != `[{"primary":true,"type":"work","value":"a@x"},{"primary":false,"type":"home","value":"b@x"},{"primary":false,"type":"other","value":"c@x"}]` {
		t.Errorf("PATCH making the work email primary: emails %s", got)
	}
}

// RFC 7643 §2.4 (multi-valued attributes) with RFC 7644 §3.5.2.1: a value
// that repeats another's value and type is the same value. POST and PUT
// merge repeats the way a PATCH add does, instead of storing them twice.
func TestDuplicateValuesMerged(t *testing.T) {
	ts := newTestServer(t, Options{})
	dup := `"emails":[{"value":"a@x","type":"work"},{"value":"A@X","type":"work","primary":true},{"value":"a@x","type":"home"}],` +
		`"addresses":[{"type":"work","locality":"Oslo"},{"type":"work","locality":"Oslo"},{"type":"work","locality":"Bergen"}]`
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann",`+dup+`}`).want(t, 201)
	if got := r.str("emails"); got != `[{"primary":true,"type":"work","value":"A@X"},{"type":"home","value":"a@x"}]` {
		t.Errorf("POST emails %s: the work email repeated in another case should be one value", got)
	}
	if got := r.str("addresses"); got != `[{"locality":"Oslo","type":"work"},{"locality":"Bergen","type":"work"}]` {
		t.Errorf("POST addresses %s: exact repeats merge, two work addresses stay two", got)
	}
	id := r.str("id")
	r = ts.do("PUT", "/Users/"+id, `{`+userSchemas+`,"userName":"ann","phoneNumbers":[{"value":"+1 555","type":"work"},{"value":"+1 555","type":"work","display":"desk"}]}`).want(t, 200)
	if got := r.str("phoneNumbers"); got != `[{"display":"desk","type":"work","value":"+1 555"}]` {
		t.Errorf("PUT phoneNumbers %s", got)
	}
}

// An element without its value (an email of no address, a phone number of
// no number, an address of nothing but its type) says nothing, and is left
// out of a POST, a PUT and a PATCH's value, as one whose value a PATCH
// removes is removed (docs/decisions.md). Until 2026-12-03 POST and PATCH
// add stored {"type":"work","primary":true}, a primary email of no address.
func TestValuelessElementsLeftOut(t *testing.T) {
	ts := newTestServer(t, Options{})
	const none = `{"type":"work","primary":true}`
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann","emails":[`+none+`,{"value":"a@x","type":"home"},{"value":"","type":"other"}],`+
		`"phoneNumbers":[{"type":"mobile"}],"addresses":[{"type":"work","primary":true},{"type":"home","locality":"Oslo"}]}`).want(t, 201)
	if got := r.str("emails"); got != `[{"type":"home","value":"a@x"}]` {
		t.Errorf("POST emails %s", got)
	}
	if got := r.str("phoneNumbers") + r.str("addresses"); got != `[{"locality":"Oslo","type":"home"}]` {
		t.Errorf("POST phoneNumbers and addresses %s", got)
	}
	id := r.str("id")
	r = ts.do("PUT", "/Users/"+id, `{`+userSchemas+`,"userName":"ann","emails":[{"value":"b@x","type":"home"},`+none+`]}`).want(t, 200)
	if got := r.str("emails"); got != `[{"type":"home","value":"b@x"}]` {
		t.Errorf("PUT emails %s", got)
	}
	version := r.str("meta.version")
	for _, op := range []string{
		`{"op":"add","path":"emails","value":[` + none + `]}`,
		`{"op":"add","value":{"emails":[` + none + `]}}`,
		`{"op":"add","path":"emails","value":` + none + `}`,
	} {
		r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[`+op+`]}`).want(t, 200)
		if got := r.str("emails"); got != `[{"type":"home","value":"b@x"}]` {
			t.Errorf("PATCH %s: emails %s", op, got)
		}
		if got := r.str("meta.version"); got != version {
			t.Errorf("PATCH %s: version %s, want %s (nothing changed)", op, got, version)
		}
	}
	// A member without its id is still refused, not left out.
	ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"g","members":[{"display":"x"}]}`).wantError(t, 400, "invalidValue", "has no value")
}

// RFC 7644 §3.5.2 defines op, path and value for a PATCH operation; other
// members (Okta and others send a "name") change nothing and are ignored.
func TestUnknownPatchOperationMembersIgnored(t *testing.T) {
	ts := newTestServer(t, Options{})
	id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	r := ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"Boss","name":"setTitle","from":"x"}]}`).want(t, 200)
	if r.str("title") != "Boss" {
		t.Fatalf("PATCH with extra members: %s", r.body)
	}
}

// RFC 7643 §4.2: a member has value, $ref, type and display. Anything else a
// client adds (a displayName) is ignored, in PATCH, POST and PUT alike.
func TestUnknownMemberSubAttributesIgnored(t *testing.T) {
	ts := newTestServer(t, Options{})
	uid := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"g","members":[{"value":"`+uid+`","displayName":"Ann","extra":{"x":1}}]}`).want(t, 201).str("id")
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"members","value":[{"value":"`+uid+`","displayName":"Ann","operation":"add"}]}]}`).want(t, 204)
	ts.do("PUT", "/Groups/"+gid, `{`+groupSchemas+`,"displayName":"g","members":[{"value":"`+uid+`","displayName":7}]}`).want(t, 200)
	if got := ts.do("GET", "/Groups/"+gid, "").want(t, 200).str("members.0.value"); got != uid {
		t.Fatalf("member %q, want %s", got, uid)
	}
	// A known sub-attribute must still be a string.
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"members","value":[{"value":5}]}]}`).wantError(t, 400, "invalidValue", "must be a string")
}

// RFC 7644 §3.3, §3.5.1 and §3.5.2 leave open what to do with attributes the
// schema does not define. The relay drops them (in a POST, a PUT and a
// PATCH alike), answers the request, and names them in the provisioning log
// entry (RequestInfo.Detail); attributes of an extension schema it does not
// know stay kept as sent.
func TestUnknownCoreAttributesIgnoredAndNoted(t *testing.T) {
	ts := newTestServer(t, Options{})
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann","favouriteColour":"red","name":{"givenName":"Ann","nick":"A"},`+
		`"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Ops","shoeSize":"9"},"`+custom+`":{"postalCode":"98052"}}`).want(t, 201)
	if strings.Contains(string(r.body), "favouriteColour") || strings.Contains(string(r.body), "nick") || strings.Contains(string(r.body), "shoeSize") {
		t.Errorf("unknown attributes were stored: %s", r.body)
	}
	if ext, _ := r.json[custom].(map[string]any); r.str("name.givenName") != "Ann" || ext["postalCode"] != "98052" {
		t.Errorf("known attributes or the unknown extension were lost: %s", r.body)
	}
	id := r.str("id")
	ts.do("PUT", "/Users/"+id, `{`+userSchemas+`,"userName":"ann","mood":"fine"}`).want(t, 200)
	infos := ts.requests()
	want := map[string]string{
		"create":  "ignored unknown attributes: favouriteColour, name.nick, urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:shoeSize",
		"replace": "ignored unknown attributes: mood",
	}
	for _, info := range infos {
		if w, ok := want[info.Operation]; ok {
			if info.Detail != w {
				t.Errorf("%s: provisioning log detail %q, want %q", info.Operation, info.Detail, w)
			}
			delete(want, info.Operation)
		}
	}
	if len(want) > 0 {
		t.Errorf("no log entries for %v", want)
	}
	// A PATCH of nothing but an unknown attribute changes nothing (no new
	// version) and says so in the log; a malformed path is still invalidPath.
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"mood","value":"x"}]}`).want(t, 200)
	if r.header.Get("ETag") != `W/"2"` || strings.Contains(string(r.body), "mood") {
		t.Errorf("a PATCH of an unknown attribute: ETag %s, %s", r.header.Get("ETag"), r.body)
	}
	if infos := ts.requests(); infos[len(infos)-1].Detail != "ignored unknown attributes: mood" || len(infos[len(infos)-1].EventIDs) != 0 {
		t.Errorf("a PATCH of an unknown attribute was logged as %+v", infos[len(infos)-1])
	}
	ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"mood[","value":"x"}]}`).wantError(t, 400, "invalidPath", "unbalanced")
}

// RFC 7643 §2.5: unassigned and null are the same state. An empty string
// carries nothing either and is unassigned too, so that Okta's PUT with
// "middleName": "" changes nothing.
func TestEmptyStringIsUnassigned(t *testing.T) {
	ts := newTestServer(t, Options{})
	r := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann","title":"","name":{"givenName":"Ann","middleName":""},"emails":[{"value":"a@x","display":""}]}`).want(t, 201)
	if got := r.str("name"); got != `{"givenName":"Ann"}` || r.str("title") != "" || r.str("emails") != `[{"value":"a@x"}]` {
		t.Fatalf("empty strings were stored: %s", r.body)
	}
	id := r.str("id")
	r = ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"replace","path":"name.givenName","value":""}]}`).want(t, 200)
	if r.str("name") != "" {
		t.Fatalf("replacing with \"\" should unassign: %s", r.body)
	}
}

// RFC 7644 §3.2 names the endpoints /Users, /Groups, /Bulk ...; clients
// write them in other cases, and nothing is gained by refusing /users. The
// rewrite touches whole endpoint segments only: /Users/%2F stays an unknown
// id and never reaches the collection.
func TestEndpointsMatchAnyCase(t *testing.T) {
	ts := newTestServer(t, Options{})
	id := ts.do("POST", "/users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	ts.do("GET", "/USERS/"+id, "").want(t, 200)
	ts.do("GET", "/groups", "").want(t, 200)
	ts.do("POST", "/users/.SEARCH", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}`).want(t, 200)
	ts.do("GET", "/serviceproviderconfig", "").want(t, 200)
	ts.do("GET", "/resourcetypes/user", "").want(t, 200)
	ts.do("GET", "/schemas", "").want(t, 200)
	ts.do("POST", "/bulk", `{"schemas":["`+BulkRequestSchema+`"],"Operations":[{"method":"DELETE","path":"/USERS/`+id+`"}]}`).want(t, 200)
	ts.do("GET", "/Users/"+id, "").wantError(t, 404, "", "not found")
	for _, p := range []string{"/users/%2F", "/Users/%2F", "/users/%2f..", "/users/users"} {
		ts.do("GET", p, "").wantError(t, 404, "", "not found")
	}
	ts.do("GET", "/unicorns", "").wantError(t, 404, "", "no SCIM endpoint")
}

// Kept on purpose (docs/decisions.md, SCIM): RFC 7644 §3.5.2 allows 200 or
// 204 for PATCH; a user's PATCH answers 200 with the user (Entra's guide
// shows it), a group's 204 (Entra asks for it). RFC 7644 §3.5.2.1 leaves
// what a member that references nothing means to the service provider: it
// is 400 invalidValue, never a dangling member. A replace of
// emails[type eq "work"].value on a user with no work email creates it,
// which Entra relies on, where RFC 7644 §3.5.2.3 would answer noTarget.
func TestKeptBehaviours(t *testing.T) {
	ts := newTestServer(t, Options{})
	id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	r := ts.do("PATCH", "/Users/"+id, `{`+patchSchemas+`,"Operations":[{"op":"replace","path":"emails[type eq \"work\"].value","value":"ann@x"}]}`).want(t, 200)
	if got := r.str("emails"); got != `[{"type":"work","value":"ann@x"}]` {
		t.Fatalf("the work email was not created: %s", r.body)
	}
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"g"}`).want(t, 201).str("id")
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"replace","path":"displayName","value":"h"}]}`).want(t, 204)
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"add","path":"members","value":[{"value":"no-such-user"}]}]}`).
		wantError(t, 400, "invalidValue", "no-such-user")
	ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"k","members":[{"value":"no-such-user"}]}`).wantError(t, 400, "invalidValue", "no-such-user")
}

// Okta's rename repeats the group's id in a path-less replace: RFC 7644
// §3.5.2 refuses changes to read-only attributes, and repeating the current
// value is no change. Another id is still refused.
func TestPathlessReplaceRepeatingID(t *testing.T) {
	ts := newTestServer(t, Options{})
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"g"}`).want(t, 201).str("id")
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"replace","value":{"id":"`+gid+`","displayName":"h"}}]}`).want(t, 204)
	if got := ts.do("GET", "/Groups/"+gid, "").str("displayName"); got != "h" {
		t.Fatalf("displayName %q after the rename", got)
	}
	ts.do("PATCH", "/Groups/"+gid, `{`+patchSchemas+`,"Operations":[{"op":"replace","value":{"id":"other","displayName":"i"}}]}`).wantError(t, 400, "mutability", "read-only")
}

// RFC 7617 Basic credentials work when enabled, are advertised then, and
// are refused (as malformed) when not.
func TestBasicAuth(t *testing.T) {
	ts := newTestServer(t, Options{BasicAuth: true})
	ts.do("GET", "/Users", "", "Authorization", basic("acme-client", tokenAcme)).want(t, 200)
	wrong := ts.do("GET", "/Users", "", "Authorization", basic("acme-client", tokenAcme+"x"))
	wrong.wantError(t, 401, "", "invalid")
	if got := wrong.header.Values("WWW-Authenticate"); len(got) != 2 || !strings.HasPrefix(got[1], "Basic ") {
		t.Errorf("a 401 with Basic enabled challenges %q, want Bearer and Basic", got)
	}
	ts.do("GET", "/scim/v2/globex/Users", "", "Authorization", basic("acme-client", tokenAcme)).wantError(t, 401, "", "invalid")
	ts.do("GET", "/Users", "", "Authorization", "Basic !!!").wantError(t, 401, "", "malformed Basic")
	// An unknown tenant answers as a wrong client does.
	unknown := ts.do("GET", "/scim/v2/initech/Users", "", "Authorization", basic("initech-client", "x"))
	known := ts.do("GET", "/Users", "", "Authorization", basic("nobody", "x"))
	if unknown.status != 401 || unknown.str("detail") != known.str("detail") {
		t.Errorf("unknown tenant with Basic: %d %s; a known one: %d %s", unknown.status, unknown.body, known.status, known.body)
	}
	sp := ts.do("GET", "/ServiceProviderConfig", "").want(t, 200)
	if !strings.Contains(sp.str("authenticationSchemes"), `"httpbasic"`) {
		t.Errorf("Basic enabled but not advertised: %s", sp.str("authenticationSchemes"))
	}
	off := newTestServer(t, Options{})
	off.do("GET", "/Users", "", "Authorization", basic("acme-client", tokenAcme)).wantError(t, 401, "", "malformed")
	if sp := off.do("GET", "/ServiceProviderConfig", "").want(t, 200); strings.Contains(sp.str("authenticationSchemes"), `"httpbasic"`) {
		t.Errorf("Basic disabled but advertised")
	}
}

// requests returns what Observe saw so far.
func (ts *testServer) requests() []RequestInfo {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]RequestInfo(nil), ts.infos...)
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}
