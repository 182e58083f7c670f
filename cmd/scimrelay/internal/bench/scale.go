// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

// The scale mode fills the endpoint with Users users (Entra's creates at
// Concurrency, every request measured, in windows of scaleWindow) and
// Groups groups of MembersPerGroup members (PATCHes of 100), then measures,
// at that size, Requests filter GETs at ReadConcurrency and Requests more
// creates at Concurrency. With Admin it also reads the relay's heap in
// use (sampled every few seconds through the run; its largest value and
// the last) and the data file's size by bucket at the end, and before
// measuring at size it waits (up to DrainTimeout) for the relay's outbox
// to be published: a fill makes events faster than the publisher sends
// them on two shared cores, and figures taken while it catches up measure
// the catching up.

// scaleWindow is how many creates each window of the fill reports: the
// first window is the create rate of an endpoint of that many users.
const scaleWindow = 10_000

// ScaleReport is what a scale run measured. Its JSON form:
//
//	{"config": {...as Report's},
//	 "requests", "read_concurrency",
//	 "fill": op plus "windows": [op...],   // creating the users, and per 10,000
//	 "groups": op, "members": op,          // creating the groups, adding members
//	 "filter_get": op, "create": op,       // measured at size
//	 "outbox": null without the relay's admin API, else {"behind", "left", "took_s"},
//	 "relay": null without the relay's admin API, else
//	   {"heap_inuse_max_bytes", "heap_inuse_end_bytes", "rss_end_bytes", "file_bytes",
//	    "buckets": [{"name", "keys", "bytes", "page_bytes", "bytes_per_user"}],
//	    "index_bytes_per_user", "index_page_bytes_per_user"}}
//
// where op is an operation of Report. index_bytes_per_user counts the
// tenant's buckets (resources, indexes, memberships) over its users.
type ScaleReport struct {
	Config          Config
	Requests        int
	ReadConcurrency int
	Fill            phaseResult
	Groups, Members phaseResult
	FilterGet       phaseResult
	Create          phaseResult
	Relay           *RelayStats
	// Outbox is the wait for the relay's outbox before measuring at size;
	// nil without the relay's admin API.
	Outbox *OutboxWait
}

// OutboxWait is how far the relay's publisher was behind when the fill
// ended (Behind events), how long it took to catch up, and how many events
// were still waiting when the wait gave up (Left; 0 when it caught up).
type OutboxWait struct {
	Behind, Left int64
	Took         time.Duration
}

// Failures lists the phases whose requests failed.
func (r *ScaleReport) Failures() []string {
	return failedRequests(r.Fill.OpStats, r.Groups.OpStats, r.Members.OpStats, r.FilterGet.OpStats, r.Create.OpStats)
}

// RelayStats is what the relay's admin listener said.
type RelayStats struct {
	HeapInuseMax, HeapInuseEnd, RSSEnd int64
	FileBytes                          int64
	Buckets                            []BucketStats
	// IndexBytesPerUser is what the tenant's buckets hold over its users;
	// IndexPageBytesPerUser, the pages they take.
	IndexBytesPerUser, IndexPageBytesPerUser float64
}

// BucketStats is one bucket of the data file.
type BucketStats struct {
	Name         string  `json:"name"`
	Keys         int     `json:"keys"`
	Bytes        int64   `json:"bytes"`
	PageBytes    int64   `json:"page_bytes"`
	BytesPerUser float64 `json:"bytes_per_user"`
}

// RunScale runs the scale mode.
func RunScale(ctx context.Context, o Options) (*ScaleReport, error) {
	o.Mode = ModeScale
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	rep := &ScaleReport{Config: configOf(o), Requests: o.Requests, ReadConcurrency: o.ReadConcurrency}
	batches := o.Groups * ((o.MembersPerGroup + MemberBatch - 1) / MemberBatch)
	b := newBar(o.Progress, int64(o.Users+o.Groups+batches+2*o.Requests), "users")
	defer b.finish()
	c := newClient(o, o.URL)
	defer c.close()

	var heap *heapSampler
	if o.Admin != nil {
		if err := checkTenant(ctx, o); err != nil {
			return nil, err
		}
		heap = startHeapSampler(ctx, o.Admin, heapEvery)
	}
	users := make([]user, o.Users+o.Requests)
	for i := range users {
		users[i] = user{name: o.userName(fmt.Sprintf("%s.u%07d", o.Prefix, i)), externalID: newUUID()}
	}
	rep.Fill = runPhase(ctx, c, "fill", o.Users, o.Concurrency, scaleWindow, b, func(i int) request { return createUserRequest(&users[i], i) })

	b.describe("groups")
	groups := make([]group, o.Groups)
	for i := range groups {
		groups[i] = group{name: fmt.Sprintf("%s-group-%05d", o.Prefix, i), externalID: newUUID()}
	}
	rep.Groups = runPhase(ctx, c, "create-group", o.Groups, o.Concurrency, 0, b, func(i int) request {
		g := &groups[i]
		return request{method: "POST", path: "/Groups", body: groupBody(g), want: []int{201}, parse: expectID, found: &g.id}
	})
	b.describe("members")
	perGroup := (o.MembersPerGroup + MemberBatch - 1) / MemberBatch
	rep.Members = runPhase(ctx, c, "patch-members", batches, o.Concurrency, 0, b, func(i int) request {
		g := &groups[i/perGroup]
		lo := (i % perGroup) * MemberBatch
		ids := make([]string, 0, MemberBatch)
		// Members of group k: users k*M … k*M+M-1, wrapping around, so that
		// memberships spread over all users.
		for j := lo; j < min(lo+MemberBatch, o.MembersPerGroup); j++ {
			if id := users[((i/perGroup)*o.MembersPerGroup+j)%max(o.Users, 1)].id; id != "" {
				ids = append(ids, id)
			}
		}
		return request{method: "PATCH", path: "/Groups/" + g.id, body: addMembersBody(ids), want: []int{204, 200}}
	})

	if o.Admin != nil {
		b.describe("waiting for the outbox")
		w, err := waitOutbox(ctx, o, 250*time.Millisecond)
		if err != nil {
			return rep, err
		}
		rep.Outbox = w
	}
	b.describe("filter GETs at size")
	if o.Users > 0 {
		rep.FilterGet = runPhase(ctx, c, "filter-get-user", o.Requests, o.ReadConcurrency, 0, b, func(i int) request {
			u := &users[(i*104729)%o.Users]
			return request{method: "GET", path: filterUserPath(u.name), want: []int{200}, parse: expectOne}
		})
	}
	b.describe("creates at size")
	rep.Create = runPhase(ctx, c, "create-user", o.Requests, o.Concurrency, 0, b, func(i int) request {
		return createUserRequest(&users[o.Users+i], o.Users+i)
	})
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if heap != nil {
		heap.stop()
		rs, err := relayStats(ctx, o, heap)
		if err != nil {
			return rep, err
		}
		rep.Relay = rs
	}
	return rep, nil
}

// --- the relay's side

// heapEvery is how often the scale mode reads the relay's heap in use. The
// peak it reports is the largest reading: a shorter peak between two
// readings is missed.
const heapEvery = 5 * time.Second

// heapSampler reads the relay's heap in use every interval.
type heapSampler struct {
	mu   sync.Mutex
	max  int64
	err  error
	done chan struct{}
	quit chan struct{}
}

func startHeapSampler(ctx context.Context, a *adminclient.Client, every time.Duration) *heapSampler {
	h := &heapSampler{done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(h.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m, err := relayGauges(ctx, a)
			h.mu.Lock()
			if err != nil && h.err == nil {
				h.err = err
			}
			h.max = max(h.max, m[heapInuseMetric])
			h.mu.Unlock()
			select {
			case <-t.C:
			case <-h.quit:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return h
}

func (h *heapSampler) stop() {
	close(h.quit)
	<-h.done
}

// waitOutbox polls the relay's scimrelay_outbox_depth until it is 0, or
// DrainTimeout has passed.
func waitOutbox(ctx context.Context, o Options, every time.Duration) (*OutboxWait, error) {
	start := time.Now()
	deadline := start.Add(o.DrainTimeout)
	w := &OutboxWait{Behind: -1}
	for {
		m, err := relayGauges(ctx, o.Admin)
		if err != nil {
			return nil, err
		}
		depth, ok := m[outboxDepthMetric]
		if !ok {
			return nil, fmt.Errorf("the relay's /metrics has no %s", outboxDepthMetric)
		}
		if w.Behind < 0 {
			w.Behind = depth
		}
		w.Left, w.Took = depth, time.Since(start)
		if depth == 0 || time.Now().After(deadline) {
			return w, nil
		}
		select {
		case <-time.After(every):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// The relay's gauges the report reads.
const (
	heapInuseMetric   = "go_memstats_heap_inuse_bytes"
	rssMetric         = "process_resident_memory_bytes"
	outboxDepthMetric = "scimrelay_outbox_depth"
)

// relayGauges reads the relay's gauges that the report uses; one missing
// from its /metrics is missing from the map.
func relayGauges(ctx context.Context, a *adminclient.Client) (map[string]int64, error) {
	families, err := a.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, name := range []string{heapInuseMetric, rssMetric, outboxDepthMetric} {
		if f := families[name]; f != nil && len(f.GetMetric()) == 1 && f.GetMetric()[0].GetGauge() != nil {
			out[name] = int64(f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return out, nil
}

// checkTenant refuses an admin API whose relay has no tenant of the name
// the URL ends with: its figures would be another relay's, and the index
// per user would read 0.
func checkTenant(ctx context.Context, o Options) error {
	list, err := o.Admin.Tenants(ctx)
	if err != nil {
		return err
	}
	tenant := tenantOf(o.URL)
	names := make([]string, len(list))
	for i, t := range list {
		if t.Name == tenant {
			return nil
		}
		names[i] = t.Name
	}
	return fmt.Errorf("%w: the relay whose admin API is at %s has no tenant %q, which the url names (its tenants: %s); give the relay.yaml of the relay the url points at",
		ErrInvalidOptions, o.Admin.BaseURL, tenant, strings.Join(names, ", "))
}

// tenantOf is the tenant a scimrelay SCIM base URL names: its last segment.
func tenantOf(url string) string { return url[strings.LastIndexByte(url, '/')+1:] }

func relayStats(ctx context.Context, o Options, heap *heapSampler) (*RelayStats, error) {
	m, err := relayGauges(ctx, o.Admin)
	if err != nil {
		return nil, err
	}
	rs := &RelayStats{HeapInuseEnd: m[heapInuseMetric], RSSEnd: m[rssMetric]}
	heap.mu.Lock()
	rs.HeapInuseMax = max(heap.max, rs.HeapInuseEnd)
	heap.mu.Unlock()
	st, err := o.Admin.Storage(ctx)
	if err != nil {
		return nil, err
	}
	rs.FileBytes = st.FileBytes
	tenant := tenantOf(o.URL)
	var index, indexPages int64
	usersKeys := 0
	for _, bk := range st.Buckets {
		if bk.Name == "tenants/"+tenant+"/users" {
			usersKeys = bk.Keys
		}
	}
	for _, sb := range st.Buckets {
		bk := BucketStats{Name: sb.Name, Keys: sb.Keys, Bytes: sb.Bytes, PageBytes: sb.PageBytes}
		if usersKeys > 0 {
			bk.BytesPerUser = float64(bk.Bytes) / float64(usersKeys)
		}
		if strings.HasPrefix(bk.Name, "tenants/"+tenant+"/") {
			index += bk.Bytes
			indexPages += bk.PageBytes
		}
		rs.Buckets = append(rs.Buckets, bk)
	}
	if usersKeys > 0 {
		rs.IndexBytesPerUser = float64(index) / float64(usersKeys)
		rs.IndexPageBytesPerUser = float64(indexPages) / float64(usersKeys)
	}
	return rs, nil
}

// --- output

type jsonPhase struct {
	jsonOp
	Windows []jsonOp `json:"windows,omitempty"`
}

func phaseJSON(p phaseResult) jsonPhase {
	j := jsonPhase{jsonOp: opJSON(p.OpStats)}
	for _, w := range p.Windows {
		j.Windows = append(j.Windows, opJSON(w))
	}
	return j
}

type outboxJSON struct {
	Behind int64   `json:"behind"`
	Left   int64   `json:"left"`
	TookS  float64 `json:"took_s"`
}

// MarshalJSON writes the report in its documented shape (see ScaleReport).
func (r *ScaleReport) MarshalJSON() ([]byte, error) {
	type relayJSON struct {
		HeapInuseMax      int64         `json:"heap_inuse_max_bytes"`
		HeapInuseEnd      int64         `json:"heap_inuse_end_bytes"`
		RSSEnd            int64         `json:"rss_end_bytes"`
		FileBytes         int64         `json:"file_bytes"`
		Buckets           []BucketStats `json:"buckets"`
		IndexBytesPerUser float64       `json:"index_bytes_per_user"`
		IndexPageBytes    float64       `json:"index_page_bytes_per_user"`
	}
	j := struct {
		Config          jsonConfig  `json:"config"`
		Requests        int         `json:"requests"`
		ReadConcurrency int         `json:"read_concurrency"`
		Fill            jsonPhase   `json:"fill"`
		Groups          jsonPhase   `json:"groups"`
		Members         jsonPhase   `json:"members"`
		FilterGet       jsonPhase   `json:"filter_get"`
		Create          jsonPhase   `json:"create"`
		Relay           *relayJSON  `json:"relay"`
		Outbox          *outboxJSON `json:"outbox"`
	}{
		Config: configJSON(r.Config), Requests: r.Requests, ReadConcurrency: r.ReadConcurrency,
		Fill: phaseJSON(r.Fill), Groups: phaseJSON(r.Groups), Members: phaseJSON(r.Members),
		FilterGet: phaseJSON(r.FilterGet), Create: phaseJSON(r.Create),
	}
	if rs := r.Relay; rs != nil {
		j.Relay = &relayJSON{rs.HeapInuseMax, rs.HeapInuseEnd, rs.RSSEnd, rs.FileBytes, rs.Buckets, round3(rs.IndexBytesPerUser), round3(rs.IndexPageBytesPerUser)}
	}
	if w := r.Outbox; w != nil {
		j.Outbox = &outboxJSON{w.Behind, w.Left, round3(w.Took.Seconds())}
	}
	return json.Marshal(j)
}

// WriteTable writes the report as aligned text for people: the fill's
// first, slowest and last windows, the phases, and the relay's figures.
func (r *ScaleReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "%s: %d users, %d groups × %d members; concurrency %d (filter GETs %d); prefix %s\n\n",
		c.URL, c.Users, c.Groups, c.MembersPerGroup, c.Concurrency, r.ReadConcurrency, c.Prefix)
	phases := []OpStats{r.Fill.OpStats, r.Groups.OpStats, r.Members.OpStats,
		relabel(r.FilterGet.OpStats, "at size: "), relabel(r.Create.OpStats, "at size: ")}
	rows := []OpStats{phases[0]}
	if ws := r.Fill.Windows; len(ws) > 0 {
		slowest := slices.MinFunc(ws, func(a, b OpStats) int { return cmp.Compare(a.RPS, b.RPS) })
		worst := slices.MaxFunc(ws, func(a, b OpStats) int { return int(a.Latency.Max - b.Latency.Max) })
		rows = append(rows, ws[0], relabel(slowest, "slowest window: "), relabel(worst, "longest request: "), ws[len(ws)-1])
	}
	if err := writeOpRows(&b, append(rows, phases[1:]...)); err != nil {
		return err
	}
	// The windows are the fill's requests again: their errors and 429s are
	// the fill's, said once.
	writeFirstErrors(&b, phases)
	throttled := 0
	for _, p := range phases {
		throttled += p.Throttled
	}
	writeThrottled(&b, throttled)
	if w := r.Outbox; w != nil {
		if w.Left == 0 {
			fmt.Fprintf(&b, "\nbefore measuring at size: the outbox was %d events behind; published in %.1f s\n", w.Behind, w.Took.Seconds())
		} else {
			fmt.Fprintf(&b, "\nbefore measuring at size: the outbox was %d events behind; still %d after %.1f s (measured while it catches up)\n", w.Behind, w.Left, w.Took.Seconds())
		}
	}
	if rs := r.Relay; rs != nil {
		fmt.Fprintf(&b, "\nrelay: heap in use %.1f MiB at most, %.1f MiB at the end; RSS %.1f MiB; data file %.1f MiB; index %.0f bytes per user in use, %.0f in its pages\n",
			mib(rs.HeapInuseMax), mib(rs.HeapInuseEnd), mib(rs.RSSEnd), mib(rs.FileBytes), rs.IndexBytesPerUser, rs.IndexPageBytesPerUser)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "bucket\tkeys\tMiB in use\tMiB of pages\tbytes/user\t\n")
		for _, bk := range rs.Buckets {
			if bk.Keys == 0 && bk.Bytes == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.0f\t\n", bk.Name, bk.Keys, mib(bk.Bytes), mib(bk.PageBytes), bk.BytesPerUser)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func relabel(s OpStats, prefix string) OpStats { s.Name = prefix + s.Name; return s }

func mib(n int64) float64 { return float64(n) / (1 << 20) }
