// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/scim"
)

// RequestMetrics counts SCIM requests by tenant, operation and status, and
// their latency.
type RequestMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewRequestMetrics registers the SCIM request series on reg.
func NewRequestMetrics(reg prometheus.Registerer) *RequestMetrics {
	m := &RequestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "scim", Name: "requests_total",
			Help: "SCIM requests by tenant, operation (create, get, list, search, replace, patch, delete, discovery) and HTTP status.",
		}, []string{"tenant", "operation", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "scimrelay", Subsystem: "scim", Name: "request_duration_seconds",
			Help:    "SCIM request latency by tenant and operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}, []string{"tenant", "operation"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Observe counts one answered SCIM request.
func (m *RequestMetrics) Observe(info *scim.RequestInfo) {
	op := info.Operation
	if op == "" {
		op = "none"
	}
	m.requests.WithLabelValues(info.Tenant, op, strconv.Itoa(info.Status)).Inc()
	m.latency.WithLabelValues(info.Tenant, op).Observe(info.Latency.Seconds())
}
