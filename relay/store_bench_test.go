// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// openBenchStore opens a store with fsync on, as production runs it;
// SCIMRELAY_BENCH_NOSYNC=1 turns fsync off, to tell CPU from disk.
func openBenchStore(b *testing.B, delay time.Duration) *Store {
	b.Helper()
	o := testOptions(&clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)})
	o.Now = nil
	o.BatchDelay = delay
	o.NoSync = os.Getenv("SCIMRELAY_BENCH_NOSYNC") != ""
	s, err := Open(filepath.Join(b.TempDir(), "scimrelay.db"), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// entraUser is a user as Entra creates it.
func entraUser(b testing.TB, i int) *scim.Resource {
	return user(b, fmt.Sprintf(`"externalId":"%08d-38d6-4ec8-948c-50044d0a33fd","userName":"user%d@contoso.com","active":true,
		"displayName":"User %d","emails":[{"primary":true,"type":"work","value":"user%d@contoso.com"}],
		"name":{"formatted":"User %d","familyName":"%d","givenName":"User"},
		"title":"Engineer","preferredLanguage":"en-US",
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"R&D","employeeNumber":"%d"}`, i, i, i, i, i, i, i))
}

// runConcurrently runs op(i) for i in [0, n) on workers goroutines and
// returns each call's latency and the wall time.
func runConcurrently(b *testing.B, n, workers int, op func(i int) error) ([]time.Duration, time.Duration) {
	b.Helper()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start)
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkCreate measures durable creates (fsync on) at 1, 8 and 32
// concurrent writers for several batch delays: throughput and p99 latency.
func BenchmarkCreate(b *testing.B) {
	for _, delay := range []time.Duration{0, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond} {
		for _, workers := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("delay=%s/writers=%d", delay, workers), func(b *testing.B) {
				s := openBenchStore(b, delay)
				users := make([]*scim.Resource, b.N)
				for i := range users {
					users[i] = entraUser(b, i)
				}
				b.ResetTimer()
				lat, wall := runConcurrently(b, b.N, workers, func(i int) error {
					_, err := s.Create(ctx, "acme", users[i])
					return err
				})
				b.StopTimer()
				b.ReportMetric(float64(b.N)/wall.Seconds(), "creates/s")
				b.ReportMetric(float64(percentile(lat, 0.50))/1e6, "p50-ms")
				b.ReportMetric(float64(percentile(lat, 0.99))/1e6, "p99-ms")
				b.ReportMetric(float64(percentile(lat, 0.90))/1e6, "p90-ms")
				b.ReportMetric(float64(percentile(lat, 1))/1e6, "max-ms")
			})
		}
	}
}

// BenchmarkListByUserName measures Entra's matching query,
// userName eq "...", on a tenant of 10,000 users.
func BenchmarkListByUserName(b *testing.B) {
	s := openBenchStore(b, time.Millisecond)
	ids := bulkUsers(b, s, 10_000)
	filters := make([]*scim.Filter, 256)
	for i := range filters {
		u, err := s.Get(ctx, "acme", scim.UserResourceType, ids[i*37%len(ids)])
		if err != nil {
			b.Fatal(err)
		}
		if filters[i], err = scim.ParseFilter(scim.UserResourceType, fmt.Sprintf(`userName eq %q`, u.String("userName"))); err != nil {
			b.Fatal(err)
		}
	}
	query := func(i int) error {
		page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: filters[i%len(filters)], StartIndex: 1, Count: 100})
		if err == nil && page.Total != 1 {
			err = fmt.Errorf("total %d", page.Total)
		}
		return err
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if err := query(i); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := query(int(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkMemberAdd measures a one-member PATCH (durable) on a group of
// 10 and of 100,000 members: the two must cost the same.
func BenchmarkMemberAdd(b *testing.B) {
	for _, size := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			s := openBenchStore(b, 0)
			g, _ := buildGroup(b, s, size)
			newcomers := bulkUsers(b, s, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := updateMembers(b, s, "acme", g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: members(newcomers[i])}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMemberAdd100 measures Entra's membership PATCH: 100 users,
// created as Entra creates them, added to a group in one request (durable).
// Each member is looked up and described in its event inside the write
// transaction, so this is the cost the member phase of a cycle serializes.
func BenchmarkMemberAdd100(b *testing.B) {
	s := openBenchStore(b, 0)
	ids := make([]string, 100*b.N)
	for i := range ids {
		ids[i] = create(b, s, "acme", entraUser(b, i)).ID()
	}
	g := create(b, s, "acme", group(b, `"displayName":"entra-100"`))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := updateMembers(b, s, "acme", g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: members(ids[100*i : 100*(i+1)]...)}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "members/s")
}

// BenchmarkMemberFilter measures `id eq G and members eq U` (a client
// checking one membership) on a group of 10 and of 100,000 members: with
// the membership answered by a key lookup, the two cost the same in time
// and in allocations.
func BenchmarkMemberFilter(b *testing.B) {
	for _, size := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			s := openBenchStore(b, 0)
			g, ids := buildGroup(b, s, size)
			f, err := scim.ParseFilter(scim.GroupResourceType, fmt.Sprintf(`id eq %q and members eq %q`, g.ID(), ids[size/2]))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				page, err := s.List(ctx, "acme", scim.GroupResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 100})
				if err != nil || page.Total != 1 {
					b.Fatalf("total %d, err %v", page.Total, err)
				}
			}
		})
	}
}

// BenchmarkSortedList measures a list with sortBy at the default limit of
// matches (scim.DefaultMaxSortMatches, 50,000 users): the first page by
// userName, descending. It reports the peak heap during the list besides
// what it allocates in all: a sorted list holds the sort keys and ids of
// the matches, not the matches.
func BenchmarkSortedList(b *testing.B) {
	s := openBenchStore(b, 0)
	bulkUsers(b, s, scim.DefaultMaxSortMatches)
	sortBy, err := scim.UserResourceType.ParsePath("userName")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		runtime.GC()
		peak = max(peak, peakHeap(func() {
			page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{SortBy: &sortBy, Descending: true, StartIndex: 1, Count: 100, SortLimit: scim.DefaultMaxSortMatches})
			if err != nil || len(page.Resources) != 100 {
				b.Fatalf("%d resources, %v", len(page.Resources), err)
			}
		}))
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}

// peakHeap runs fn and returns the most heap its objects (live, or dead
// and not yet swept) took meanwhile, sampled every 100 µs.
func peakHeap(fn func()) uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	fn()
	close(done)
	<-sampled
	return peak
}

// BenchmarkAuthenticate checks a bearer token among 1,000 stored ones, from
// parallel requests: a lookup by digest under a read lock, the last use
// noted atomically.
func BenchmarkAuthenticate(b *testing.B) {
	s := openBenchStore(b, 0)
	var secret string
	for i := range 1000 {
		sec, _, err := s.Tokens().Create(ctx, "acme", fmt.Sprintf("t%d", i), time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		secret = sec
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Authenticate(ctx, "acme", secret); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkFilterGetAnswer answers Entra's matching query, GET
// /Users?filter=userName eq "...", through the SCIM handler, on a tenant of
// 5,000 of Entra's users: the relay's own work for one, without the HTTP
// connection's.
func BenchmarkFilterGetAnswer(b *testing.B) {
	s := openBenchStore(b, 0)
	urls := make([]string, 5_000)
	if _, _ = runConcurrently(b, len(urls), 32, func(i int) error {
		u := entraUser(b, i)
		urls[i] = "/scim/v2/acme/Users?filter=" + url.QueryEscape(fmt.Sprintf("userName eq %q", u.String("userName")))
		_, err := s.Create(ctx, "acme", u)
		return err
	}); b.Failed() {
		return
	}
	h := scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req := httptest.NewRequest(http.MethodGet, urls[i*37%len(urls)], nil)
		req.Header.Set("Authorization", "Bearer acme-static-token-0123456789")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"totalResults":1,`)) {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
