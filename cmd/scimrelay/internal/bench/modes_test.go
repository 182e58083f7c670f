// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestOpsMode: each round creates Requests users and finds each by its
// userName, on the relay and on the baseline; every request succeeds and
// is counted, and the relay holds the users.
func TestOpsMode(t *testing.T) {
	store, url := startRelay(t, nil)
	rep, err := RunOps(context.Background(), Options{URL: url, Token: testToken, Requests: 60, Rounds: 2, Concurrency: 4, Baseline: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RoundRows) != 2 || len(rep.Median) != 2 {
		t.Fatalf("rounds %d, median rows %d", len(rep.RoundRows), len(rep.Median))
	}
	for _, rows := range append(rep.RoundRows, rep.Median) {
		for _, r := range rows {
			if r.Endpoint.RPS <= 0 || r.Endpoint.ErrorCount() != 0 || r.Baseline == nil || r.Baseline.RPS <= 0 || r.Ratio <= 0 {
				t.Errorf("%s: %+v (baseline %+v)", r.Operation, r.Endpoint, r.Baseline)
			}
		}
	}
	if rep.Median[0].Endpoint.Count != 120 || rep.RoundRows[0][1].Endpoint.Count != 60 {
		t.Errorf("counts: median %d, round 1 filter %d", rep.Median[0].Endpoint.Count, rep.RoundRows[0][1].Endpoint.Count)
	}
	page, err := store.List(context.Background(), "default", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 1})
	if err != nil || page.Total != 120 {
		t.Fatalf("the relay holds %d users (%v), want 120", page.Total, err)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "median  filter-get-user") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	var j struct {
		Median []struct {
			Operation string  `json:"operation"`
			Ratio     float64 `json:"ratio"`
		} `json:"median"`
	}
	b, _ := json.Marshal(rep)
	if err := json.Unmarshal(b, &j); err != nil || len(j.Median) != 2 || j.Median[0].Operation != "create-user" || j.Median[0].Ratio <= 0 {
		t.Errorf("JSON %s: %v", b, err)
	}
}

// TestOpsModeCountsFailures: a filter GET that does not find the user just
// created is an error of the endpoint, not a success.
func TestOpsModeCountsFailures(t *testing.T) {
	_, url := startRelay(t, nil)
	o := Options{URL: url, Token: testToken, Requests: 10, Rounds: 1, Concurrency: 2, Prefix: "fixed"}
	if _, err := RunOps(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// The same prefix again: every create is refused as a duplicate.
	rep, err := RunOps(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.RoundRows[0][0].Endpoint.Errors[409]; n != 10 {
		t.Errorf("creates refused: %v, want 409×10", rep.RoundRows[0][0].Endpoint.Errors)
	}
}

// adminToken is the admin token of startAdmin's API.
const adminToken = "admin-token-0123456789"

// startAdmin serves the admin API of a relay's store, with the relay's
// metrics and its one tenant, and returns the shared admin client the CLI
// reaches it with.
func startAdmin(t *testing.T, store *relay.Store) *adminclient.Client {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	relay.NewMetrics(reg, store, relay.NewRequestLog(store, relay.LogOptions{}, slog.New(slog.DiscardHandler)))
	adm := httptest.NewServer(admin.NewHandler(admin.Options{Token: adminToken, Storage: store,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Tenants: func() []admin.TenantInfo { return []admin.TenantInfo{{Name: "default"}} }}))
	t.Cleanup(adm.Close)
	return &adminclient.Client{BaseURL: adm.URL, Token: adminToken, Timeout: time.Minute}
}

// TestScaleMode fills the relay, measures at its size, and reads the
// relay's heap and data file through its admin API. With no publisher the
// outbox never empties: the wait before measuring at size gives up after
// the drain timeout and says so.
func TestScaleMode(t *testing.T) {
	store, url := startRelay(t, nil)
	rep, err := RunScale(context.Background(), Options{URL: url, Token: testToken, Users: 250, Groups: 3, MembersPerGroup: 150,
		Requests: 40, Concurrency: 4, Admin: startAdmin(t, store), DrainTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const events = 250 + 3 + 3*150 // user.created, group.created, member_added
	if w := rep.Outbox; w == nil || w.Behind != events || w.Left != events || w.Took < 300*time.Millisecond {
		t.Errorf("outbox wait: %+v, want %d events behind and left after the 300ms timeout", w, events)
	}
	for _, p := range []phaseResult{rep.Fill, rep.Groups, rep.Members, rep.FilterGet, rep.Create} {
		if p.ErrorCount() != 0 || p.RPS <= 0 {
			t.Errorf("%s: %+v", p.Name, p.OpStats)
		}
	}
	if rep.Fill.Count != 250 || len(rep.Fill.Windows) != 1 || rep.Members.Count != 6 || rep.FilterGet.Count != 40 || rep.Create.Count != 40 {
		t.Errorf("counts: fill %d (%d windows), members %d, filter %d, create %d",
			rep.Fill.Count, len(rep.Fill.Windows), rep.Members.Count, rep.FilterGet.Count, rep.Create.Count)
	}
	rs := rep.Relay
	if rs == nil || rs.HeapInuseMax <= 0 || rs.FileBytes <= 0 || rs.IndexBytesPerUser <= 0 {
		t.Fatalf("relay: %+v", rs)
	}
	found := false
	for _, b := range rs.Buckets {
		if b.Name == "tenants/default/members" {
			found = b.Keys == 3*150 && b.BytesPerUser > 0
		}
	}
	if !found {
		t.Errorf("no members bucket of 450 keys in %+v", rs.Buckets)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "at size: filter-get-user") || !strings.Contains(table.String(), "tenants/default/users") ||
		!strings.Contains(table.String(), fmt.Sprintf("still %d after", events)) {
		t.Errorf("table: %v\n%s", err, table.String())
	}
}

// TestScaleModeRefusesTheWrongAdmin: an admin API that is not the one of
// the relay the URL points at, or that refuses the admin token, stops the
// run before its first request, saying why.
func TestScaleModeRefusesTheWrongAdmin(t *testing.T) {
	store, url := startRelay(t, nil)
	wrongToken := startAdmin(t, store)
	wrongToken.Token = "not-the-admin-token"
	tests := []struct {
		name  string
		url   string
		admin *adminclient.Client
		check func(error) bool
		says  string
	}{
		{"another relay's tenant", strings.TrimSuffix(url, "/default") + "/acme", startAdmin(t, store),
			func(err error) bool { return errors.Is(err, ErrInvalidOptions) }, `has no tenant "acme", which the url names (its tenants: default)`},
		{"a refused admin token", url, wrongToken,
			func(err error) bool {
				var api *adminclient.Error
				return errors.As(err, &api) && api.Status == http.StatusUnauthorized
			}, "refused the admin token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := RunScale(context.Background(), Options{URL: tt.url, Token: testToken, Users: 5, Requests: 5, Admin: tt.admin})
			if rep != nil || err == nil || !tt.check(err) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("RunScale = %v, %v; want an error saying %q", rep, err, tt.says)
			}
			if page, err := store.List(context.Background(), "default", scim.UserResourceType, scim.Query{StartIndex: 1, Count: 1}); err != nil || page.Total != 0 {
				t.Errorf("the relay holds %d users (%v): the run went on", page.Total, err)
			}
		})
	}
}

// TestScaleModeWaitsForTheOutbox: with the relay's publisher sending to a
// real JetStream, the measurement at size starts once the outbox is empty.
func TestScaleModeWaitsForTheOutbox(t *testing.T) {
	store, url := startRelay(t, nil)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	p, err := relay.NewPublisher(store, js.Conn(), slog.New(slog.DiscardHandler), relay.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rep, err := RunScale(context.Background(), Options{URL: url, Token: testToken, Users: 200, Groups: 2, MembersPerGroup: 100,
		Requests: 20, Concurrency: 4, Admin: startAdmin(t, store), DrainTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if w := rep.Outbox; w == nil || w.Left != 0 || w.Behind < 0 {
		t.Fatalf("outbox wait: %+v, want it caught up", w)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "events behind; published in") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
}

// throttleEvery answers every k-th request 429 with Retry-After: 0, as a
// rate-limited relay does (but with no wait, and deterministically), and
// counts the 429s in refused.
func throttleEvery(k int64, refused *atomic.Int64) func(http.Handler) http.Handler {
	var n atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%k == 0 {
				refused.Add(1)
				w.Header().Set("Retry-After", "0")
				w.Header().Set("Content-Type", "application/scim+json")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"429"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestOpsModeCountsThrottling: a 429 answered during an ops round is waited
// out and sent again, and counted as throttled in the round's row, the
// median row, the JSON and the table.
func TestOpsModeCountsThrottling(t *testing.T) {
	var refused atomic.Int64
	_, url := startRelay(t, throttleEvery(3, &refused))
	rep, err := RunOps(context.Background(), Options{URL: url, Token: testToken, Requests: 20, Rounds: 2, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if refused.Load() == 0 {
		t.Fatal("the relay never answered 429; the test proves nothing")
	}
	throttled := 0
	for _, rows := range rep.RoundRows {
		for _, r := range rows {
			throttled += r.Endpoint.Throttled
			if r.Endpoint.ErrorCount() != 0 {
				t.Errorf("%s: errors %v: a 429 must be waited out and sent again", r.Operation, r.Endpoint.Errors)
			}
		}
	}
	if throttled != int(refused.Load()) {
		t.Errorf("rounds count %d throttled, the relay refused %d", throttled, refused.Load())
	}
	if m := rep.Median[0].Endpoint.Throttled + rep.Median[1].Endpoint.Throttled; m != throttled {
		t.Errorf("median rows count %d throttled, the rounds %d", m, throttled)
	}
	var j struct {
		Rounds []struct {
			Rows []struct {
				Endpoint struct {
					Throttled int `json:"throttled"`
				} `json:"endpoint"`
			} `json:"rows"`
		} `json:"rounds"`
	}
	b, _ := json.Marshal(rep)
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	inJSON := 0
	for _, r := range j.Rounds {
		for _, row := range r.Rows {
			inJSON += row.Endpoint.Throttled
		}
	}
	wantThrottledReported(t, rep, b, inJSON, throttled)
}

// TestScaleModeCountsThrottling: a 429 answered during any phase of a scale
// run is waited out and sent again, and counted as throttled in that
// phase, its windows, the JSON and the table.
func TestScaleModeCountsThrottling(t *testing.T) {
	var refused atomic.Int64
	_, url := startRelay(t, throttleEvery(3, &refused))
	rep, err := RunScale(context.Background(), Options{URL: url, Token: testToken, Users: 30, Groups: 2, MembersPerGroup: 10,
		Requests: 10, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if refused.Load() == 0 {
		t.Fatal("the relay never answered 429; the test proves nothing")
	}
	throttled := 0
	for _, p := range []phaseResult{rep.Fill, rep.Groups, rep.Members, rep.FilterGet, rep.Create} {
		throttled += p.Throttled
		if p.ErrorCount() != 0 {
			t.Errorf("%s: errors %v: a 429 must be waited out and sent again", p.Name, p.Errors)
		}
	}
	if throttled != int(refused.Load()) {
		t.Errorf("phases count %d throttled, the relay refused %d", throttled, refused.Load())
	}
	if len(rep.Fill.Windows) != 1 || rep.Fill.Windows[0].Throttled != rep.Fill.Throttled {
		t.Errorf("fill throttled %d, its windows %+v", rep.Fill.Throttled, rep.Fill.Windows)
	}
	type op struct {
		Throttled int `json:"throttled"`
	}
	var j struct {
		Fill      op `json:"fill"`
		Groups    op `json:"groups"`
		Members   op `json:"members"`
		FilterGet op `json:"filter_get"`
		Create    op `json:"create"`
	}
	b, _ := json.Marshal(rep)
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	inJSON := j.Fill.Throttled + j.Groups.Throttled + j.Members.Throttled + j.FilterGet.Throttled + j.Create.Throttled
	wantThrottledReported(t, rep, b, inJSON, throttled)
}

// TestScaleTableFirstErrors: the table gives the first error of every
// phase, the last one (the creates at size) too, and not again for the
// fill's windows.
func TestScaleTableFirstErrors(t *testing.T) {
	phase := func(name string) phaseResult {
		return phaseResult{OpStats: OpStats{Name: name, Count: 1, Errors: map[int]int{500: 1}, FirstError: name + " broke"}}
	}
	rep := &ScaleReport{Fill: phase("fill"), Groups: phase("create-group"), Members: phase("patch-members"),
		FilterGet: phase("filter-get-user"), Create: phase("create-user")}
	rep.Fill.Windows = []OpStats{phase("fill 1-1").OpStats}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"first fill error: fill broke\n", "first create-group error: create-group broke\n",
		"first patch-members error: patch-members broke\n", "first at size: filter-get-user error: filter-get-user broke\n",
		"first at size: create-user error: create-user broke\n"} {
		if n := strings.Count(table.String(), line); n != 1 {
			t.Errorf("table has %q %d times, want once:\n%s", line, n, table.String())
		}
	}
	if strings.Contains(table.String(), "fill 1-1 broke") {
		t.Errorf("table repeats a window's first error:\n%s", table.String())
	}
}

// TestModesRejectRate: the ops and scale modes run closed loop only, and
// say so, naming the mode.
func TestModesRejectRate(t *testing.T) {
	o := Options{URL: "http://x", Users: 1, Rate: 10}
	_, err := RunOps(context.Background(), o)
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "rate: the ops mode runs closed loop only") {
		t.Errorf("RunOps with a rate: %v", err)
	}
	_, err = RunScale(context.Background(), o)
	if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "rate: the scale mode runs closed loop only") {
		t.Errorf("RunScale with a rate: %v", err)
	}
}

// TestModesRejectWhatTheyIgnore: a receiver outside the cycle mode, and a
// baseline in the scale mode, are refused, naming the option: the modes
// ran without them, exit 0, their reports silent on what was asked for.
func TestModesRejectWhatTheyIgnore(t *testing.T) {
	// A closed port, not a name to look up: without the check the run
	// fails at once, not after a resolver's timeout.
	receiving := Options{URL: "http://127.0.0.1:1", Users: 1, Receiver: "127.0.0.1:0"}
	if _, err := RunOps(context.Background(), receiving); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "receiver: the ops mode sends no webhook") {
		t.Errorf("RunOps with a receiver: %v", err)
	}
	if _, err := RunScale(context.Background(), receiving); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "receiver: the scale mode sends no webhook") {
		t.Errorf("RunScale with a receiver: %v", err)
	}
	if _, err := RunScale(context.Background(), Options{URL: "http://127.0.0.1:1", Users: 1, Baseline: true}); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "baseline: the scale mode") {
		t.Errorf("RunScale with a baseline: %v", err)
	}
}

// wantThrottledReported checks that a report's JSON (b, which counted
// inJSON) and its table give the throttled answers the phases counted.
func wantThrottledReported(t *testing.T, rep interface{ WriteTable(io.Writer) error }, b []byte, inJSON, throttled int) {
	t.Helper()
	if inJSON != throttled {
		t.Errorf("JSON counts %d throttled, want %d: %s", inJSON, throttled, b)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), fmt.Sprintf("throttled: %d answers of 429", throttled)) {
		t.Errorf("table: %v\n%s", err, table.String())
	}
}

// TestOpsModeRunsTheRelayThenTheBaseline: a round sends its creates to the
// endpoint and then to the baseline, then its filter GETs to the endpoint
// and then to the baseline, each phase whole before the next starts, as
// the README says.
func TestOpsModeRunsTheRelayThenTheBaseline(t *testing.T) {
	var (
		mu  sync.Mutex
		log []string
	)
	serve := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			log = append(log, name+" "+r.Method)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/scim+json")
			if r.Method == http.MethodPost {
				w.WriteHeader(http.StatusCreated)
				fmt.Fprintf(w, `{"id":%q}`, newUUID())
				return
			}
			fmt.Fprint(w, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":1,"Resources":[{"id":"x"}]}`)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	relaySrv, baseSrv := serve("relay"), serve("baseline")
	o, err := Options{URL: relaySrv.URL, Token: testToken, Requests: 20, Rounds: 1, Concurrency: 4, Baseline: true, Mode: ModeOps}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	endpoint, base := newClient(o, relaySrv.URL), newClient(o, baseSrv.URL)
	defer endpoint.close()
	defer base.close()
	rows, err := opsRound(context.Background(), o, 0, endpoint, base, newBar(nil, 0, "ops"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Endpoint.ErrorCount() != 0 || r.Baseline == nil || r.Baseline.ErrorCount() != 0 {
			t.Errorf("%s: errors on the fakes: %+v, %+v", r.Operation, r.Endpoint, r.Baseline)
		}
	}
	mu.Lock()
	got := slices.Clone(log)
	mu.Unlock()
	var phases []string
	counts := map[string]int{}
	for _, l := range got {
		if len(phases) == 0 || phases[len(phases)-1] != l {
			phases = append(phases, l)
		}
		counts[l]++
	}
	want := []string{"relay POST", "baseline POST", "relay GET", "baseline GET"}
	if !slices.Equal(phases, want) {
		t.Errorf("the round's requests came in the phases %v, want %v", phases, want)
	}
	for _, p := range want {
		if counts[p] != 20 {
			t.Errorf("%s: %d requests, want 20", p, counts[p])
		}
	}
}
