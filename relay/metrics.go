// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metrics are the store's Prometheus series: the outbox and its publisher,
// the provisioning log, tokens.
type Metrics struct {
	reg         prometheus.Registerer
	publishLag  prometheus.Histogram
	published   prometheus.Counter
	quarantined prometheus.Counter
	resent      prometheus.Counter
}

// NewMetrics registers the store's metrics. The outbox, token and log
// series are read from s and l when scraped.
func NewMetrics(reg prometheus.Registerer, s *Store, l *RequestLog) *Metrics {
	m := &Metrics{
		reg: reg,
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "quarantined_total",
			Help: "Outbox rows set aside because they can never be published (see GET /admin/v1/outbox/quarantine).",
		}),
		publishLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "publish_lag_duration_seconds",
			Help:    "Time from a change's commit to JetStream's acknowledgement of its event.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 120, 600},
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "published_total",
			Help: "Events published to JetStream and removed from the outbox.",
		}),
		resent: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "resent_total",
			Help: "Events sent to JetStream again for want of an acknowledgement within a second (a stream leader that stopped with them in hand, a slow server); JetStream stores each once.",
		}),
	}
	commitTime := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "scimrelay", Subsystem: "store", Name: "commit_duration_seconds",
		Help:    "Time one commit of the data file took, fsync included (writes waiting meanwhile share the next).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})
	commitSize := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "scimrelay", Subsystem: "store", Name: "commit_writes",
		Help:    "Writes (SCIM changes, log batches, outbox deletions) one commit held.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000},
	})
	observe := func(d time.Duration, writes int) {
		commitTime.Observe(d.Seconds())
		commitSize.Observe(float64(writes))
	}
	s.commits.observe.Store(&observe)
	reg.MustRegister(m.publishLag, m.published, m.quarantined, m.resent, commitTime, commitSize)
	// The series read from the data file at each scrape, bounded together.
	read := collectors{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "quarantine",
			Help: "Outbox rows in quarantine now.",
		}, func() float64 {
			n, err := s.QuarantineCount()
			if err != nil {
				return -1
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "depth",
			Help: "Committed events in the outbox: waiting to be published, or published and kept until NATS has written them to disk (three times nats.sync_interval). Grows while NATS is away.",
		}, func() float64 {
			n, err := s.OutboxDepth()
			if err != nil {
				return -1
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "outbox", Name: "oldest_age_seconds",
			Help: "Age of the oldest event in the outbox, kept ones included (0 when empty): grows while NATS is away or publishing fails.",
		}, func() float64 {
			t, err := s.OutboxOldest()
			switch {
			case err != nil:
				return -1
			case t.IsZero():
				return 0
			}
			return max(s.now().Sub(t).Seconds(), 0)
		}),
		tokenExpiry{s},
		credentialSeen{s},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "store", Name: "file_bytes",
			Help: "Size of the data file, its free pages included.",
		}, func() float64 {
			file, _, err := s.FileSpace()
			if err != nil {
				return -1
			}
			return float64(file)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "store", Name: "free_bytes",
			Help: "Size of the data file's free pages: reused before the file grows, and given back to the disk by scimrelay compact (with the relay stopped).",
		}, func() float64 {
			_, free, err := s.FileSpace()
			if err != nil {
				return -1
			}
			return float64(free)
		}),
	}
	if l != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "scimrelay", Subsystem: "provisioning_log", Name: "dropped_total",
			Help: "Provisioning log entries dropped: the log writer was behind, or could not write them (a full data disk).",
		}, func() float64 { return float64(l.Dropped()) }))
		read = append(read, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "scimrelay", Subsystem: "provisioning_log", Name: "oldest_timestamp_seconds",
			Help: "When the oldest SCIM request the provisioning log keeps was filed (unix seconds; 0 when empty): time() minus this is how far back the log reaches, which max_bytes may keep shorter than the retention.",
		}, func() float64 {
			t, err := l.Oldest()
			switch {
			case err != nil:
				return -1
			case t.IsZero():
				return 0
			}
			return unixSeconds(t)
		}))
	}
	reg.MustRegister(newBoundedCollector(read, scrapeReadBound))
	return m
}

// scrapeReadBound bounds what one scrape waits for the series read from
// the data file.
const scrapeReadBound = 2 * time.Second

// collectors collects several collectors as one.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// newBoundedCollector collects c within bound at each scrape; past it, the
// scrape answers the series c gave last and the collection goes on in the
// background, one at a time, for the next scrape. A read of the data file
// waits behind a remap of it, which waits for every read under way, a
// backup's included (README, Backup and recovery): every series of the
// scrape, and the scrape itself, waited with it, and Prometheus took the
// whole process for down, scimrelay_ready among its series.
func newBoundedCollector(c prometheus.Collector, bound time.Duration) prometheus.Collector {
	return &boundedCollector{inner: c, bound: bound}
}

type boundedCollector struct {
	inner prometheus.Collector
	bound time.Duration

	mu      sync.Mutex
	last    []prometheus.Metric // what the last collection to end gave
	running chan struct{}       // closed when the collection under way ends; nil when none is
}

func (c *boundedCollector) Describe(ch chan<- *prometheus.Desc) { c.inner.Describe(ch) }

func (c *boundedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	done := c.running
	if done == nil {
		done = make(chan struct{})
		c.running = done
		go c.collect(done)
	}
	c.mu.Unlock()
	timer := time.NewTimer(c.bound)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	for _, m := range last {
		ch <- m
	}
}

// collect runs one collection of the inner collector and keeps what it
// gave.
func (c *boundedCollector) collect(done chan struct{}) {
	got := make(chan prometheus.Metric)
	go func() {
		c.inner.Collect(got)
		close(got)
	}()
	var ms []prometheus.Metric
	for m := range got {
		// A GaugeFunc reads when written, not when collected: write it
		// here, in the background.
		var v dto.Metric
		if err := m.Write(&v); err == nil {
			ms = append(ms, written{m.Desc(), &v})
		}
	}
	c.mu.Lock()
	c.last, c.running = ms, nil
	c.mu.Unlock()
	close(done)
}

// ObserveQuarantined records an outbox row put in quarantine.
func (m *Metrics) ObserveQuarantined() { m.quarantined.Inc() }

// ObserveResent records an event sent to JetStream again.
func (m *Metrics) ObserveResent() { m.resent.Inc() }

// WatchPublisher exports when p last published, so that an alert (or a
// test) can see publishing resume after NATS comes back.
func (m *Metrics) WatchPublisher(p *Publisher) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "scimrelay", Subsystem: "outbox", Name: "last_published_timestamp_seconds",
		Help: "When JetStream last acknowledged an event from the outbox (unix seconds; 0 before the first).",
	}, func() float64 {
		t := p.LastPublished()
		if t.IsZero() {
			return 0
		}
		return unixSeconds(t)
	}))
}

// unixSeconds is t in unix seconds, as a timestamp metric has it. Not by
// UnixNano, which holds no time after 2262: a token that expires in 2319
// read as expired in 1734, and fired the expiry alert.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

// ObservePublished records an event JetStream acknowledged.
func (m *Metrics) ObservePublished(committed time.Time) {
	m.published.Inc()
	m.publishLag.Observe(time.Since(committed).Seconds())
}

// tokenExpiry reports, at each scrape, when each live token expires.
type tokenExpiry struct{ s *Store }

var (
	tokenExpiryDesc = prometheus.NewDesc("scimrelay_token_expiry_timestamp_seconds",
		"When a SCIM token or OAuth client (kind) expires, in unix seconds. Alert well before it (time() > value - 14*86400): an expired credential quarantines the Entra job.",
		[]string{"tenant", "kind", "token", "name"}, nil)
	// tokenExpiryDeprecatedDesc is the name before the conventions; kept
	// for one release (it costs nothing: computed at scrape).
	tokenExpiryDeprecatedDesc = prometheus.NewDesc("scimrelay_token_expiry_seconds",
		"DEPRECATED, removed in the next release: use scimrelay_token_expiry_timestamp_seconds. Seconds until a SCIM token or OAuth client (kind) expires (negative: expired).",
		[]string{"tenant", "kind", "token", "name"}, nil)
)

func (c tokenExpiry) Describe(ch chan<- *prometheus.Desc) {
	ch <- tokenExpiryDesc
	ch <- tokenExpiryDeprecatedDesc
}

func (c tokenExpiry) Collect(ch chan<- prometheus.Metric) {
	now := c.s.now()
	for _, t := range c.s.TokenExpiries() {
		ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue, unixSeconds(t.Expires), t.Tenant, string(t.Kind), t.ID, t.Name)
		ch <- prometheus.MustNewConstMetric(tokenExpiryDeprecatedDesc, prometheus.GaugeValue, t.Expires.Sub(now).Seconds(), t.Tenant, string(t.Kind), t.ID, t.Name)
	}
}

// written is a metric as one collection wrote it.
type written struct {
	desc *prometheus.Desc
	v    *dto.Metric
}

func (w written) Desc() *prometheus.Desc { return w.desc }

func (w written) Write(out *dto.Metric) error {
	out.Label, out.Gauge, out.Counter, out.Untyped = w.v.Label, w.v.Gauge, w.v.Counter, w.v.Untyped
	out.Histogram, out.Summary, out.TimestampMs = w.v.Histogram, w.v.Summary, w.v.TimestampMs
	return nil
}
