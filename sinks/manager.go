// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
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
	Tenants      []string
	Format       string        // binary (default) or structured
	Timeout      time.Duration // per HTTP request, at most 5m; 0 is 10 s
	Headers      map[string]string
	AllowPrivate bool
	// Concurrency is how many resources are delivered to at once, at most
	// 1024; 0 is 16.
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

// consumerName is a sink's durable consumer.
func consumerName(sink string) string { return "scimrelay-sink-" + sink }

// Setup creates the dead-letter and delivery streams and each sink's
// durable consumer and ordering bucket. Call it before SCIM traffic is
// served, so that no event is missed; a sink added later starts with the
// events that come after its consumer was created.
func (m *Manager) Setup(ctx context.Context) error {
	js := m.o.JS
	var err error
	if m.dlq, err = ensureDLQ(ctx, js, m.o.Replicas); err != nil {
		return err
	}
	if m.tries, err = ensureDeliveries(ctx, js, m.o.Retention, m.o.Replicas, m.log); err != nil {
		return err
	}
	for _, name := range m.order {
		s := m.sinks[name]
		cfg := jetstream.ConsumerConfig{
			Durable:       consumerName(name),
			Description:   "scimrelay sink " + name,
			DeliverPolicy: jetstream.DeliverNewPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       m.o.AckWait,
			MaxDeliver:    -1, // the sink's schedule decides when to give up
			MaxAckPending: 20_000,
		}
		for _, t := range s.cfg.Tenants {
			cfg.FilterSubjects = append(cfg.FilterSubjects, events.TenantSubjects(t))
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, cfg)
		if err != nil {
			return fmt.Errorf("creating the consumer of sink %s: %w", name, err)
		}
		kv, err := cursorBucket(ctx, js, name, m.o.Replicas)
		if err != nil {
			return err
		}
		schedule := s.cfg.Retry
		if len(schedule) == 0 {
			schedule = DefaultSchedule
		}
		s.worker = &worker{
			name: name, sink: s.sink, patterns: s.patterns, schedule: schedule, cons: cons,
			cursors: newCursors(kv), dlq: m.dlq, attempts: m.tries, metrics: m.metrics,
			log: m.log.With("sink", name), concurrency: max(s.cfg.Concurrency, 1), ackWait: m.o.AckWait,
			now: time.Now, rnd: m.o.Rand,
		}
		if n, err := m.dlq.count(ctx, name); err == nil {
			m.metrics.deadLetters.WithLabelValues(name).Set(float64(n))
		}
	}
	return nil
}

// Ready reports whether every sink's consumer exists.
func (m *Manager) Ready(ctx context.Context) error {
	for _, name := range m.order {
		if _, err := m.o.JS.Consumer(ctx, events.StreamName, consumerName(name)); err != nil {
			return fmt.Errorf("sink %s: %w", name, err)
		}
	}
	return nil
}

// Run delivers until ctx ends.
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
			if info, err := m.sinks[name].worker.cons.Info(ctx); err == nil {
				m.metrics.backlog.WithLabelValues(name, "pending").Set(float64(info.NumPending))
				m.metrics.backlog.WithLabelValues(name, "in_flight").Set(float64(info.NumAckPending))
			}
			if n, err := m.dlq.count(ctx, name); err == nil {
				m.metrics.deadLetters.WithLabelValues(name).Set(float64(n))
			}
		}
	}
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
