// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimrelay/scimrelay/scim"
)

func TestRequestMetricsCountEachSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewRequestMetrics(reg)
	for _, info := range []scim.RequestInfo{
		{Tenant: "acme", Operation: "list", Status: 200, Latency: time.Millisecond},
		{Tenant: "acme", Operation: "list", Status: 200, Latency: 3 * time.Millisecond},
		{Tenant: "acme", Operation: "list", Status: 429, Latency: time.Millisecond},
		{Tenant: "beta", Operation: "create", Status: 201, Latency: time.Millisecond},
		{Status: 404, Latency: time.Millisecond},
		{Tenant: "beta", Operation: "filter", Status: 501, Latency: time.Millisecond},
	} {
		m.Observe(&info, info.Tenant)
	}
	before := float64(time.Now().UnixNano()) / 1e9
	m.Observe(&scim.RequestInfo{Tenant: "acme", Operation: "create", Status: 507}, "acme")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			key := f.GetName() + labelsOf(metric)
			if c := metric.GetCounter(); c != nil {
				counts[key] = c.GetValue()
			}
			if h := metric.GetHistogram(); h != nil {
				counts[key] = float64(h.GetSampleCount())
			}
			if g := metric.GetGauge(); g != nil {
				counts[key] = g.GetValue()
			}
		}
	}
	want := map[string]float64{
		"scimrelay_scim_requests_total{operation=list,status=200,tenant=acme}":   2,
		"scimrelay_scim_requests_total{operation=list,status=429,tenant=acme}":   1,
		"scimrelay_scim_requests_total{operation=create,status=201,tenant=beta}": 1,
		"scimrelay_scim_requests_total{operation=none,status=404,tenant=}":       1,
		"scimrelay_scim_requests_total{operation=filter,status=501,tenant=beta}": 1,
		"scimrelay_scim_requests_total{operation=create,status=507,tenant=acme}": 1,
		"scimrelay_scim_request_duration_seconds{operation=list,tenant=acme}":    3,
		"scimrelay_scim_request_duration_seconds{operation=create,tenant=beta}":  1,
		"scimrelay_scim_request_duration_seconds{operation=none,tenant=}":        1,
		"scimrelay_scim_request_duration_seconds{operation=filter,tenant=beta}":  1,
		"scimrelay_scim_request_duration_seconds{operation=create,tenant=acme}":  1,
	}
	// A server error sets its tenant's error timestamp; 501 (a feature the
	// relay does not offer) and a 4xx set none.
	const lastError = "scimrelay_scim_error_timestamp_seconds{tenant=acme}"
	if at := counts[lastError]; at < before || at > float64(time.Now().UnixNano())/1e9 {
		t.Errorf("%s = %v, want the time of the 507 (%v or just after)", lastError, at, before)
	}
	delete(counts, lastError)
	if len(counts) != len(want) {
		t.Errorf("series: got %v, want %v", counts, want)
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s = %v, want %v", k, counts[k], v)
		}
	}
	m.Forget("acme")
	if n := testutil.CollectAndCount(m.lastError); n != 0 {
		t.Errorf("after Forget(acme), %d error timestamps are left, want none", n)
	}
}

func labelsOf(m *dto.Metric) string {
	s := "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + "=" + l.GetValue()
	}
	return s + "}"
}

// BenchmarkRequestMetricsObserve is what every SCIM request costs the
// metrics, from two goroutines as on the reference machine's two cores.
//
//	go test ./cmd/scimrelay/internal/httpmw -run x -bench RequestMetricsObserve -benchmem
func BenchmarkRequestMetricsObserve(b *testing.B) {
	m := NewRequestMetrics(prometheus.NewRegistry())
	b.SetParallelism(1)
	b.RunParallel(func(pb *testing.PB) {
		info := scim.RequestInfo{Tenant: "acme", Operation: "list", Status: 200, Latency: time.Millisecond}
		for pb.Next() {
			m.Observe(&info, info.Tenant)
		}
	})
}
