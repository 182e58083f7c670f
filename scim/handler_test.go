// SPDX-License-Identifier: Apache-2.0

package scim_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// Shared with the internal tests (export_test.go).
var patchBody = PatchBody

const (
	memberChunk  = MemberChunk
	readAttempts = ReadAttempts
	userSchemas  = UserSchemas
)

const (
	tokenAcme   = "acme-secret-token-0123456789"
	tokenGlobex = "globex-secret-token-0123456789"
)

type testServer struct {
	t       testing.TB
	srv     *httptest.Server
	backend *eventingBackend
	mu      sync.Mutex
	infos   []RequestInfo
}

// eventingBackend reports an event id for every write that changed
// something, as the relay does, so that the tests can follow event ids
// from a backend to RequestInfo.
type eventingBackend struct {
	Backend
	mu        sync.Mutex
	n         int
	noDisplay map[string]bool // member values whose display Members leaves out
	// beforeMembers, when set, runs at the start of each Members call,
	// with the call's number (from 1): a write there lands between an
	// answer's read of a group and its read of the members.
	beforeMembers func(call int)
	membersCalls  int
}

func (b *eventingBackend) produced(res WriteResult, err error) (WriteResult, error) {
	if err == nil {
		b.mu.Lock()
		b.n++
		res.EventIDs = []string{fmt.Sprintf("ev-%d", b.n)}
		b.mu.Unlock()
	}
	return res, err
}

// Members answers as the backend does, without the display of the
// members noDisplay names.
func (b *eventingBackend) Members(ctx context.Context, tenant, groupID, version, after string, limit int) ([]Member, error) {
	b.mu.Lock()
	b.membersCalls++
	call, before := b.membersCalls, b.beforeMembers
	b.mu.Unlock()
	if before != nil {
		before(call)
	}
	ms, err := b.Backend.Members(ctx, tenant, groupID, version, after, limit)
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range ms {
		if b.noDisplay[ms[i].Value] {
			ms[i].Display = ""
		}
	}
	return ms, err
}

func (b *eventingBackend) Create(ctx context.Context, tenant string, r *Resource) (WriteResult, error) {
	return b.produced(b.Backend.Create(ctx, tenant, r))
}

func (b *eventingBackend) Update(ctx context.Context, tenant string, rt *ResourceType, id string, fn UpdateFunc) (WriteResult, error) {
	var before string
	res, err := b.Backend.Update(ctx, tenant, rt, id, func(cur *Resource) (*Update, error) {
		before = cur.Meta().Version
		return fn(cur)
	})
	if err != nil || res.Resource.Meta().Version == before {
		return res, err
	}
	return b.produced(res, err)
}

func (b *eventingBackend) Delete(ctx context.Context, tenant string, rt *ResourceType, id string, ifMatch Precondition) (WriteResult, error) {
	return b.produced(b.Backend.Delete(ctx, tenant, rt, id, ifMatch))
}

func newTestServer(t testing.TB, o Options) *testServer {
	t.Helper()
	mem := scimtest.NewMemory(map[string]string{"acme": tokenAcme, "globex": tokenGlobex})
	ts := &testServer{t: t}
	o.Observe = func(_ context.Context, info *RequestInfo) {
		ts.mu.Lock()
		ts.infos = append(ts.infos, *info)
		ts.mu.Unlock()
	}
	if o.ValidTenant == nil {
		// The relay passes the event contract's rule; these tests need only
		// some names to be impossible.
		o.ValidTenant = func(name string) bool { return name == strings.ToLower(name) && len(name) <= 64 }
	}
	ts.backend = &eventingBackend{Backend: mem}
	ts.srv = httptest.NewServer(NewHandler(ts.backend, mem, o))
	t.Cleanup(ts.srv.Close)
	return ts
}

// noDisplay has the backend answer the members with these values without
// their display.
func (ts *testServer) noDisplay(values ...string) {
	ts.backend.mu.Lock()
	defer ts.backend.mu.Unlock()
	ts.backend.noDisplay = map[string]bool{}
	for _, v := range values {
		ts.backend.noDisplay[v] = true
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// do sends a request to /scim/v2/acme<path> with the acme token unless the
// headers say otherwise ("Authorization: -" sends none).
func (ts *testServer) do(method, path, body string, headers ...string) response {
	ts.t.Helper()
	u := ts.srv.URL + path
	if !strings.HasPrefix(path, "/scim/") {
		u = ts.srv.URL + "/scim/v2/acme" + path
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tokenAcme)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "-" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return ts.send(req)
}

// send sends a request as it is and reads the answer.
func (ts *testServer) send(req *http.Request) response {
	ts.t.Helper()
	method, path := req.Method, req.URL.Path
	res, err := ts.srv.Client().Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, body: b}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &r.json); err != nil {
			ts.t.Fatalf("%s %s: response is not JSON: %v\n%s", method, path, err, b)
		}
		if ct := res.Header.Get("Content-Type"); ct != ContentType {
			ts.t.Errorf("%s %s: Content-Type %q, want %q", method, path, ct, ContentType)
		}
	}
	return r
}

func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// wantError checks a SCIM error body: status as a string, scimType, detail.
func (r response) wantError(t *testing.T, status int, scimType, detail string) {
	t.Helper()
	r.want(t, status)
	if got := r.json["status"]; got != fmt.Sprint(status) {
		t.Errorf("error status field %#v, want the string %q", got, fmt.Sprint(status))
	}
	if got, _ := r.json["scimType"].(string); got != scimType {
		t.Errorf("scimType %q, want %q", got, scimType)
	}
	if got, _ := r.json["detail"].(string); !strings.Contains(got, detail) {
		t.Errorf("detail %q does not contain %q", got, detail)
	}
	if s, _ := r.json["schemas"].([]any); len(s) != 1 || s[0] != ErrorSchema {
		t.Errorf("schemas %v, want [%s]", r.json["schemas"], ErrorSchema)
	}
}

func (r response) str(path string) string {
	var v any = r.json
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			fmt.Sscan(p, &i)
			if i >= len(x) {
				return ""
			}
			v = x[i]
		default:
			return ""
		}
	}
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func filterQuery(f string) string { return "filter=" + url.QueryEscape(f) }

func entraBody(t *testing.T, id string) string {
	t.Helper()
	for _, s := range scimtest.LoadEntraSteps(t, entraFixture) {
		if s.ID == id {
			return s.Body()
		}
	}
	t.Fatalf("no Entra step %s", id)
	return ""
}

// TestEntraSequence replays Entra's provisioning cycle (the requests Entra
// sends, recorded in testdata/entra-requests.json, in the order of its
// lifecycle: Test Connection, create, update, deactivate, groups, delete)
// over HTTP against the in-memory backend.
func TestEntraSequence(t *testing.T) {
	ts := newTestServer(t, Options{})

	// Test Connection: a random GUID as the matching value → 200, empty list.
	r := ts.do("GET", "/Users?"+filterQuery(`userName eq "9c2d4a7e-1f3b-4e8a-b5c6-d7e8f9a0b1c2"`), "").want(t, 200)
	if r.str("totalResults") != "0" || r.str("Resources") != "[]" || r.str("schemas.0") != ListResponseSchema {
		t.Fatalf("Test Connection answer: %s", r.body)
	}
	ts.do("GET", "/Schemas", "").want(t, 200)

	// Create: match by userName (none), POST.
	ts.do("GET", "/Users?"+filterQuery(`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`), "").want(t, 200)
	created := ts.do("POST", "/Users", entraBody(t, "create-user")).want(t, 201)
	id := created.str("id")
	if id == "" || created.header.Get("Location") != ts.srv.URL+"/scim/v2/acme/Users/"+id {
		t.Fatalf("create: id %q, Location %q", id, created.header.Get("Location"))
	}
	if created.str("meta.location") != created.header.Get("Location") || created.header.Get("ETag") != `W/"1"` {
		t.Fatalf("create: meta %s, ETag %q", created.str("meta"), created.header.Get("ETag"))
	}
	if created.str("active") != "true" || created.str("emails.0.type") != "work" {
		t.Fatalf("create answer: %s", created.body)
	}
	// A second POST of the same userName: 409 uniqueness.
	ts.do("POST", "/Users", entraBody(t, "create-user")).wantError(t, 409, "uniqueness", "userName")

	// Matching finds it by userName (any case), externalId and work email.
	for _, f := range []string{
		`userName eq "TEST_USER_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`,
		`externalId eq 0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef`,
		`emails[type eq "work"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"`,
	} {
		r := ts.do("GET", "/Users?"+filterQuery(f), "").want(t, 200)
		if r.str("totalResults") != "1" || r.str("Resources.0.id") != id {
			t.Errorf("filter %s: %s", f, r.body)
		}
	}
	ts.do("GET", "/Users/"+id, "").want(t, 200)

	// Updates, in both aadOptscim062020 forms.
	for _, step := range []string{"patch-user-multivalued", "patch-user-singlevalued", "replace-multi-legacy", "replace-multi-flag", "add-single-value-legacy", "patch-manager-legacy"} {
		r := ts.do("PATCH", "/Users/"+id, entraBody(t, step)).want(t, 200)
		if r.str("id") != id {
			t.Fatalf("%s: answer without the user: %s", step, r.body)
		}
	}
	got := ts.do("GET", "/Users/"+id, "").want(t, 200)
	ent, _ := got.json[EnterpriseUserSchema].(map[string]any)
	manager, _ := ent["manager"].(map[string]any)
	if got.str("userName") != "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" ||
		got.str("name.givenName") != "Kkom" ||
		got.str("emails.0.value") != "TestMhvaes@test.microsoft.com" ||
		ent["employeeNumber"] != "Aklq" ||
		manager["value"] != "00aa00aa-bb11-cc22-dd33-44ee44ee44ee" {
		t.Fatalf("after the updates: %s", got.body)
	}
	// Disable: "False" without the flag, false with it.
	for _, step := range []string{"disable-user-legacy", "disable-user-flag"} {
		r := ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":true}]}`).want(t, 200)
		if r.str("active") != "true" {
			t.Fatal("re-enable failed")
		}
		r = ts.do("PATCH", "/Users/"+id, entraBody(t, step)).want(t, 200)
		if r.str("active") != "false" {
			t.Fatalf("%s: active is %s, want the boolean false", step, r.str("active"))
		}
	}

	// Groups: match by displayName without members, create, rename, members.
	other := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"u1091"}`).want(t, 201).str("id")
	r = ts.do("GET", "/Groups?excludedAttributes=members&"+filterQuery(`displayName eq "displayName"`), "").want(t, 200)
	if r.str("totalResults") != "0" {
		t.Fatalf("group match before create: %s", r.body)
	}
	gid := ts.do("POST", "/Groups", entraBody(t, "create-group")).want(t, 201).str("id")
	ts.do("PATCH", "/Groups/"+gid, entraBody(t, "patch-group-displayname")).want(t, 204)
	add := strings.ReplaceAll(entraBody(t, "patch-group-add-members"), "f648f8d5ea4e4cd38e9c", id)
	ts.do("PATCH", "/Groups/"+gid, add).want(t, 204)
	ts.do("PATCH", "/Groups/"+gid, strings.ReplaceAll(add, id, other)).want(t, 204)
	g := ts.do("GET", "/Groups/"+gid, "").want(t, 200)
	if g.str("members.0.value") != id || g.str("members.1.value") != other || g.str("members.0.$ref") != ts.srv.URL+"/scim/v2/acme/Users/"+id {
		t.Fatalf("group members: %s", g.str("members"))
	}
	g = ts.do("GET", "/Groups?excludedAttributes=members&"+filterQuery(`displayName eq "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"`), "").want(t, 200)
	if g.str("totalResults") != "1" || strings.Contains(string(g.body), `"members"`) {
		t.Fatalf("group by displayName with excludedAttributes=members: %s", g.body)
	}
	if u := ts.do("GET", "/Users/"+id, "").want(t, 200); u.str("groups.0.value") != gid {
		t.Fatalf("user's groups attribute: %s", u.str("groups"))
	}
	// Remove, both forms.
	ts.do("PATCH", "/Groups/"+gid, strings.ReplaceAll(entraBody(t, "remove-member-legacy"), "u1091", other)).want(t, 204)
	ts.do("PATCH", "/Groups/"+gid, strings.ReplaceAll(entraBody(t, "remove-member-flag"), "7f4bc1a3-285e-48ae-8202-5accb43efb0e", id)).want(t, 204)
	if g := ts.do("GET", "/Groups/"+gid, "").want(t, 200); g.str("members") != "" {
		t.Fatalf("members after removing both: %s", g.str("members"))
	}

	// Deletes.
	ts.do("DELETE", "/Groups/"+gid, "").want(t, 204)
	ts.do("GET", "/Groups/"+gid, "").wantError(t, 404, "", "not found")
	ts.do("DELETE", "/Users/"+id, "").want(t, 204)
	ts.do("GET", "/Users/"+id, "").wantError(t, 404, "", "not found")
}

func TestAuthAndRouting(t *testing.T) {
	ts := newTestServer(t, Options{})
	r := ts.do("GET", "/Users", "", "Authorization", "-")
	r.wantError(t, 401, "", "missing Authorization")
	if got := r.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{`Bearer realm="scimrelay"`}) {
		t.Errorf("401 without a credential challenges %q, want Bearer without an error (RFC 6750 §3)", got)
	}
	r = ts.do("GET", "/Users", "", "Authorization", "Bearer "+tokenAcme+"x")
	if got := r.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{`Bearer realm="scimrelay", error="invalid_token"`}) {
		t.Errorf("401 for a wrong token challenges %q, want error=\"invalid_token\" (RFC 6750 §3.1)", got)
	}
	// Another scheme is a credential of a method not supported: no error
	// code (RFC 6750 §3.1, "SHOULD NOT"); it got error="invalid_token".
	for _, auth := range []string{"Basic YTpi", "Token " + tokenAcme, `Digest username="x"`} {
		r = ts.do("GET", "/Users", "", "Authorization", auth)
		r.wantError(t, 401, "", "")
		if got := r.header.Values("WWW-Authenticate"); !slices.Equal(got, []string{`Bearer realm="scimrelay"`}) {
			t.Errorf("401 for %q challenges %q, want Bearer without an error (RFC 6750 §3.1)", auth, got)
		}
	}
	// A method the endpoint lacks is answered before authentication, and
	// its detail does not carry a path of any length back.
	long := "/Users/" + strings.Repeat("x", 8000)
	r = ts.do("X0", long, "", "Authorization", "-")
	r.wantError(t, 405, "", "is not allowed")
	if d, _ := r.json["detail"].(string); len(d) > 400 {
		t.Errorf("a 405's detail is %d bytes long", len(d))
	}
	// Basic is refused unless enabled (see TestBasicAuth).
	ts.do("GET", "/Users", "", "Authorization", "Basic dXNlcjpwYXNz").wantError(t, 401, "", "malformed")
	ts.do("GET", "/Users", "", "Authorization", "Bearer").wantError(t, 401, "", "malformed")
	ts.do("GET", "/Users", "", "Authorization", "Bearer a b").wantError(t, 401, "", "malformed")
	ts.do("GET", "/Users", "", "Authorization", "Bearer "+tokenAcme+"x").wantError(t, 401, "", "invalid")
	ts.do("GET", "/Users", "", "Authorization", "bearer "+tokenAcme).want(t, 200) // scheme is case-insensitive
	// A token of one tenant is worthless on another.
	ts.do("GET", "/scim/v2/globex/Users", "").wantError(t, 401, "", "invalid")
	ts.do("GET", "/scim/v2/globex/Users", "", "Authorization", "Bearer "+tokenGlobex).want(t, 200)
	// An unknown tenant answers exactly as a known one does to a wrong or
	// missing token, so that tenant names cannot be found by asking.
	for _, hdr := range [][]string{{"Authorization", "-"}, {"Authorization", "Bearer " + tokenAcme + "x"}, {"Authorization", "Bearer " + tokenAcme}} {
		known, unknown := ts.do("GET", "/scim/v2/globex/Users", "", hdr...), ts.do("GET", "/scim/v2/initech/Users", "", hdr...)
		if hdr[1] == "Bearer "+tokenAcme {
			known = ts.do("GET", "/scim/v2/globex/Users", "", "Authorization", "Bearer "+tokenAcme+"x")
		}
		if unknown.status != 401 || unknown.str("detail") != known.str("detail") || unknown.str("status") != known.str("status") {
			t.Fatalf("unknown tenant with %q: %d %s; a known tenant: %d %s", hdr[1], unknown.status, unknown.body, known.status, known.body)
		}
	}
	// Two Authorization headers are ambiguous: which one counts?
	two := func(method, path string) response {
		req, _ := http.NewRequest(method, ts.srv.URL+path, nil)
		req.Header.Add("Authorization", "Bearer "+tokenAcme)
		req.Header.Add("Authorization", "Bearer "+tokenGlobex)
		return ts.send(req)
	}
	two("GET", "/scim/v2/acme/Users").wantError(t, 400, "invalidSyntax", "more than one Authorization header")
	two("GET", "/scim/v2/initech/Users").wantError(t, 400, "invalidSyntax", "more than one Authorization header")
	// Malformed tenants: names no tenant can have.
	ts.do("GET", "/scim/v2/Acme/Users", "").wantError(t, 404, "", "no tenant")
	ts.do("GET", "/scim/v2/"+strings.Repeat("a", 300)+"/Users", "").wantError(t, 404, "", "no tenant")
	ts.do("GET", "/scim/v2/acme/Unicorns", "").wantError(t, 404, "", "no SCIM endpoint")
	ts.do("GET", "/scim/v2/acme/Users/a%2F..%2Fb", "").wantError(t, 404, "", "")
	// An encoded slash is an id, never the collection (with or without a trailing slash).
	for _, p := range []string{"/scim/v2/acme/Users/%2F", "/scim/v2/acme/Users/%2F/", "/scim/v2/acme/Users/%2f%2F", "/scim/v2/acme/Groups/%2F"} {
		ts.do("GET", p, "").wantError(t, 404, "", "not found")
	}
	ts.do("GET", "/scim/v2", "").wantError(t, 404, "", "no SCIM endpoint")
	// A query across resource types from the base URL (RFC 7644 §3.4.2,
	// §3.4.3) is not supported, and says so, after authentication.
	ts.do("GET", "/", "").wantError(t, 501, "", "across resource types")
	ts.do("GET", "?filter="+url.QueryEscape(`userName eq "x"`), "").wantError(t, 501, "", "query /Users or /Groups")
	ts.do("POST", "/.search", `{"schemas":["`+SearchRequestSchema+`"]}`).wantError(t, 501, "", "POST /Users/.search")
	ts.do("POST", "/.search", `{}`, "Authorization", "-").wantError(t, 401, "", "missing Authorization")
	ts.do("GET", "/.search", "").wantError(t, 405, "", "not allowed")
	ts.do("DELETE", "", "").wantError(t, 405, "", "not allowed")
	ts.do("DELETE", "/Users", "").wantError(t, 405, "", "not allowed")
	ts.do("POST", "/Bulk", `{}`).wantError(t, 400, "invalidSyntax", "BulkRequest")
	ts.do("GET", "/Bulk", "").wantError(t, 405, "", "not allowed")
	// HEAD is GET without the content (RFC 9110 §9.1: "All
	// general-purpose servers MUST support the methods GET and HEAD"),
	// and a 405 names it wherever GET is allowed.
	head := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"head"}`).want(t, 201)
	for _, path := range []string{"/Users/" + head.str("id"), "/Users", "/ServiceProviderConfig"} {
		if r := ts.do("HEAD", path, ""); r.status != 200 || len(r.body) != 0 {
			t.Errorf("HEAD %s: %d %q, want 200 without content", path, r.status, r.body)
		} else if path == "/Users/"+head.str("id") && r.header.Get("ETag") != head.header.Get("ETag") {
			t.Errorf("HEAD %s: ETag %q, want %q", path, r.header.Get("ETag"), head.header.Get("ETag"))
		}
	}
	if r := ts.do("HEAD", "/Users/nobody", ""); r.status != 404 {
		t.Errorf("HEAD of no user: %d, want 404", r.status)
	}
	if r := ts.do("HEAD", "/Users", "", "Authorization", "-"); r.status != 401 {
		t.Errorf("HEAD without a token: %d, want 401", r.status)
	}
	for path, allow := range map[string]string{"/Users": "GET, HEAD, POST", "/Bulk": "POST"} {
		if r := ts.do("TRACE", path, ""); r.status != 405 || r.header.Get("Allow") != allow {
			t.Errorf("TRACE %s: %d, Allow %q, want 405 and %q", path, r.status, r.header.Get("Allow"), allow)
		}
	}
	// A trailing slash is tolerated, and so is a Tenant URL entered with
	// one, to which the client appends the endpoint: /scim/v2/acme//Users.
	ts.do("GET", "/Users/", "").want(t, 200)
	ts.do("GET", "/ServiceProviderConfig/", "").want(t, 200)
	doubled := ts.do("POST", "/scim/v2/acme//Users?aadOptscim062020", `{"schemas":["`+UserSchema+`"],"userName":"slash@example.com"}`).want(t, 201)
	if loc := doubled.header.Get("Location"); !strings.HasSuffix(loc, "/scim/v2/acme/Users/"+doubled.str("id")) {
		t.Errorf("created through //Users: Location %q, want the canonical URL", loc)
	}
	if found := ts.do("GET", "/scim/v2/acme//users?filter="+url.QueryEscape(`userName eq "slash@example.com"`), "").want(t, 200); found.str("Resources.0.id") != doubled.str("id") {
		t.Errorf("filter through //users: %s", found.body)
	}
	ts.do("GET", "/scim/v2/acme//Users/"+doubled.str("id"), "").want(t, 200)
	ts.do("GET", "/scim/v2/acme//ServiceProviderConfig", "").want(t, 200)
	// Only one empty segment, only before an endpoint.
	ts.do("GET", "/scim/v2/acme///Users", "").wantError(t, 404, "", "no SCIM endpoint")
	ts.do("GET", "/scim/v2/acme//Unicorns", "").wantError(t, 404, "", "no SCIM endpoint")
	ts.do("GET", "/scim/v2/acme/Users//"+doubled.str("id"), "").wantError(t, 404, "", "")
	ts.do("GET", "/scim/v2//acme/Users", "").wantError(t, 404, "", "")
}

func TestBadInput(t *testing.T) {
	ts := newTestServer(t, Options{MaxBodyBytes: 2048, MaxJSONDepth: 8})
	id := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201).str("id")
	ts.do("POST", "/Users", `{"schemas":[`).wantError(t, 400, "invalidSyntax", "not valid JSON")
	ts.do("POST", "/Users", `{"userName":"x"}`).wantError(t, 400, "invalidSyntax", "schemas")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"x","active":{"a":1}}`).wantError(t, 400, "invalidValue", "active must be a boolean")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"x"}`, "Content-Type", "text/plain").wantError(t, 415, "", "Content-Type")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"x"}`, "Content-Type", "application/scim+json; charset=utf-16").wantError(t, 415, "", "UTF-8")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"utf8-charset"}`, "Content-Type", "application/json; charset=UTF-8").want(t, 201)
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"utf8-charset-2"}`, "Content-Type", "application/scim+json; charset=utf8").want(t, 201) // a common misspelling, meaning the same
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ascii-charset"}`, "Content-Type", "application/json; charset=US-ASCII").want(t, 201)   // a part of UTF-8
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"x"}`, "Content-Type", "application/json; charset=utf-8").want(t, 201)
	// Content-Type is one value: of two, which says the body's charset is
	// anyone's guess (the first was read, the body stored, while the
	// second said ISO-8859-1, in which C3 A9 is not "é").
	for _, second := range []string{"application/scim+json; charset=iso-8859-1", "text/plain"} {
		req, _ := http.NewRequest("POST", ts.srv.URL+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["`+UserSchema+`"],"userName":"j\xc3\xa9r"}`))
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		req.Header.Add("Content-Type", "application/scim+json")
		req.Header.Add("Content-Type", second)
		ts.send(req).wantError(t, 400, "invalidSyntax", "more than one Content-Type")
	}
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"`+strings.Repeat("x", 4096)+`"}`).wantError(t, 413, "", "larger than 2048")
	ts.do("POST", "/Users", strings.Repeat("[", 9)+strings.Repeat("]", 9)).wantError(t, 400, "invalidSyntax", "deeper than 8")
	ts.do("PATCH", "/Users/"+id, `{"Operations":[]}`).wantError(t, 400, "invalidSyntax", "PatchOp")
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"replace","path":"id","value":"x"}`)).wantError(t, 400, "mutability", "read-only")
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"remove"}`)).wantError(t, 400, "noTarget", "path")
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"x[","value":1}`)).wantError(t, 400, "invalidPath", "")
	ts.do("PATCH", "/Users/nope", patchBody(`{"op":"add","path":"title","value":"x"}`)).wantError(t, 404, "", "not found")
	ts.do("GET", "/Users?"+filterQuery(`userName eq`), "").wantError(t, 400, "invalidFilter", "expected a value")
	// An empty filter is refused, not read as none: a client whose
	// filter's text went missing would get every resource as its match.
	for _, q := range []string{"filter=", "Filter=", "filter=%20%20"} {
		ts.do("GET", "/Users?"+q, "").wantError(t, 400, "invalidFilter", "filter is empty")
		ts.do("GET", "/Groups?"+q, "").wantError(t, 400, "invalidFilter", "filter is empty")
	}
	// Nor is a filter Go's url.ParseQuery drops in silence: a ";", which
	// RFC 3986 allows in a query, is data; a "%" not encoded is refused;
	// past 10,000 parameters ParseQuery read none. Each answered every
	// resource.
	for _, q := range []string{
		"/Users?filter=userName%20eq%20%22carol;x%22",
		"/Users?" + filterQuery(`userName eq "carol"`) + "&x=a;b&y=%zz", // other pairs unreadable: ignored
	} {
		if r := ts.do("GET", q, "").want(t, 200); r.str("totalResults") != "0" {
			t.Errorf("GET %s: %s matches, want none", q, r.str("totalResults"))
		}
	}
	ts.do("GET", "/Users?filter=userName%20eq%20%22100%off%22", "").wantError(t, 400, "invalidSyntax", "percent-encoding")
	ts.do("GET", "/Users?"+filterQuery(`userName eq "carol"`)+strings.Repeat("&", 10000), "").wantError(t, 400, "invalidSyntax", "10000 parameters")
	// A search request lists its schema, as a PATCH body lists PatchOp.
	ts.do("POST", "/Users/.search", `{"filter":"userName eq \"ann\""}`).wantError(t, 400, "invalidSyntax", SearchRequestSchema)
	ts.do("POST", "/Users/.search", `{"schemas":["`+ListResponseSchema+`"]}`).wantError(t, 400, "invalidSyntax", SearchRequestSchema)
	ts.do("POST", "/Users/.search", `{"schemas":["`+strings.ToUpper(SearchRequestSchema)+`"]}`).want(t, 200)
	// A name given twice, in one spelling or two, is refused, as in every
	// request body: which filter would count is not the client's to guess.
	ts.do("POST", "/Users/.search", `{"schemas":["`+SearchRequestSchema+`"],"filter":"userName eq \"ann\"","filter":"userName eq \"bob\""}`).wantError(t, 400, "invalidSyntax", "twice")
	ts.do("POST", "/Users/.search", `{"schemas":["`+SearchRequestSchema+`"],"filter":"userName eq \"ann\"","FILTER":"userName eq \"bob\""}`).wantError(t, 400, "invalidSyntax", "twice")
	ts.do("GET", "/Users?startIndex=x", "").wantError(t, 400, "invalidValue", "startIndex")
	ts.do("GET", "/Users?count=1e9", "").wantError(t, 400, "invalidValue", "count")
	ts.do("GET", "/Users?sortBy=shoeSize", "").wantError(t, 400, "invalidValue", "sortBy")
	// Memberships are read after a page is cut: a sort by them sorted by
	// nothing and answered 200 in id order.
	ts.do("GET", "/Users?sortBy=groups.display", "").wantError(t, 400, "invalidValue", "memberships")
	ts.do("GET", "/Users?sortBy=GROUPS", "").wantError(t, 400, "invalidValue", "memberships")
	ts.do("GET", "/Groups?sortBy=members.value", "").wantError(t, 400, "invalidValue", "memberships")
	ts.do("GET", "/Users?sortOrder=sideways", "").wantError(t, 400, "invalidValue", "sortOrder")
	ts.do("GET", "/Schemas?"+filterQuery(`id pr`), "").wantError(t, 403, "", "filtering")
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"g"}`).want(t, 201).str("id")
	ts.do("PATCH", "/Groups/"+gid, patchBody(`{"op":"add","path":"members","value":[{"value":"ghost"}]}`)).wantError(t, 400, "invalidValue", "ghost")
	// Text that a decoder would silently change is refused, never stored as U+FFFD.
	ts.do("POST", "/Users", "{\"schemas\":[\""+UserSchema+"\"],\"userName\":\"\xff\xfeann\"}").wantError(t, 400, "invalidSyntax", "not valid UTF-8")
	ts.do("PATCH", "/Users/"+id, patchBody("{\"op\":\"replace\",\"path\":\"title\",\"value\":\"\xc3\"}")).wantError(t, 400, "invalidSyntax", "not valid UTF-8")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"\ud800ann"}`).wantError(t, 400, "invalidSyntax", "surrogate")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann\udc00"}`).wantError(t, 400, "invalidSyntax", "surrogate")
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"\ud83d\ude00 \\ud800"}`).want(t, 201) // a real pair, and an escaped backslash
	// Control characters in the names clients match on.
	for _, attr := range []struct{ rt, schema, name string }{{"/Users", UserSchema, "userName"}, {"/Users", UserSchema, "externalId"}, {"/Groups", GroupSchema, "displayName"}, {"/Groups", GroupSchema, "externalId"}} {
		for _, c := range []string{`\u0000`, `\u0007`, `\n`, `\u001f`} {
			// The attribute under test, and the names its type requires,
			// each once.
			body := `{"schemas":["` + attr.schema + `"],"userName":"u","displayName":"d","` + attr.name + `":"a` + c + `b"}`
			if attr.rt == "/Groups" || attr.name == "userName" {
				body = strings.Replace(body, `"userName":"u",`, "", 1)
			}
			if attr.name == "displayName" {
				body = strings.Replace(body, `"displayName":"d",`, "", 1)
			}
			ts.do("POST", attr.rt, body).wantError(t, 400, "invalidValue", "attribute "+attr.name+" has the control character")
		}
	}
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"replace","path":"userName","value":"ann\u0000"}`)).wantError(t, 400, "invalidValue", "control character U+0000")
	ts.do("PATCH", "/Groups/"+gid, patchBody(`{"op":"replace","path":"displayName","value":"g\r"}`)).wantError(t, 400, "invalidValue", "control character U+000D")
	ts.do("PUT", "/Users/"+id, `{"schemas":["`+UserSchema+`"],"userName":"ann\u0001"}`).wantError(t, 400, "invalidValue", "control character")
	// Nothing above changed the stored user.
	if u := ts.do("GET", "/Users/"+id, "").want(t, 200); u.header.Get("ETag") != `W/"1"` || u.str("userName") != "ann" {
		t.Fatalf("bad requests changed the user: %s %s", u.header.Get("ETag"), u.body)
	}
}

// TestContentEncoding: a body in a content coding is 415 on every
// endpoint that reads one, whether it is compressed or plain text sent
// under a coding's name, and nothing is stored; identity is no coding.
func TestContentEncoding(t *testing.T) {
	ts := newTestServer(t, Options{})
	uid := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201).str("id")
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"g"}`).want(t, 201).str("id")
	gzipped := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	requests := []struct{ method, path, body string }{
		{"POST", "/Users", `{"schemas":["` + UserSchema + `"],"userName":"bob"}`},
		{"PUT", "/Users/" + uid, `{"schemas":["` + UserSchema + `"],"userName":"ann","title":"x"}`},
		{"PATCH", "/Users/" + uid, patchBody(`{"op":"replace","path":"title","value":"x"}`)},
		{"PATCH", "/Groups/" + gid, patchBody(`{"op":"replace","path":"displayName","value":"x"}`)},
		{"POST", "/Users/.search", `{"schemas":["` + SearchRequestSchema + `"]}`},
		{"POST", "/Bulk", `{"schemas":["` + BulkRequestSchema + `"],"Operations":[{"method":"POST","path":"/Users","bulkId":"b","data":{"schemas":["` + UserSchema + `"],"userName":"bob"}}]}`},
	}
	for _, rq := range requests {
		for _, enc := range []struct{ coding, body string }{
			{"br", rq.body},
			{"gzip", gzipped(rq.body)},
			{"GZIP", rq.body},
			{"identity, gzip", gzipped(rq.body)},
		} {
			r := ts.do(rq.method, rq.path, enc.body, "Content-Encoding", enc.coding)
			r.wantError(t, 415, "", "Content-Encoding")
			if got := r.header.Get("Accept-Encoding"); got != "identity" {
				t.Errorf("%s %s, Content-Encoding %s: Accept-Encoding %q, want identity", rq.method, rq.path, enc.coding, got)
			}
		}
	}
	// In any field line.
	req, _ := http.NewRequest("POST", ts.srv.URL+"/scim/v2/acme/Users", strings.NewReader(requests[0].body))
	req.Header.Set("Authorization", "Bearer "+tokenAcme)
	req.Header.Set("Content-Type", "application/scim+json")
	req.Header.Add("Content-Encoding", "")
	req.Header.Add("Content-Encoding", "br")
	ts.send(req).wantError(t, 415, "", "br")
	if r := ts.do("GET", "/Users", "").want(t, 200); r.str("totalResults") != "1" {
		t.Errorf("refused creates stored users: %s", r.body)
	}
	if r := ts.do("GET", "/Users/"+uid, "").want(t, 200); r.header.Get("ETag") != `W/"1"` || r.str("title") != "" {
		t.Errorf("refused writes changed the user: %s %s", r.header.Get("ETag"), r.body)
	}
	if r := ts.do("GET", "/Groups/"+gid, "").want(t, 200); r.header.Get("ETag") != `W/"1"` {
		t.Errorf("a refused PATCH changed the group: %s", r.body)
	}
	// identity is no coding at all.
	ts.do("POST", "/Users", requests[0].body, "Content-Encoding", "identity").want(t, 201)
}

// TestSearchRequestMembers: a search request's member of the wrong type
// is refused naming the member and what it must be, as the query
// parameters are, not in the words of Go's JSON decoder.
func TestSearchRequestMembers(t *testing.T) {
	ts := newTestServer(t, Options{})
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201)
	search := func(members string) string { return `{"schemas":["` + SearchRequestSchema + `"],` + members + `}` }
	for _, tt := range []struct{ members, scimType, detail string }{
		{`"startIndex":"x"`, "invalidValue", `startIndex must be an integer, got "x"`},
		{`"startIndex":"2"`, "invalidValue", `startIndex must be an integer, got "2"`},
		{`"count":1e2`, "invalidValue", `count must be an integer, got "1e2"`},
		{`"count":1.5`, "invalidValue", `count must be an integer, got "1.5"`},
		{`"count":true`, "invalidValue", "count must be an integer, got a boolean"},
		{`"filter":5`, "invalidFilter", "filter must be a string, a filter such as userName eq \"ann\", got a number"},
		{`"filter":["userName pr"]`, "invalidFilter", "filter must be a string, a filter such as userName eq \"ann\", got an array"},
		{`"filter":""`, "invalidFilter", "filter is empty"},
		{`"sortBy":{}`, "invalidValue", "sortBy must be a string, an attribute name, got an object"},
		{`"sortOrder":1`, "invalidValue", `sortOrder must be "ascending" or "descending", got a number`},
		{`"attributes":"userName"`, "invalidValue", `attributes must be an array of attribute names, got "userName"`},
		{`"excludedAttributes":["userName",5]`, "invalidValue", "excludedAttributes must be an array of attribute names, got an array"},
		{`"schemas":"` + SearchRequestSchema + `"`, "invalidSyntax", "needs \"schemas\""},
	} {
		body := search(tt.members)
		if strings.HasPrefix(tt.members, `"schemas"`) {
			body = "{" + tt.members + "}"
		}
		r := ts.do("POST", "/Users/.search", body)
		r.wantError(t, 400, tt.scimType, tt.detail)
		if d, _ := r.json["detail"].(string); strings.Contains(d, "Go ") || strings.Contains(d, "unmarshal") {
			t.Errorf("%s: detail %q speaks of Go", tt.members, d)
		}
	}
	// Its parameters are in its body: one in the query as well is
	// refused, not ignored, in any spelling, with a value or without.
	for _, q := range []struct{ query, name string }{
		{filterQuery(`userName eq "bob"`), "filter"}, {"Filter=" + url.QueryEscape(`userName eq "bob"`), "filter"}, {"filter=", "filter"},
		{"count=0", "count"}, {"startIndex=5", "startIndex"}, {"sortBy=userName", "sortBy"}, {"sortorder=descending", "sortOrder"},
		{"attributes=userName", "attributes"}, {"excludedAttributes=userName", "excludedAttributes"},
	} {
		ts.do("POST", "/Users/.search?"+q.query, search(`"filter":"userName eq \"ann\""`)).wantError(t, 400, "invalidValue", "takes "+q.name+" in its body")
	}
	if r := ts.do("POST", "/Users/.search?unrelated=1", search(`"filter":"userName eq \"ann\""`)).want(t, 200); r.str("totalResults") != "1" {
		t.Errorf("a parameter SCIM does not define changed the search: %s", r.body)
	}
	// What is valid is read as before: null as absent, numbers of any
	// size as the query's are, names joined.
	r := ts.do("POST", "/Users/.search", search(`"filter":null,"startIndex":99999999999999999999999,"count":5`)).want(t, 200)
	if r.str("totalResults") != "1" || r.str("itemsPerPage") != "0" {
		t.Errorf("startIndex past the end: %s", r.body)
	}
	r = ts.do("POST", "/Users/.search", search(`"filter":"userName eq \"ann\"","count":1,"attributes":["userName","title"],"sortOrder":"descending"`)).want(t, 200)
	if got := r.str("Resources.0.userName"); got != "ann" || r.str("Resources.0.meta") != "" {
		t.Errorf("search with attributes: %s", r.body)
	}
}

func TestETags(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201)
	id, etag := c.str("id"), c.header.Get("ETag")
	// If-None-Match is answered whole, never 304: a user's groups (and a
	// group's members' names) change without a new version.
	if r := ts.do("GET", "/Users/"+id, "", "If-None-Match", etag).want(t, 200); r.str("userName") != "ann" || r.header.Get("ETag") != etag {
		t.Fatalf("GET with If-None-Match of the current version: %s %s", r.header.Get("ETag"), r.body)
	}
	// A write with If-None-Match is refused, and changes nothing.
	for _, m := range []struct{ method, body string }{
		{"PATCH", patchBody(`{"op":"add","path":"title","value":"x"}`)},
		{"PUT", `{"schemas":["` + UserSchema + `"],"userName":"ann","title":"x"}`},
		{"DELETE", ""},
	} {
		ts.do(m.method, "/Users/"+id, m.body, "If-None-Match", "*").wantError(t, 501, "", "If-None-Match is not supported")
	}
	if r := ts.do("GET", "/Users/"+id, "").want(t, 200); r.header.Get("ETag") != etag {
		t.Fatalf("writes refused for If-None-Match changed the user: %s", r.header.Get("ETag"))
	}
	// So is a create with either header: what it creates has no version.
	for _, h := range [][2]string{{"If-Match", "*"}, {"If-Match", etag}, {"If-None-Match", etag}} {
		ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"bob"}`, h[0], h[1]).wantError(t, 501, "", "not supported on a create")
	}
	if r := ts.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "bob"`), "").want(t, 200); r.str("totalResults") != "0" {
		t.Fatalf("a create refused for its precondition created the user: %s", r.body)
	}
	// If-None-Match: * is what a create holds by its nature (create only).
	ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"bob"}`, "If-None-Match", "*").want(t, 201)
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"title","value":"x"}`), "If-Match", `W/"99"`).wantError(t, 412, "", "does not match")
	r := ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"title","value":"x"}`), "If-Match", etag).want(t, 200)
	if r.header.Get("ETag") != `W/"2"` || r.str("meta.version") != `W/"2"` {
		t.Fatalf("version after a change: %s / %s", r.header.Get("ETag"), r.str("meta.version"))
	}
	// A PATCH that changes nothing keeps the version.
	if r := ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"title","value":"x"}`)).want(t, 200); r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("no-op PATCH bumped the version to %s", r.header.Get("ETag"))
	}
	ts.do("DELETE", "/Users/"+id, "", "If-Match", etag).wantError(t, 412, "", "")
	ts.do("PUT", "/Users/"+id, `{"schemas":["`+UserSchema+`"],"userName":"ann2"}`, "If-Match", `"2"`).want(t, 200) // W/ is compared loosely
	ts.do("DELETE", "/Users/"+id, "", "If-Match", "*").want(t, 204)
}

// TestIfMatchFieldLines: If-Match given in several field lines is one
// list (RFC 9110 §5.3): an empty first line neither hides the next nor
// makes the condition hold, and a match in any line counts. A list that
// is not one of entity tags is 400 and changes nothing.
func TestIfMatchFieldLines(t *testing.T) {
	ts := newTestServer(t, Options{})
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"g"}`).want(t, 201).str("id")
	rename := func(name string) string {
		return patchBody(`{"op":"replace","path":"displayName","value":"` + name + `"}`)
	}
	ts.do("PATCH", "/Groups/"+gid, rename("g2")).want(t, 204) // version 2
	send := func(method, path, body string, lines ...string) response {
		t.Helper()
		req, err := http.NewRequest(method, ts.srv.URL+"/scim/v2/acme"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		req.Header.Set("Content-Type", "application/scim+json")
		for i := 0; i+1 < len(lines); i += 2 {
			req.Header.Add(lines[i], lines[i+1])
		}
		return ts.send(req)
	}
	for _, lines := range [][]string{
		{"If-Match", "", "If-Match", `W/"99"`},
		{"If-Match", ""},
		{"If-Match", " , "},
		{"If-Match", `W/"99"`, "If-Match", ""},
	} {
		send("PATCH", "/Groups/"+gid, rename("changed"), lines...).wantError(t, 412, "", "")
		send("DELETE", "/Groups/"+gid, "", lines...).wantError(t, 412, "", "")
		send("PUT", "/Groups/"+gid, `{"schemas":["`+GroupSchema+`"],"displayName":"changed"}`, lines...).wantError(t, 412, "", "")
	}
	for _, v := range []string{`W/99`, `"2`, `*, W/"2"`, `W/"2"; x`, `2`, `W/"2" W/"3"`, "*, *"} {
		send("PATCH", "/Groups/"+gid, rename("changed"), "If-Match", v).wantError(t, 400, "invalidValue", "If-Match must be * or a list of entity tags")
		send("DELETE", "/Groups/"+gid, "", "If-Match", "", "If-Match", v).wantError(t, 400, "invalidValue", "If-Match")
	}
	// A tag holding a comma and a star is one tag, not "*".
	send("DELETE", "/Groups/"+gid, "", "If-Match", `"x,*,y"`).wantError(t, 412, "", "does not match")
	// An If-None-Match is read the same way: present in any line, it is
	// refused on a write.
	send("DELETE", "/Groups/"+gid, "", "If-None-Match", "", "If-None-Match", `W/"5"`).wantError(t, 501, "", "If-None-Match")
	send("DELETE", "/Groups/"+gid, "", "If-None-Match", `W/"5`).wantError(t, 400, "invalidValue", "If-None-Match")
	if r := ts.do("GET", "/Groups/"+gid, "").want(t, 200); r.header.Get("ETag") != `W/"2"` || r.str("displayName") != "g2" {
		t.Fatalf("refused writes changed the group: %s %s", r.header.Get("ETag"), r.body)
	}
	// The version in any line matches.
	send("PATCH", "/Groups/"+gid, rename("g3"), "If-Match", `W/"1"`, "If-Match", `W/"2"`).want(t, 204)
	send("PATCH", "/Groups/"+gid, rename("g4"), "If-Match", `W/"3", "x,y"`, "If-Match", `W/"1"`).want(t, 204)
	send("PUT", "/Groups/"+gid, `{"schemas":["`+GroupSchema+`"],"displayName":"g5"}`, "If-Match", "", "If-Match", `W/"9", W/"4"`).want(t, 200)
	// A create takes If-None-Match: * in any line, and refuses an
	// If-Match even when empty.
	send("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"h"}`, "If-Match", "").wantError(t, 501, "", "not supported on a create")
	send("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"h"}`, "If-None-Match", "", "If-None-Match", "*").want(t, 201)
	send("DELETE", "/Groups/"+gid, "", "If-Match", "", "If-Match", `W/"5"`).want(t, 204)
}

func TestListPagingAndProjection(t *testing.T) {
	ts := newTestServer(t, Options{MaxResults: 10, DefaultCount: 4})
	for i := 0; i < 25; i++ {
		ts.do("POST", "/Users", fmt.Sprintf(`{"schemas":["%s"],"userName":"user%02d","title":"t%d","emails":[{"value":"u%d@x","type":"work"}]}`, UserSchema, i, i%3, i)).want(t, 201)
	}
	tests := []struct {
		query                      string
		total, start, items, first string
	}{
		{"", "25", "1", "4", "user00"},
		{"count=10&startIndex=11", "25", "11", "10", "user10"},
		{"count=10&startIndex=21", "25", "21", "5", "user20"},
		{"count=500", "25", "1", "10", "user00"},                  // capped at MaxResults
		{"count=99999999999999999999", "25", "1", "10", "user00"}, // past int64 too
		{"count=-99999999999999999999", "25", "1", "0", ""},
		// The largest int64 (9223372036854775807), as a float64 reads it.
		{"startIndex=99999999999999999999&count=2", "25", "9223372036854776000", "0", ""},
		{"count=-3", "25", "1", "0", ""},
		{"count=0", "25", "1", "0", ""},
		{"startIndex=0&count=2", "25", "1", "2", "user00"},
		{"startIndex=99", "25", "99", "0", ""},
		{filterQuery(`title eq "t1"`) + "&count=10", "8", "1", "8", "user01"},
		{"sortBy=userName&sortOrder=descending&count=1", "25", "1", "1", "user24"},
		// Parameter names in any case: a filter given as Filter is not
		// dropped (every user would match).
		{strings.Replace(filterQuery(`title eq "t1"`), "filter=", "Filter=", 1) + "&COUNT=10", "8", "1", "8", "user01"},
		{"SORTBY=userName&sortorder=descending&Count=1&STARTINDEX=2", "25", "2", "1", "user23"},
	}
	for _, tt := range tests {
		r := ts.do("GET", "/Users?"+tt.query, "").want(t, 200)
		if r.str("totalResults") != tt.total || r.str("startIndex") != tt.start || r.str("itemsPerPage") != tt.items || r.str("Resources.0.userName") != tt.first {
			t.Errorf("?%s: total %s start %s items %s first %q; want %s %s %s %q", tt.query,
				r.str("totalResults"), r.str("startIndex"), r.str("itemsPerPage"), r.str("Resources.0.userName"),
				tt.total, tt.start, tt.items, tt.first)
		}
		if r.str("Resources") == "" {
			t.Errorf("?%s: Resources missing; it must be present, [] when empty", tt.query)
		}
	}
	r := ts.do("GET", "/Users?count=1&attributes=userName,emails.value", "").want(t, 200)
	res := r.json["Resources"].([]any)[0].(map[string]any)
	keys := []string{}
	for k := range res {
		keys = append(keys, k)
	}
	if len(res) != 4 || res["id"] == nil || res["userName"] == nil || r.str("Resources.0.emails") != `[{"value":"u0@x"}]` {
		t.Errorf("attributes=userName,emails.value kept %v: %s", keys, r.body)
	}
	for _, name := range []string{"excludedAttributes", "excludedattributes"} {
		r = ts.do("GET", "/Users?count=1&"+name+"=emails,meta,id", "").want(t, 200)
		if r.str("Resources.0.emails") != "" || r.str("Resources.0.meta") != "" || r.str("Resources.0.id") == "" {
			t.Errorf("%s=emails,meta,id: %s (id is returned always)", name, r.body)
		}
	}
	if r = ts.do("GET", "/Users/"+r.str("Resources.0.id")+"?ATTRIBUTES=userName", "").want(t, 200); r.str("emails") != "" || r.str("userName") == "" {
		t.Errorf("a GET with ATTRIBUTES=userName: %s", r.body)
	}
	// A parameter given twice, in one spelling or two, with values that
	// differ is refused: which one counted would depend on their order,
	// and an empty one would hide the other. Lists of attributes join.
	for _, q := range []string{
		filterQuery(`userName eq "user01"`) + "&" + strings.Replace(filterQuery(`userName eq "user02"`), "filter=", "Filter=", 1),
		"filter=&" + strings.Replace(filterQuery(`userName eq "user02"`), "filter=", "FILTER=", 1),
		"count=1&Count=2",
	} {
		ts.do("GET", "/Users?"+q, "").wantError(t, 400, "invalidSyntax", "more than once")
	}
	ts.do("GET", "/Schemas?filter=&Filter=x", "").wantError(t, 400, "invalidSyntax", "more than once")
	ts.do("GET", "/ResourceTypes/User?filter=&Filter=x", "").wantError(t, 400, "invalidSyntax", "more than once")
	// A filter on a discovery endpoint, one schema or resource type by its
	// id too, is refused (RFC 7644 §4), an empty one too (until this
	// release it answered 200, the filter read as none).
	for _, path := range []string{
		"/Schemas?filter=id+pr", "/Schemas?filter=", "/ResourceTypes?Filter=", "/ServiceProviderConfig?filter=%20",
		"/Schemas/urn:ietf:params:scim:schemas:core:2.0:User?filter=id+pr", "/ResourceTypes/User?Filter=",
	} {
		ts.do("GET", path, "").wantError(t, 403, "", "do not support filtering")
	}
	if r = ts.do("GET", "/Users?count=1&"+filterQuery(`userName eq "user03"`)+"&"+filterQuery(`userName eq "user03"`), "").want(t, 200); r.str("totalResults") != "1" {
		t.Errorf("the same filter twice: %s", r.body)
	}
	if r = ts.do("GET", "/Users?count=1&attributes=userName&ATTRIBUTES=title", "").want(t, 200); r.str("Resources.0.title") == "" || r.str("Resources.0.userName") == "" || r.str("Resources.0.emails") != "" {
		t.Errorf("attributes=userName&ATTRIBUTES=title: %s", r.body)
	}
	// POST /.search is the same query in a body.
	r = ts.do("POST", "/Users/.search", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],"filter":"title eq \"t2\"","count":2,"attributes":["userName"]}`).want(t, 200)
	if r.str("totalResults") != "8" || r.str("itemsPerPage") != "2" || r.str("Resources.0.title") != "" {
		t.Errorf(".search: %s", r.body)
	}
}

func TestPutReplaces(t *testing.T) {
	ts := newTestServer(t, Options{})
	u := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann","title":"Boss","nickName":"A"}`).want(t, 201)
	id := u.str("id")
	r := ts.do("PUT", "/Users/"+id, `{"schemas":["`+UserSchema+`"],"id":"evil","userName":"ann","title":"Chief"}`).want(t, 200)
	if r.str("id") != id || r.str("title") != "Chief" || r.str("nickName") != "" || r.str("meta.created") != u.str("meta.created") {
		t.Fatalf("PUT: %s", r.body)
	}
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"g","members":[{"value":"`+id+`"}]}`).want(t, 201).str("id")
	ts.do("PUT", "/Groups/"+gid, `{"schemas":["`+GroupSchema+`"],"displayName":"g2"}`).want(t, 200)
	if g := ts.do("GET", "/Groups/"+gid, "").want(t, 200); g.str("members") != "" || g.str("displayName") != "g2" {
		t.Fatalf("PUT without members must empty the group: %s", g.body)
	}
}

func TestGroupPatchAnswers(t *testing.T) {
	ts := newTestServer(t, Options{})
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"g"}`).want(t, 201).str("id")
	r := ts.do("PATCH", "/Groups/"+gid, patchBody(`{"op":"replace","path":"displayName","value":"h"}`)).want(t, 204)
	if len(r.body) != 0 || r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("group PATCH: body %q ETag %q", r.body, r.header.Get("ETag"))
	}
	r = ts.do("PATCH", "/Groups/"+gid+"?attributes=displayName", patchBody(`{"op":"replace","path":"displayName","value":"i"}`)).want(t, 200)
	if r.str("displayName") != "i" {
		t.Fatalf("group PATCH with attributes: %s", r.body)
	}
}

// TestLargeGroupStreams checks that a group bigger than one members chunk is
// answered whole, in order, as valid JSON.
func TestLargeGroupStreams(t *testing.T) {
	ts := newTestServer(t, Options{})
	const n = 2*memberChunk + 500
	var ids []string
	var members strings.Builder
	for i := 0; i < n; i++ {
		id := ts.do("POST", "/Users", fmt.Sprintf(`{"schemas":["%s"],"userName":"m%d"}`, UserSchema, i)).want(t, 201).str("id")
		ids = append(ids, id)
		if i > 0 {
			members.WriteByte(',')
		}
		fmt.Fprintf(&members, `{"value":%q}`, id)
	}
	gid := ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"big","members":[`+members.String()+`]}`).want(t, 201).str("id")
	r := ts.do("GET", "/Groups/"+gid, "").want(t, 200)
	got := r.json["members"].([]any)
	if len(got) != n {
		t.Fatalf("%d members in the answer, want %d", len(got), n)
	}
	for i, m := range got {
		if m.(map[string]any)["value"] != ids[i] {
			t.Fatalf("member %d is %v, want %s", i, m, ids[i])
		}
	}
	r = ts.do("GET", "/Groups/"+gid+"?attributes=members.value", "").want(t, 200)
	if first := r.json["members"].([]any)[0].(map[string]any); len(first) != 1 {
		t.Fatalf("attributes=members.value kept %v", first)
	}
	if r := ts.do("GET", "/Groups/"+gid+"?excludedAttributes=members", "").want(t, 200); strings.Contains(string(r.body), "members") {
		t.Fatal("excludedAttributes=members returned members")
	}
	// Members' sub-attributes are excluded one by one, too (RFC 7644 §3.9).
	for query, want := range map[string][]string{
		"excludedAttributes=members.$ref":                                        {"display", "type", "value"},
		"excludedAttributes=members.value,members.$ref":                          {"display", "type"},
		"attributes=members&excludedAttributes=members.$ref":                     {"display", "type", "value"},
		"attributes=members.value,members.$ref&excludedAttributes=members.value": {"$ref"},
	} {
		r := ts.do("GET", "/Groups/"+gid+"?"+strings.ReplaceAll(query, "$", "%24"), "").want(t, 200)
		first := r.json["members"].([]any)[0].(map[string]any)
		if got := slices.Sorted(maps.Keys(first)); !slices.Equal(got, want) {
			t.Errorf("%s: a member holds %v, want %v", query, got, want)
		}
	}
}

// TestProjectionOfLinks: the links an answer adds (meta.location, each
// group's $ref) follow attributes and excludedAttributes as stored
// attributes do (RFC 7644 §3.9); they were added whatever the projection.
func TestProjectionOfLinks(t *testing.T) {
	ts := newTestServer(t, Options{})
	uid := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann"}`).want(t, 201).str("id")
	ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"eng","members":[{"value":"`+uid+`"}]}`).want(t, 201)
	for query, want := range map[string]struct{ meta, group []string }{
		"":                                     {[]string{"created", "lastModified", "location", "resourceType", "version"}, []string{"$ref", "display", "type", "value"}},
		"excludedAttributes=meta.location":     {[]string{"created", "lastModified", "resourceType", "version"}, []string{"$ref", "display", "type", "value"}},
		"excludedAttributes=groups.$ref":       {[]string{"created", "lastModified", "location", "resourceType", "version"}, []string{"display", "type", "value"}},
		"attributes=groups.value,meta.version": {[]string{"version"}, []string{"value"}},
		"attributes=groups,meta.location":      {[]string{"location"}, []string{"$ref", "display", "type", "value"}},
		"attributes=groups":                    {nil, []string{"$ref", "display", "type", "value"}},
		"excludedAttributes=meta":              {nil, []string{"$ref", "display", "type", "value"}},
		// A group's $ref is made from its value, and meta.location is
		// not stored: until 2026-12-07 the first three answered no group
		// or one without its $ref, the last no meta.
		"attributes=groups.$ref":                {nil, []string{"$ref"}},
		"attributes=groups.$ref,groups.display": {nil, []string{"$ref", "display"}},
		"excludedAttributes=groups.value":       {[]string{"created", "lastModified", "location", "resourceType", "version"}, []string{"$ref", "display", "type"}},
		"excludedAttributes=meta.created,meta.lastModified,meta.resourceType,meta.version": {[]string{"location"}, []string{"$ref", "display", "type", "value"}},
	} {
		for _, path := range []string{"/Users/" + uid, "/Users"} {
			r := ts.do("GET", path+"?"+strings.ReplaceAll(query, "$", "%24"), "").want(t, 200)
			res := r.json
			if path == "/Users" {
				res = r.json["Resources"].([]any)[0].(map[string]any)
			}
			meta, _ := res["meta"].(map[string]any)
			if got := slices.Sorted(maps.Keys(meta)); !slices.Equal(got, want.meta) {
				t.Errorf("GET %s?%s: meta holds %v, want %v", path, query, got, want.meta)
			}
			groups, _ := res["groups"].([]any)
			if len(groups) != 1 {
				t.Fatalf("GET %s?%s: groups %v", path, query, res["groups"])
			}
			if got := slices.Sorted(maps.Keys(groups[0].(map[string]any))); !slices.Equal(got, want.group) {
				t.Errorf("GET %s?%s: a group holds %v, want %v", path, query, got, want.group)
			}
		}
	}
}

// TestGroupAnswersAreOfOneVersion checks that a group's answer holds the
// members of the version its ETag and meta.version name, when a write lands
// between the read of the group and the read of its members: the answer is
// read again; a list is taken again; an answer already partly sent is cut
// off rather than finished with another version's members.
func TestGroupAnswersAreOfOneVersion(t *testing.T) {
	ts := newTestServer(t, Options{})
	user := func(name string) string {
		return ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"`+name+`"}`).want(t, 201).str("id")
	}
	ann, bob := user("ann"), user("bob")
	group := func(name string, members ...string) string {
		var ms []string
		for _, m := range members {
			ms = append(ms, `{"value":"`+m+`"}`)
		}
		return ts.do("POST", "/Groups", `{"schemas":["`+GroupSchema+`"],"displayName":"`+name+`","members":[`+strings.Join(ms, ",")+`]}`).want(t, 201).str("id")
	}
	hook := func(f func(call int)) {
		ts.backend.mu.Lock()
		ts.backend.beforeMembers, ts.backend.membersCalls = f, 0
		ts.backend.mu.Unlock()
	}
	t.Cleanup(func() { hook(nil) })
	addMember := func(gid, uid string) {
		_, err := ts.backend.Backend.Update(context.Background(), "acme", GroupResourceType, gid, func(cur *Resource) (*Update, error) {
			return &Update{Resource: cur, Members: []MemberOp{{Kind: AddMembers, Members: []Member{{Value: uid}}}}}, nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	memberValues := func(r map[string]any) []string {
		var out []string
		ms, _ := r["members"].([]any)
		for _, m := range ms {
			out = append(out, m.(map[string]any)["value"].(string))
		}
		slices.Sort(out)
		return out
	}

	t.Run("a member added meanwhile", func(t *testing.T) {
		gid := group("g1", ann)
		hook(func(call int) {
			if call == 1 {
				addMember(gid, bob)
			}
		})
		r := ts.do("GET", "/Groups/"+gid, "").want(t, 200)
		hook(nil)
		if r.header.Get("ETag") != `W/"2"` || r.str("meta.version") != `W/"2"` || !slices.Equal(memberValues(r.json), slices.Sorted(slices.Values([]string{ann, bob}))) {
			t.Fatalf("ETag %s, meta.version %s, members %v; want version 2 with ann and bob", r.header.Get("ETag"), r.str("meta.version"), memberValues(r.json))
		}
	})

	t.Run("a listed group deleted meanwhile", func(t *testing.T) {
		keep, gone := group("l-keep", ann), group("l-gone", bob)
		hook(func(call int) {
			if call == 1 {
				if _, err := ts.backend.Backend.Delete(context.Background(), "acme", GroupResourceType, gone, Precondition{}); err != nil {
					t.Error(err)
				}
			}
		})
		r := ts.do("GET", "/Groups?filter="+url.QueryEscape(`displayName sw "l-"`), "").want(t, 200)
		hook(nil)
		res := r.json["Resources"].([]any)
		if r.str("totalResults") != "1" || len(res) != 1 || res[0].(map[string]any)["id"] != keep {
			t.Fatalf("list after a group was deleted while it was read: %s", r.body)
		}
	})

	t.Run("a group that changes at every read", func(t *testing.T) {
		gid := group("g3")
		users := []string{ann, bob, user("cy"), user("di")}
		hook(func(call int) {
			if call <= len(users) {
				addMember(gid, users[call-1])
			}
		})
		r := ts.do("GET", "/Groups/"+gid, "")
		hook(nil)
		r.wantError(t, 503, "", fmt.Sprintf("Group %s changed %d times while the answer was read; read again", gid, readAttempts))
		// HEAD is a read, answered as GET is: it answered as a write
		// does, 200 with the version first read.
		gid = group("g3-head")
		users = []string{user("hy"), user("ip"), user("jo"), user("ku")}
		hook(func(call int) {
			if call <= len(users) {
				addMember(gid, users[call-1])
			}
		})
		r = ts.do("HEAD", "/Groups/"+gid, "")
		hook(nil)
		if r.status != 503 {
			t.Errorf("HEAD of a group that changes at every read: %d ETag %q, want 503 as GET", r.status, r.header.Get("ETag"))
		}
	})

	t.Run("a write's answer when the group keeps changing", func(t *testing.T) {
		gid := group("g4")
		users := []string{ann, bob, user("ed"), user("fay")}
		hook(func(call int) {
			if call <= len(users) {
				addMember(gid, users[call-1])
			}
		})
		r := ts.do("PUT", "/Groups/"+gid, `{"schemas":["`+GroupSchema+`"],"displayName":"g4-renamed"}`)
		hook(nil)
		// The PUT is stored (version 2); the answer is that version, without
		// the members later writes added.
		r.want(t, 200)
		if r.header.Get("ETag") != `W/"2"` || r.str("displayName") != "g4-renamed" || r.json["members"] != nil {
			t.Fatalf("ETag %s, answer %s; want the group as the PUT stored it, version 2, without members", r.header.Get("ETag"), r.body)
		}
	})

	var big []string
	for i := range memberChunk + 1 {
		big = append(big, user(fmt.Sprintf("big%d", i)))
	}

	t.Run("a listed group changed after the page began to be sent", func(t *testing.T) {
		group("z-1", big...) // its members fill more than the first 64 KiB
		small := group("z-2", ann)
		hook(func(call int) {
			if call == 3 { // z-1 takes two pages of members
				addMember(small, bob)
			}
		})
		r := ts.do("GET", "/Groups?filter="+url.QueryEscape(`displayName sw "z-"`), "").want(t, 200)
		hook(nil)
		res := r.json["Resources"].([]any)
		got := res[1].(map[string]any)
		if len(res) != 2 || got["id"] != small || got["meta"].(map[string]any)["version"] != `W/"2"` || !slices.Equal(memberValues(got), slices.Sorted(slices.Values([]string{ann, bob}))) {
			t.Fatalf("z-2 in the list: %v; want version 2 with ann and bob", got)
		}
	})

	t.Run("a large group changed after its answer began", func(t *testing.T) {
		ids := big
		gid := group("big", ids...)
		hook(func(call int) {
			if call == 2 {
				addMember(gid, ann)
			}
		})
		defer hook(nil)
		req, err := http.NewRequest("GET", ts.srv.URL+"/scim/v2/acme/Groups/"+gid, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tokenAcme)
		res, err := ts.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err == nil {
			t.Fatalf("status %d and a whole body of %d bytes; want the connection cut once the group changed", res.StatusCode, len(body))
		}
		// The request's log entry says the answer was cut off.
		deadline := time.Now().Add(5 * time.Second)
		for {
			ts.mu.Lock()
			last := ts.infos[len(ts.infos)-1]
			ts.mu.Unlock()
			if last.Path == "/scim/v2/acme/Groups/"+gid && strings.Contains(last.Detail, "answer cut off") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cut answer's entry: %+v", last)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestDiscovery(t *testing.T) {
	ts := newTestServer(t, Options{BaseURL: "https://relay.example.com/"})
	sp := ts.do("GET", "/ServiceProviderConfig", "").want(t, 200)
	for _, block := range []string{"patch", "bulk", "filter", "changePassword", "sort", "etag", "authenticationSchemes"} {
		if sp.json[block] == nil {
			t.Errorf("ServiceProviderConfig lacks %s (RFC 7643 §5 requires it)", block)
		}
	}
	if sp.str("patch.supported") != "true" || sp.str("bulk.supported") != "true" || sp.str("bulk.maxOperations") != fmt.Sprint(DefaultBulkMaxOperations) || sp.str("filter.maxResults") != fmt.Sprint(DefaultMaxResults) ||
		sp.str("meta.location") != "https://relay.example.com/scim/v2/acme/ServiceProviderConfig" {
		t.Errorf("ServiceProviderConfig: %s", sp.body)
	}
	schemas := ts.do("GET", "/Schemas", "").want(t, 200)
	if schemas.str("totalResults") != "3" {
		t.Fatalf("Schemas: %s", schemas.body)
	}
	for _, s := range schemas.json["Resources"].([]any) {
		for _, a := range s.(map[string]any)["attributes"].([]any) {
			am := a.(map[string]any)
			for _, k := range []string{"name", "type", "multiValued", "required", "caseExact", "mutability", "returned", "uniqueness"} {
				if _, ok := am[k]; !ok {
					t.Errorf("schema attribute %v lacks %s", am["name"], k)
				}
			}
		}
	}
	ts.do("GET", "/Schemas/"+strings.ToLower(EnterpriseUserSchema), "").want(t, 200)
	ts.do("GET", "/Schemas/urn:nope", "").wantError(t, 404, "", "no schema")
	rts := ts.do("GET", "/ResourceTypes", "").want(t, 200)
	if rts.str("Resources.0.endpoint") != "/Users" || rts.str("Resources.0.schemaExtensions.0.schema") != EnterpriseUserSchema || rts.str("Resources.1.id") != "Group" {
		t.Fatalf("ResourceTypes: %s", rts.body)
	}
	ts.do("GET", "/ResourceTypes/group", "").want(t, 200)
	// Locations come from BaseURL, not from the request's host.
	u := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"a"}`).want(t, 201)
	if !strings.HasPrefix(u.header.Get("Location"), "https://relay.example.com/scim/v2/acme/Users/") {
		t.Errorf("Location %q does not use BaseURL", u.header.Get("Location"))
	}
}

type fixedLimiter struct{ allow bool }

func (l fixedLimiter) AllowN(string, int) (bool, time.Duration) {
	return l.allow, 1500 * time.Millisecond
}

func (fixedLimiter) Burst(string) int { return 1 }

func TestRateLimitAnswer(t *testing.T) {
	ts := newTestServer(t, Options{Limiter: fixedLimiter{allow: false}})
	r := ts.do("GET", "/Users", "")
	r.wantError(t, 429, "", "over its request rate; retry in 2 s")
	if r.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After %q, want 2 (1.5 s rounded up)", r.header.Get("Retry-After"))
	}
	// Unauthenticated requests are refused before they cost the tenant budget.
	ts.do("GET", "/Users", "", "Authorization", "-").want(t, 401)
}

func TestObserve(t *testing.T) {
	ts := newTestServer(t, Options{})
	created := ts.do("POST", "/Users", `{"schemas":["`+UserSchema+`"],"userName":"ann@x"}`, "X-Request-Id", "req-1").want(t, 201)
	id := created.str("id")
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"replace","path":"id","value":"x"}`))
	ts.do("GET", "/scim/v2/nope/Users", "")
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"title","value":"x"}`)).want(t, 200)
	ts.do("PATCH", "/Users/"+id, patchBody(`{"op":"add","path":"title","value":"x"}`)).want(t, 200)
	ts.do("PUT", "/Users/"+id, `{"schemas":["`+UserSchema+`"],"userName":"ann@y"}`).want(t, 200)
	ts.do("DELETE", "/Users/"+id, "").want(t, 204)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.infos) != 7 {
		t.Fatalf("%d observations, want 7", len(ts.infos))
	}
	c, p, n := ts.infos[0], ts.infos[1], ts.infos[2]
	// The request's id is the relay's, the one its answer carries; the
	// client's is kept apart.
	if c.RequestID != created.header.Get("X-Request-Id") || len(c.RequestID) != 16 || c.ClientRequestID != "req-1" || c.Tenant != "acme" || c.Operation != "create" || c.ResourceType != "User" || c.ResourceID != id || c.Name != "ann@x" || c.Status != 201 || c.Latency <= 0 {
		t.Errorf("create observed as %+v", c)
	}
	if p.Operation != "patch" || p.Status != 400 || p.ScimType != "mutability" || p.ResourceID != id || p.Detail == "" {
		t.Errorf("bad patch observed as %+v", p)
	}
	if n.Status != 401 || n.Tenant != "" {
		t.Errorf("unknown tenant observed as %+v", n)
	}
	// The ids of what each write produced, as the backend reported them;
	// none for a refused or a no-op write.
	var produced []string
	for _, info := range ts.infos {
		produced = append(produced, fmt.Sprintf("%s:%s", info.Operation, strings.Join(info.EventIDs, ",")))
	}
	if got := strings.Join(produced, " "); got != "create:ev-1 patch: list: patch:ev-2 patch: replace:ev-3 delete:ev-4" {
		t.Errorf("event ids observed: %s", got)
	}
}

// TestClientRequestID: a client's X-Request-Id is kept, apart from the
// request's own id, when it is up to 64 visible ASCII characters; nothing
// else a client sends there is kept, and the answer's X-Request-Id is the
// relay's whatever the client sent.
func TestClientRequestID(t *testing.T) {
	for _, c := range []struct{ sent, kept string }{
		{"okta-7f3a", "okta-7f3a"},
		{"<script>alert(1)</script>", "<script>alert(1)</script>"},
		{strings.Repeat("x", 64), strings.Repeat("x", 64)},
		{strings.Repeat("x", 65), ""},
		{"two words", ""},
		{"tab\there", ""},
		{"admin\u202egnp.moc", ""},
		{"caf\u00e9", ""},
		{"", ""},
	} {
		r := httptest.NewRequest("GET", "/scim/v2/acme/Users", nil)
		r.Header.Set("X-Request-Id", c.sent)
		if got := ClientRequestID(r); got != c.kept {
			t.Errorf("X-Request-Id %q kept as %q, want %q", c.sent, got, c.kept)
		}
	}
	// Two requests sending one id are two requests.
	ts := newTestServer(t, Options{})
	first := ts.do("GET", "/Users", "", "X-Request-Id", "req-1").want(t, 200).header.Get("X-Request-Id")
	second := ts.do("GET", "/Users", "", "X-Request-Id", "req-1").want(t, 200).header.Get("X-Request-Id")
	if len(first) != 16 || len(second) != 16 || first == second {
		t.Errorf("the answers' X-Request-Id are %q and %q, want two of the relay's own", first, second)
	}
}
