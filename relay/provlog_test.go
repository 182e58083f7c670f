// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// runLog runs a provisioning log over s, records entries, and stops it
// (which writes everything recorded).
func runLog(t *testing.T, s *Store, o LogOptions, entries []LogEntry) *RequestLog {
	t.Helper()
	l := NewRequestLog(s, o, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for _, e := range entries {
		l.Record(e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := l.Dropped(); n != 0 {
		t.Fatalf("%d entries dropped", n)
	}
	return l
}

// TestLogSummarisesReads: successful reads become one entry per minute,
// tenant, operation, resource type and status, with their count and
// latencies; writes, refused reads and reads with something to say (an
// answer cut off) stay one by one.
func TestLogSummarisesReads(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	var entries []LogEntry
	for i := range 100 {
		entries = append(entries, LogEntry{Time: start.Add(time.Duration(i) * time.Millisecond), RequestID: fmt.Sprint("g", i), Tenant: "acme",
			Method: "GET", Operation: "get", Resource: "User", Status: 200, Latency: time.Duration(i+1) * time.Millisecond})
	}
	for i := range 3 {
		entries = append(entries, LogEntry{Time: start.Add(time.Second), Tenant: "acme", Method: "GET", Operation: "list", Resource: "User", Status: 200, Latency: time.Millisecond, RequestID: fmt.Sprint("l", i)})
		// The next minute is a summary of its own.
		entries = append(entries, LogEntry{Time: start.Add(time.Minute), Tenant: "acme", Method: "GET", Operation: "list", Resource: "User", Status: 200, Latency: time.Millisecond, RequestID: fmt.Sprint("m", i)})
	}
	entries = append(entries,
		LogEntry{Time: start.Add(2 * time.Second), Tenant: "acme", Method: "GET", Operation: "get", Resource: "User", Status: 404, RequestID: "missing1"},
		LogEntry{Time: start.Add(3 * time.Second), Tenant: "acme", Method: "GET", Operation: "get", Resource: "User", Status: 404, RequestID: "missing2"},
		LogEntry{Time: start.Add(4 * time.Second), Tenant: "acme", Method: "POST", Operation: "create", Resource: "User", Status: 201, RequestID: "create"},
		LogEntry{Time: start.Add(5 * time.Second), Tenant: "acme", Method: "GET", Operation: "get", Resource: "Group", Status: 200, RequestID: "cut",
			Detail: "answer cut off: a group changed while its members were sent; read again"},
	)
	c.add(2 * time.Minute) // the minutes are over when the log writes them
	l := runLog(t, s, LogOptions{}, entries)
	got, err := l.Query(ctx, LogQuery{Since: start.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range got {
		lines = append(lines, fmt.Sprintf("%s %s %d count=%d", e.Time.Sub(start), e.Operation, e.Status, e.Count))
	}
	// Requests are filed at their time; a summary when it is written, after
	// its minute, with its minute as its time.
	want := []string{"2s get 404 count=0", "3s get 404 count=0", "4s create 201 count=0", "5s get 200 count=0", "0s get 200 count=100", "0s list 200 count=3", "1m0s list 200 count=3"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("entries:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	// A reader following the log from the last request it read still finds
	// the summaries written after it, though their minutes are earlier.
	after, err := l.Query(ctx, LogQuery{Since: start.Add(-time.Hour), After: got[3].Key})
	if err != nil || len(after) != 3 || after[0].Count != 100 {
		t.Fatalf("following after %q: %d entries (%v), want the 3 summaries", got[3].Key, len(after), err)
	}
	if sum := got[4]; sum.Latency != 50500*time.Microsecond || sum.LatencyMax != 100*time.Millisecond || sum.RequestID != "g99" {
		t.Errorf("summary of gets: mean %s, max %s, last %s", sum.Latency, sum.LatencyMax, sum.RequestID)
	}
	counts, err := l.Count(ctx, start.Add(-time.Hour))
	if err != nil || len(counts) != 1 || counts[0].Total != 110 || counts[0].Class2 != 108 || counts[0].Class4 != 2 {
		t.Fatalf("counts %+v, %v; want every request counted", counts, err)
	}
}

// TestLogSumsUpUnauthenticatedRefusals: refusals of requests whose
// credential was not accepted are recorded one by one up to ten a minute
// (per tenant, operation and status), the rest summed up, so that a flood
// of them, which anyone can send, does not push a tenant's entries out of
// the log's size (one 1 MiB log, 5,000 refusals of 400 bytes each: 2 MiB
// one by one).
func TestLogSumsUpUnauthenticatedRefusals(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	detail := strings.Repeat("x", 400)
	entries := []LogEntry{{Time: start, RequestID: "kept", Tenant: "acme", Method: "POST", Operation: "create", Resource: "User", Status: 201}}
	for i := range 5000 {
		entries = append(entries, LogEntry{Time: start.Add(time.Duration(i) * time.Millisecond), RequestID: fmt.Sprint("r", i),
			Method: "GET", Operation: "list", Resource: "User", Status: 401, Detail: detail, Unauthenticated: true})
	}
	// The same refusals of an authenticated request stay one by one.
	for i := range 15 {
		entries = append(entries, LogEntry{Time: start.Add(time.Second), RequestID: fmt.Sprint("a", i), Tenant: "acme",
			Method: "GET", Operation: "get", Resource: "User", Status: 404})
	}
	c.add(2 * time.Minute)
	l := runLog(t, s, LogOptions{MaxBytes: 1 << 20}, entries)
	got, err := l.Query(ctx, LogQuery{Since: start.Add(-time.Hour), Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	var kept, last bool
	var alone401, alone404, summed int
	for _, e := range got {
		switch {
		case e.RequestID == "kept":
			kept = true
		case e.Count > 0:
			// One summary, or more where the writer wrote the minute's
			// while the refusals were still coming in (its clock is past
			// that minute): the counts add up, the last names r4999.
			summed += e.Count
			last = last || e.RequestID == "r4999"
			if !e.Unauthenticated || e.Status != 401 || e.Detail != detail {
				t.Errorf("summary: %+v", e)
			}
		case e.Status == 401:
			alone401++
		case e.Status == 404:
			alone404++
		}
	}
	if !last {
		t.Error("no summary names the last refusal, r4999")
	}
	if !kept || alone401 != refusalsAlone || summed != 5000-refusalsAlone || alone404 != 15 {
		t.Fatalf("the tenant's create kept: %t; %d refusals alone and %d summed up, want %d and %d; %d authenticated refusals, want 15",
			kept, alone401, summed, refusalsAlone, 5000-refusalsAlone, alone404)
	}
	counts, err := l.Count(ctx, start.Add(-time.Hour))
	total := map[string]int{}
	for _, n := range counts {
		total[n.Tenant] += n.Total
	}
	if err != nil || total[""] != 5000 || total["acme"] != 16 {
		t.Fatalf("counts %+v, %v; want every request counted", counts, err)
	}
}

// TestLogBoundsAFloodOfUnauthenticatedRefusals: a flood that anyone can
// send, refusals with a method invented for each request and an 8 KB path
// repeated in the detail, leaves another tenant's earlier entries in a
// 1 MiB log: the invented methods share one allowance ("other"), every
// text an entry keeps is cut to a few hundred bytes on a character
// boundary, and past a hundred a minute of all tenants the refusals are
// summed up even where each tenant, operation and status had ten to spare.
func TestLogBoundsAFloodOfUnauthenticatedRefusals(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	var entries []LogEntry
	for i := range 5 {
		entries = append(entries, LogEntry{Time: start, RequestID: fmt.Sprint("globex", i), Tenant: "globex", Method: "POST",
			Operation: "create", Resource: "User", Status: 201})
	}
	id := strings.Repeat("€", 2700) // 8,100 bytes, three to a character: 256 is not a boundary
	path := "/scim/v2/acme/Users/" + id
	const invented = 2000
	for i := range invented {
		method := fmt.Sprint("X", i)
		entries = append(entries, LogEntry{Time: start.Add(time.Duration(i) * time.Microsecond), RequestID: fmt.Sprint("r", i),
			Tenant: "acme", Method: method, Path: path, ResourceID: id, Status: 405,
			Detail: method + " is not allowed on " + path + "; use GET, PUT, PATCH, DELETE", Unauthenticated: true})
	}
	// Ten tenant names, five operations each: a budget of ten apiece
	// would keep 500 of these one by one.
	const spread = 10 * 5 * 12
	for i := range spread {
		entries = append(entries, LogEntry{Time: start.Add(time.Second), RequestID: fmt.Sprint("s", i), Tenant: fmt.Sprint("t", i%10),
			Method: "GET", Operation: fmt.Sprint("op", i/10%5), Status: 401, Detail: "missing Authorization header", Unauthenticated: true})
	}
	c.add(2 * time.Minute)
	l := runLog(t, s, LogOptions{MaxBytes: minLogMaxBytes}, entries)
	got, err := l.Query(ctx, LogQuery{Since: start.Add(-time.Hour), Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	var globex, alone, summed int
	for _, e := range got {
		switch {
		case e.Tenant == "globex":
			globex++
		case e.Count > 0:
			summed += e.Count
		default:
			alone++
		}
		for name, f := range map[string]struct {
			text string
			max  int
		}{"method": {e.Method, logFieldMax}, "path": {e.Path, logFieldMax}, "resource_id": {e.ResourceID, logFieldMax}, "detail": {e.Detail, logDetailMax}} {
			if cut := len(f.text) > f.max; len(f.text) > f.max+len("...") || !utf8.ValidString(f.text) || cut && !strings.HasSuffix(f.text, "...") {
				t.Fatalf("%s %s: %d bytes (valid UTF-8: %t), want at most %d and a marked cut on a character boundary",
					e.RequestID, name, len(f.text), utf8.ValidString(f.text), f.max)
			}
		}
	}
	if globex != 5 {
		t.Fatalf("globex's 5 entries from before the flood: %d left", globex)
	}
	if alone > 100 || alone+summed != invented+spread {
		t.Fatalf("%d refusals one by one, %d summed up; want at most 100 one by one of all tenants in a minute, and all %d counted",
			alone, summed, invented+spread)
	}
}

// TestLogAllReads: with reads: all, each read is an entry.
func TestLogAllReads(t *testing.T) {
	s, c, _ := openStore(t)
	var entries []LogEntry
	for i := range 50 {
		entries = append(entries, LogEntry{Time: c.now().Add(time.Duration(i)), Tenant: "acme", Operation: "get", Status: 200})
	}
	l := runLog(t, s, LogOptions{Reads: LogReadsAll}, entries)
	got, err := l.Query(ctx, LogQuery{Since: c.now().Add(-time.Hour)})
	if err != nil || len(got) != 50 || got[0].Count != 0 {
		t.Fatalf("%d entries (%v), want 50 single ones", len(got), err)
	}
}

// TestLogMaxBytes: past its size bound the log loses its oldest entries,
// keeps the newest, and stays within the bound, also across a restart.
func TestLogMaxBytes(t *testing.T) {
	s, c, _ := openStore(t)
	const bound = 1 << 20
	detail := strings.Repeat("x", 400)
	batch := func(from, n int) []LogEntry {
		var out []LogEntry
		for i := from; i < from+n; i++ {
			out = append(out, LogEntry{Time: c.now().Add(time.Duration(i) * time.Microsecond), RequestID: fmt.Sprint(i), Tenant: "acme",
				Operation: "create", Status: 201, Detail: detail})
		}
		return out
	}
	runLog(t, s, LogOptions{MaxBytes: bound}, batch(0, 3000)) // about 1.6 MiB
	size := func() (n int64, oldest, newest string) {
		err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketProvLog).ForEach(func(k, v []byte) error {
				n += entrySize(k, v)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
		first, _ := l.Query(ctx, LogQuery{Since: c.now().Add(-time.Hour), Limit: 1})
		last, _ := l.Query(ctx, LogQuery{Since: c.now().Add(-time.Hour), Limit: 1, Newest: true})
		return n, first[0].RequestID, last[0].RequestID
	}
	n, oldest, newest := size()
	if n > bound || newest != "2999" || oldest == "0" {
		t.Fatalf("after 3,000 entries: %d bytes (bound %d), oldest %s, newest %s", n, bound, oldest, newest)
	}
	// A restarted log measures what is there and keeps to the bound.
	runLog(t, s, LogOptions{MaxBytes: bound}, batch(3000, 2000))
	if n, _, newest := size(); n > bound || newest != "4999" {
		t.Fatalf("after a restart and 2,000 more: %d bytes, newest %s", n, newest)
	}
	// A restarted log that first prunes expired entries still measures
	// all that is there before it, and keeps to the bound.
	s2, c2, _ := openStore(t)
	old := batch(0, 100)
	for i := range old {
		old[i].Time = c2.now().Add(-48 * time.Hour)
	}
	runLog(t, s2, LogOptions{MaxBytes: bound, Retention: 72 * time.Hour}, append(old, batch(100, 1200)...)) // about 0.7 MiB
	runLog(t, s2, LogOptions{MaxBytes: bound, Retention: 24 * time.Hour}, batch(1300, 1500))                // 0.8 MiB more
	var n2 int64
	if err := s2.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProvLog).ForEach(func(k, v []byte) error { n2 += entrySize(k, v); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if n2 > bound {
		t.Fatalf("after a restart that pruned expired entries: %d bytes, bound %d", n2, bound)
	}
	if err := (LogOptions{MaxBytes: 1000, Reads: "some", Retention: -time.Hour}).Check(); err == nil ||
		!strings.Contains(err.Error(), "provisioning_log.max_bytes") || !strings.Contains(err.Error(), "provisioning_log.reads") || !strings.Contains(err.Error(), "provisioning_log.retention") {
		t.Errorf("Check: %v", err)
	}
}

// TestLogFollowFindsSlowRequests: a reader following the log (After the
// last key it read) finds a request that started before the last one it
// read but ended, and was written, after it; the entry keeps its start as
// its time. So does a request written after a restart.
func TestLogFollowFindsSlowRequests(t *testing.T) {
	s, c, _ := openStore(t)
	start := c.now()
	// run starts a log over s, as serve does; stop writes what it holds.
	run := func() (l *RequestLog, stop func()) {
		l = NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})
		}
		t.Cleanup(stop)
		return l, stop
	}
	// follow returns the entries after key once id is among them.
	follow := func(l *RequestLog, after, id string) []LogEntry {
		t.Helper()
		var got []LogEntry
		eventstest.CheckFor(t, logWriteWait, 5*time.Millisecond, func() error {
			var err error
			if got, err = l.Query(ctx, LogQuery{Since: start.Add(-time.Hour), After: after}); err != nil {
				return err
			}
			for _, e := range got {
				if e.RequestID == id {
					return nil
				}
			}
			return fmt.Errorf("%s not found after %q: %+v", id, after, got)
		})
		return got
	}
	l, stop := run()
	// A quick create starts and ends; a follower reads it.
	l.Record(LogEntry{Time: start.Add(10 * time.Millisecond), RequestID: "quick", Tenant: "acme", Method: "POST", Operation: "create", Resource: "User", Status: 201})
	quick := follow(l, "", "quick")
	// A PATCH that started before it ends later.
	l.Record(LogEntry{Time: start, RequestID: "slow", Tenant: "acme", Method: "PATCH", Operation: "patch", Resource: "Group", Status: 200, Latency: time.Second})
	next := follow(l, quick[len(quick)-1].Key, "slow")
	if len(next) != 1 || !next[0].Time.Equal(start) {
		t.Fatalf("following after the quick request: %+v, want the slow one, with its start as its time", next)
	}
	// After a restart (its counter starts again), a request that started
	// as early still comes after the newest entry.
	stop()
	l, _ = run()
	l.Record(LogEntry{Time: start, RequestID: "after-restart", Tenant: "acme", Method: "DELETE", Operation: "delete", Resource: "User", Status: 204})
	if got := follow(l, next[0].Key, "after-restart"); len(got) != 1 {
		t.Fatalf("following across a restart: %+v", got)
	}
}

// TestLogKeepsTheClientsRequestIDApart: an entry keeps the client's
// X-Request-Id beside the relay's own id, and entries written before the
// two were apart (one id, maybe the client's) still list and open.
func TestLogKeepsTheClientsRequestIDApart(t *testing.T) {
	s, c, _ := openStore(t)
	old := `{"time":"` + c.now().Add(-time.Minute).Format(time.RFC3339Nano) + `","request_id":"okta-1","tenant":"acme","method":"POST",` +
		`"path":"/scim/v2/acme/Users","operation":"create","resource_type":"User","status":201,"latency_ns":1000,"key":""}`
	k := timeKey(c.now().Add(-time.Minute))
	k = append(k, 0, 0, 0, 0, 0, 0, 0, 1)
	if err := s.commits.do(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketProvLog)
		if err != nil {
			return err
		}
		return b.Put(k, []byte(old))
	}); err != nil {
		t.Fatal(err)
	}
	l := runLog(t, s, LogOptions{}, []LogEntry{{Time: c.now(), RequestID: "5f0c9a2e41d7b388", ClientRequestID: "okta-2", Tenant: "acme",
		Method: "POST", Path: "/scim/v2/acme/Users", Operation: "create", Resource: "User", Status: 201}})
	got, err := l.Query(context.Background(), LogQuery{Since: c.now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RequestID != "okta-1" || got[0].ClientRequestID != "" ||
		got[1].RequestID != "5f0c9a2e41d7b388" || got[1].ClientRequestID != "okta-2" {
		t.Fatalf("entries %+v", got)
	}
	if e, err := l.Entry(context.Background(), got[0].Key); err != nil || e.RequestID != "okta-1" {
		t.Fatalf("the earlier entry opens as %+v, %v", e, err)
	}
}

// TestLogKeepsAFewEventIDsOfARequest: an entry keeps the ids of the first
// logEventIDsMax events of its request and how many there were, so that a
// request of 100 bytes making thousands of events (a remove of every
// member) costs the log what any other request costs. The whole list made
// a 195 KB entry, and a tenant could push every other tenant's history out
// of the log in minutes (the tenant review).
func TestLogKeepsAFewEventIDsOfARequest(t *testing.T) {
	s, c, _ := openStore(t)
	many := make([]string, 5000)
	for i := range many {
		many[i] = fmt.Sprintf("0198c2a0-0000-7000-8000-%012d", i)
	}
	l := runLog(t, s, LogOptions{}, []LogEntry{
		{Time: c.now(), RequestID: "r1", Tenant: "acme", Method: "PATCH", Operation: "patch", Resource: "Group", Status: 204, EventIDs: many},
		{Time: c.now(), RequestID: "r2", Tenant: "acme", Method: "POST", Operation: "create", Resource: "User", Status: 201, EventIDs: many[:1]},
	})
	got, err := l.Query(context.Background(), LogQuery{Since: c.now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d entries", len(got))
	}
	if e := got[0]; len(e.EventIDs) != logEventIDsMax || e.EventIDs[logEventIDsMax-1] != many[logEventIDsMax-1] || e.EventCount != 5000 || e.Events() != 5000 {
		t.Fatalf("the PATCH's entry keeps %d ids (last %s), count %d", len(e.EventIDs), e.EventIDs[len(e.EventIDs)-1], e.EventCount)
	}
	if e := got[1]; len(e.EventIDs) != 1 || e.EventCount != 0 || e.Events() != 1 {
		t.Fatalf("the create's entry: %+v", e)
	}
	var size int
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProvLog).ForEach(func(_, v []byte) error { size = max(size, len(v)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if size > 2<<10 {
		t.Fatalf("the largest entry takes %d bytes", size)
	}
}

// TestLogSizeIsSharedOutByTenant: past the log's size, the entries of the
// tenant that takes the most go first, so that a tenant writing fast
// pushes out its own history and not the others' (the tenant review: one
// tenant within its rate limit emptied every other tenant's log in
// minutes); a restarted log measures each tenant's share again. Requests
// whose credential was not accepted count as one share of their own,
// whatever tenant their path names.
func TestLogSizeIsSharedOutByTenant(t *testing.T) {
	s, c, _ := openStore(t)
	const bound = 1 << 20
	detail := strings.Repeat("x", 400)
	entries := func(tenant string, from, n int) []LogEntry {
		var out []LogEntry
		for i := from; i < from+n; i++ {
			out = append(out, LogEntry{Time: c.now().Add(time.Duration(i) * time.Microsecond), RequestID: fmt.Sprint(tenant, i), Tenant: tenant,
				Operation: "create", Status: 201, Detail: detail})
		}
		return out
	}
	count := func() (map[string]int, int64) {
		n := map[string]int{}
		var size int64
		if err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketProvLog).ForEach(func(k, v []byte) error {
				n[shareOf(v)]++
				size += entrySize(k, v)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return n, size
	}
	// globex's 200 come first, then acme's 3,000 (about 1.6 MiB).
	runLog(t, s, LogOptions{MaxBytes: bound}, append(entries("globex", 0, 200), entries("acme", 200, 3000)...))
	n, size := count()
	if size > bound || n["globex"] != 200 || n["acme"] == 0 || n["acme"] == 3000 {
		t.Fatalf("after acme's 3,000: %v entries, %d bytes (bound %d)", n, size, bound)
	}
	// Restarted, with 3,000 more of acme's: globex's are still all there.
	runLog(t, s, LogOptions{MaxBytes: bound}, entries("acme", 3200, 3000))
	if n, size = count(); size > bound || n["globex"] != 200 {
		t.Fatalf("after a restart and 3,000 more of acme's: %v entries, %d bytes", n, size)
	}
	// When globex takes the most, its oldest go.
	runLog(t, s, LogOptions{MaxBytes: bound}, entries("globex", 6200, 2000))
	if n, size = count(); size > bound || n["globex"] >= 2200 || n["acme"] < 600 {
		t.Fatalf("after 2,000 of globex's: %v entries, %d bytes", n, size)
	}
	// A hundred tenants of one size: each is cut to the same level, its
	// newest entries kept, none emptied (a first version cut the largest
	// share to a fixed margin below the next, and emptied tenants whole).
	s2, c2, _ := openStore(t)
	var even []LogEntry
	for i := range 20 {
		for j := range 100 {
			n := i*100 + j
			even = append(even, LogEntry{Time: c2.now().Add(time.Duration(n) * time.Microsecond), RequestID: fmt.Sprint(n), Tenant: fmt.Sprintf("t%03d", j),
				Operation: "create", Status: 201, Detail: detail})
		}
	}
	runLog(t, s2, LogOptions{MaxBytes: bound}, even)
	kept := map[string][]string{}
	if err := s2.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketProvLog).ForEach(func(k, v []byte) error {
			var e LogEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			kept[e.Tenant] = append(kept[e.Tenant], e.RequestID)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	fewest, most := 20, 0
	for j := range 100 {
		tenant, newest := fmt.Sprintf("t%03d", j), fmt.Sprint(19*100+j)
		ids := kept[tenant]
		if len(ids) == 0 || ids[len(ids)-1] != newest {
			t.Fatalf("of 100 tenants of one size, %s kept %v, not its newest, %s", tenant, ids, newest)
		}
		fewest, most = min(fewest, len(ids)), max(most, len(ids))
	}
	if fewest < 5 || most-fewest > 3 {
		t.Fatalf("of 100 tenants of one size, one kept %d entries and another %d", fewest, most)
	}
	// A flood of unauthenticated refusals in globex's name is one share:
	// it is cut, and a tenant that takes less keeps all its entries.
	s3, c3, _ := openStore(t)
	flood := entries("initech", 0, 100)
	for i := range 3000 {
		flood = append(flood, LogEntry{Time: c3.now().Add(time.Duration(100+i) * time.Microsecond), RequestID: fmt.Sprint("x", i), Tenant: "globex",
			Method: "GET", Status: 401, Unauthenticated: true, Detail: detail, Count: 1})
	}
	runLog(t, s3, LogOptions{MaxBytes: bound}, flood)
	s = s3
	if n, size = count(); size > bound || n["initech"] != 100 || n[unauthenticatedShare] == 0 {
		t.Fatalf("after a flood of unauthenticated refusals: %v entries, %d bytes", n, size)
	}
	for v, want := range map[string]string{
		`{"tenant":"acme","unauthenticated":true}`: unauthenticatedShare,
		`{"tenant":"acme"}`:                        "acme",
		`{"method":"GET"}`:                         "",
	} {
		if got := shareOf([]byte(v)); got != want {
			t.Errorf("shareOf(%s) = %q, want %q", v, got, want)
		}
	}
}

// TestLogOldest: the log says when its oldest entry was filed, which is
// how far back it reaches (max_bytes may keep it shorter than the
// retention), and nothing for an empty log.
func TestLogOldest(t *testing.T) {
	s, c, _ := openStore(t)
	l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
	if got, err := l.Oldest(); err != nil || !got.IsZero() {
		t.Fatalf("an empty log's oldest: %v, %v", got, err)
	}
	first := c.now().Add(-2 * time.Hour)
	l = runLog(t, s, LogOptions{}, []LogEntry{
		{Time: first, RequestID: "a", Tenant: "acme", Operation: "create", Status: 201},
		{Time: first.Add(time.Hour), RequestID: "b", Tenant: "acme", Operation: "create", Status: 201},
	})
	if got, err := l.Oldest(); err != nil || !got.Equal(first) {
		t.Fatalf("the oldest entry was filed at %v (%v), want %v", got, err, first)
	}
}

// TestLogKeptForALongRetention: provisioning_log.retention may be any
// positive duration (LogOptions.Check accepts a century, the longest
// config.ParseDuration takes in days). A log kept 100 years must keep a
// request made an hour ago through a prune; the cutoff, 1926, is before
// 1970, its UnixNano negative, and as an unsigned key it sorts after
// every entry.
func TestLogKeptForALongRetention(t *testing.T) {
	s, c, _ := openStore(t)
	now := c.now()
	o := LogOptions{Retention: 36500 * 24 * time.Hour, MaxBytes: 512 << 20}
	if err := o.Check(); err != nil {
		t.Fatalf("the options are refused: %v", err)
	}
	runLog(t, s, o, []LogEntry{{Time: now.Add(-time.Hour), RequestID: "1h", Tenant: "acme", Operation: "create", Status: 201}})
	runLog(t, s, o, nil) // a restart prunes by age
	l := NewRequestLog(s, o, slog.New(slog.DiscardHandler))
	got, err := l.Query(context.Background(), LogQuery{Since: now.Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.RequestID)
	}
	if !slices.Equal(ids, []string{"1h"}) {
		t.Fatalf("with a retention of 100 years, the log holds %v after a prune, want the request of an hour ago", ids)
	}
}

// TestLogUserSearchFoldsAsSCIMDoes: the provisioning log's user search
// ("userName, displayName or email (substring, any case)") finds a request
// about a user by a spelling the SCIM filter calls the same userName.
func TestLogUserSearchFoldsAsSCIMDoes(t *testing.T) {
	s, c, _ := openStore(t)
	entries := []LogEntry{
		{Time: c.now(), RequestID: "greek", Tenant: "acme", Operation: "create", Status: 201, Name: "ΟΔΥΣΣΕΥΣ"},
		{Time: c.now().Add(time.Millisecond), RequestID: "longs", Tenant: "acme", Operation: "create", Status: 201, Name: "ſam@x.com"},
		{Time: c.now().Add(2 * time.Millisecond), RequestID: "mail", Tenant: "acme", Operation: "create", Status: 201, Name: "x", Email: "ΣΟΦΙΑ@x.com"},
	}
	l := runLog(t, s, LogOptions{}, entries)
	for _, tc := range []struct{ user, want string }{
		{"οδυσσευς", "greek"}, // userName eq "οδυσσευς" finds ΟΔΥΣΣΕΥΣ
		{"sam@x", "longs"},    // userName eq "sam@x.com" finds ſam@x.com
		{"ςοφια", "mail"},     // emails.value eq "ςοφια@x.com" finds ΣΟΦΙΑ@x.com
	} {
		got, err := l.Query(ctx, LogQuery{Since: c.now().Add(-time.Hour), User: tc.user})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].RequestID != tc.want {
			t.Errorf("user=%s finds %d entries, want the request %q (the SCIM filter calls its name the same)", tc.user, len(got), tc.want)
		}
	}
}

// TestLogWritesReadSummariesAfterAClockStepBack: successful reads are
// summed up per minute and written once their minute is over. The wall
// clock then steps back an hour (NTP correcting a clock that ran ahead):
// the minute is over (no request of it can come any more), yet its
// summary must not wait an hour, unseen by `scimrelay log`, the console's
// counts and a log follower, and lost if the relay is killed meanwhile.
func TestLogWritesReadSummariesAfterAClockStepBack(t *testing.T) {
	s, c, _ := openStore(t)
	l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()
	start := c.now()
	for i := range 5 {
		l.Record(LogEntry{Time: start.Add(time.Duration(i) * time.Millisecond), RequestID: fmt.Sprint("g", i), Tenant: "acme",
			Method: "GET", Operation: "get", Resource: "User", Status: 200, Latency: time.Millisecond})
	}
	l.Record(LogEntry{Time: start, Tenant: "acme", Method: "POST", Operation: "create", Resource: "User", Status: 201, RequestID: "create"})
	found := func() (summary, create bool) {
		got, err := l.Query(ctx, LogQuery{Since: start.Add(-2 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			summary = summary || e.Count == 5
			create = create || e.RequestID == "create"
		}
		return summary, create
	}
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, create := found(); !create {
			return fmt.Errorf("set-up: the create was not written")
		}
		return nil
	})
	c.add(-time.Hour) // the wall clock steps back
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if summary, _ := found(); !summary {
			return fmt.Errorf("the summary of 5 successful reads of a minute that is over was not written after the wall clock stepped back an hour (it waits for the clock to pass that minute again)")
		}
		return nil
	})
}

// TestLogSearchReadsInChunks: a search that matches little reads the
// whole log, which at a million entries took 10 s in one read
// transaction, and a SCIM write that needed bbolt to remap the growing
// data file waited all of it (9.3 s; 47 s and 71 s under -race, the hunt's
// TestHuntWritesDuringALongRead). The log is read logReadChunk entries a
// transaction, and finds the same entries, those at the chunks' edges
// included, in both orders, paged or not; Count too.
func TestLogSearchReadsInChunks(t *testing.T) {
	s, c, _ := openStore(t)
	const n = 5*logReadChunk + 7
	start := c.now().Add(-time.Hour)
	needles := map[int]bool{0: true, logReadChunk - 1: true, logReadChunk: true, logReadChunk + 1: true, 2 * logReadChunk: true, 3*logReadChunk + 5: true, n - 1: true}
	var entries []LogEntry
	for i := range n {
		name := fmt.Sprintf("user%d@acme.com", i)
		if needles[i] {
			name = fmt.Sprintf("needle%d@acme.com", i)
		}
		entries = append(entries, LogEntry{Time: start.Add(time.Duration(i) * time.Millisecond), RequestID: fmt.Sprint(i), Tenant: []string{"acme", "globex"}[i%2],
			Method: "POST", Operation: "create", Resource: "User", Name: name, Status: 201})
	}
	l := NewRequestLog(s, LogOptions{}, slog.New(slog.DiscardHandler))
	for i := 0; i < n; i += 1000 {
		if err := l.write(entries[i:min(i+1000, n)]); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{}
	for i := range n {
		if needles[i] {
			want = append(want, fmt.Sprint(i))
		}
	}
	before := s.db.Stats()
	got, err := l.Query(ctx, LogQuery{Since: start, User: "needle", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if txs := s.db.Stats().TxN - before.TxN; txs < n/logReadChunk {
		t.Errorf("a search of %d entries took %d read transactions, want one per %d entries at least", n, txs, logReadChunk)
	}
	ids := func(list []LogEntry) []string {
		out := []string{}
		for _, e := range list {
			out = append(out, e.RequestID)
		}
		return out
	}
	if !slices.Equal(ids(got), want) {
		t.Errorf("oldest first: %v, want %v", ids(got), want)
	}
	got, err = l.Query(ctx, LogQuery{Since: start, User: "needle", Newest: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	if !slices.Equal(ids(got), rev) {
		t.Errorf("newest first: %v, want %v", ids(got), rev)
	}
	// Paged by 2 in both orders, within an Until.
	for _, newest := range []bool{false, true} {
		q := LogQuery{Since: start, Until: start.Add(time.Duration(n-1) * time.Millisecond), User: "needle", Newest: newest, Limit: 2}
		var all []string
		for {
			page, err := l.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ids(page)...)
			if len(page) < q.Limit {
				break
			}
			q.After = page[len(page)-1].Key
		}
		w := slices.Clone(want[:len(want)-1]) // n-1 is at Until
		if newest {
			slices.Reverse(w)
		}
		if !slices.Equal(all, w) {
			t.Errorf("paged, newest %v: %v, want %v", newest, all, w)
		}
	}
	counts, err := l.Count(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 2 || counts[0].Total+counts[1].Total != n || counts[0].Total != (n+1)/2 {
		t.Errorf("Count: %+v, want %d in all", counts, n)
	}
}
