// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

func bulkBody(extra, ops string) string {
	if extra != "" {
		extra += ","
	}
	return `{"schemas":["` + BulkRequestSchema + `"],` + extra + `"Operations":[` + ops + `]}`
}

type bulkAnswer struct {
	Schemas    []string `json:"schemas"`
	Operations []struct {
		Location string         `json:"location"`
		Method   string         `json:"method"`
		BulkID   string         `json:"bulkId"`
		Version  string         `json:"version"`
		Status   string         `json:"status"`
		Response map[string]any `json:"response"`
	} `json:"Operations"`
}

func (ts *testServer) bulk(t *testing.T, body string) bulkAnswer {
	t.Helper()
	r := ts.do("POST", "/Bulk", body).want(t, 200)
	var a bulkAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Schemas) != 1 || a.Schemas[0] != BulkResponseSchema {
		t.Fatalf("bulk response schemas %v", a.Schemas)
	}
	return a
}

// statuses lists each result as "METHOD bulkId status".
func (a bulkAnswer) statuses() string {
	var out []string
	for _, o := range a.Operations {
		out = append(out, strings.TrimSpace(o.Method+" "+o.BulkID)+" "+o.Status)
	}
	return strings.Join(out, ", ")
}

// RFC 7644 §3.7.2: a user created and added to a group in one request, the
// group referring to the user by "bulkId:"; RFC 7644 §3.7.3: each result
// has its status (a string), location and version. A path's trailing
// slash is trimmed, as on the URL.
func TestBulkIDReferences(t *testing.T) {
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Users","bulkId":"ann","data":{`+userSchemas+`,"userName":"ann"}},
		{"method":"POST","path":"/Groups","bulkId":"ops","data":{`+groupSchemas+`,"displayName":"Ops","members":[{"type":"User","value":"bulkId:ann"}]}},
		{"method":"POST","path":"/Users/","bulkId":"bob","data":{`+userSchemas+`,"userName":"bob"}},
		{"method":"PATCH","path":"/Groups/bulkId:ops","data":{`+patchSchemas+`,"Operations":[{"op":"add","path":"members","value":[{"value":"bulkId:bob"}]},{"op":"remove","path":"members[value eq \"bulkId:ann\"]"}]}},
		{"method":"PUT","path":"/Users/bulkId:bob/","version":"W/\"1\"","data":{`+userSchemas+`,"userName":"bob","title":"Ops lead"}}`))
	if got := a.statuses(); got != "POST ann 201, POST ops 201, POST bob 201, PATCH 204, PUT 200" {
		t.Fatalf("statuses: %s", got)
	}
	ann, ops, bob := a.Operations[0], a.Operations[1], a.Operations[2]
	for _, o := range a.Operations {
		if !strings.HasPrefix(o.Location, ts.srv.URL+"/scim/v2/acme/") || o.Version == "" || o.Response != nil {
			t.Errorf("result %+v: want a location, a version and no response", o)
		}
	}
	if a.Operations[3].Location != ops.Location || a.Operations[4].Location != bob.Location || a.Operations[4].Version != `W/"2"` {
		t.Errorf("results name the wrong resources: %+v", a.Operations)
	}
	g := ts.do("GET", ops.Location[len(ts.srv.URL+"/scim/v2/acme"):], "").want(t, 200)
	members := g.str("members")
	if !strings.Contains(members, lastSegment(bob.Location)) || strings.Contains(members, lastSegment(ann.Location)) {
		t.Fatalf("group members %s: want bob and not ann", members)
	}
}

func lastSegment(s string) string { return s[strings.LastIndexByte(s, '/')+1:] }

// TestBulkVersions: a Bulk operation's version is its If-Match (RFC 7644
// §3.7): a PUT, PATCH or DELETE whose version is not the resource's fails
// 412 and changes nothing; one whose version is applies.
func TestBulkVersions(t *testing.T) {
	ts := newTestServer(t, Options{})
	created := ts.bulk(t, bulkBody("", `{"method":"POST","path":"/Users","bulkId":"ann","data":{`+userSchemas+`,"userName":"ann","title":"Engineer"}}`))
	path := "/Users/" + lastSegment(created.Operations[0].Location)
	stale := ts.bulk(t, bulkBody("", `
		{"method":"PUT","path":"`+path+`","version":"W/\"9\"","data":{`+userSchemas+`,"userName":"ann","title":"Put"}},
		{"method":"PATCH","path":"`+path+`","version":"W/\"9\"","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"Patched"}]}},
		{"method":"DELETE","path":"`+path+`","version":"W/\"9\""}`))
	if got := stale.statuses(); got != "PUT 412, PATCH 412, DELETE 412" {
		t.Fatalf("operations of a stale version: %s, want each 412", got)
	}
	if u := ts.do("GET", path, "").want(t, 200); u.str("title") != "Engineer" || u.header.Get("ETag") != `W/"1"` {
		t.Fatalf("after the stale operations: title %q, ETag %s; want it unchanged", u.str("title"), u.header.Get("ETag"))
	}
	// A version given that names no entity tag matches nothing, as the
	// same If-Match does.
	none := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"`+path+`","version":",","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"Patched"}]}},
		{"method":"DELETE","path":"`+path+`","version":" "}`))
	if got := none.statuses(); got != "PATCH 412, DELETE 412" {
		t.Fatalf("operations whose version names no entity tag: %s, want each 412", got)
	}
	// A version that is no entity tag is not a stale one: 400, as the
	// same If-Match is, and nothing changes.
	malformed := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"`+path+`","version":"1","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"Patched"}]}},
		{"method":"DELETE","path":"`+path+`","version":"W/\"1\", *"}`))
	if got := malformed.statuses(); got != "PATCH 400, DELETE 400" {
		t.Fatalf("operations whose version is no entity tag: %s, want each 400", got)
	}
	for i, op := range malformed.Operations {
		if r := op.Response; r["scimType"] != "invalidValue" || !strings.Contains(fmt.Sprint(r["detail"]), "version must be") {
			t.Errorf("result %d: %v, want invalidValue saying what a version must be", i, r)
		}
	}
	current := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"`+path+`","version":"W/\"1\"","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"Patched"}]}},
		{"method":"DELETE","path":"`+path+`","version":"W/\"2\""}`))
	if got := current.statuses(); got != "PATCH 200, DELETE 204" {
		t.Fatalf("operations of the current version: %s", got)
	}
}

// RFC 7644 §3.7: operations are processed in order and not atomically; an
// operation that refers to a bulkId created later in the request runs after
// the one creating it, preserving the client's intent.
func TestBulkForwardReference(t *testing.T) {
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"G","members":[{"value":"bulkId:u"}]}},
		{"method":"POST","path":"/Users","bulkId":"u","data":{`+userSchemas+`,"userName":"u"}}`))
	if got := a.statuses(); got != "POST u 201, POST g 201" {
		t.Fatalf("statuses: %s (the user must be created before the group that contains it)", got)
	}
}

// RFC 7644 §3.7.1: circular references may be refused with 409; the
// operations in the circle fail, those depending on them fail as unresolved,
// the others run. A group that contains itself is a circle of one.
func TestBulkCircularReferences(t *testing.T) {
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Groups","bulkId":"a","data":{`+groupSchemas+`,"displayName":"A","members":[{"value":"bulkId:b","type":"Group"}]}},
		{"method":"POST","path":"/Groups","bulkId":"b","data":{`+groupSchemas+`,"displayName":"B","members":[{"value":"bulkId:a","type":"Group"}]}},
		{"method":"POST","path":"/Groups","bulkId":"self","data":{`+groupSchemas+`,"displayName":"S","members":[{"value":"bulkId:self"}]}},
		{"method":"PATCH","path":"/Groups/bulkId:a","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"displayName","value":"A2"}]}},
		{"method":"POST","path":"/Users","bulkId":"fine","data":{`+userSchemas+`,"userName":"fine"}}`))
	// The operations referring to nothing unresolved run in the order
	// sent; the circles fail once every operation was visited, each
	// member, then what waits on it.
	if got := a.statuses(); got != "POST fine 201, POST a 409, POST b 409, PATCH 409, POST self 409" {
		t.Fatalf("statuses: %s", got)
	}
	for i, want := range map[int]string{1: "Operations[0] (bulkId a) → Operations[1] (bulkId b) → Operations[0] (bulkId a)", 2: "circular", 3: "Operations[0], which creates it, failed", 4: "Operations[2] (bulkId self) → Operations[2] (bulkId self)"} {
		r := a.Operations[i].Response
		if r["status"] != "409" || !strings.Contains(fmt.Sprint(r["detail"]), want) {
			t.Errorf("result %d: %v, want a 409 error saying %q", i, r, want)
		}
	}
	if n := ts.do("GET", "/Groups", "").str("totalResults"); n != "0" {
		t.Fatalf("%s groups were created from circular references", n)
	}
}

// TestBulkForwardReferenceKeepsTheOthersInOrder: an operation referring to
// a later POST's bulkId waits for it; the operations sent between run in
// the order sent (RFC 7644 §3.7: the same stateful result). The POST was
// run ahead of them: ann's replacement was created before the DELETE of
// the old ann (409, her userName taken), the group then failed, and the
// DELETE left no ann at all (a Bulk review).
func TestBulkForwardReferenceKeepsTheOthersInOrder(t *testing.T) {
	ts := newTestServer(t, Options{})
	old := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"Ops","members":[{"value":"bulkId:new"}]}},
		{"method":"DELETE","path":"/Users/`+old+`"},
		{"method":"POST","path":"/Users","bulkId":"new","data":{`+userSchemas+`,"userName":"ann"}}`))
	if got := a.statuses(); got != "DELETE 204, POST new 201, POST g 201" {
		t.Fatalf("statuses: %s, want the DELETE first, then the POST the group waits for, then the group", got)
	}
	if n := ts.do("GET", "/Users", "").str("totalResults"); n != "1" {
		t.Errorf("%s users, want the new ann", n)
	}
	if n := ts.do("GET", "/Groups", "").str("totalResults"); n != "1" {
		t.Errorf("%s groups, want Ops", n)
	}
}

// TestBulkWaitingOperationKeepsItsPlaceOnItsResource: an operation that
// waits for a later POST is not overtaken by a later operation acting on
// the same resource, or on one it names (a member): run ahead, a PATCH
// adding x after a waiting replace of the members lost x, a DELETE made
// the waiting PATCH before it 404, and a DELETE of a member named in a
// waiting group's POST made that POST fail (a review of today's order).
func TestBulkWaitingOperationKeepsItsPlaceOnItsResource(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	ts := newTestServer(t, Options{})
	x := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"x"}`).want(t, 201).str("id")
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"Ops"}`).want(t, 201).str("id")
	replace := `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"members","value":[{"value":"bulkId:new"}]}]}`
	add := `{` + patchSchemas + `,"Operations":[{"op":"add","path":"members","value":[{"value":"` + x + `"}]}]}`
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Groups/`+gid+`","data":`+replace+`},
		{"method":"PATCH","path":"/Groups/`+gid+`","data":`+add+`},
		{"method":"POST","path":"/Users","bulkId":"new","data":{`+userSchemas+`,"userName":"new"}}`))
	if got := a.statuses(); got != "POST new 201, PATCH 204, PATCH 204" {
		t.Errorf("statuses %s", got)
	}
	if g := string(ts.do("GET", "/Groups/"+gid, "").want(t, 200).body); !strings.Contains(g, x) {
		t.Errorf("the group lost x, added after the replace in the order sent: %s", g)
	}
	u := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"u"}`).want(t, 201).str("id")
	mgr := `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"` + ent + `:manager","value":"bulkId:boss"}]}`
	a = ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Users/`+u+`","data":`+mgr+`},
		{"method":"DELETE","path":"/Users/`+u+`"},
		{"method":"POST","path":"/Users","bulkId":"boss","data":{`+userSchemas+`,"userName":"boss"}}`))
	if got := a.statuses(); got != "POST boss 201, PATCH 200, DELETE 204" {
		t.Errorf("statuses %s: the PATCH sent before the DELETE must run before it", got)
	}
	v := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"v"}`).want(t, 201).str("id")
	a = ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"Both","members":[{"value":"`+v+`"},{"value":"bulkId:w"}]}},
		{"method":"DELETE","path":"/Users/`+v+`"},
		{"method":"POST","path":"/Users","bulkId":"w","data":{`+userSchemas+`,"userName":"w"}}`))
	if got := a.statuses(); got != "POST w 201, POST g 201, DELETE 204" {
		t.Errorf("statuses %s: the group naming v must be made before v is deleted", got)
	}
}

// TestBulkPostKeepsItsPlaceBehindAWaitingOperation: a POST sent after a
// waiting DELETE of a user does not run ahead of it: not the POST of a
// new user under her userName (it failed 409, and no ann was left), nor
// a group naming her (made with her as a member before she was deleted);
// the POST a waiting operation needs still runs first (a review of the
// day's later diff).
func TestBulkPostKeepsItsPlaceBehindAWaitingOperation(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	mgr := `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"` + ent + `:manager","value":"bulkId:boss"}]}`
	ts := newTestServer(t, Options{})
	old := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Users/`+old+`","data":`+mgr+`},
		{"method":"DELETE","path":"/Users/`+old+`"},
		{"method":"POST","path":"/Users","bulkId":"new","data":{`+userSchemas+`,"userName":"ann"}},
		{"method":"POST","path":"/Users","bulkId":"boss","data":{`+userSchemas+`,"userName":"boss"}}`))
	if got := a.statuses(); got != "POST boss 201, PATCH 200, DELETE 204, POST new 201" {
		t.Errorf("statuses %s", got)
	}
	if n := ts.do("GET", "/Users?filter=userName%20eq%20%22ann%22", "").str("totalResults"); n != "1" {
		t.Errorf("%s users named ann, want the new one", n)
	}
	bea := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"bea"}`).want(t, 201).str("id")
	a = ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Users/`+bea+`","data":`+strings.Replace(mgr, "boss", "boss2", 1)+`},
		{"method":"DELETE","path":"/Users/`+bea+`"},
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"Ops","members":[{"value":"`+bea+`"}]}},
		{"method":"POST","path":"/Users","bulkId":"boss2","data":{`+userSchemas+`,"userName":"boss2"}}`))
	if got := a.statuses(); got != "POST boss2 201, PATCH 200, DELETE 204, POST g 400" {
		t.Errorf("statuses %s: the group naming bea, sent after her DELETE, must run after it (and fail: she is gone)", got)
	}
}

// TestBulkNoFalseCircle: an operation is not made to wait behind one that
// will, in the end, wait for it through a bulkId not yet reached. ann's
// PATCH names mgr, sent after dir, whose POST names dir: dir waited behind
// the PATCH (a POST of its type), mgr then waited for dir, and the three
// failed 409 as a circle none of them made (a review of the Bulk order).
func TestBulkNoFalseCircle(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	ts := newTestServer(t, Options{})
	ann := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	setMgr := `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"` + ent + `:manager","value":"bulkId:mgr"}]}`
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Users/`+ann+`","data":`+setMgr+`},
		{"method":"POST","path":"/Users","bulkId":"dir","data":{`+userSchemas+`,"userName":"dir"}},
		{"method":"POST","path":"/Users","bulkId":"mgr","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+ent+`"],"userName":"mgr","`+ent+`":{"manager":{"value":"bulkId:dir"}}}}`))
	if got := a.statuses(); got != "POST dir 201, POST mgr 201, PATCH 200" {
		t.Fatalf("statuses %s: dir, then mgr naming it, then ann's PATCH naming mgr", got)
	}
}

// TestBulkWaitingOperationSeesWhatItWillWaitBehind: an operation is not put
// behind one that will, once what it waits for now has run, wait behind a
// waiting operation needing the first. Seven operations (a review comparing
// each resource's events with the operations run one by one): the group's
// PATCH names w and u, sent later; u's first PATCH waits behind it; v's POST
// names u; u's second PATCH waits behind v; w's POST, naming v, was put
// behind u's second PATCH, which then waited behind u's first, which waited
// behind the group's PATCH, which waited for w: a circle none of them made,
// run in the order it was found, and u kept the first PATCH's title.
func TestBulkWaitingOperationSeesWhatItWillWaitBehind(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	user := func(name, mgr string) string {
		if mgr == "" {
			return `{` + userSchemas + `,"userName":"` + name + `"}`
		}
		return `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + ent + `"],"userName":"` + name + `","` + ent + `":{"manager":{"value":"bulkId:` + mgr + `"}}}`
	}
	title := func(v string) string {
		return `{` + patchSchemas + `,"Operations":[{"op":"replace","path":"title","value":"` + v + `"}]}`
	}
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Groups/bulkId:g","data":{`+patchSchemas+`,"Operations":[{"op":"add","path":"members","value":[{"value":"bulkId:w"},{"value":"bulkId:u"}]}]}},
		{"method":"PATCH","path":"/Users/bulkId:u","data":`+title("first")+`},
		{"method":"POST","path":"/Users","bulkId":"v","data":`+user("v", "u")+`},
		{"method":"PATCH","path":"/Users/bulkId:u","data":`+title("second")+`},
		{"method":"POST","path":"/Users","bulkId":"w","data":`+user("w", "v")+`},
		{"method":"POST","path":"/Users","bulkId":"u","data":`+user("ann", "")+`},
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"G"}}`))
	if got := a.statuses(); got != "POST u 201, POST v 201, POST w 201, POST g 201, PATCH 204, PATCH 200, PATCH 200" {
		t.Errorf("statuses %s", got)
	}
	if u := string(ts.do("GET", "/Users?filter=userName%20eq%20%22ann%22", "").want(t, 200).body); !strings.Contains(u, `"second"`) {
		t.Errorf("u's PATCHes ran out of the order sent: %s", u)
	}
}

// TestBulkPostsWaitingByTypeAreNotForeseen: u3's second PATCH is not run
// ahead of its first. The first waits for u1's POST; the walk of needing
// took u1's POST to wait, in the end, behind u2's POST (a POST of its type,
// waiting behind the second PATCH), so that the first PATCH "needed" the
// second, which ran first; when visited, u1's POST waits behind nothing of
// the kind (a review of the fix for the seven operations, and the events
// generator's seed 5081, the same with 38 operations).
func TestBulkPostsWaitingByTypeAreNotForeseen(t *testing.T) {
	const mgr = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"
	patch := func(u, title, manager string) string {
		m := ""
		if manager != "" {
			m = `,{"op":"replace","path":"` + mgr + `","value":{"value":"bulkId:` + manager + `"}}`
		}
		return `{"method":"PATCH","path":"/Users/bulkId:` + u + `","data":{` + patchSchemas + `,"Operations":[{"op":"replace","path":"title","value":"` + title + `"}` + m + `]}}`
	}
	post := func(u string) string {
		return `{"method":"POST","path":"/Users","bulkId":"` + u + `","data":{` + userSchemas + `,"userName":"` + u + `"}}`
	}
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", strings.Join([]string{
		patch("u3", "first", "u1"), patch("u0", "a", ""), patch("u0", "b", "u3"), post("u3"),
		patch("u3", "second", "u3"), post("u2"), post("u1"), post("u0")}, ",")))
	for _, o := range a.Operations {
		if o.Status[0] != '2' {
			t.Errorf("statuses %s", a.statuses())
			break
		}
	}
	if u := string(ts.do("GET", "/Users?filter=userName%20eq%20%22u3%22", "").want(t, 200).body); !strings.Contains(u, `"second"`) {
		t.Errorf("u3's PATCHes ran out of the order sent (%s): %s", a.statuses(), u)
	}
}

// TestBulkAnswersEveryOperation: every operation has a result, whatever
// circles it waits behind (RFC 7644 §3.7.3). A DELETE waiting on the
// circle a↔b held c and d, a circle of their own reached only once the
// first circle had failed: c and d were neither run nor listed.
func TestBulkAnswersEveryOperation(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	user := func(name, mgr string) string {
		return `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + ent + `"],"userName":"` + name + `","` + ent + `":{"manager":{"value":"bulkId:` + mgr + `"}}}`
	}
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"DELETE","path":"/Users/bulkId:a"},
		{"method":"POST","path":"/Users","bulkId":"a","data":`+user("a", "b")+`},
		{"method":"POST","path":"/Users","bulkId":"b","data":`+user("b", "a")+`},
		{"method":"POST","path":"/Users","bulkId":"c","data":`+user("c", "d")+`},
		{"method":"POST","path":"/Users","bulkId":"d","data":`+user("d", "c")+`}`))
	if got := a.statuses(); got != "POST a 409, DELETE 409, POST b 409, POST c 409, POST d 409" {
		t.Fatalf("statuses %s: every operation answered, the two circles refused", got)
	}
}

// TestBulkPostStaysBehindAWaitingPost: a POST does not overtake a waiting
// POST of its type, whose name it may take: ann, whose manager comes
// later in the request, was overtaken by a second POST of the userName
// ann, which took the name; in the order sent the first is made and the
// second is 409.
func TestBulkPostStaysBehindAWaitingPost(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Users","bulkId":"ann","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+ent+`"],"userName":"ann","title":"first","`+ent+`":{"manager":{"value":"bulkId:boss"}}}},
		{"method":"POST","path":"/Users","bulkId":"ann2","data":{`+userSchemas+`,"userName":"ann","title":"second"}},
		{"method":"POST","path":"/Users","bulkId":"boss","data":{`+userSchemas+`,"userName":"boss"}}`))
	if got := a.statuses(); got != "POST boss 201, POST ann 201, POST ann2 409" {
		t.Fatalf("statuses %s", got)
	}
	if u := string(ts.do("GET", "/Users?filter=userName%20eq%20%22ann%22", "").want(t, 200).body); !strings.Contains(u, `"first"`) {
		t.Errorf("the ann stored is not the first sent: %s", u)
	}
}

// TestBulkWaitingFilterNamesAMember: a waiting PATCH naming a user in a
// path's filter (members[value eq "<id>"]) names her as one naming her in
// a value does: the DELETE of her sent after it waits behind it. It ran
// first, the group's POST then failed on the deleted member, and the
// PATCH on the group it made (a review of the Bulk order).
func TestBulkWaitingFilterNamesAMember(t *testing.T) {
	for _, form := range []string{"filter", "value"} {
		t.Run(form, func(t *testing.T) {
			ts := newTestServer(t, Options{})
			v := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"v"}`).want(t, 201).str("id")
			remove := `{"op":"remove","path":"members[value eq \"` + v + `\"]"}`
			if form == "value" {
				remove = `{"op":"remove","path":"members","value":[{"value":"` + v + `"}]}`
			}
			a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Groups/bulkId:g","data":{`+patchSchemas+`,"Operations":[`+remove+`]}},
		{"method":"DELETE","path":"/Users/`+v+`"},
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"G","members":[{"value":"`+v+`"}]}}`))
			if got := a.statuses(); got != "POST g 201, PATCH 204, DELETE 204" {
				t.Errorf("statuses %s: the DELETE of v must wait behind the PATCH naming her, sent before it", got)
			}
		})
	}
}

// BenchmarkBulkOrder: the ordering of one Bulk request of 1,000
// operations (bulk_max_operations) in shapes any client may send, on a
// fresh in-memory server each time. Each took seconds of CPU for a
// request charged at most the rate limit's burst (a review of the Bulk
// order): a chain of forward references (28.9 s with a first fix of the
// false circles that walked forward from every waiting operation, never
// landed), one operation naming 60,000
// bulkIds (3.1–4.8 s: its references deduplicated by a scan), circles
// held behind circles (5.3–5.9 s: each pass of finish walked every
// waiter's chain), and 250 PATCHes naming the same 250 later POSTs,
// visited again as each ran (3.5–4.7 s: each visit scanned every
// operation that had waited). And 250 PATCHes of one user, each naming
// 250 later POSTs, each visit meeting the waiting PATCHes before it: the
// walk needing takes ahead of each waiting operation it marks, which cost
// up to n²/2 per visit with a list per operation (never landed).
func BenchmarkBulkOrder(b *testing.B) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	user := func(name, manager string) string {
		if manager == "" {
			return `{` + userSchemas + `,"userName":"` + name + `"}`
		}
		return `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + ent + `"],"userName":"` + name + `","` + ent + `":{"manager":{"value":"bulkId:` + manager + `"}}}`
	}
	post := func(path, bulkID, data string) string {
		return `{"method":"POST","path":"` + path + `","bulkId":"` + bulkID + `","data":` + data + `}`
	}
	patch := func(path, data string) string {
		return `{"method":"PATCH","path":"` + path + `","data":{` + patchSchemas + `,"Operations":[` + data + `]}}`
	}
	refs := func(n int) string {
		var r []string
		for i := range n {
			r = append(r, fmt.Sprintf(`"bulkId:%d"`, i))
		}
		return strings.Join(r, ",")
	}
	shapes := []struct {
		name string
		ops  func(ts *testServer) []string
	}{
		{"forward chain", func(*testServer) []string {
			var ops []string
			for i := range 999 {
				ops = append(ops, post("/Users", fmt.Sprint("c", i), user(fmt.Sprint("c", i), fmt.Sprint("c", i+1))))
			}
			return append(ops, post("/Users", "c999", user("c999", "")))
		}},
		{"60,000 references", func(*testServer) []string {
			return []string{post("/Users", "x", `{`+userSchemas+`,"userName":"x","x":[`+refs(60000)+`]}`)}
		}},
		{"circles behind circles", func(*testServer) []string {
			var ops []string
			for k := 0; len(ops)+3 <= 1000; k++ {
				a, c := fmt.Sprint("a", k), fmt.Sprint("b", k)
				ops = append(ops, post("/Users", a, user(a, c)), post("/Users", c, user(c, a)), `{"method":"DELETE","path":"/Users/bulkId:`+a+`"}`)
			}
			return ops
		}},
		{"revisits", func(ts *testServer) []string {
			var ops []string
			for i := range 499 {
				ops = append(ops, patch("/Groups/bulkId:late", fmt.Sprintf(`{"op":"replace","path":"displayName","value":"l%d"}`, i)))
			}
			for i := range 250 {
				g := ts.do("POST", "/Groups", fmt.Sprintf(`{`+groupSchemas+`,"displayName":"G%d"}`, i)).want(b, 201).str("id")
				ops = append(ops, patch("/Groups/"+g, `{"op":"add","path":"x","value":[`+refs(250)+`]}`))
			}
			for i := range 250 {
				ops = append(ops, post("/Users", fmt.Sprint(i), user(fmt.Sprint("u", i), "")))
			}
			return append(ops, post("/Groups", "late", `{`+groupSchemas+`,"displayName":"late"}`))
		}},
		{"touching revisits", func(*testServer) []string {
			var ops []string
			for range 250 {
				ops = append(ops, patch("/Users/bulkId:late", `{"op":"add","path":"x","value":[`+refs(250)+`]}`))
			}
			for i := range 249 {
				ops = append(ops, post("/Users", fmt.Sprint(i), user(fmt.Sprint("u", i), "")))
			}
			for i := 249; len(ops) < 998; i++ {
				ops = append(ops, patch("/Users/bulkId:late", `{"op":"replace","path":"title","value":"bulkId:`+fmt.Sprint(i)+`"}`))
			}
			return append(ops, post("/Users", "late", user("late", "")), post("/Users", "249", user("u249", "")))
		}},
	}
	for _, shape := range shapes {
		b.Run(shape.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				ts := newTestServer(b, Options{BulkMaxPayload: 4 << 20})
				body := bulkBody("", strings.Join(shape.ops(ts), ","))
				b.StartTimer()
				ts.do("POST", "/Bulk", body).want(b, 200)
			}
		})
	}
}

// TestBulkOperationsHaveTheirSingleRequestsLimits: each operation is held
// to the body limits of its single request, no more and no less: the
// Bulk envelope's three levels counted against max_json_depth (a PATCH
// that passes alone made the whole Bulk 400), and an operation's data
// larger than max_body was stored (alone, 413).
func TestBulkOperationsHaveTheirSingleRequestsLimits(t *testing.T) {
	ts := newTestServer(t, Options{MaxJSONDepth: 6, MaxBodyBytes: 1024})
	uid := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"ann"}`).want(t, 201).str("id")
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"Ops"}`).want(t, 201).str("id")
	add := `{` + patchSchemas + `,"Operations":[{"op":"add","path":"members","value":[{"value":"` + uid + `"}]}]}`
	deep := `{` + userSchemas + `,"userName":"deep","urn:x:custom":{"a":{"b":{"c":{"d":{"e":1}}}}}}`
	ts.do("POST", "/Users", deep).want(t, 400)
	large := `{` + userSchemas + `,"userName":"large","title":"` + strings.Repeat("x", 2000) + `"}`
	ts.do("POST", "/Users", large).want(t, 413)
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Groups/`+gid+`","data":`+add+`},
		{"method":"POST","path":"/Users","bulkId":"deep","data":`+deep+`},
		{"method":"POST","path":"/Users","bulkId":"large","data":`+large+`}`))
	if got := a.statuses(); got != "PATCH 204, POST deep 400, POST large 413" {
		t.Fatalf("statuses: %s, want each as its single request", got)
	}
	if n := ts.do("GET", "/Users", "").str("totalResults"); n != "1" {
		t.Errorf("%s users, want ann alone", n)
	}
	// Measured as sent: U+2028 is three bytes in the body, six in Go's
	// encoding of the data (a review: 250 of them passed alone, 413 here).
	separators := `{` + userSchemas + `,"userName":"sep","title":"` + strings.Repeat("\u2028", 250) + `"}`
	ts.do("POST", "/Users", strings.Replace(separators, `"sep"`, `"alone"`, 1)).want(t, 201)
	if got := ts.bulk(t, bulkBody("", `{"method":"POST","path":"/Users","bulkId":"s","data":`+separators+`}`)).statuses(); got != "POST s 201" {
		t.Errorf("statuses %s, want the 201 of its single request", got)
	}
}

// RFC 7644 §3.7.2: a bulkId no operation creates cannot be resolved; the
// operation fails with 409 and the rest of the request goes on.
func TestBulkUnresolvedReference(t *testing.T) {
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"G","members":[{"value":"bulkId:nobody"}]}},
		{"method":"DELETE","path":"/Users/bulkId:ghost"},
		{"method":"POST","path":"/Users","data":{`+userSchemas+`,"userName":"u"}}`))
	if got := a.statuses(); got != "POST g 409, DELETE 409, POST 201" {
		t.Fatalf("statuses: %s", got)
	}
	if d := fmt.Sprint(a.Operations[0].Response["detail"]); !strings.Contains(d, `bulkId "nobody" could not be resolved`) {
		t.Errorf("detail %q", d)
	}
}

// RFC 7644 §3.7.3: with failOnErrors, processing stops once that many
// operations failed; the results so far are returned, and what was done is
// not undone (each operation commits on its own). Without it, every
// operation is attempted.
func TestBulkFailOnErrors(t *testing.T) {
	ops := `
		{"method":"POST","path":"/Users","bulkId":"1","data":{` + userSchemas + `,"userName":"one"}},
		{"method":"POST","path":"/Users","bulkId":"2","data":{` + userSchemas + `,"userName":"one"}},
		{"method":"PATCH","path":"/Users/nope","data":{` + patchSchemas + `,"Operations":[{"op":"replace","path":"title","value":"x"}]}},
		{"method":"POST","path":"/Users","bulkId":"3","data":{` + userSchemas + `,"userName":"three"}}`
	ts := newTestServer(t, Options{})
	a := ts.bulk(t, bulkBody(`"failOnErrors":1`, ops))
	if got := a.statuses(); got != "POST 1 201, POST 2 409" {
		t.Fatalf("failOnErrors 1: %s", got)
	}
	if a.Operations[1].Response["scimType"] != "uniqueness" {
		t.Errorf("the 409 carries the single request's error: %v", a.Operations[1].Response)
	}
	if n := ts.do("GET", "/Users", "").str("totalResults"); n != "1" {
		t.Fatalf("%s users after stopping; the first create stays", n)
	}
	ts = newTestServer(t, Options{})
	if got := ts.bulk(t, bulkBody(`"failOnErrors":2`, ops)).statuses(); got != "POST 1 201, POST 2 409, PATCH 404" {
		t.Fatalf("failOnErrors 2: %s", got)
	}
	ts = newTestServer(t, Options{})
	if got := ts.bulk(t, bulkBody("", ops)).statuses(); got != "POST 1 201, POST 2 409, PATCH 404, POST 3 201" {
		t.Fatalf("without failOnErrors: %s", got)
	}
}

// RFC 7644 §3.7.4: maxOperations and maxPayloadSize, as advertised, are
// enforced with 413 and a SCIM error; nothing of a refused request runs.
func TestBulkLimits(t *testing.T) {
	ts := newTestServer(t, Options{BulkMaxOperations: 3, BulkMaxPayload: 2048})
	sp := ts.do("GET", "/ServiceProviderConfig", "").want(t, 200)
	if sp.str("bulk.supported") != "true" || sp.str("bulk.maxOperations") != "3" || sp.str("bulk.maxPayloadSize") != "2048" {
		t.Fatalf("advertised bulk: %s", sp.str("bulk"))
	}
	op := `{"method":"POST","path":"/Users","data":{` + userSchemas + `,"userName":"u%d"}}`
	var four []string
	for i := range 4 {
		four = append(four, fmt.Sprintf(op, i))
	}
	ts.do("POST", "/Bulk", bulkBody("", strings.Join(four, ","))).wantError(t, 413, "", "maxOperations is 3")
	ts.do("POST", "/Bulk", bulkBody("", fmt.Sprintf(`{"method":"POST","path":"/Users","data":{`+userSchemas+`,"userName":"u","title":"%s"}}`, strings.Repeat("x", 2048)))).
		wantError(t, 413, "", "maxPayloadSize (2048 bytes)")
	if n := ts.do("GET", "/Users", "").str("totalResults"); n != "0" {
		t.Fatalf("%s users created by refused bulk requests", n)
	}
	if got := ts.bulk(t, bulkBody("", strings.Join(four[:3], ","))).statuses(); got != "POST 201, POST 201, POST 201" {
		t.Fatalf("at the limit: %s", got)
	}
}

// Malformed requests and operations: the request as a whole is refused when
// it cannot be read; an operation that cannot be read fails on its own.
func TestBulkMalformed(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.do("POST", "/Bulk", `{"Operations":[]}`).wantError(t, 400, "invalidSyntax", "BulkRequest")
	ts.do("POST", "/Bulk", bulkBody("", "")).wantError(t, 400, "invalidSyntax", "non-empty Operations")
	ts.do("POST", "/Bulk", bulkBody(`"failOnErrors":-1`, `{"method":"DELETE","path":"/Users/x"}`)).wantError(t, 400, "invalidValue", "failOnErrors")
	ts.do("POST", "/Bulk", bulkBody("", `{"method":"POST","path":"/Users","bulkId":"x","data":{`+userSchemas+`,"userName":"a"}},{"method":"POST","path":"/Users","bulkId":"x","data":{`+userSchemas+`,"userName":"b"}}`)).
		wantError(t, 400, "invalidValue", "both create bulkId")
	a := ts.bulk(t, bulkBody("", `
		"not an object",
		{"method":"GET","path":"/Users"},
		{"method":"POST","path":"/Schemas","data":{}},
		{"method":"PUT","path":"/Users/x"},
		{"method":"POST","path":"/Users/x","data":{`+userSchemas+`,"userName":"a"}},
		{"method":"DELETE","path":"/Users"},
		{"method":"POST","path":"/users","data":{`+userSchemas+`,"userName":"ok","shoeSize":9}}`))
	if got := a.statuses(); got != " 400, GET 400, POST 400, PUT 400, POST 400, DELETE 400, POST 201" {
		t.Fatalf("statuses: %s", got)
	}
	var detail string
	for _, info := range ts.requests() {
		if info.Operation == "bulk" && info.Status == 200 {
			detail = info.Detail
		}
	}
	if detail != "7 of 7 operations performed, 6 failed; ignored unknown attributes: shoeSize" {
		t.Errorf("provisioning log detail %q", detail)
	}
	// An operation giving one name in two spellings (which one would count
	// was map order) or a version that is not an ETag string fails alone;
	// nothing is deleted or replaced.
	id := ts.do("POST", "/Users", `{`+userSchemas+`,"userName":"kept"}`).want(t, 201).str("id")
	a = ts.bulk(t, bulkBody("", `
		{"method":"DELETE","path":"/Users/`+id+`","Path":"/Users/nobody"},
		{"method":"PUT","path":"/Users/`+id+`","version":7,"data":{`+userSchemas+`,"userName":"kept","title":"x"}},
		{"method":"PATCH","path":"/Users/`+id+`","data":{"schemas":["`+PatchOpSchema+`"],"Operations":[{"op":"replace","Op":"remove","path":"title","value":"y"}]}},
		{"method":"DELETE","path":"/Users/`+id+`?attributes=id"},
		{"method":"PUT","path":"/Users/`+id+`#x","data":{`+userSchemas+`,"userName":"kept","title":"x"}},
		{"method":"POST","path":"/Users?x=1","data":{`+userSchemas+`,"userName":"other"}},
		{"method":"POST","path":"/Users","bulkId":"u1","data":{`+userSchemas+`,"userName":"u1"}},
		{"method":"DELETE","path":"/Users/bulkId:u1?attributes=id"}`))
	if got := a.statuses(); got != " 400, PUT 400, PATCH 400, DELETE 400, PUT 400, POST 400, POST u1 201, DELETE 400" { // the first op's method is unread
		t.Fatalf("statuses: %s", got)
	}
	for i, want := range []string{`gives "path" twice`, "version must be a string", `gives "op" twice`,
		`takes no query or fragment ("?attributes=id")`, `takes no query or fragment ("#x")`, `takes no query or fragment ("?x=1")`,
		"", `takes no query or fragment ("?attributes=id")`} {
		if want == "" {
			continue
		}
		if o := a.Operations[i]; o.Response == nil || !strings.Contains(fmt.Sprint(o.Response), want) {
			t.Errorf("operation %d: %+v, want it to say %q", i, o.Response, want)
		}
	}
	if u := ts.do("GET", "/Users/"+id, "").want(t, 200); u.str("title") != "" || u.str("meta.version") != `W/"1"` {
		t.Errorf("the user after the refused operations: %s", u.body)
	}
	ts.do("POST", "/Bulk", `{"schemas":["`+BulkRequestSchema+`"],"Operations":[],"operations":[]}`).wantError(t, 400, "invalidSyntax", `gives "operations" twice`)
}

// TestBulkIDsAreReferable: a POST's bulkId holding what ends a reference
// (a space, a quote, a bracket, a slash, a comma) could never be referred
// to, "/Users/bulkId:x y" naming "x": its operation fails alone with 400
// invalidValue, creating nothing. Any other bulkId is referred to whole.
func TestBulkIDsAreReferable(t *testing.T) {
	ts := newTestServer(t, Options{})
	for _, id := range []string{"x y", `x\"y`, "x'y", "x[y", "x]y", "x/y", "x,y", `x\ty`, " x"} {
		a := ts.bulk(t, bulkBody("", `
			{"method":"POST","path":"/Users","bulkId":"`+id+`","data":{`+userSchemas+`,"userName":"u"}},
			{"method":"POST","path":"/Users","bulkId":"ok","data":{`+userSchemas+`,"userName":"ok"}}`))
		if got := a.statuses(); !strings.HasSuffix(got, " 400, POST ok 201") {
			t.Fatalf("bulkId %s: statuses %s", id, got)
		}
		if r := a.Operations[0].Response; r["scimType"] != "invalidValue" || !strings.Contains(fmt.Sprint(r["detail"]), "could never be referred to") {
			t.Errorf("bulkId %s: response %v", id, r)
		}
		ts.do("DELETE", "/Users/"+lastSegment(a.Operations[1].Location), "").want(t, 204)
	}
	if r := ts.do("GET", "/Users", "").want(t, 200); r.str("totalResults") != "0" {
		t.Fatalf("refused operations created users: %s", r.body)
	}
	a := ts.bulk(t, bulkBody("", `{"method":"POST","path":"/Users","bulkId":5,"data":{`+userSchemas+`,"userName":"u"}}`))
	if got := a.statuses(); got != "POST 400" || !strings.Contains(fmt.Sprint(a.Operations[0].Response), "bulkId must be a string") {
		t.Errorf("a number as bulkId: %s %v", got, a.Operations[0].Response)
	}
	// What a reference can hold is referred to whole, in a path, a value
	// and a PATCH filter.
	odd := `a.b-c_d:ü~1`
	a = ts.bulk(t, bulkBody("", `
		{"method":"POST","path":"/Users","bulkId":"`+odd+`","data":{`+userSchemas+`,"userName":"odd"}},
		{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"G","members":[{"value":"bulkId:`+odd+`"}]}},
		{"method":"PATCH","path":"/Users/bulkId:`+odd+`","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"title","value":"t"}]}},
		{"method":"PATCH","path":"/Groups/bulkId:g","data":{`+patchSchemas+`,"Operations":[{"op":"remove","path":"members[value eq \"bulkId:`+odd+`\"]"}]}}`))
	if got := a.statuses(); got != "POST "+odd+" 201, POST g 201, PATCH 200, PATCH 204" {
		t.Fatalf("statuses: %s", got)
	}
	if a.Operations[2].Location != a.Operations[0].Location {
		t.Errorf("the PATCH by reference went to %s, not %s", a.Operations[2].Location, a.Operations[0].Location)
	}
}

// A bulk request costs the rate limit one request per operation: one that
// the budget cannot pay for is refused whole with 429, and one it can pay
// for spends it.
func TestBulkRateLimit(t *testing.T) {
	op := `{"method":"POST","path":"/Users","data":{` + userSchemas + `,"userName":"u%d"}}`
	four := bulkBody("", fmt.Sprintf(op, 1)+","+fmt.Sprintf(op, 2)+","+fmt.Sprintf(op, 3)+","+fmt.Sprintf(op, 4))
	short := newTestServer(t, Options{Limiter: &countingLimiter{budget: 3}})
	short.do("POST", "/Bulk", four).wantError(t, 429, "", "over its request rate")
	if n := short.do("GET", "/Users", "").want(t, 200).str("totalResults"); n != "0" {
		t.Fatalf("a refused bulk request created %s users", n)
	}
	exact := newTestServer(t, Options{Limiter: &countingLimiter{budget: 4}})
	if got := exact.bulk(t, four).statuses(); got != "POST 201, POST 201, POST 201, POST 201" {
		t.Fatalf("statuses: %s", got)
	}
	exact.do("GET", "/Users", "").wantError(t, 429, "", "over its request rate")
}

// countingLimiter allows budget requests in all.
type countingLimiter struct {
	mu     sync.Mutex
	budget int
}

func (l *countingLimiter) Burst(string) int { return math.MaxInt }

func (l *countingLimiter) AllowN(_ string, n int) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n > l.budget {
		return false, time.Second
	}
	l.budget -= n
	return true, 0
}

// FuzzBulk sends arbitrary bulk bodies through the handler to the in-memory
// backend: every answer is 200 with a BulkResponse, or a SCIM error other
// than 500; no operation's result is a 500 either.
func FuzzBulk(f *testing.F) {
	f.Add(bulkBody("", `{"method":"POST","path":"/Users","bulkId":"a","data":{`+userSchemas+`,"userName":"a"}},`+
		`{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"g","members":[{"value":"bulkId:a"}]}}`))
	f.Add(bulkBody(`"failOnErrors":1`, `{"method":"PATCH","path":"/Groups/bulkId:g","data":{`+patchSchemas+`,"Operations":[{"op":"remove","path":"members[value eq \"bulkId:a\"]"}]}},`+
		`{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"g","members":[{"value":"bulkId:g"}]}}`))
	f.Add(bulkBody("", `{"method":"DELETE","path":"/users/bulkId:x/y"},{"method":"put","path":"/Groups/%2F","data":{}}`))
	f.Fuzz(func(t *testing.T, body string) {
		b := scimtest.NewMemory(map[string]string{"acme": tokenAcme}) // fresh: state must not pile up across inputs
		h := NewHandler(b, b, Options{BulkMaxOperations: 20})
		req := httptest.NewRequest("POST", "/scim/v2/acme/Bulk", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%d: %s", rec.Code, rec.Body)
		}
		if rec.Code != 200 {
			return
		}
		var a bulkAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("answer is not a BulkResponse: %v\n%s", err, rec.Body)
		}
		for _, o := range a.Operations {
			if o.Status == "" || o.Status[0] == '5' {
				t.Fatalf("operation result %+v", o)
			}
		}
	})
}

// TestBulkReportsEvents: a bulk request reports, in RequestInfo, the events
// of every operation that changed something, in the order they ran; a
// failed operation adds none.
func TestBulkReportsEvents(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.bulk(t, bulkBody("", `{"method":"POST","path":"/Users","bulkId":"a","data":{`+userSchemas+`,"userName":"a"}},`+
		`{"method":"POST","path":"/Users","bulkId":"dup","data":{`+userSchemas+`,"userName":"a"}},`+
		`{"method":"POST","path":"/Groups","bulkId":"g","data":{`+groupSchemas+`,"displayName":"g","members":[{"value":"bulkId:a"}]}},`+
		`{"method":"DELETE","path":"/Groups/bulkId:g"}`))
	ts.mu.Lock()
	defer ts.mu.Unlock()
	info := ts.infos[len(ts.infos)-1]
	if info.Operation != "bulk" || strings.Join(info.EventIDs, ",") != "ev-1,ev-2,ev-3" {
		t.Fatalf("bulk observed as %s with events %v, want ev-1,ev-2,ev-3 (the failed create adds none)", info.Operation, info.EventIDs)
	}
}

// TestBulkStopsWhenItsCredentialIsRevoked: a token revoked while a Bulk
// request runs stops what is left of it, each operation left answered 401,
// as the next request is: a Bulk of a thousand operations does not outlive
// the revocation by a second of writes.
func TestBulkStopsWhenItsCredentialIsRevoked(t *testing.T) {
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme})
	auth := &revocable{Memory: mem}
	ts := &testServer{t: t}
	ts.srv = httptest.NewServer(NewHandler(&revokingBackend{Backend: mem, auth: auth, after: 2}, auth, Options{}))
	t.Cleanup(ts.srv.Close)
	op := `{"method":"POST","path":"/Users","data":{` + userSchemas + `,"userName":"u%d"}}`
	a := ts.bulk(t, bulkBody("", fmt.Sprintf(op, 1)+","+fmt.Sprintf(op, 2)+","+fmt.Sprintf(op, 3)+","+fmt.Sprintf(op, 4)))
	if got := a.statuses(); got != "POST 201, POST 201, POST 401, POST 401" {
		t.Fatalf("statuses: %s", got)
	}
	ts.do("GET", "/Users", "").wantError(t, 401, "", "revoked")
}

// revocable is mem's authentication, until revoked.
type revocable struct {
	*scimtest.Memory
	revoked atomic.Bool
}

func (a *revocable) Authenticate(ctx context.Context, tenant, token string) error {
	if a.revoked.Load() {
		return Errorf(ErrUnauthorized, "token was revoked")
	}
	return a.Memory.Authenticate(ctx, tenant, token)
}

// revokingBackend revokes auth once it has created after resources.
type revokingBackend struct {
	Backend
	auth    *revocable
	after   int
	created atomic.Int64
}

func (b *revokingBackend) Create(ctx context.Context, tenant string, r *Resource) (WriteResult, error) {
	res, err := b.Backend.Create(ctx, tenant, r)
	if err == nil && b.created.Add(1) == int64(b.after) {
		b.auth.revoked.Store(true)
	}
	return res, err
}

// TestBulkVersionsAsIfMatch: a Bulk operation's version is its If-Match
// (README, ETags). An empty one matches nothing, 412, as an empty If-Match
// does (it was no condition: the group was patched, replaced and deleted);
// a create carrying one is refused, 501, creating nothing, as a POST with
// If-Match is (it was ignored).
func TestBulkVersionsAsIfMatch(t *testing.T) {
	ts := newTestServer(t, Options{})
	gid := ts.do("POST", "/Groups", `{`+groupSchemas+`,"displayName":"g"}`).want(t, 201).str("id")
	a := ts.bulk(t, bulkBody("", `
		{"method":"PATCH","path":"/Groups/`+gid+`","version":"","data":{`+patchSchemas+`,"Operations":[{"op":"replace","path":"displayName","value":"patched"}]}},
		{"method":"PUT","path":"/Groups/`+gid+`","version":"","data":{`+groupSchemas+`,"displayName":"put"}},
		{"method":"DELETE","path":"/Groups/`+gid+`","version":""},
		{"method":"POST","path":"/Users","bulkId":"b","version":"W/\"9\"","data":{`+userSchemas+`,"userName":"bob"}}`))
	if got := a.statuses(); got != "PATCH 412, PUT 412, DELETE 412, POST b 501" {
		t.Errorf("operations with an empty version, and a create with one: %s", got)
	}
	if r := ts.do("GET", "/Groups/"+gid, "").want(t, 200); r.str("displayName") != "g" {
		t.Errorf("the group after the refused operations: %s", r.body)
	}
	if r := ts.do("GET", "/Users?filter=userName%20eq%20%22bob%22", "").want(t, 200); r.str("totalResults") != "0" {
		t.Errorf("the refused create made the user: %s", r.body)
	}
}

// TestBulkFailOnErrorsAboveMaxOperations: RFC 7644 §3.7 bounds failOnErrors
// by nothing; one larger than the operations sent never stops the request
// (it was refused whole, 400, above maxOperations).
func TestBulkFailOnErrorsAboveMaxOperations(t *testing.T) {
	ts := newTestServer(t, Options{BulkMaxOperations: 10})
	a := ts.bulk(t, bulkBody(`"failOnErrors":11`, `{"method":"POST","path":"/Users","bulkId":"a","data":{`+userSchemas+`,"userName":"ann"}}`))
	if got := a.statuses(); got != "POST a 201" {
		t.Errorf("failOnErrors 11 with maxOperations 10: %s", got)
	}
}
