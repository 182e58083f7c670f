// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sinks' Prometheus series.
type metrics struct {
	outcomes    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	deadLetters *prometheus.GaugeVec
	backlog     *prometheus.GaugeVec
	partitions  *prometheus.GaugeVec
	oldest      *prometheus.GaugeVec
	stateRead   *prometheus.GaugeVec
	earlyTries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "events_total",
			Help: "Events handled per sink by outcome: delivered, retry, dead_lettered, filtered (type not wanted), duplicate (already delivered), redriven, replayed, not_published (a message in the event stream the relay did not publish, dropped).",
		}, []string{"sink", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "delivery_duration_seconds",
			Help:    "Time to deliver an event successfully, in-request retries included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"sink"}),
		deadLetters: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "dead_letters",
			Help: "Events in the sink's dead-letter queue.",
		}, []string{"sink"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "backlog",
			Help: "Events not yet delivered in the partitions this worker owns: waiting in the stream (pending), taken by the worker (in_flight); and resources read back from the stream after a failure or a burst (parked).",
		}, []string{"sink", "state"}),
		partitions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "partitions",
			Help: "Partitions of the sink this worker owns (delivers, or waits to take over).",
		}, []string{"sink"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "oldest_undelivered_age_seconds",
			Help: "Age of the oldest event not yet delivered (nor dead-lettered) in the partitions this worker owns, parked resources included; 0 when none waits. Alert when it keeps growing: the receiver is down or too slow.",
		}, []string{"sink"}),
		stateRead: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "state_read_timestamp_seconds",
			Help: "When the sink's backlog, oldest undelivered age and dead letters were last read from NATS (every 5 s). A figure that cannot be read keeps its last value: alert when time() minus this grows past a minute.",
		}, []string{"sink"}),
		earlyTries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "sink", Name: "early_tries_total",
			Help: "Parked resources tried before their scheduled retry because the receiver seemed back: after it answered again (reason recovery), or on a quiet sink (reason probe).",
		}, []string{"sink", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.outcomes, m.latency, m.deadLetters, m.backlog, m.partitions, m.oldest, m.stateRead, m.earlyTries)
	}
	return m
}

// forget drops a removed sink's series, so that no stale value stays and
// a process that has renamed sinks for months does not export them all;
// a sink added back starts its counters again, which rate() reads as a
// reset.
func (m *metrics) forget(sink string) {
	for _, v := range []*prometheus.GaugeVec{m.deadLetters, m.partitions, m.oldest, m.stateRead} {
		v.DeleteLabelValues(sink)
	}
	m.backlog.DeletePartialMatch(prometheus.Labels{"sink": sink})
	m.outcomes.DeletePartialMatch(prometheus.Labels{"sink": sink})
	m.earlyTries.DeletePartialMatch(prometheus.Labels{"sink": sink})
	m.latency.DeleteLabelValues(sink)
}

func (m *metrics) outcome(sink, outcome string) { m.outcomes.WithLabelValues(sink, outcome).Inc() }

// outcomes are the outcomes of scimrelay_sink_events_total, and
// earlyTryReasons the reasons of scimrelay_sink_early_tries_total: each is
// exported from 0 for every sink as it starts (started), so that an alert
// on increase() or rate() sees the first dead letter or foreign message,
// which a series born at 1 hides.
var (
	outcomes        = []string{"delivered", "retry", "dead_lettered", "filtered", "purged", "duplicate", "redriven", "replayed", "not_published"}
	earlyTryReasons = map[bool]string{false: "recovery", true: "probe"}
)

// started exports a sink's counters from 0.
func (m *metrics) started(sink string) {
	for _, o := range outcomes {
		m.outcomes.WithLabelValues(sink, o)
	}
	for _, reason := range earlyTryReasons {
		m.earlyTries.WithLabelValues(sink, reason)
	}
}

func (m *metrics) earlyTry(sink string, probe bool) {
	m.earlyTries.WithLabelValues(sink, earlyTryReasons[probe]).Inc()
}

func (m *metrics) delivered(sink string, d time.Duration) {
	m.outcomes.WithLabelValues(sink, "delivered").Inc()
	m.latency.WithLabelValues(sink).Observe(d.Seconds())
}
