// SPDX-License-Identifier: Apache-2.0

package scimtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// EntraStep is one request of the Entra reference fixture
// (scim/testdata/entra-requests.json): what Microsoft documents that Entra
// sends, in both aadOptscim062020 forms, with the status and response the
// documentation expects.
type EntraStep struct {
	ID          string  `json:"id"`
	Title       string  `json:"title"`
	Method      string  `json:"method"`
	Path        string  `json:"path"`
	RequestBody *string `json:"request_body"`
	// ExpectedStatus is the documented status; nil where the documentation
	// gives none (its notes then say: 200 or 204 for /Users, 204 for /Groups).
	ExpectedStatus *int `json:"expected_status"`
	// ResponseBodyRaw is the documented response as printed, some with
	// trailing commas; nil when none is printed.
	ResponseBodyRaw *string `json:"response_body_raw"`
	Notes           string  `json:"notes"`
}

// LoadEntraSteps reads the fixture at path.
func LoadEntraSteps(t testing.TB, path string) []EntraStep {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []EntraStep
	if err := json.Unmarshal(data, &steps); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(steps) < 28 {
		t.Fatalf("%s holds %d steps; the reference has 28", path, len(steps))
	}
	return steps
}

// Body returns the request body, "" when the step has none.
func (s EntraStep) Body() string {
	if s.RequestBody == nil {
		return ""
	}
	return *s.RequestBody
}

// ResourceType is the type the step's path addresses, nil for discovery.
func (s EntraStep) ResourceType() *scim.ResourceType {
	switch {
	case strings.Contains(s.Path, "/Users"):
		return scim.UserResourceType
	case strings.Contains(s.Path, "/Groups"):
		return scim.GroupResourceType
	}
	return nil
}

// EntraDifference is a documented expectation the relay departs from on
// purpose; docs/decisions.md says the same.
type EntraDifference struct {
	Status int    // the status the relay answers instead, 0 when the same
	Why    string // the reason, for the test's messages
}

// EntraDifferences are the steps whose documented status the relay does
// not give, and why.
var EntraDifferences = map[string]EntraDifference{
	"patch-manager-legacy": {Status: http.StatusOK, Why: "every User PATCH answers 200 with the user (RFC 7644 §3.5.2 allows 200 or 204; Entra accepts both), so that a client always sees the version it made"},
}

// WantStatus returns the status the relay must answer the step with: the
// documented one, the rule of the documentation's notes where it gives
// none (a User PATCH 200 with the user, a Group PATCH 204), or a
// deliberate difference.
func (s EntraStep) WantStatus() int {
	if d, ok := EntraDifferences[s.ID]; ok && d.Status != 0 {
		return d.Status
	}
	if s.ExpectedStatus != nil {
		return *s.ExpectedStatus
	}
	if s.Method == http.MethodPatch && s.ResourceType() == scim.GroupResourceType {
		return http.StatusNoContent
	}
	return http.StatusOK
}

// Answer is a SCIM response as a test client received it.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// CheckEntraResponse asserts that an answer to a step keeps the contract
// the documentation gives for it: the status (WantStatus), no body with
// 204, an RFC 7644 error, list or resource of the right type otherwise,
// every attribute the documented response shows present with the same
// JSON type, and the documented counts of list answers. What a create
// echoes from its request equals what the documentation shows.
func CheckEntraResponse(t testing.TB, s EntraStep, got Answer) {
	t.Helper()
	if want := s.WantStatus(); got.Status != want {
		t.Errorf("%s: status %d, want %d; body %s", s.ID, got.Status, want, got.Body)
		return
	}
	if got.Status == http.StatusNoContent {
		if len(got.Body) != 0 {
			t.Errorf("%s: 204 with a body: %s", s.ID, got.Body)
		}
		return
	}
	if ct := got.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/scim+json") {
		t.Errorf("%s: Content-Type %q", s.ID, ct)
	}
	var body map[string]any
	if err := json.Unmarshal(got.Body, &body); err != nil {
		t.Errorf("%s: the answer is not a JSON object: %v\n%s", s.ID, err, got.Body)
		return
	}
	var doc map[string]any
	if s.ResponseBodyRaw != nil {
		if err := json.Unmarshal(lenientJSON(*s.ResponseBodyRaw), &doc); err != nil {
			t.Fatalf("%s: the documented response does not parse: %v", s.ID, err)
		}
	}
	rt := s.ResourceType()
	switch {
	case got.Status >= 400:
		checkErrorBody(t, s.ID, got.Status, body)
	case s.Method == http.MethodGet && (strings.Contains(s.Path, "?filter") || strings.Contains(s.Path, "&filter") || rt == nil):
		checkListBody(t, s.ID, rt, body, doc)
	default:
		checkResourceBody(t, s.ID, rt, got, body)
		if doc != nil {
			checkShape(t, s.ID, "", doc, body)
		}
		if s.Method == http.MethodPost && doc != nil {
			for k, v := range doc {
				if isEmptyList(v) && body[k] != nil {
					t.Errorf("%s: %s is %v; an empty list is left out (RFC 7643 §2.5)", s.ID, k, body[k])
				}
				if k == "id" || k == "meta" || isEmptyList(v) {
					continue
				}
				if !reflect.DeepEqual(body[k], v) {
					t.Errorf("%s: %s is %v, the documentation shows %v", s.ID, k, body[k], v)
				}
			}
		}
	}
	if strings.Contains(s.Path, "excludedAttributes=members") && bytes.Contains(got.Body, []byte(`"members"`)) {
		t.Errorf("%s: excludedAttributes=members, yet members in %s", s.ID, got.Body)
	}
}

// lenientJSON removes the trailing commas some documented responses have.
func lenientJSON(s string) []byte {
	return trailingComma.ReplaceAll([]byte(s), []byte("$1"))
}

var trailingComma = regexp.MustCompile(`,(\s*[}\]])`)

func isEmptyList(v any) bool {
	l, ok := v.([]any)
	return ok && len(l) == 0
}

func checkErrorBody(t testing.TB, id string, status int, body map[string]any) {
	t.Helper()
	if s, _ := body["schemas"].([]any); len(s) != 1 || s[0] != scim.ErrorSchema {
		t.Errorf("%s: error schemas %v", id, body["schemas"])
	}
	if body["status"] != fmt.Sprint(status) {
		t.Errorf("%s: error status %#v, want the string %q", id, body["status"], fmt.Sprint(status))
	}
}

func checkListBody(t testing.TB, id string, rt *scim.ResourceType, body, doc map[string]any) {
	t.Helper()
	if s, _ := body["schemas"].([]any); len(s) != 1 || s[0] != scim.ListResponseSchema {
		t.Errorf("%s: list schemas %v", id, body["schemas"])
	}
	resources, ok := body["Resources"].([]any)
	if !ok {
		t.Errorf("%s: Resources is %T, want a list (empty when nothing matches)", id, body["Resources"])
		return
	}
	total, _ := body["totalResults"].(float64)
	items, _ := body["itemsPerPage"].(float64)
	start, _ := body["startIndex"].(float64)
	// itemsPerPage is the number returned (RFC 7644 §3.4.2), not the page
	// size the documentation's samples print.
	if int(items) != len(resources) || start != 1 || int(total) < len(resources) {
		t.Errorf("%s: totalResults %v, startIndex %v, itemsPerPage %v for %d resources", id, body["totalResults"], body["startIndex"], body["itemsPerPage"], len(resources))
	}
	if doc != nil && doc["totalResults"] != body["totalResults"] {
		t.Errorf("%s: totalResults %v, the documentation shows %v", id, body["totalResults"], doc["totalResults"])
	}
	for i, r := range resources {
		m, _ := r.(map[string]any)
		if rt == nil {
			if m["id"] == nil {
				t.Errorf("%s: discovery resource %d has no id", id, i)
			}
			continue
		}
		checkResourceFields(t, fmt.Sprintf("%s: resource %d", id, i), rt, m)
		if docRes, _ := doc["Resources"].([]any); len(docRes) > 0 {
			checkShape(t, id, "Resources.", docRes[0].(map[string]any), m)
		}
	}
}

func checkResourceBody(t testing.TB, id string, rt *scim.ResourceType, got Answer, body map[string]any) {
	t.Helper()
	checkResourceFields(t, id, rt, body)
	meta, _ := body["meta"].(map[string]any)
	if v, _ := meta["version"].(string); v == "" || got.Header.Get("ETag") != v {
		t.Errorf("%s: meta.version %q, ETag %q", id, v, got.Header.Get("ETag"))
	}
	if got.Status == http.StatusCreated && got.Header.Get("Location") != meta["location"] {
		t.Errorf("%s: Location %q, meta.location %v", id, got.Header.Get("Location"), meta["location"])
	}
}

// checkResourceFields checks what RFC 7643 §3 requires of every resource.
func checkResourceFields(t testing.TB, where string, rt *scim.ResourceType, r map[string]any) {
	t.Helper()
	rid, _ := r["id"].(string)
	if schemas, _ := r["schemas"].([]any); rid == "" || !slices.Contains(schemas, any(rt.Schema.ID)) {
		t.Errorf("%s: id %q, schemas %v", where, rid, r["schemas"])
	}
	meta, _ := r["meta"].(map[string]any)
	if meta["resourceType"] != rt.Name {
		t.Errorf("%s: meta.resourceType %v, want %s", where, meta["resourceType"], rt.Name)
	}
	for _, k := range []string{"created", "lastModified"} {
		if s, _ := meta[k].(string); s == "" {
			t.Errorf("%s: no meta.%s", where, k)
		} else if _, err := time.Parse(time.RFC3339, s); err != nil {
			t.Errorf("%s: meta.%s %q: %v", where, k, s, err)
		}
	}
	if loc, _ := meta["location"].(string); !strings.HasSuffix(loc, rt.Endpoint+"/"+rid) {
		t.Errorf("%s: meta.location %q does not end with %s/%s", where, loc, rt.Endpoint, rid)
	} else if u, err := url.Parse(loc); err != nil || !u.IsAbs() {
		t.Errorf("%s: meta.location %q is not an absolute URL", where, loc)
	}
	if rt == scim.UserResourceType && r["members"] != nil {
		t.Errorf("%s: a User with members: %v", where, r["members"])
	}
}

// checkShape checks that every attribute of the documented response is in
// the answer with the same JSON type, sub-attributes too. An empty list in
// the documentation may be left out (RFC 7643 §2.5 makes them the same).
func checkShape(t testing.TB, id, prefix string, doc, got map[string]any) {
	t.Helper()
	for k, dv := range doc {
		gv, ok := got[k]
		switch {
		case !ok && isEmptyList(dv):
		case !ok && entraSampleOnly[id] != nil && slices.Contains(entraSampleOnly[id], prefix+k):
		case !ok:
			t.Errorf("%s: the documented response has %s%s; the answer lacks it", id, prefix, k)
		case reflect.TypeOf(gv) != reflect.TypeOf(dv):
			t.Errorf("%s: %s%s is %T, documented as %T", id, prefix, k, gv, dv)
		default:
			dm, _ := dv.(map[string]any)
			gm, _ := gv.(map[string]any)
			if dl, ok := dv.([]any); ok && len(dl) > 0 {
				dm, _ = dl[0].(map[string]any)
				gl, _ := gv.([]any)
				if len(gl) > 0 {
					gm, _ = gl[0].(map[string]any)
				}
			}
			if dm != nil && gm != nil {
				checkShape(t, id, prefix+k+".", dm, gm)
			}
		}
	}
}

// entraSampleOnly lists attributes of documented responses that belong to
// the documentation's sample resource, not to the request: the disable
// sample is of a user with an address, which the request does not touch.
var entraSampleOnly = map[string][]string{
	"disable-user": {"addresses"},
}

// ReplayEntra sends every request of the fixture, in its order, through
// send (method, a path under the tenant's base URL, body), as Entra would
// to one tenant, and checks each answer with CheckEntraResponse. The
// documentation's ids become live ones: the user of create-user for the
// tutorial's user steps, the user of create-user-legacy-nulls for the
// legacy and {id} ones and as the member the group steps add and remove,
// the group of create-group, and a second group for the member removals
// that come after delete-group; get-user-404 keeps its unknown id.
func ReplayEntra(t *testing.T, steps []EntraStep, send func(method, path, body string) Answer) {
	t.Helper()
	live := map[string]string{} // role → id
	roles := map[string]string{
		"get-user": "user", "patch-user-multivalued": "user", "patch-user-singlevalued": "user", "disable-user": "user", "delete-user": "user",
		"get-group": "group", "patch-group-displayname": "group", "patch-group-add-members": "group", "patch-group-remove-members": "group", "delete-group": "group",
		"remove-member-legacy": "group2", "remove-member-flag": "group2",
	}
	documentedMembers := []string{"f648f8d5ea4e4cd38e9c", "u1091", "7f4bc1a3-285e-48ae-8202-5accb43efb0e"}
	for _, s := range steps {
		role, ok := roles[s.ID]
		if !ok && s.ResourceType() == scim.UserResourceType && s.Method == http.MethodPatch {
			role = "legacy"
		}
		if role == "group2" && live["group2"] == "" {
			a := send(http.MethodPost, "/Groups", fmt.Sprintf(`{"schemas":[%q],"displayName":"second","members":[{"value":%q}]}`, scim.GroupSchema, live["legacy"]))
			if a.Status != http.StatusCreated {
				t.Fatalf("creating the second group: %d %s", a.Status, a.Body)
			}
			live["group2"] = idOf(t, a)
		}
		path := livePath(s.Path, live[role])
		body := s.Body()
		for _, m := range documentedMembers {
			body = strings.ReplaceAll(body, m, live["legacy"])
		}
		a := send(s.Method, path, body)
		CheckEntraResponse(t, s, a)
		switch s.ID {
		case "create-user":
			live["user"] = idOf(t, a)
		case "create-user-legacy-nulls":
			live["legacy"] = idOf(t, a)
		case "create-group":
			live["group"] = idOf(t, a)
		}
	}
	if len(live) != 4 {
		t.Fatalf("the replay resolved %v; the fixture changed its steps", live)
	}
}

func idOf(t *testing.T, a Answer) string {
	t.Helper()
	var r struct{ ID string }
	if err := json.Unmarshal(a.Body, &r); err != nil || r.ID == "" {
		t.Fatalf("no id in %s (%v)", a.Body, err)
	}
	return r.ID
}

// livePath turns a documented path into one under the tenant's base URL:
// the legacy /scim prefix goes, the resource id becomes id when one is
// given, and the query is encoded as a client would.
func livePath(doc, id string) string {
	p, query, hasQuery := strings.Cut(strings.TrimPrefix(doc, "/scim"), "?")
	if parts := strings.Split(p, "/"); id != "" && len(parts) == 3 {
		p = "/" + parts[1] + "/" + id
	}
	if hasQuery {
		p += "?" + query
	}
	return EncodeQuery(p)
}

// EncodeQuery URL-encodes the query of a path that documentation writes
// readable (filter=userName eq "ann"), as a client sends it.
func EncodeQuery(path string) string {
	p, q, ok := strings.Cut(path, "?")
	if !ok {
		return path
	}
	var parts []string
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		parts = append(parts, k+"="+url.QueryEscape(v))
	}
	return p + "?" + strings.Join(parts, "&")
}
