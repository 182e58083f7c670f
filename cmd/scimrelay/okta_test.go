// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// oktaStep is one request of scim/testdata/okta-requests.json: Okta's
// documented SCIM 2.0 sequence (its SCIM protocol reference), in this
// project's own words and values. {userId}, {user2Id}, {user3Id},
// {groupId} and {startIndex} are filled in as the replay goes.
type oktaStep struct {
	ID             string  `json:"id"`
	Method         string  `json:"method"`
	Path           string  `json:"path"`
	RequestBody    *string `json:"request_body"`
	ExpectedStatus int     `json:"expected_status"`
}

func loadOktaSteps(t *testing.T) map[string]oktaStep {
	t.Helper()
	data, err := os.ReadFile("../../scim/testdata/okta-requests.json")
	if err != nil {
		t.Fatal(err)
	}
	var list []oktaStep
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]oktaStep{}
	for _, s := range list {
		out[s.ID] = s
	}
	return out
}

// TestOktaCycle replays Okta's documented provisioning sequence against the
// running relay, authenticated the way Okta's "Basic Auth" option does it
// (an OAuth client's id and secret): test connection, import with paging,
// user create with groups: [] and a password, full-replace PUTs, path-less
// deactivation, group push with members: [], renames carrying the group's
// id, membership PATCHes (remove by filter and add, full replace), a group
// PUT, delete. It checks every answer and the events against
// testdata/okta-events.golden. Then it holds Okta's full replaces to what
// Entra's PATCHes of the same change produce (on globex): the same
// fine-grained changes and member events, and nothing for a PUT or rename
// that changes nothing.
func TestOktaCycle(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	steps := loadOktaSteps(t)
	client := createClient(t, p, "acme", "--name", "okta")
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(client.id+":"+client.secret))
	vars := map[string]string{}
	fill := func(s string) string {
		for k, v := range vars {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
		return s
	}
	okta := func(id string) reply {
		t.Helper()
		s, ok := steps[id]
		if !ok {
			t.Fatalf("no Okta step %s", id)
		}
		body := ""
		if s.RequestBody != nil {
			body = fill(*s.RequestBody)
		}
		r := p.scim("acme", "", s.Method, scimtest.EncodeQuery(fill(s.Path)), body,
			"Authorization", basic, "User-Agent", "Okta SCIM Client 1.0.0", "Content-Type", "application/json; charset=utf-8", "X-Request-Id", "okta-"+id)
		if r.status != s.ExpectedStatus {
			t.Fatalf("%s: status %d, want %d: %s", id, r.status, s.ExpectedStatus, r.raw)
		}
		return r
	}
	integers := func(r reply, fields ...string) {
		t.Helper()
		for _, f := range fields {
			if _, ok := r.body[f].(float64); !ok {
				t.Fatalf("%s is not an integer in %s", f, r.raw)
			}
		}
	}

	// Test connection, then the lookup before an assignment.
	integers(okta("test-connection-users"), "totalResults", "startIndex", "itemsPerPage")
	integers(okta("test-connection-groups"), "totalResults", "startIndex", "itemsPerPage")
	if r := okta("match-user"); r.str("totalResults") != "0" {
		t.Fatalf("match before create: %s", r.raw)
	}
	created := okta("create-user")
	vars["userId"] = created.str("id")
	if strings.Contains(string(created.raw), "password") || created.body["groups"] != nil || created.str("locale") != "pt-BR" {
		t.Fatalf("create answer: %s", created.raw)
	}
	if r := okta("create-user-again"); r.str("scimType") != "uniqueness" {
		t.Fatalf("duplicate create: %s", r.raw)
	}
	vars["user2Id"] = okta("create-second-user").str("id")
	vars["user3Id"] = okta("create-third-user").str("id")

	// Import: pages of two, in a stable order, until totalResults.
	var imported []string
	for start := 1; ; start += 2 {
		vars["startIndex"] = fmt.Sprint(start)
		r := okta("import-users")
		integers(r, "totalResults", "startIndex", "itemsPerPage")
		for _, res := range r.body["Resources"].([]any) {
			imported = append(imported, res.(map[string]any)["id"].(string))
		}
		if start+2 > int(r.body["totalResults"].(float64)) {
			break
		}
	}
	if strings.Join(imported, ",") != vars["userId"]+","+vars["user2Id"]+","+vars["user3Id"] {
		t.Fatalf("import pages gave %v", imported)
	}

	// Profile pushes: a PUT of what is stored, then one that changes.
	okta("get-user")
	if r := okta("update-user-unchanged"); r.body["meta"].(map[string]any)["version"] != `W/"1"` {
		t.Fatalf("a PUT that changes nothing bumped the version: %s", r.raw)
	}
	if r := okta("update-user"); r.str("title") != "Site Reliability Engineer" || strings.Contains(string(r.raw), "middleName") {
		t.Fatalf("update answer: %s", r.raw)
	}
	if r := okta("deactivate-user"); r.str("active") != "false" {
		t.Fatalf("deactivate: %s", r.raw)
	}
	okta("reactivate-user")

	// Group push and membership.
	if r := okta("match-group"); r.str("totalResults") != "0" {
		t.Fatalf("group match: %s", r.raw)
	}
	vars["groupId"] = okta("push-group").str("id")
	okta("get-group")
	for _, id := range []string{"rename-group-unchanged", "add-members", "update-members", "rename-group", "replace-members", "put-group"} {
		okta(id)
	}
	g := p.scim("acme", acmeToken, "GET", "/Groups/"+vars["groupId"], "").want(t, 200)
	if g.str("displayName") != "Field Engineering EMEA" || len(g.body["members"].([]any)) != 2 {
		t.Fatalf("group after the pushes: %s", g.raw)
	}
	okta("delete-group")
	p.scim("acme", acmeToken, "GET", "/Groups/"+vars["groupId"], "").want(t, 404)

	// The same changes the way Entra sends them, on globex.
	entra := func(method, path, body, id string) reply {
		t.Helper()
		return p.scim("globex", globexToken, method, path, body, "X-Request-Id", "entra-"+id)
	}
	bodyOf := func(id string) string { return *steps[id].RequestBody }
	gu := entra("POST", "/Users", bodyOf("create-user"), "create-user").want(t, 201).str("id")
	gu2 := entra("POST", "/Users", bodyOf("create-second-user"), "create-second-user").want(t, 201).str("id")
	gu3 := entra("POST", "/Users", bodyOf("create-third-user"), "create-third-user").want(t, 201).str("id")
	entra("PATCH", "/Users/"+gu, `{`+patchSchema+`,"Operations":[{"op":"Replace","path":"name.givenName","value":"Mariana"},`+
		`{"op":"Replace","path":"displayName","value":"Mariana Silva"},{"op":"Add","path":"title","value":"Site Reliability Engineer"}]}`, "update-user").want(t, 200)
	gg := entra("POST", "/Groups", `{`+groupSchema+`,"displayName":"Field Engineering"}`, "push-group").want(t, 201).str("id")
	member := func(op, id string) string {
		return `{"op":"` + op + `","path":"members","value":[{"value":"` + id + `"}]}`
	}
	patchGroup := func(id string, ops ...string) {
		t.Helper()
		entra("PATCH", "/Groups/"+gg, `{`+patchSchema+`,"Operations":[`+strings.Join(ops, ",")+`]}`, id).want(t, 204)
	}
	patchGroup("add-members", member("Add", gu), member("Add", gu2))
	patchGroup("update-members", member("Remove", gu2), member("Add", gu3))
	patchGroup("replace-members", member("Remove", gu), member("Add", gu2))
	patchGroup("put-group", member("Remove", gu3), member("Add", gu))

	all := readStream(t, p.srv.js, 30)
	var acme []streamed
	byID := map[string]streamed{}
	for _, e := range all {
		byID[e.id] = e
		if e.tenant == "acme" {
			acme = append(acme, e)
		}
	}
	scimtest.Golden(t, "testdata/okta-events.golden", normaliseEvents(t, acme))

	// Per request, the events it produced (the provisioning log has their ids).
	produced := map[string][]streamed{}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		entries, err := p.srv.reqLog.Query(context.Background(), relay.LogQuery{})
		if err != nil {
			return err
		}
		clear(produced)
		for _, e := range entries {
			for _, id := range e.EventIDs {
				produced[e.ClientRequestID] = append(produced[e.ClientRequestID], byID[id])
			}
		}
		if _, ok := produced["entra-put-group"]; !ok {
			return fmt.Errorf("the log is not written yet")
		}
		return nil
	})
	for _, id := range []string{"okta-update-user-unchanged", "okta-rename-group-unchanged", "okta-get-user"} {
		if evs := produced[id]; len(evs) != 0 {
			t.Errorf("%s produced %d events; a request that changes nothing produces none", id, len(evs))
		}
	}
	names := map[string]string{vars["userId"]: "maria", vars["user2Id"]: "joao", vars["user3Id"]: "ana", gu: "maria", gu2: "joao", gu3: "ana"}
	for _, id := range []string{"update-user", "add-members", "update-members", "replace-members", "put-group"} {
		o, e := describe(produced["okta-"+id], names), describe(produced["entra-"+id], names)
		if o != e || o == "" {
			t.Errorf("%s: Okta's request produced\n  %s\nEntra's PATCH of the same change\n  %s", id, o, e)
		}
	}
}

// describe renders events as what a consumer acts on: type, changes and
// member (by name), sorted, so that two requests can be compared.
func describe(list []streamed, names map[string]string) string {
	var out []string
	for _, e := range list {
		s := e.action.Type()
		if len(e.data.Changes) > 0 {
			b, _ := json.Marshal(e.data.Changes)
			s += " " + string(b)
		}
		if e.data.Member != nil {
			s += " " + names[e.data.Member.Value]
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}
