// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// A phase is n requests of one operation sent by a fixed number of workers
// (closed loop), measured alone: what the ops and scale modes report, where
// the cycle reports operations interleaved within their phase.

// phaseResult is what one phase measured.
type phaseResult struct {
	OpStats
	// Windows, when asked for, are the stats of consecutive slices of the
	// phase's requests (in the order they were sent).
	Windows []OpStats
}

// runPhase sends n requests, req(i) for i in [0, n), from conc workers.
// window > 0 also reports every window requests on their own.
func runPhase(ctx context.Context, c *client, name string, n, conc, window int, b *bar, req func(i int) request) phaseResult {
	lat := make([]time.Duration, n)
	starts := make([]time.Time, n)
	ends := make([]time.Time, n)
	failed := make([]int, n) // status+1 of a failure, 0 when it succeeded
	var firstErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range min(conc, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := req(i)
				starts[i] = time.Now()
				res := c.send(ctx, r)
				ends[i] = res.end
				lat[i] = res.end.Sub(starts[i])
				if res.err != nil {
					failed[i] = res.status + 1
					firstErr.CompareAndSwap(nil, res.err.Error())
				}
				b.add()
			}
		})
	}
	wg.Wait()
	done := int(min(next.Load(), int64(n)))
	out := phaseResult{OpStats: sliceStats(name, lat[:done], starts[:done], ends[:done], failed[:done])}
	out.RPS = rate(done, time.Since(begin))
	if s, ok := firstErr.Load().(string); ok {
		out.FirstError = s
	}
	if window > 0 {
		for lo := 0; lo < done; lo += window {
			hi := min(lo+window, done)
			out.Windows = append(out.Windows, sliceStats(fmt.Sprintf("%s %d-%d", name, lo+1, hi), lat[lo:hi], starts[lo:hi], ends[lo:hi], failed[lo:hi]))
		}
	}
	return out
}

// sliceStats summarises requests; their rate is over the span from the
// first start to the last end.
func sliceStats(name string, lat []time.Duration, starts, ends []time.Time, failed []int) OpStats {
	s := OpStats{Name: name, Count: len(lat), Errors: map[int]int{}}
	var first, last time.Time
	for i := range lat {
		if first.IsZero() || starts[i].Before(first) {
			first = starts[i]
		}
		if ends[i].After(last) {
			last = ends[i]
		}
		if failed[i] != 0 {
			s.Errors[failed[i]-1]++
		}
	}
	s.RPS = rate(len(lat), last.Sub(first))
	s.Latency = latencyOf(append([]time.Duration(nil), lat...))
	return s
}

// filterUserPath is Entra's matching query for a userName.
func filterUserPath(name string) string {
	return "/Users?" + url.Values{"filter": {`userName eq "` + name + `"`}}.Encode()
}

// expectOne checks a filter GET that must find exactly one resource.
func expectOne(body []byte, _ *string) error {
	var l listResponse
	if err := json.Unmarshal(body, &l); err != nil {
		return fmt.Errorf("filter response is not a ListResponse: %w", err)
	}
	if l.TotalResults == nil || *l.TotalResults != 1 || len(l.Resources) != 1 {
		return errors.New("filter response does not hold exactly the one resource asked for")
	}
	return nil
}

// createUserRequest is Entra's create of user u (index i), storing its id.
func createUserRequest(u *user, i int) request {
	return request{method: "POST", path: "/Users", body: userBody(u, i), want: []int{201}, parse: expectID, found: &u.id}
}
