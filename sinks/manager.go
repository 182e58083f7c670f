// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Config is one sink: where its events go and which ones.
type Config struct {
	Name   string // [a-z0-9][a-z0-9_-]*, at most 64 characters
	Type   string // webhook, the default and only type
	URL    string
	Secret string // whsec_<base64>
	// Events selects event types ("*", "user.*", "group.member_added" …); empty = all.
	Events []string
	// Tenants selects tenants; empty = all.
	Tenants []string
	// PreviousSecret signs too while Secret replaces it (rotation);
	// PreviousSecretExpires (RFC 3339) ends that by itself.
	PreviousSecret        string
	PreviousSecretExpires string
	Format                string // binary (default) or structured; empty with Batch
	// Batch, when set, sends several events per request
	// (application/cloudevents-batch+json).
	Batch        *Batch
	Timeout      time.Duration // per HTTP request, at most 5m; 0 is 10 s
	Headers      map[string]string
	AllowPrivate bool
	// AllowPrivateProxy lets the sink use a proxy from HTTPS_PROXY or
	// HTTP_PROXY on a loopback or private address.
	AllowPrivateProxy bool
	// Concurrency is how many requests are in flight at once, at most
	// 1024; 0 is 16: resources delivered to at once, or with Batch, batches.
	Concurrency int
	// Retry is the retry schedule; nil is DefaultSchedule.
	Retry Schedule
}

// Options configures a Manager.
type Options struct {
	Sinks []Config
	JS    jetstream.JetStream
	// Replicas is the replica count of the streams and buckets the sinks
	// create (the SCIMRELAY stream's).
	Replicas int
	// Retention is how long delivery attempts are kept.
	Retention time.Duration
	Logger    *slog.Logger
	// Registerer receives the sinks' metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// AckWait is how long JetStream waits before redelivering an event a
	// worker took; workers renew it while they deliver. Default 60 s.
	AckWait time.Duration
	// Rand is the jitter source (tests make it fixed); nil is math/rand.
	Rand func() float64
	// UserAgent is sent with every delivery, e.g. "scimrelay/1.2.0".
	UserAgent string
	// WorkerID names this process among the workers of its sinks; empty
	// generates one (host, pid and a random part).
	WorkerID string
	// Heartbeat is how often a worker announces itself to the other
	// workers of its sinks; every hand-off delay derives from it (see
	// timingFor). Default 1 s.
	Heartbeat time.Duration
	// MaxAckPending bounds the events a partition consumer has out at
	// once. Default 1,000.
	MaxAckPending int
	// LaneLimit is how many events of one resource may wait in a worker
	// before the resource is read from the stream instead. Default 64.
	LaneLimit int
	// Tracer, when set, traces every delivery attempt of an event that
	// carries a trace context, as a child of the request that made it, and
	// sends the attempt's traceparent with the webhook request. Nil: no
	// tracing, at no cost.
	Tracer trace.Tracer
}

// Manager runs every configured sink.
type Manager struct {
	o       Options
	log     *slog.Logger
	sinks   map[string]*sinkRuntime
	order   []string
	dlq     *deadLetters
	tries   *attemptLog
	metrics *metrics
}

// sinkRuntime is one sink: its config, its transport and its worker.
type sinkRuntime struct {
	cfg      Config
	sink     Sink
	patterns events.Patterns
	worker   *worker
}

// ErrUnknownSink means no sink has the name given.
var ErrUnknownSink = errors.New("no such sink")

// NewManager builds the sinks from their configuration, refusing what
// Options.Check refuses. It needs no NATS: Setup does.
func NewManager(o Options) (*Manager, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AckWait <= 0 {
		o.AckWait = 60 * time.Second
	}
	if o.Rand == nil {
		o.Rand = defaultRand
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 1000
	}
	if o.LaneLimit <= 0 {
		o.LaneLimit = 64
	}
	built, err := o.build()
	if err != nil {
		return nil, err
	}
	m := &Manager{o: o, log: o.Logger, sinks: map[string]*sinkRuntime{}, metrics: newMetrics(o.Registerer)}
	for _, s := range built {
		m.sinks[s.cfg.Name] = s
		m.order = append(m.order, s.cfg.Name)
	}
	return m, nil
}

// Names returns the sinks' names in configuration order.
func (m *Manager) Names() []string { return append([]string(nil), m.order...) }

// Setup creates the dead-letter, delivery and worker streams, and each
// sink's partition consumers and parking bucket. Call it before SCIM traffic
// is served, so that no event is missed; a sink added later starts with the
// events that come after its consumers were created.
func (m *Manager) Setup(ctx context.Context) error {
	js := m.o.JS
	t := timingFor(m.o.Heartbeat)
	var err error
	if m.dlq, err = ensureDLQ(ctx, js, m.o.Replicas); err != nil {
		return err
	}
	if m.tries, err = ensureDeliveries(ctx, js, m.o.Retention, m.o.Replicas, m.log); err != nil {
		return err
	}
	workers, err := ensureWorkersStream(ctx, js, t, m.o.Replicas)
	if err != nil {
		return err
	}
	partitions, err := events.Partitions(ctx, js)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", events.StreamName, err)
	}
	for _, name := range m.order {
		s := m.sinks[name]
		schedule := s.cfg.Retry
		if len(schedule) == 0 {
			schedule = DefaultSchedule
		}
		w := &worker{
			name: name, sink: s.sink, patterns: s.patterns, tenants: s.cfg.Tenants, schedule: schedule,
			js: js, stream: stream, dlq: m.dlq, attempts: m.tries, metrics: m.metrics,
			log: m.log.With("sink", name), partitions: partitions, ackWait: m.o.AckWait,
			maxPending: m.o.MaxAckPending, laneLimit: m.o.LaneLimit, t: t, now: time.Now, rnd: m.o.Rand, tracer: m.o.Tracer,
			sem: make(chan struct{}, max(s.cfg.Concurrency, 1)), owned: map[int]*partition{},
		}
		if bs, ok := s.sink.(batchSender); ok && s.cfg.Batch != nil {
			w.batches = newBatcher(bs, *s.cfg.Batch, w.sem)
			// A lane sends a batch's worth at once: a burst of one resource
			// is read back from the stream (one request per event) only
			// past two batches, within half the pending window.
			w.laneLimit = max(w.laneLimit, min(2*s.cfg.Batch.MaxEvents, w.maxPending/2))
		}
		w.members = &membership{js: js, stream: workers, sink: name, id: m.o.workerID(), t: t}
		for p := range partitions {
			if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, w.consumerConfig(p)); err != nil {
				return fmt.Errorf("creating the consumers of sink %s: %w", name, err)
			}
		}
		if err := m.removeStale(ctx, stream, name, partitions); err != nil {
			return err
		}
		if w.parked, err = parkingBucket(ctx, js, name, m.o.Replicas); err != nil {
			return err
		}
		s.worker = w
		if n, err := m.dlq.count(ctx, name); err == nil {
			m.metrics.deadLetters.WithLabelValues(name).Set(float64(n))
		}
	}
	return nil
}

// workerID names this process's worker of every sink.
func (o *Options) workerID() string {
	if o.WorkerID == "" {
		o.WorkerID = newWorkerID()
	}
	return o.WorkerID
}

// removeStale deletes what an earlier layout left for a sink: the single
// consumer and cursor bucket of releases before partitions, and partition
// consumers beyond the stream's partition count.
func (m *Manager) removeStale(ctx context.Context, stream jetstream.Stream, sink string, partitions int) error {
	old := "scimrelay-sink-" + sink
	prefix := old + "-P"
	names := stream.ConsumerNames(ctx)
	var stale []string
	for name := range names.Name() {
		n, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
		if name == old || (strings.HasPrefix(name, prefix) && err == nil && n >= partitions) {
			stale = append(stale, name)
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("listing the consumers of sink %s: %w", sink, err)
	}
	for _, name := range stale {
		if c, err := stream.Consumer(ctx, name); err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumPending+uint64(info.NumAckPending) > 0 {
				m.log.Warn("removing a consumer of an earlier layout that still had events; `scimrelay sinks replay` sends them again",
					"sink", sink, "consumer", name, "pending", info.NumPending, "unacknowledged", info.NumAckPending)
			}
		}
		if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("removing stale consumer %s: %w", name, err)
		}
		m.log.Info("removed a consumer of an earlier layout", "sink", sink, "consumer", name)
	}
	if err := m.o.JS.DeleteKeyValue(ctx, old); err == nil {
		m.log.Info("removed the ordering bucket of an earlier layout", "sink", sink, "bucket", old)
	}
	return nil
}

// Ready reports whether every sink's worker in this process delivers: it
// takes part among the sink's workers and consumes the partitions that
// fell to it.
func (m *Manager) Ready(context.Context) error {
	var errs []error
	for _, name := range m.order {
		w := m.sinks[name].worker
		if w == nil {
			errs = append(errs, fmt.Errorf("sink %s: not set up", name))
			continue
		}
		if err := w.ready(); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Run delivers until ctx ends, then hands this process's partitions to the
// other workers. A worker never stops on its own: it retries whatever
// fails, and Ready says so meanwhile.
func (m *Manager) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, name := range m.order {
		w := m.sinks[name].worker
		if w == nil {
			return fmt.Errorf("sink %s: Setup was not called", name)
		}
		g.Go(func() error { return w.run(gctx) })
	}
	g.Go(func() error { m.watchBacklog(gctx); return nil })
	return g.Wait()
}

// watchBacklog keeps the backlog and dead-letter gauges current.
func (m *Manager) watchBacklog(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range m.order {
			w := m.sinks[name].worker
			var pending, inFlight, parked float64
			var oldest time.Time
			for _, p := range w.ownedPartitions() {
				if c, err := m.o.JS.Consumer(ctx, events.StreamName, p.name); err == nil {
					if info, err := c.Info(ctx); err == nil {
						pending += float64(info.NumPending)
						inFlight += float64(info.NumAckPending)
						if info.NumPending+uint64(info.NumAckPending) > 0 {
							oldest = earliest(oldest, w.firstStored(ctx, info.AckFloor.Stream+1, append([]string{info.Config.FilterSubject}, info.Config.FilterSubjects...)...))
						}
					}
				}
				parked += float64(p.parkedCount())
				for _, l := range p.parkedFrom() {
					oldest = earliest(oldest, w.firstStored(ctx, l.from, l.filter))
				}
			}
			age := 0.0
			if !oldest.IsZero() {
				age = max(time.Since(oldest).Seconds(), 0)
			}
			m.metrics.oldest.WithLabelValues(name).Set(age)
			m.metrics.backlog.WithLabelValues(name, "pending").Set(pending)
			m.metrics.backlog.WithLabelValues(name, "in_flight").Set(inFlight)
			m.metrics.backlog.WithLabelValues(name, "parked").Set(parked)
			if n, err := m.dlq.count(ctx, name); err == nil {
				m.metrics.deadLetters.WithLabelValues(name).Set(float64(n))
			}
		}
	}
}

// firstStored returns when the stream stored its first event at or after
// sequence from on any of the subjects; zero when there is none (or the
// stream cannot be asked now).
func (w *worker) firstStored(ctx context.Context, from uint64, subjects ...string) time.Time {
	var first time.Time
	for _, subject := range subjects {
		if subject == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		raw, err := w.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		cancel()
		if err == nil {
			first = earliest(first, raw.Time)
		}
	}
	return first
}

// earliest returns the earlier of two times, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (m *Manager) sink(name string) (*sinkRuntime, error) {
	s, ok := m.sinks[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	if m.dlq == nil {
		return nil, errors.New("sinks are not set up yet")
	}
	return s, nil
}
