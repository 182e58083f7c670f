// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// recorder keeps every request's latency and outcome, per operation. The
// latencies are kept whole so that percentiles are exact: a cycle of 10,000
// users is some 50,000 requests.
type recorder struct {
	mu  sync.Mutex
	ops [numOps]opRecord
}

// opRecord is the requests of one operation (or one phase, or one window
// of a phase). Its zero value is ready; it is not safe for concurrent use.
type opRecord struct {
	lat         []time.Duration
	errs        map[int]int
	firstErr    string
	first, last time.Time // earliest origin, latest end
	throttled   int       // 429s waited out and sent again
}

func (r *recorder) add(op int, origin time.Time, res result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[op].add(origin, res)
}

// add records a request sent at origin (or due then, in open loop).
func (o *opRecord) add(origin time.Time, res result) {
	o.lat = append(o.lat, max(res.end.Sub(origin), 0))
	o.throttled += res.throttled
	if o.first.IsZero() || origin.Before(o.first) {
		o.first = origin
	}
	if res.end.After(o.last) {
		o.last = res.end
	}
	if res.err != nil {
		if o.errs == nil {
			o.errs = map[int]int{}
		}
		o.errs[res.status]++
		if o.firstErr == "" {
			o.firstErr = res.err.Error()
		}
	}
}

// stats summarises the requests; their rate is over the span from the
// earliest origin to the latest end.
func (o *opRecord) stats(name string) OpStats {
	errs := maps.Clone(o.errs)
	if errs == nil {
		errs = map[int]int{}
	}
	return OpStats{
		Name: name, Count: len(o.lat), Latency: latencyOf(o.lat),
		Errors: errs, FirstError: o.firstErr,
		RPS: rate(len(o.lat), o.last.Sub(o.first)), Throttled: o.throttled,
	}
}

// stats summarises the operations and their total; wall is the duration of
// the whole cycle, which the total's rate is over.
func (r *recorder) stats(wall time.Duration) ([]OpStats, OpStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]OpStats, numOps)
	total := OpStats{Name: "total", Errors: map[int]int{}}
	var all []time.Duration
	for i := range r.ops {
		o := &r.ops[i]
		ops[i] = o.stats(opNames[i])
		total.Throttled += o.throttled
		all = append(all, o.lat...)
		for s, n := range o.errs {
			total.Errors[s] += n
		}
		if total.FirstError == "" && o.firstErr != "" {
			total.FirstError = opNames[i] + ": " + o.firstErr
		}
	}
	total.Count = len(all)
	total.Latency = latencyOf(all)
	total.RPS = rate(len(all), wall)
	return ops, total
}

func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// latencyOf returns exact nearest-rank percentiles of ds (which it sorts).
func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	return Latency{
		P50: percentile(ds, 50), P95: percentile(ds, 95), P99: percentile(ds, 99),
		Max: ds[len(ds)-1],
	}
}

// percentile is the nearest-rank p-th percentile of sorted: the smallest
// value that at least p% of the values are at or below.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n)
	return sorted[max(rank, 1)-1]
}

// acks holds, for every event the cycle should cause, when the bench got the
// SCIM response that caused it.
type acks struct {
	mu sync.Mutex
	m  map[eventKey]time.Time
}

func newAcks() *acks { return &acks{m: map[eventKey]time.Time{}} }

func (a *acks) add(k eventKey, at time.Time) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.m[k] = at
	a.mu.Unlock()
}

func (a *acks) len() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}

func (a *acks) snapshot() map[eventKey]time.Time {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.m)
}
