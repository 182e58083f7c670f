// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestFailuresNameEveryEventProblem: what --fail-on-errors exits 1 for in
// the cycle, "an event was missing, repeated, out of order or badly
// signed" (and a delivery that is no CloudEvent), each counted by the
// receiver from real deliveries and named in the report's failures. A
// clean run's report names none (TestThrottledRequestsWaitForRetryAfter);
// the CLI exits 1 on any (TestCLIBench, TestBenchFailOnErrorsInEveryMode).
func TestFailuresNameEveryEventProblem(t *testing.T) {
	r, srv, good := signingReceiver(t)
	wrong, _ := standardwebhooks.NewWebhook(newSecret(t))
	start := time.Now()
	for _, d := range []struct {
		id, typ, subject, seq string
		wh                    *standardwebhooks.Webhook
		want                  int
	}{
		{"e1", "user.created", "Users/u1", "1", good, http.StatusNoContent},
		{"e1", "user.created", "Users/u1", "1", good, http.StatusNoContent}, // repeated
		{"e3", "user.deactivated", "Users/u1", "3", good, http.StatusNoContent},
		{"e2", "user.updated", "Users/u1", "2", good, http.StatusNoContent}, // after 3: out of order
		{"e4", "user.created", "Users/u2", "1", wrong, http.StatusUnauthorized},
	} {
		h, body := craftedEvent(d.id, d.typ, d.subject, d.seq, "", false)
		if status, err := postSigned(d.wh, srv.URL, d.id, time.Now(), h, body, body); err != nil || status != d.want {
			t.Fatalf("delivery %s: %d %v, want %d", d.id, status, err, d.want)
		}
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if status, err := postSigned(good, srv.URL, "e5", time.Now(), h, []byte(`{"hello":1}`), []byte(`{"hello":1}`)); err != nil || status != http.StatusBadRequest {
		t.Fatalf("a delivery that is no CloudEvent: %d %v", status, err)
	}
	acks := newAcks()
	for _, k := range []eventKey{{typeUserCreated, "u1", ""}, {typeUserUpdated, "u1", ""}, {typeUserDeactivated, "u1", ""}, {typeUserCreated, "u2", ""}} {
		acks.add(k, start)
	}
	rep := &Report{Events: r.stats(acks, start)}
	failures := strings.Join(rep.Failures(), "; ")
	for _, want := range []string{"1 events missing", "1 events delivered twice", "1 events out of order", "1 signatures that did not verify", "1 deliveries that were not CloudEvents"} {
		if !strings.Contains(failures, want) {
			t.Errorf("the report's failures %q do not say %q", failures, want)
		}
	}
}

// TestOpsModeSendsEntrasCreatesAndFindsThem: "each round sends [--requests]
// of Entra's create-user POSTs (with the enterprise extension) to the
// relay ..., then [as many] userName eq filter GETs that each find one of
// the users just created": the relay sees exactly that, round by round,
// and a filter GET that finds nothing (the baseline's empty answer, as
// an endpoint) is counted as an error of the endpoint, not a success.
// The scale mode's filter GETs at size are held to the same.
func TestOpsModeSendsEntrasCreatesAndFindsThem(t *testing.T) {
	var mu sync.Mutex
	created := map[string]bool{}
	var creates, gets, strays int
	var problems []string
	watch := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			mu.Lock()
			switch {
			case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/Users"):
				var u struct {
					Schemas    []string        `json:"schemas"`
					UserName   string          `json:"userName"`
					ExternalID string          `json:"externalId"`
					Enterprise json.RawMessage `json:"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`
				}
				if err := json.Unmarshal(body, &u); err != nil || !slices.Contains(u.Schemas, scim.EnterpriseUserSchema) || len(u.Enterprise) == 0 || u.ExternalID == "" {
					problems = append(problems, "a create that is not Entra's with the enterprise extension: "+string(body))
				}
				created[u.UserName] = true
				creates++
			case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/Users"):
				name, ok := strings.CutPrefix(r.URL.Query().Get("filter"), `userName eq "`)
				if name = strings.TrimSuffix(name, `"`); !ok || !created[name] {
					problems = append(problems, "a filter GET for a user not created before it: "+r.URL.RawQuery)
				}
				gets++
			default:
				strays++
			}
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	_, relayURL := startRelay(t, watch)
	rep, err := RunOps(context.Background(), Options{URL: relayURL, Token: testToken, Requests: 30, Rounds: 2, Concurrency: 4, Baseline: true})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if creates != 60 || gets != 60 || strays != 0 || len(problems) > 0 {
		t.Errorf("the relay got %d creates, %d filter GETs and %d other requests (want 60, 60, 0); %v", creates, gets, strays, problems)
	}
	mu.Unlock()
	for _, rows := range rep.RoundRows {
		if rows[1].Endpoint.ErrorCount() != 0 || rows[1].Endpoint.Count != 30 {
			t.Errorf("a round's filter GETs: %+v", rows[1].Endpoint)
		}
	}

	// An endpoint whose filter GETs find nothing.
	empty, stop, err := startBaseline()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	rep, err = RunOps(context.Background(), Options{URL: empty, Token: testToken, Requests: 10, Rounds: 1, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.RoundRows[0][1].Endpoint; f.ErrorCount() != 10 {
		t.Errorf("ops filter GETs that found nothing: %d errors of %d, want all", f.ErrorCount(), f.Count)
	}
	scale, err := RunScale(context.Background(), Options{URL: empty, Token: testToken, Users: 10, Requests: 10, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if f := scale.FilterGet; f.ErrorCount() != 10 {
		t.Errorf("scale filter GETs that found nothing: %d errors of %d, want all", f.ErrorCount(), f.Count)
	}
}

// TestOpsMedianIsTheRoundsMedian: the ops mode's figures are the rounds'
// medians, each figure on its own, and its counts the rounds' sums.
func TestOpsMedianIsTheRoundsMedian(t *testing.T) {
	round := func(rps float64, p99 time.Duration, errs int) []OpsRow {
		s := OpStats{Name: opsCreateUser, Count: 10, RPS: rps, Latency: Latency{P99: p99}, Errors: map[int]int{}}
		if errs > 0 {
			s.Errors[500] = errs
		}
		return []OpsRow{{Operation: opsCreateUser, Endpoint: s}}
	}
	m := medianRows([][]OpsRow{round(100, 9*time.Millisecond, 0), round(300, 3*time.Millisecond, 1), round(200, 5*time.Millisecond, 2)})[0].Endpoint
	if m.RPS != 200 || m.Latency.P99 != 5*time.Millisecond || m.Count != 30 || m.Errors[500] != 3 {
		t.Errorf("median of rounds at 100, 300 and 200/s (p99 9, 3, 5 ms): %v/s, p99 %s; count %d, errors %v", m.RPS, m.Latency.P99, m.Count, m.Errors)
	}
}

// TestScaleModeReportsTheFillPerWindow: the scale mode's fill is
// "reported per 10,000" (the README's words, and scaleWindow): a phase
// with a window reports each run of that many requests on its own, the
// last one short, named by the requests it holds. (Against the baseline
// handler, with a window of 10: the bench's arithmetic is under test, not
// a relay, and 10,001 requests take seconds under -race.)
func TestScaleModeReportsTheFillPerWindow(t *testing.T) {
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if says := fmt.Sprintf("(every request timed, reported per %s)", commas(scaleWindow)); !strings.Contains(strings.Join(strings.Fields(string(readme)), " "), says) {
		t.Errorf("the README does not say the fill is %s", says)
	}
	endpoint, stop, err := startBaseline()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c := newClient(Options{Token: testToken}, endpoint)
	defer c.close()
	users := make([]user, 25)
	for i := range users {
		users[i] = user{name: fmt.Sprintf("window.u%d@bench.example", i), externalID: newUUID()}
	}
	p := runPhase(context.Background(), c, "fill", len(users), 4, 10, nil, func(i int) request { return createUserRequest(&users[i], i) })
	var got []string
	for _, w := range p.Windows {
		got = append(got, fmt.Sprintf("%s: %d", w.Name, w.Count))
		if w.RPS <= 0 || w.Latency.Max <= 0 {
			t.Errorf("window %s has no figures: %+v", w.Name, w)
		}
	}
	if want := []string{"fill 1-10: 10", "fill 11-20: 10", "fill 21-25: 5"}; !slices.Equal(got, want) || p.Count != 25 {
		t.Errorf("25 requests in windows of 10: %v (of %d), want %v", got, p.Count, want)
	}
}

// commas writes n with thousands separators, as the README does.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestScaleModeReadsTheHeapEvery5s: "Through the run it reads the
// relay's heap in use every 5 s" (heapEvery) and reports the largest
// reading: a sampler reads the relay's /metrics again at each interval
// (here 5 ms) and keeps the peak, though the heap went down after it.
func TestScaleModeReadsTheHeapEvery5s(t *testing.T) {
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if says := fmt.Sprintf("reads the relay's heap in use every %d s", int(heapEvery/time.Second)); !strings.Contains(strings.Join(strings.Fields(string(readme)), " "), says) {
		t.Errorf("the README does not say it %s", says)
	}
	heap := []int{100 << 20, 300 << 20, 200 << 20} // MiB in use at the 1st, 2nd, 3rd … reading
	var mu sync.Mutex
	reads := 0
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		v := heap[min(reads, len(heap)-1)]
		reads++
		mu.Unlock()
		fmt.Fprintf(w, "# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n", v)
	})
	adm := httptest.NewServer(admin.NewHandler(admin.Options{Token: adminToken, Metrics: metrics}))
	defer adm.Close()
	s := startHeapSampler(context.Background(), &adminclient.Client{BaseURL: adm.URL, Token: adminToken, Timeout: time.Minute}, 5*time.Millisecond)
	eventstest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if reads < len(heap)+1 {
			return fmt.Errorf("%d readings", reads)
		}
		return nil
	})
	s.stop()
	if s.max != 300<<20 || s.err != nil {
		t.Errorf("the heap's peak over readings of 100, 300, 200, 200 MiB: %d MiB (%v), want 300", s.max>>20, s.err)
	}
}

// TestShuffledNamesArriveInNoOrder: with ShuffledNames every userName
// starts with a random part, so that creates sent one after another carry
// userNames in no order, as a directory's do; without it they are
// numbered in order. Either way each holds the run's prefix and the
// filter GETs find them.
func TestShuffledNamesArriveInNoOrder(t *testing.T) {
	for _, shuffled := range []bool{false, true} {
		t.Run(fmt.Sprintf("shuffled=%t", shuffled), func(t *testing.T) {
			var mu sync.Mutex
			var names []string
			watch := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(bytes.NewReader(body))
					if r.Method == http.MethodPost {
						var u struct {
							UserName string `json:"userName"`
						}
						_ = json.Unmarshal(body, &u)
						mu.Lock()
						names = append(names, u.UserName)
						mu.Unlock()
					}
					next.ServeHTTP(w, r)
				})
			}
			_, relayURL := startRelay(t, watch)
			rep, err := RunOps(context.Background(), Options{URL: relayURL, Token: testToken, Requests: 30, Rounds: 1, Concurrency: 1, Prefix: "shuf", ShuffledNames: shuffled})
			if err != nil {
				t.Fatal(err)
			}
			if get := rep.RoundRows[0][1].Endpoint; get.ErrorCount() != 0 {
				t.Errorf("filter GETs: %d of %d failed", get.ErrorCount(), get.Count)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, n := range names {
				if !strings.Contains(n, "shuf.") {
					t.Errorf("userName %q does not hold the run's prefix", n)
				}
			}
			// 30 random parts come out sorted once in 30! runs.
			if sorted := slices.IsSorted(names); len(names) != 30 || sorted == shuffled {
				t.Errorf("%d creates, userNames sorted %t, want 30 and sorted %t: %v", len(names), sorted, !shuffled, names)
			}
		})
	}
}
