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
	var mu sync.Mutex
	var all opRecord
	var windows []opRecord
	if window > 0 {
		windows = make([]opRecord, (n+window-1)/window)
	}
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
				origin := time.Now()
				res := c.send(ctx, r)
				mu.Lock()
				all.add(origin, res)
				if window > 0 {
					windows[i/window].add(origin, res)
				}
				mu.Unlock()
				b.add()
			}
		})
	}
	wg.Wait()
	done := int(min(next.Load(), int64(n)))
	out := phaseResult{OpStats: all.stats(name)}
	// The phase's rate is over its wall time, workers' start and end
	// included; a window's, over its own requests' span.
	out.RPS = rate(done, time.Since(begin))
	for k := range windows {
		lo := k * window
		if lo >= done {
			break
		}
		out.Windows = append(out.Windows, windows[k].stats(fmt.Sprintf("%s %d-%d", name, lo+1, min(lo+window, done))))
	}
	return out
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
