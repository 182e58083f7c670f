// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/scim"
)

// RequestMetrics counts SCIM requests by tenant, operation and status, and
// their latency, and says when each tenant's last request answered with a
// server error was.
type RequestMetrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	lastError *prometheus.GaugeVec

	// series holds the children of requests and latency by their labels,
	// so that a request finds its own without prometheus hashing its
	// labels twice and its status formatted each time. It grows as the
	// vectors do, one entry per series they hold; Forget drops a removed
	// tenant's from both.
	mu     sync.RWMutex
	series map[seriesKey]requestSeries
}

type seriesKey struct {
	tenant, operation string
	status            int
}

type requestSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// NewRequestMetrics registers the SCIM request series on reg.
func NewRequestMetrics(reg prometheus.Registerer) *RequestMetrics {
	m := &RequestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "scim", Name: "requests_total",
			Help: "SCIM requests by tenant, operation and HTTP status.",
		}, []string{"tenant", "operation", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "scimrelay", Subsystem: "scim", Name: "request_duration_seconds",
			Help:    "SCIM request latency by tenant and operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"tenant", "operation"}),
		// A timestamp, not only the counter: the identity provider tries a
		// request a server error answered again only at its next cycle
		// (Entra's come 40 minutes apart), so a rate of errors is zero most
		// of the time they go on, and an alert on a rate never held for
		// its `for` (docs/decisions.md, Tracing, metrics and logs).
		lastError: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "scim", Name: "error_timestamp_seconds",
			Help: "When this process last answered a SCIM request of the tenant with a server error (5xx, 501 Not Implemented aside), in unix seconds.",
		}, []string{"tenant"}),
		series: map[seriesKey]requestSeries{},
	}
	reg.MustRegister(m.requests, m.latency, m.lastError)
	return m
}

// Observe counts one answered SCIM request under tenant: the caller's to
// choose from a bounded set (a configured tenant, or "" for none), since a
// refused request's path names whatever its sender wrote. info.Tenant is
// empty when the credential was refused.
func (m *RequestMetrics) Observe(info *scim.RequestInfo, tenant string) {
	op := info.Operation
	if op == "" {
		op = "none"
	}
	s := m.seriesOf(seriesKey{tenant: tenant, operation: op, status: info.Status})
	s.requests.Inc()
	s.latency.Observe(info.Latency.Seconds())
	if info.Status >= 500 && info.Status != 501 {
		now := time.Now()
		m.lastError.WithLabelValues(tenant).Set(float64(now.Unix()) + float64(now.Nanosecond())/1e9)
	}
}

// seriesOf returns the series of k's labels, made on first use.
func (m *RequestMetrics) seriesOf(k seriesKey) requestSeries {
	m.mu.RLock()
	s, ok := m.series[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	s = requestSeries{
		requests: m.requests.WithLabelValues(k.tenant, k.operation, strconv.Itoa(k.status)),
		latency:  m.latency.WithLabelValues(k.tenant, k.operation),
	}
	m.mu.Lock()
	m.series[k] = s
	m.mu.Unlock()
	return s
}

// Forget drops the series of tenant, which a reload removed: left, every
// tenant ever served would keep its series until a restart.
func (m *RequestMetrics) Forget(tenant string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.series {
		if k.tenant == tenant {
			delete(m.series, k)
		}
	}
	m.requests.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
	m.latency.DeletePartialMatch(prometheus.Labels{"tenant": tenant})
	m.lastError.DeleteLabelValues(tenant)
}
