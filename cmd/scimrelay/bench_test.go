// SPDX-License-Identifier: Apache-2.0

package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/certfile/certfiletest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// HTTP-level benchmarks of the relay with fsync on: a SCIM client and the
// relay share this machine's cores, as they do in the README's figures.
//
//	go test ./cmd/scimrelay -run x -bench 'SCIM' -benchtime 3s
//
// They report requests/s and p99 latency (per-request latencies recorded).

// benchRelay starts a relay for a benchmark, with the batch delay given.
func benchRelay(b *testing.B, batchDelay time.Duration) (*relayProc, *http.Client) {
	b.Helper()
	cfg := testConfig(b, b.TempDir())
	cfg.Storage.BatchDelay = durationOf(batchDelay)
	p := startRelay(b, cfg, roleAll)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 512}}
	return p, client
}

func request(b *testing.B, c *http.Client, method, url, body string, want int) time.Duration {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	d := time.Since(start)
	if res.StatusCode != want {
		b.Errorf("%s %s: %d", method, url, res.StatusCode)
	}
	return d
}

// runConcurrent runs op b.N times over n goroutines and reports ops/s and
// latency percentiles.
func runConcurrent(b *testing.B, n int, op func(i int) time.Duration) {
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				lat[i] = op(i)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[b.N/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[b.N*99/100].Microseconds())/1000, "p99-ms")
}

var benchRun atomic.Int64

func BenchmarkSCIMCreate(b *testing.B) {
	for _, conc := range []int{1, 8, 32} {
		for _, delay := range []time.Duration{0, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond} {
			b.Run(fmt.Sprintf("concurrency=%d/batch_delay=%s", conc, delay), func(b *testing.B) {
				p, c := benchRelay(b, delay)
				run := benchRun.Add(1)
				url := p.scimURL + "/scim/v2/acme/Users"
				runConcurrent(b, conc, func(i int) time.Duration {
					return request(b, c, "POST", url, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"r%d-u%d@x.com","externalId":"e%d","active":true,"name":{"givenName":"Ann","familyName":"Lee"},"emails":[{"value":"r%d-u%d@x.com","type":"work","primary":true}]}`, run, i, i, run, i), 201)
				})
			})
		}
	}
}

// BenchmarkSCIMBulkCreate creates users 100 to a /Bulk request, one client:
// each operation commits on its own, so a bulk request costs about what its
// operations cost as single requests from one client, without the HTTP
// round trips (users/s = req/s × 100).
func BenchmarkSCIMBulkCreate(b *testing.B) {
	p, c := benchRelay(b, time.Millisecond)
	run := benchRun.Add(1)
	url := p.scimURL + "/scim/v2/acme/Bulk"
	runConcurrent(b, 1, func(i int) time.Duration {
		ops := make([]string, 100)
		for j := range ops {
			ops[j] = fmt.Sprintf(`{"method":"POST","path":"/Users","bulkId":"u%d","data":{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"r%d-b%d-u%d@x.com","active":true}}`, j, run, i, j)
		}
		return request(b, c, "POST", url, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],"Operations":[`+strings.Join(ops, ",")+`]}`, 200)
	})
}

// BenchmarkSCIMOverTLS is what tls on the SCIM listener costs a request
// on kept-alive connections (a handshake per connection, not per
// request): creates and filter GETs (1,000 users) at concurrency 8, with
// it off and on, in one run.
func BenchmarkSCIMOverTLS(b *testing.B) {
	for _, op := range []string{"create", "filter-get"} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/tls=%v", op, on), func(b *testing.B) {
				cfg := testConfig(b, b.TempDir())
				cfg.Storage.BatchDelay = durationOf(time.Millisecond)
				transport := &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 512}
				if on {
					pair := certfiletest.Write(b, b.TempDir(), time.Now().Add(time.Hour))
					cfg.TLS = config.ListenerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
					transport.TLSClientConfig = &tls.Config{RootCAs: pair.Pool(b)}
				}
				p, c := startRelay(b, cfg, roleAll), &http.Client{Transport: transport}
				users, run := p.scimURL+"/scim/v2/acme/Users", benchRun.Add(1)
				create := func(i int) time.Duration {
					return request(b, c, "POST", users, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"r%d-u%d@x.com","active":true}`, run, i), 201)
				}
				if op == "create" {
					runConcurrent(b, 8, create)
					return
				}
				const n = 1000
				for i := range n {
					create(i)
				}
				runConcurrent(b, 8, func(i int) time.Duration {
					return request(b, c, "GET", users+"?filter="+url.QueryEscape(fmt.Sprintf(`userName eq "r%d-u%d@x.com"`, run, i%n)), "", 200)
				})
			})
		}
	}
}

func BenchmarkSCIMFilterGet(b *testing.B) {
	p, c := benchRelay(b, time.Millisecond)
	const users = 10_000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := 0; i < users; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			request(b, c, "POST", p.scimURL+"/scim/v2/acme/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%d@x.com"}`, i), 201)
		}()
	}
	wg.Wait()
	runConcurrent(b, 8, func(i int) time.Duration {
		return request(b, c, "GET", p.scimURL+"/scim/v2/acme/Users?filter=userName%20eq%20%22u"+fmt.Sprint(i%users)+"%40x.com%22", "", 200)
	})
}

// BenchmarkSCIMGroupPatch adds one member to a group of 10 and to a group of
// 100,000 members: the large one must cost about the same.
func BenchmarkSCIMGroupPatch(b *testing.B) {
	for _, size := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			cfg := testConfig(b, b.TempDir())
			p := startRelay(b, cfg, roleAll)
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			gid := p.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g"}`).want(b, 201).str("id")
			ids := make([]string, size+b.N)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			for i := range ids {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					ids[i] = p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"m%d"}`, i)).want(b, 201).str("id")
				}()
			}
			wg.Wait()
			for start := 0; start < size; start += 1000 {
				var vals []string
				for _, id := range ids[start:min(start+1000, size)] {
					vals = append(vals, `{"value":"`+id+`"}`)
				}
				request(b, c, "PATCH", p.scimURL+"/scim/v2/acme/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[`+strings.Join(vals, ",")+`]}]}`, 204)
			}
			// Measure the PATCH alone, not the publisher draining the setup's events.
			eventstest.CheckFor(b, 5*time.Minute, 50*time.Millisecond, func() error {
				if n, err := p.srv.store.OutboxDepth(); err != nil || n > 0 {
					return fmt.Errorf("outbox holds %d events (%v)", n, err)
				}
				return nil
			})
			runConcurrent(b, 1, func(i int) time.Duration {
				return request(b, c, "PATCH", p.scimURL+"/scim/v2/acme/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"value":"`+ids[size+i]+`"}]}]}`, 204)
			})
		})
	}
}

func durationOf(d time.Duration) config.Duration { return config.Duration(d) }
