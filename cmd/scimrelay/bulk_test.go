// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

const (
	userSchema  = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]`
	groupSchema = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"]`
	patchSchema = `"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]`
)

func bulkRequest(failOnErrors int, ops ...string) string {
	f := ""
	if failOnErrors > 0 {
		f = fmt.Sprintf(`"failOnErrors":%d,`, failOnErrors)
	}
	return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],` + f + `"Operations":[` + strings.Join(ops, ",") + `]}`
}

// bulkStatuses returns "status status ..." of a bulk response.
func bulkStatuses(t *testing.T, r reply) string {
	t.Helper()
	var out []string
	ops, _ := r.body["Operations"].([]any)
	for _, o := range ops {
		out = append(out, fmt.Sprint(o.(map[string]any)["status"]))
	}
	return strings.Join(out, " ")
}

// TestBulkEndToEnd sends one bulk request to acme (a user created and put
// in a group in one go, with bulkId references in member values, paths and
// a PATCH filter) and the same changes as single requests to globex: the
// events in the stream are the same, in the same order. Then failOnErrors
// stops a request and keeps what was done, and circular references emit
// nothing.
func TestBulkEndToEnd(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	ann := `{` + userSchema + `,"userName":"ann@x.com","name":{"givenName":"Ann"}}`
	bob := `{` + userSchema + `,"userName":"bob@x.com"}`
	group := func(member string) string {
		return `{` + groupSchema + `,"displayName":"Ops","members":[{"value":"` + member + `","display":"ignored","displayName":"ignored too"}]}`
	}
	patch := func(add, remove string) string {
		return `{` + patchSchema + `,"Operations":[{"op":"add","path":"members","value":[{"value":"` + add + `"}]},` +
			`{"op":"remove","path":"members[value eq \"` + remove + `\"]"},{"op":"replace","path":"displayName","value":"Ops team"}]}`
	}
	annPut := `{` + userSchema + `,"userName":"ann@x.com","name":{"givenName":"Anna"},"active":false}`

	r := p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0,
		`{"method":"POST","path":"/Users","bulkId":"ann","data":`+ann+`}`,
		`{"method":"POST","path":"/Groups","bulkId":"ops","data":`+group("bulkId:ann")+`}`,
		`{"method":"POST","path":"/Users","bulkId":"bob","data":`+bob+`}`,
		`{"method":"PATCH","path":"/Groups/bulkId:ops","data":`+patch("bulkId:bob", "bulkId:ann")+`}`,
		`{"method":"PUT","path":"/Users/bulkId:ann","data":`+annPut+`}`,
		`{"method":"DELETE","path":"/Users/bulkId:bob"}`,
	)).want(t, 200)
	if got := bulkStatuses(t, r); got != "201 201 201 204 200 204" {
		t.Fatalf("bulk statuses %s: %s", got, r.raw)
	}

	g := globexToken
	annID := p.scim("globex", g, "POST", "/Users", ann).want(t, 201).str("id")
	opsID := p.scim("globex", g, "POST", "/Groups", group(annID)).want(t, 201).str("id")
	bobID := p.scim("globex", g, "POST", "/Users", bob).want(t, 201).str("id")
	p.scim("globex", g, "PATCH", "/Groups/"+opsID, patch(bobID, annID)).want(t, 204)
	p.scim("globex", g, "PUT", "/Users/"+annID, annPut).want(t, 200)
	p.scim("globex", g, "DELETE", "/Users/"+bobID, "").want(t, 204)

	all := readStream(t, p.srv.js, 20)
	var acme, globex []streamed
	for _, e := range all {
		if e.tenant == "acme" {
			acme = append(acme, e)
		} else {
			globex = append(globex, e)
		}
	}
	a := string(normaliseEvents(t, acme))
	b := strings.ReplaceAll(string(normaliseEvents(t, globex)), `"globex"`, `"acme"`)
	if a != b {
		t.Fatalf("the bulk request's events differ from those of the single requests:\n--- bulk\n%s\n--- single\n%s", a, b)
	}
	for _, want := range []string{"user.created", "group.member_added", "group.member_removed", "group.updated", "user.deactivated", "user.deleted"} {
		if !strings.Contains(a, "io.scimrelay."+want) {
			t.Errorf("no %s among the bulk request's events", want)
		}
	}

	// The provisioning log has one entry for the request with every event id.
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		entries, err := p.srv.reqLog.Query(context.Background(), relay.LogQuery{Tenant: "acme"})
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Operation == "bulk" && len(e.EventIDs) == 10 && e.EventIDs[0] == acme[0].id && e.EventIDs[9] == acme[9].id {
				return nil
			}
		}
		return fmt.Errorf("no bulk log entry with the 10 event ids yet")
	})

	// failOnErrors 1: the second operation fails (userName taken), the
	// third is not attempted, the first stays.
	r = p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(1,
		`{"method":"POST","path":"/Users","bulkId":"c","data":{`+userSchema+`,"userName":"carl@x.com"}}`,
		`{"method":"POST","path":"/Users","bulkId":"d","data":{`+userSchema+`,"userName":"ANN@x.com"}}`,
		`{"method":"POST","path":"/Users","bulkId":"e","data":{`+userSchema+`,"userName":"eve@x.com"}}`,
	)).want(t, 200)
	if got := bulkStatuses(t, r); got != "201 409" {
		t.Fatalf("failOnErrors 1: %s", r.raw)
	}
	p.scim("acme", acmeToken, "GET", "/Users?filter="+strings.ReplaceAll(`userName eq "carl@x.com"`, " ", "%20"), "").want(t, 200)

	// Circular references: 409 for both, nothing stored, no event.
	r = p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0,
		`{"method":"POST","path":"/Groups","bulkId":"x","data":{`+groupSchema+`,"displayName":"X","members":[{"value":"bulkId:y"}]}}`,
		`{"method":"POST","path":"/Groups","bulkId":"y","data":{`+groupSchema+`,"displayName":"Y","members":[{"value":"bulkId:x"}]}}`,
	)).want(t, 200)
	if got := bulkStatuses(t, r); got != "409 409" || !strings.Contains(string(r.raw), "circular") {
		t.Fatalf("circular references: %s", r.raw)
	}
	readStream(t, p.srv.js, 21) // carl's user.created alone
}

// TestBulkLimitsEndToEnd: the limits relay.yaml sets are the ones
// ServiceProviderConfig advertises and /Bulk enforces, with 413.
func TestBulkLimitsEndToEnd(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.BulkMaxOperations, cfg.Limits.BulkMaxPayload = 2, 4096
	p := startRelay(t, cfg, roleAll)
	sp := p.scim("acme", acmeToken, "GET", "/ServiceProviderConfig", "").want(t, 200)
	var adv struct {
		Bulk struct {
			Supported      bool `json:"supported"`
			MaxOperations  int  `json:"maxOperations"`
			MaxPayloadSize int  `json:"maxPayloadSize"`
		} `json:"bulk"`
	}
	if err := json.Unmarshal(sp.raw, &adv); err != nil || !adv.Bulk.Supported || adv.Bulk.MaxOperations != 2 || adv.Bulk.MaxPayloadSize != 4096 {
		t.Fatalf("advertised bulk: %s", sp.raw)
	}
	op := func(i int) string {
		return fmt.Sprintf(`{"method":"POST","path":"/Users","data":{`+userSchema+`,"userName":"u%d"}}`, i)
	}
	if r := p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, op(1), op(2), op(3))).want(t, 413); !strings.Contains(r.str("detail"), "maxOperations is 2") || r.str("status") != "413" {
		t.Fatalf("too many operations: %s", r.raw)
	}
	big := fmt.Sprintf(`{"method":"POST","path":"/Users","data":{`+userSchema+`,"userName":"u","title":"%s"}}`, strings.Repeat("x", 4096))
	if r := p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, big)).want(t, 413); !strings.Contains(r.str("detail"), "maxPayloadSize") {
		t.Fatalf("too large: %s", r.raw)
	}
	if got := bulkStatuses(t, p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, op(1), op(2))).want(t, 200)); got != "201 201" {
		t.Fatalf("at the limits: %s", got)
	}
	readStream(t, p.srv.js, 2)
}

// TestBulkLargerThanTheBurst: a Bulk request costs one request per
// operation, and at most the tenant's burst, so that one of more
// operations than the burst passes on a full budget (it was refused with
// 429 whatever the client waited, admit's request and the operations'
// together asking for one more than a full budget holds). It then takes
// the whole budget.
func TestBulkLargerThanTheBurst(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 0.001, 5 // no token comes back during the test
	p := startRelay(t, cfg, roleAll)
	var ops []string
	for i := range 8 {
		ops = append(ops, fmt.Sprintf(`{"method":"POST","path":"/Users","data":{%s,"userName":"bulk-%d"}}`, userSchema, i))
	}
	r := p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, ops...))
	if got := bulkStatuses(t, r); r.status != 200 || got != strings.TrimSpace(strings.Repeat("201 ", 8)) {
		t.Fatalf("a Bulk of 8 creates on a full budget of 5: %d, statuses %q: %s", r.status, got, r.raw)
	}
	if got := p.answered("acme", acmeToken, 1); got != 0 {
		t.Errorf("%d requests answered after a Bulk that cost the whole budget, want 0", got)
	}
}

// TestBulkStopsOnceItsWorkHasSpentTheBudget: each operation of a Bulk
// request is charged what its single request would (events, memberships,
// stored bytes), past what the bucket holds; once that has spent the
// tenant's budget, the rest are refused 429 as its next request would
// be. One Bulk of 300 writes of a 250 KiB user on the default burst of
// 400 ran all 300 (each charged some 63 requests): a request of 1 MiB
// held the committer for all of them.
func TestBulkStopsOnceItsWorkHasSpentTheBudget(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.Rate, cfg.Limits.Burst = 0.001, 150 // no token comes back during the test
	p := startRelay(t, cfg, roleAll)
	big := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{%s,"userName":"big","title":"%s"}`, userSchema, strings.Repeat("t", 250<<10))).want(t, 201)
	const n = 20
	var ops []string
	for i := range n {
		ops = append(ops, fmt.Sprintf(`{"method":"PATCH","path":"/Users/%s","data":{%s,"Operations":[{"op":"replace","path":"nickName","value":"n%d"}]}}`, big.str("id"), patchSchema, i))
	}
	got := bulkStatuses(t, p.scim("acme", acmeToken, "POST", "/Bulk", bulkRequest(0, ops...)).want(t, 200))
	// 150 - 64 (the create) - 20 (the Bulk's admission) leave about one
	// PATCH's 63.
	if done, refused := strings.Count(got, "200"), strings.Count(got, "429"); done == 0 || done > 3 || done+refused != n {
		t.Errorf("a Bulk of %d PATCHes of a 250 KiB user on a budget of %d: %s; want one or two performed, the rest 429", n, cfg.Limits.Burst, got)
	}
}
