// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

// TestEntraCycle replays Entra's provisioning sequences (the requests Entra
// sends, recorded in scim/testdata/entra-requests.json) against the real relay: bbolt file, embedded JetStream, HTTP. It checks
// every answer, then that the events in the stream are exactly the expected
// ones (testdata/entra-events.golden, ids and times normalised), then that a
// restart keeps everything.
func TestEntraCycle(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	p := startRelay(t, cfg, roleAll)
	b := entraBodies(t)
	scim := func(method, path, body string) reply {
		t.Helper()
		return p.scim("acme", acmeToken, method, path, body)
	}

	// Test Connection: a random GUID as the matching value, then the schemas.
	r := scim("GET", "/Users?"+q(`userName eq "c3a9f1d2-7b4e-4c8a-9e1f-2d3c4b5a6f70"`), "").want(t, 200)
	if r.str("totalResults") != "0" || r.str("Resources") != "[]" {
		t.Fatalf("Test Connection: %s", r.raw)
	}
	scim("GET", "/Schemas", "").want(t, 200)

	// User create: match by userName first, then POST.
	scim("GET", "/Users?"+q(`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`), "").want(t, 200)
	uid := scim("POST", "/Users", b["create-user"]).want(t, 201).str("id")
	for _, f := range []string{
		`userName eq "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"`,
		`externalId eq 0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef`,
		`emails[type eq "work"].value eq "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"`,
	} {
		if r := scim("GET", "/Users?"+q(f), "").want(t, 200); r.str("totalResults") != "1" {
			t.Fatalf("matching by %s: %s", f, r.raw)
		}
	}
	scim("GET", "/Users/"+uid, "").want(t, 200)
	// Updates in both aadOptscim062020 forms; manager by reference.
	manager := scim("POST", "/Users", b["create-user-legacy-nulls"]).want(t, 201).str("id")
	for _, step := range []string{"patch-user-multivalued", "patch-user-singlevalued", "replace-multi-legacy", "replace-multi-flag", "add-single-value-legacy", "add-single-value-flag"} {
		scim("PATCH", "/Users/"+uid, b[step]).want(t, 200)
	}
	scim("PATCH", "/Users/"+uid, strings.ReplaceAll(b["patch-manager-legacy"], "00aa00aa-bb11-cc22-dd33-44ee44ee44ee", manager)).want(t, 200)
	// Disable without the flag ("False"), enable, disable with it (false).
	if r := scim("PATCH", "/Users/"+uid, b["disable-user-legacy"]).want(t, 200); r.str("active") != "false" {
		t.Fatalf("disable (no flag): active %s", r.str("active"))
	}
	scim("PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"True"}]}`).want(t, 200)
	scim("PATCH", "/Users/"+uid, b["disable-user-flag"]).want(t, 200)

	// Groups: match by displayName without members, create, rename, members both ways.
	if r := scim("GET", "/Groups?excludedAttributes=members&"+q(`displayName eq "displayName"`), "").want(t, 200); r.str("totalResults") != "0" {
		t.Fatalf("group match: %s", r.raw)
	}
	gid := scim("POST", "/Groups", b["create-group"]).want(t, 201).str("id")
	if r := scim("GET", "/Groups?excludedAttributes=members&"+q(`displayName eq "displayName"`), "").want(t, 200); r.str("totalResults") != "1" {
		t.Fatalf("group match after create: %s", r.raw)
	}
	scim("PATCH", "/Groups/"+gid, b["patch-group-displayname"]).want(t, 204)
	scim("PATCH", "/Groups/"+gid, strings.ReplaceAll(b["patch-group-add-members"], "f648f8d5ea4e4cd38e9c", uid)).want(t, 204)
	scim("PATCH", "/Groups/"+gid, strings.ReplaceAll(b["patch-group-add-members"], "f648f8d5ea4e4cd38e9c", manager)).want(t, 204)
	g := scim("GET", "/Groups/"+gid, "").want(t, 200)
	if members, _ := g.body["members"].([]any); len(members) != 2 {
		t.Fatalf("group members: %s", g.raw)
	}
	if r := scim("GET", "/Groups/"+gid+"?excludedAttributes=members", "").want(t, 200); strings.Contains(string(r.raw), "members") {
		t.Fatalf("excludedAttributes=members returned members: %s", r.raw)
	}
	scim("PATCH", "/Groups/"+gid, strings.ReplaceAll(b["remove-member-legacy"], "u1091", manager)).want(t, 204)
	scim("PATCH", "/Groups/"+gid, strings.ReplaceAll(b["remove-member-flag"], "7f4bc1a3-285e-48ae-8202-5accb43efb0e", uid)).want(t, 204)
	scim("PATCH", "/Groups/"+gid, strings.ReplaceAll(b["patch-group-add-members"], "f648f8d5ea4e4cd38e9c", manager)).want(t, 204)
	// Deletes: the user, then the group; both 404 afterwards.
	scim("DELETE", "/Users/"+uid, "").want(t, 204)
	scim("GET", "/Users/"+uid, "").want(t, 404)
	scim("DELETE", "/Groups/"+gid, "").want(t, 204)
	scim("GET", "/Groups/"+gid, "").want(t, 404)

	// The events, as any subscriber sees them in the stream.
	got := readStream(t, p.srv.js, 20)
	scimtest.Golden(t, "testdata/entra-events.golden", normaliseEvents(t, got))

	// A restart keeps everything: the manager is still there, with its
	// uniqueness, and its membership is gone with the group.
	p.stop()
	p = startRelay(t, cfg, roleAll)
	m := p.scim("acme", acmeToken, "GET", "/Users/"+manager, "").want(t, 200)
	if m.str("userName") != "jyoung@testuser.com" || m.body["groups"] != nil {
		t.Fatalf("after restart: %s", m.raw)
	}
	p.scim("acme", acmeToken, "POST", "/Users", b["create-user-legacy-nulls"]).want(t, 409)
	p.scim("acme", acmeToken, "GET", "/Users/"+uid, "").want(t, 404)
	readStream(t, p.srv.js, 20) // nothing re-published, nothing lost
}

// TestEntraContract sends every request of the Entra fixture to the real
// relay and checks each answer against the documented status and response
// (scimtest.CheckEntraResponse), then that every write's events are named
// in the provisioning log.
func TestEntraContract(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	// One entry per request, reads too: by default successful reads are
	// summed up per minute, and that minute would not be over.
	cfg.ProvisioningLog.Reads = "all"
	p := startRelay(t, cfg, roleAll)
	sent := 0
	scimtest.ReplayEntra(t, scimtest.LoadEntraSteps(t, entraFixture), func(method, path, body string) scimtest.Answer {
		sent++
		r := p.scim("acme", acmeToken, method, path, body)
		return scimtest.Answer{Status: r.status, Header: r.header, Body: r.raw}
	})
	// The log names, across its entries, exactly the events in the stream.
	var entries []relay.LogEntry
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if entries, err = p.srv.reqLog.Query(context.Background(), relay.LogQuery{Tenant: "acme", Limit: 1000}); err != nil {
			return err
		}
		if len(entries) != sent {
			return fmt.Errorf("%d log entries, want %d", len(entries), sent)
		}
		return nil
	})
	logged := map[string]bool{}
	for _, e := range entries {
		if e.Status >= 300 && len(e.EventIDs) > 0 {
			t.Errorf("%s %s answered %d, yet logged events %v", e.Method, e.Path, e.Status, e.EventIDs)
		}
		for _, id := range e.EventIDs {
			if logged[id] {
				t.Errorf("event %s logged twice", id)
			}
			logged[id] = true
		}
	}
	stream := readStream(t, p.srv.js, len(logged))
	for _, e := range stream {
		if !logged[e.id] {
			t.Errorf("event %s (%s) is in the stream but in no log entry", e.id, e.action)
		}
	}
}

// TestSortLimit: a list with sortBy matching more than
// limits.max_sort_matches resources is refused with 400 tooMany; a filter
// that narrows the matches, or leaving sortBy out, answers.
func TestSortLimit(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.MaxSortMatches = 3
	p := startRelay(t, cfg, roleAll)
	for i := range 4 {
		p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d","title":"t%d"}`, i, i%2)).want(t, 201)
	}
	r := p.scim("acme", acmeToken, "GET", "/Users?sortBy=userName", "").want(t, 400)
	if r.str("scimType") != "tooMany" || !strings.Contains(r.str("detail"), "at most 3") {
		t.Fatalf("sorting 4 matches with a limit of 3: %s", r.raw)
	}
	r = p.scim("acme", acmeToken, "GET", "/Users?sortBy=userName&sortOrder=descending&"+q(`title eq "t1"`), "").want(t, 200)
	if r.str("totalResults") != "2" {
		t.Fatalf("sorting 2 matches: %s", r.raw)
	}
	if r := p.scim("acme", acmeToken, "GET", "/Users", "").want(t, 200); r.str("totalResults") != "4" {
		t.Fatalf("listing without sortBy: %s", r.raw)
	}
}

var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
var timePattern = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// normaliseEvents renders events with ids and times replaced by stable
// placeholders (<id-1>, <time>), so that a golden file can hold them.
func normaliseEvents(t *testing.T, list []streamed) []byte {
	t.Helper()
	ids := map[string]string{}
	name := func(id string) string {
		if _, ok := ids[id]; !ok {
			ids[id] = fmt.Sprintf("<id-%d>", len(ids)+1)
		}
		return ids[id]
	}
	var out []map[string]any
	for _, e := range list {
		data, err := json.Marshal(e.data)
		if err != nil {
			t.Fatal(err)
		}
		text := uuidPattern.ReplaceAllStringFunc(string(data), name)
		text = timePattern.ReplaceAllString(text, "<time>")
		var d any
		if err := json.Unmarshal([]byte(text), &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, map[string]any{
			"type":       e.action.Type(),
			"subject":    uuidPattern.ReplaceAllStringFunc(e.subject, name),
			"tenant":     e.tenant,
			"sequence":   e.seq,
			"subjectseq": e.subjectSeq,
			"data":       d,
		})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestCrossTenant checks that a token of one tenant gets 401 on every
// other tenant's Users and Groups, list and by id, and an unknown tenant 401.
func TestCrossTenant(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	ids := map[string]map[string]string{}
	tokens := map[string]string{"acme": acmeToken, "globex": globexToken}
	for tenant, tok := range tokens {
		ids[tenant] = map[string]string{
			"Users":  p.scim(tenant, tok, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id"),
			"Groups": p.scim(tenant, tok, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g"}`).want(t, 201).str("id"),
		}
	}
	for tenant := range tokens {
		for other, tok := range tokens {
			want := 200
			if other != tenant {
				want = 401
			}
			for _, kind := range []string{"Users", "Groups"} {
				p.scim(tenant, tok, "GET", "/"+kind, "").want(t, want)
				p.scim(tenant, tok, "GET", "/"+kind+"/"+ids[tenant][kind], "").want(t, want)
				// A tenant's own token cannot reach another tenant's resource by id.
				if other == tenant {
					for foreign := range tokens {
						if foreign != tenant {
							p.scim(tenant, tok, "GET", "/"+kind+"/"+ids[foreign][kind], "").want(t, 404)
						}
					}
				}
			}
		}
	}
	// An unknown tenant answers as a wrong token does: names cannot be probed.
	p.scim("initech", acmeToken, "GET", "/Users", "").want(t, 401)
}

// TestConcurrentCreatesOverHTTP: twenty parallel POSTs of one userName give
// one 201 and nineteen 409s, as Entra's parallel requests would.
func TestConcurrentCreatesOverHTTP(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", p.scimURL+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"same@x.com"}`))
			req.Header.Set("Authorization", "Bearer "+acmeToken)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 1 || count[409] != 19 {
		t.Fatalf("statuses %v, want one 201 and nineteen 409", count)
	}
}

// TestMemoryLimitFromContainer: serve gives Go a soft limit of 90% of the
// container's memory limit, leaves an operator's GOMEMLIMIT alone, and
// sets nothing without a limit.
func TestMemoryLimitFromContainer(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	const container = 1 << 30
	limited := func() (uint64, error) { return container, nil }
	unlimited := func() (uint64, error) { return 0, memlimit.ErrNoLimit }
	log := slog.New(slog.DiscardHandler)

	t.Setenv("AUTOMEMLIMIT", "")
	os.Unsetenv("AUTOMEMLIMIT")
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	setMemoryLimit(log, limited)
	ratio := memoryLimitRatio
	if got, want := debug.SetMemoryLimit(-1), int64(float64(container)*ratio); got != want {
		t.Errorf("soft limit %d under a 1 GiB container, want %d", got, want)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	setMemoryLimit(log, unlimited)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("soft limit %d without a container limit, want none", got)
	}

	var logged bytes.Buffer
	t.Setenv("AUTOMEMLIMIT", "0.5x")
	setMemoryLimit(slog.New(slog.NewTextHandler(&logged, nil)), limited)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 || !strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("AUTOMEMLIMIT=0.5x: soft limit %d, log %q; want none and a warning", got, logged.String())
	}
	os.Unsetenv("AUTOMEMLIMIT")

	t.Setenv("GOMEMLIMIT", "512MiB") // read by the runtime at start; here only the library sees it
	setMemoryLimit(log, limited)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("soft limit %d with GOMEMLIMIT set, want it left alone", got)
	}
}
