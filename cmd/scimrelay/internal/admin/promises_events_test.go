// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestEventsTailWaitsAtMostFiveSeconds: "While NATS is away a following
// tail retries, waiting longer each time (up to 5 s)": the waits grow
// 100 ms, 200 ms … and stop growing at 5 s (doubling, the next would be
// 6.4 s). TestEventsTailAcrossOutage checks that they grow and that the
// tail carries on.
func TestEventsTailWaitsAtMostFiveSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps NATS away for about 15 s")
	}
	f := newFixture(t)
	f.follow("tenant=acme")
	f.nats.Shutdown()
	f.nats.WaitForShutdown()
	retryIn := regexp.MustCompile(`reading the stream failed.* retry_in=([0-9.]+m?s)`)
	var waits []time.Duration
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		waits = waits[:0]
		for _, m := range retryIn.FindAllStringSubmatch(f.log.String(), -1) {
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatalf("retry_in %q: %v", m[1], err)
			}
			waits = append(waits, d)
			if d >= 5*time.Second {
				return nil
			}
		}
		return fmt.Errorf("waits so far %v", waits)
	})
	if last := waits[len(waits)-1]; last != 5*time.Second {
		t.Fatalf("the tail's waits %v go past 5 s", waits)
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] <= waits[i-1] {
			t.Fatalf("the tail's waits %v do not grow", waits)
		}
	}
}

// follow opens a following tail of the events the query selects; it ends
// with the test.
func (f *fixture) follow(query string) *http.Response {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/admin/v1/events?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		f.t.Fatalf("tail: %v %v", res, err)
	}
	f.t.Cleanup(func() { _ = res.Body.Close() })
	return res
}
