// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Config is one sink: where its events go and which ones.
type Config struct {
	Name   string // events.ValidName: [a-z0-9][a-z0-9_-]*, at most 64 characters
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
	// Tenants are the tenants this process's relay.yaml configures. A
	// sink's consumers, and their filter of its tenants, are shared by
	// every process of the sink; each process writes the filter for its
	// own tenants and keeps what the consumers take of the others, which
	// another process (a front end of other tenants) said (README,
	// Filters). Empty: the filter is this process's alone. SetTenants
	// changes them for the setups that follow (a reload).
	Tenants []string
	// OpenOnly is a delivery worker's (serve --role sinks): Setup and Apply
	// open the streams and buckets delivery uses as the SCIM front end made
	// them, waiting for them, and create or update none. Its NATS user may
	// not: a stream it could create or update could republish onto the
	// event stream, and every sink would deliver what it put there
	// (README, Who can reach what). Partition consumers it still creates.
	OpenOnly bool
	// SetupOnly is the SCIM front end's (serve --role scim): it sets the
	// sinks up and runs no worker, so it reads no sink's state from NATS
	// again and sets none of the sinks' gauges. A value it read once (its
	// dead letters at a start or a reload) stayed in its /metrics for good:
	// ScimrelayDeadLetters, the maximum over every process, fired on it
	// after the workers' queue was emptied.
	SetupOnly bool
	// Replicas is the replica count of the streams and buckets the sinks
	// create (the SCIMRELAY stream's).
	Replicas int
	// Retention is how long delivery attempts are kept.
	Retention time.Duration
	// AttemptsMaxBytes bounds the delivery attempts' stream; past it the
	// oldest go. 0: only Retention bounds it.
	AttemptsMaxBytes int64
	Logger           *slog.Logger
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
	// MarkerAge is how old the marker a parked resource's record leaves
	// when taken out grows before the partition's owner removes it from
	// the parking bucket. Default an hour; tests make it shorter.
	MarkerAge time.Duration
	// KeyWait is how long after an event was stored a worker keeps
	// reading the event stream's signing keys again, at most once a
	// second, when the event is signed by a key the stream does not name:
	// a front end whose key another's write left out writes it back
	// (events.KeepSigningKey, every events.KeyCheckInterval), and its
	// events are then delivered in order instead of dead-lettered.
	// Default three key checks (15 s); tests make it shorter.
	KeyWait time.Duration
	// claimRenew, in tests, renews partition claims more often than daily.
	claimRenew time.Duration
	// catchUpRecheck, in tests, sets how often a parked resource waiting
	// for its consumer looks again without being woken.
	catchUpRecheck time.Duration
	// probeEvery, in tests, sets how long a sink makes no request before a
	// parked resource is tried early (wake.go).
	probeEvery time.Duration
	// outageMin, in tests, sets how long a worker sees no success before
	// one is a recovery (wake.go).
	outageMin time.Duration
	// streamCheckEvery, in tests, sets how often Run reads the event
	// stream (streamCheckEvery).
	streamCheckEvery time.Duration
	// wakeEvery, in tests, sets the least time between two looks for
	// parked resources to wake (wake.go).
	wakeEvery time.Duration
	// ackLooks, in tests, sets how many looks in a row findLostAcks
	// waits before it sends acknowledgements again.
	ackLooks int
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
	// Trust says which events in the stream, and in the dead-letter queue,
	// the relay published: on an external NATS it holds the keys the
	// front end signs with (events.NewTrust), and a worker drops what is
	// not signed by one of them. Nil, for NATS embedded in the relay,
	// which no other client may publish into: events.Published's header
	// check alone.
	Trust *events.Trust
	// AddedFile is a file of the process's own (data_dir/sinks-added.json)
	// where Apply keeps when it added each sink until that sink's
	// consumers exist, so that a process restarted meanwhile still starts
	// them from the reload that added it. Empty: kept in memory only.
	AddedFile string
}

// Manager runs every configured sink. Apply changes the set of sinks while
// it runs, one sink at a time, leaving the others alone.
type Manager struct {
	o       Options
	log     *slog.Logger
	dlq     *deadLetters
	tries   *attemptLog
	metrics *metrics
	shared  *shared // what Setup made for every sink; nil before
	added   *addedSinks

	mu      sync.RWMutex
	sinks   map[string]*sinkRuntime
	order   []string
	runCtx  context.Context // set while Run runs: Apply starts new workers in it
	applyMu sync.Mutex      // one Apply at a time; it guards o.Tenants too
	// jobsMu is held, shared, by the redrives and replays that put dead
	// letters back or new, and alone by a tenant's purge of its dead
	// letters: one that ran beside the purge put back the purged tenant's
	// dead letter it had read before.
	jobsMu sync.RWMutex
}

// shared is what the sinks' workers share, made once by Setup.
type shared struct {
	t          timing
	stream     jetstream.Stream // SCIMRELAY
	workers    jetstream.Stream // the workers' announcements
	partitions int
	// keepFor is the stream's max_age as read at Setup, which every
	// worker's retries and park records derive from (setupSink).
	keepFor time.Duration
}

// sinkRuntime is one sink: its config, its transport and its worker.
type sinkRuntime struct {
	cfg      Config
	sink     Sink
	patterns events.Patterns
	worker   *worker
	// added is when Apply added the sink (zero for one configured at
	// start, unless Options.AddedFile says an Apply before a restart added
	// it). It matters until the sink's consumers exist: a setup that fails
	// (NATS away) and succeeds at a later Apply or start starts them from
	// then.
	added time.Time
	// stop ends the running worker (which hands its partitions over);
	// done is closed when it has. Both nil while it does not run.
	stop context.CancelFunc
	done chan struct{}
}

// idleCloser is a sink that keeps connections to its receiver.
type idleCloser interface{ CloseIdleConnections() }

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
	if o.KeyWait <= 0 {
		o.KeyWait = 3 * events.KeyCheckInterval
	}
	if o.WorkerID == "" { // set here, before any Apply copies o
		o.WorkerID = newWorkerID()
	}
	if o.OpenOnly {
		o.JS = openOnly{o.JS}
	}
	built, err := o.build()
	if err != nil {
		return nil, err
	}
	m := &Manager{o: o, log: o.Logger, sinks: map[string]*sinkRuntime{}, metrics: newMetrics(o.Registerer)}
	m.added = readAdded(o.AddedFile, o.Logger)
	for _, s := range built {
		// Added by a reload before a restart, its consumers not made
		// then: they start from that reload.
		s.added = m.added.since(s.cfg.Name)
		m.sinks[s.cfg.Name] = s
		m.order = append(m.order, s.cfg.Name)
		m.sayClearText(s)
	}
	return m, nil
}

// sayClearText says at Warn, once for each sink set up (not at each
// reload that leaves it as it was), that its deliveries cross a network
// unencrypted, when its url says so (ClearText).
func (m *Manager) sayClearText(s *sinkRuntime) {
	if why := ClearText(s.cfg.URL); why != "" {
		m.log.Warn("this sink's deliveries cross the network unencrypted: "+why, "sink", s.cfg.Name, "host", ClearTextHost(s.cfg.URL))
	}
}

// Names returns the sinks' names in configuration order.
func (m *Manager) Names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]string(nil), m.order...)
}

// runtimes returns the sinks in configuration order.
func (m *Manager) runtimes() []*sinkRuntime {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*sinkRuntime, 0, len(m.order))
	for _, name := range m.order {
		out = append(out, m.sinks[name])
	}
	return out
}

// Setup creates the dead-letter, delivery and worker streams, and each
// sink's partition consumers and parking bucket. Call it before SCIM traffic
// is served, so that no event is missed; a sink Apply adds later starts
// with the events stored from that Apply on, and so does one whose
// consumers that Apply could not make when Options.AddedFile kept its
// time across a restart.
func (m *Manager) Setup(ctx context.Context) error {
	js := m.o.JS
	sh := &shared{t: timingFor(m.o.Heartbeat)}
	if m.o.catchUpRecheck > 0 {
		sh.t.catchUpRecheck = m.o.catchUpRecheck
	}
	if m.o.claimRenew > 0 {
		sh.t.claimRenew = m.o.claimRenew
	}
	if m.o.probeEvery > 0 {
		sh.t.probeEvery = m.o.probeEvery
	}
	if m.o.outageMin > 0 {
		sh.t.outageMin = m.o.outageMin
	}
	if m.o.wakeEvery > 0 {
		sh.t.wakeEvery = m.o.wakeEvery
	}
	if m.o.ackLooks > 0 {
		sh.t.ackLooks = m.o.ackLooks
	}
	if m.o.MarkerAge > 0 {
		sh.t.keepMarkers(m.o.MarkerAge)
	}
	if err := checkAPILevel(ctx, js); err != nil {
		return err
	}
	// Each request is tried again while JetStream is not ready (a cluster
	// forming, a leader being elected): all of them may be repeated.
	retry := func(what string, op func(context.Context) error) error {
		return m.retry(ctx, what, op)
	}
	if err := retry("the dead-letter stream", func(ctx context.Context) (err error) {
		m.dlq, err = ensureDLQ(ctx, js, m.o.Replicas, m.o.Trust)
		return err
	}); err != nil {
		return err
	}
	if err := retry("the delivery attempts' stream", func(ctx context.Context) (err error) {
		m.tries, err = ensureDeliveries(ctx, js, m.o.Retention, m.o.AttemptsMaxBytes, m.o.Replicas, m.log)
		return err
	}); err != nil {
		return err
	}
	if err := retry("the workers' stream", func(ctx context.Context) (err error) {
		sh.workers, err = ensureWorkersStream(ctx, js, sh.t, m.o.Replicas)
		return err
	}); err != nil {
		return err
	}
	if err := retry("reading the stream's partitions", func(ctx context.Context) (err error) {
		sh.partitions, err = events.Partitions(ctx, js)
		return err
	}); err != nil {
		return err
	}
	if err := retry("opening the stream", func(ctx context.Context) (err error) {
		sh.stream, err = js.Stream(ctx, events.StreamName)
		return err
	}); err != nil {
		return fmt.Errorf("opening stream %s: %w", events.StreamName, err)
	}
	sh.keepFor = sh.stream.CachedInfo().Config.MaxAge
	m.shared = sh
	// A sink a reload added, then removed before its consumers were made,
	// starts afresh if it is added again.
	m.added.note(time.Time{}, nil, m.added.except(m.Names()))
	for _, s := range m.runtimes() {
		w, err := m.setupSink(ctx, s)
		if err != nil {
			return err
		}
		m.mu.Lock()
		s.worker = w
		m.mu.Unlock()
		m.added.note(time.Time{}, nil, []string{s.cfg.Name}) // its consumers exist
	}
	return nil
}

// retry runs op, a JetStream request that may be repeated, until it
// succeeds, fails for good or ctx ends (events.Retry); a delivery worker
// also waits for what it opens to be made (events.AwaitMade).
func (m *Manager) retry(ctx context.Context, what string, op func(context.Context) error) error {
	if m.o.OpenOnly {
		return events.AwaitMade(ctx, what, m.log, op)
	}
	return events.Retry(ctx, what, m.log, op)
}

// openOnly is a delivery worker's JetStream (Options.OpenOnly): where
// delivery creates or updates a stream or bucket to its configuration,
// it opens the one the SCIM front end made, as it is.
type openOnly struct{ jetstream.JetStream }

func (o openOnly) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return o.Stream(ctx, cfg.Name)
}

func (o openOnly) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return o.KeyValue(ctx, cfg.Bucket)
}

// minAPILevel is the JetStream API level the sinks need: pinned priority
// groups (level 1, nats-server 2.11) keep a partition with one worker at a
// time, and consumer reset (level 4, nats-server 2.14) hands it over.
const minAPILevel = 4

// checkAPILevel refuses a NATS whose JetStream is older than the sinks
// need. Such a server does not refuse a consumer's priority group, it
// ignores it: two workers would take the same partition's events and
// deliver a resource's events out of order, silently.
func checkAPILevel(ctx context.Context, js jetstream.JetStream) error {
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("reading JetStream's account information: %w", err)
	}
	return requireAPILevel(info.API.Level)
}

func requireAPILevel(level int) error {
	if level < minAPILevel {
		return fmt.Errorf("NATS offers JetStream API level %d, and delivery needs %d (nats-server 2.14 or later): pinned consumers keep each partition with one worker, and consumer reset hands it over", level, minAPILevel)
	}
	return nil
}

// setupSink creates one sink's partition consumers (or updates them to its
// configuration) and its parking bucket, and returns its worker, not
// started.
func (m *Manager) setupSink(ctx context.Context, s *sinkRuntime) (*worker, error) {
	js, sh, name := m.o.JS, m.shared, s.cfg.Name
	// The retries and the park records' life both derive from max_age as
	// read here: a record outlives the latest retry its worker schedules.
	keepFor := sh.keepFor
	// s.cfg is as build made it: Retry has its default.
	w := &worker{
		name: name, sink: s.sink, patterns: s.patterns, tenants: s.cfg.Tenants,
		schedule: s.cfg.Retry, keepFor: keepFor, since: s.added,
		js: js, stream: sh.stream, dlq: m.dlq, attempts: m.tries, metrics: m.metrics,
		log: m.log.With("sink", name), partitions: sh.partitions, ackWait: m.o.AckWait,
		maxPending: m.o.MaxAckPending, laneLimit: m.o.LaneLimit, t: sh.t, now: time.Now, rnd: m.o.Rand, tracer: m.o.Tracer, trust: m.o.Trust, keyWait: m.o.KeyWait,
		sem: make(chan struct{}, max(s.cfg.Concurrency, 1)), owned: map[int]*partition{},
		running: map[uint64]struct{}{}, unreleased: map[int]struct{}{},
	}
	scope := slices.Clone(m.o.Tenants)
	w.scope.Store(&scope)
	m.metrics.started(name)
	w.retries = newFailureLog(w.log, failureWindow, "delivery failed; will retry",
		"more deliveries failed and will be retried; past the first few a minute they are counted here, each is in the delivery log (scimrelay log --deliveries)")
	w.deadLettered = newFailureLog(w.log, failureWindow, "delivery failed for good; event dead-lettered",
		"more events were dead-lettered; past the first few a minute they are counted here, each is in the dead-letter queue (scimrelay dlq list) and the delivery log")
	w.foreigners = newFailureLog(w.log, failureWindow, "a message that is not from a partition's consumer reached its inbox: dropped (a NATS client that knows a worker's inbox can have JetStream send it its own consumer's messages; see README, Who can reach what)",
		"more messages that are not from a partition's consumer were dropped; past the first few a minute they are counted here")
	w.keyWaits = newFailureLog(w.log, failureWindow, "an event is signed by a key the event stream does not name; its resource waits for its front end to write the key back (each front end checks every few seconds) before the event is dead-lettered",
		"more events waited for the event stream to name their signing key; past the first few a minute they are counted here")
	w.ackFailures = newFailureLog(w.log, failureWindow, "acknowledging an event failed; it is sent again at the next heartbeat, and before a partition is handed over, until NATS takes it",
		"more acknowledgements failed and will be sent again; past the first few a minute they are counted here")
	// The sink's worker before this one in the process (a reload's) may
	// have left claims whose release failed: the first heartbeat lets go
	// of every claim of this worker id whose run is not this worker's.
	for n := range sh.partitions {
		w.unreleased[n] = struct{}{}
	}
	if bs, ok := s.sink.(batchSender); ok && s.cfg.Batch != nil {
		w.batches = newBatcher(bs, *s.cfg.Batch, w.sem)
		// A lane sends a batch's worth at once, and its events come in
		// faster than from a read back (a batch's worth per request, but
		// each request waits its turn on a busy server): a burst of one
		// resource, such as a group's member PATCHes, waits in its lane
		// up to half the pending window. Two such bursts in one partition
		// can fill the window, and its other resources then wait for the
		// lanes to drain (docs/decisions.md, Delivery).
		w.laneLimit = max(w.laneLimit, w.maxPending/2)
	}
	w.members = &membership{js: js, stream: sh.workers, sink: name, id: m.o.WorkerID, t: sh.t}
	for p := range sh.partitions {
		err := events.Retry(ctx, "the consumers of sink "+name, m.log, func(ctx context.Context) error {
			return w.setupConsumer(ctx, p)
		})
		if err != nil {
			return nil, fmt.Errorf("creating the consumers of sink %s: %w", name, err)
		}
	}
	if !m.o.OpenOnly { // the front end's to delete, with the rights to
		if err := m.removeStale(ctx, sh.stream, name, sh.partitions); err != nil {
			return nil, err
		}
	}
	err := m.retry(ctx, "the parking bucket of sink "+name, func(ctx context.Context) (err error) {
		w.parked, err = parkingBucket(ctx, js, name, m.o.Replicas, keepFor)
		return err
	})
	if err != nil {
		return nil, err
	}
	if n, err := m.dlq.count(ctx, name); err == nil && !m.o.SetupOnly {
		m.metrics.deadLetters.WithLabelValues(name).Set(float64(n))
	}
	return w, nil
}

// removeStale deletes what an earlier layout left for a sink: the single
// consumer and cursor bucket of releases before partitions, and partition
// consumers beyond the stream's partition count.
func (m *Manager) removeStale(ctx context.Context, stream jetstream.Stream, sink string, partitions int) error {
	old := oldCursorBucket(sink)
	names := stream.ConsumerNames(ctx)
	var stale []string
	for name := range names.Name() {
		if n, ok := consumerOf(sink, name); ok && (n < 0 || n >= partitions) {
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
	// Bounded: on an external NATS whose account does not allow the delete,
	// the request is dropped unanswered, and the setup must go on.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.o.JS.DeleteKeyValue(dctx, old); err == nil {
		m.log.Info("removed the ordering bucket of an earlier layout", "sink", sink, "bucket", old)
	}
	return nil
}

// Ready reports whether every sink's worker in this process delivers: it
// takes part among the sink's workers and consumes the partitions that
// fell to it.
func (m *Manager) Ready(context.Context) error {
	var errs []error
	for _, s := range m.runtimes() {
		name, w := s.cfg.Name, s.worker
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
// other workers; or until the event stream's partitions change or its
// max_age is lowered, when it stops the workers and returns an error
// saying so (watchStream), for its supervisor to start it again with the
// new ones. Otherwise a worker never stops on its own: it retries
// whatever fails, and Ready says so meanwhile.
func (m *Manager) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := m.startAll(ctx); err != nil {
		return err
	}
	backlog := make(chan struct{})
	go func() { defer close(backlog); m.watchBacklog(ctx) }()
	changed := make(chan error, 1)
	go func() { changed <- m.watchStream(ctx, cmp.Or(m.o.streamCheckEvery, streamCheckEvery)) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-changed:
		stop()
	}
	<-backlog
	// Every worker ends with ctx, those Apply started too; wait for each
	// to hand its partitions over.
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for _, s := range m.runtimes() {
		if s.done != nil {
			<-s.done
		}
	}
	return err
}

// streamCheckEvery is how often Run reads the event stream's partitions
// and max_age.
const streamCheckEvery = 10 * time.Second

// watchStream reads the event stream's partitions and max_age every
// interval, until ctx ends (nil) or they are not the ones the workers
// work with (an error saying so, at which Run stops them): other
// partitions, or a lower max_age. A front end started with other
// nats.stream.partitions changes them, and the workers would go on with
// the count they read at Setup: those of a raised count's new partitions
// went undelivered, and two workers reading different counts left some
// to no one. Stopped, the relay exits with the error, and its supervisor
// starts it again with the stream's count (the shipped Compose, Helm and
// systemd files restart a relay that fails). A read that fails changes
// nothing: the next one decides.
func (m *Manager) watchStream(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := m.o.JS.Stream(ctx, events.StreamName)
		if err != nil {
			m.log.Debug("reading the event stream", "err", err)
			continue
		}
		n, err := events.PartitionsOf(st.CachedInfo().Config)
		if err != nil {
			m.log.Debug("reading the event stream's partitions", "err", err)
			continue
		}
		age := st.CachedInfo().Config.MaxAge
		if had := m.shared.partitions; n != had {
			m.log.Error("the event stream's partitions changed (nats.stream.partitions): the delivery workers stop, so that the relay starts again and divides the new ones", "partitions", n, "were", had)
			return fmt.Errorf("the event stream has %d partitions, %d when delivery began: a front end changed nats.stream.partitions; start the relay again to deliver from all of them", n, had)
		}
		// A max_age lowered under running workers (a front end started
		// again alone with a lower nats.stream.max_age, or the stream
		// edited): their retries, scheduled against the max_age read at
		// Setup, would come after the stream drops the events they wait
		// for, neither delivered nor dead-lettered. Started again, a
		// worker brings each parked resource's next try before the drop
		// (loadParked). A raised one loses nothing: a retry is only
		// dead-lettered sooner than it need be until the next start.
		if was := m.shared.keepFor; age > 0 && (was <= 0 || age < was) {
			m.log.Error("the event stream's max_age was lowered (nats.stream.max_age): the delivery workers stop, so that the relay starts again and tries parked resources before the stream drops their events", "max_age", age, "was", was)
			return fmt.Errorf("the event stream keeps events %s, %s when delivery began: a front end or an operator lowered nats.stream.max_age; start the relay again so that no retry comes after the stream drops its event", age, was)
		}
	}
}

// startAll starts every sink's worker in ctx, which Apply then starts new
// ones in. A sink without one is idle: an Apply (a reload, which may come
// before Run) added it and could not set it up; the Apply that does
// starts it.
func (m *Manager) startAll(ctx context.Context) error {
	m.applyMu.Lock() // an Apply under way finishes first
	defer m.applyMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shared == nil {
		return errors.New("the sinks' Setup was not called")
	}
	m.runCtx = ctx
	for _, name := range m.order {
		if s := m.sinks[name]; s.worker != nil {
			m.start(s)
		}
	}
	return nil
}

// start runs a sink's worker in the Run context; m.mu is held.
func (m *Manager) start(s *sinkRuntime) {
	ctx, cancel := context.WithCancel(m.runCtx)
	s.stop, s.done = cancel, make(chan struct{})
	w, done := s.worker, s.done
	go func() {
		defer close(done)
		_ = w.run(ctx) // returns when ctx ends, partitions handed over
	}()
}

// SetTenants sets the tenants this process's relay.yaml configures
// (Options.Tenants) for the setups of later Applies: a reload calls it
// before Apply.
func (m *Manager) SetTenants(tenants []string) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.o.Tenants = slices.Clone(tenants)
}

// Changes says what Apply did, by sink name. Restarted names the sinks
// that kept their configuration but had no worker (a setup that failed
// before) and were set up again.
type Changes struct {
	Added, Removed, Changed, Restarted []string
}

// Apply makes the manager run the sinks of list: it sets up and starts the
// ones added (their consumers start with the events stored from this Apply
// on, even when their setup fails now and a later Apply, or Setup after a
// restart with Options.AddedFile, completes it),
// stops the ones removed (handing their partitions over, as at
// shutdown; their consumers stay, so that adding the sink again resumes
// where it stopped, until Forget deletes them), and restarts the ones whose configuration changed,
// after their in-flight deliveries end; the other sinks are not touched.
// It refuses what Check refuses, changing nothing. Before Setup it only
// replaces the configuration.
func (m *Manager) Apply(ctx context.Context, list []Config) (Changes, error) {
	now := time.Now()
	o := m.o
	o.Sinks = list
	built, err := o.build()
	if err != nil {
		return Changes{}, err
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	var ch Changes
	next := map[string]*sinkRuntime{}
	var order []string
	for _, s := range built {
		next[s.cfg.Name] = s
		order = append(order, s.cfg.Name)
	}
	m.mu.RLock()
	old := m.sinks
	m.mu.RUnlock()
	var stop []*sinkRuntime
	for name, s := range old {
		n, kept := next[name]
		switch {
		case !kept:
			ch.Removed = append(ch.Removed, name)
			stop = append(stop, s)
		case !reflect.DeepEqual(n.cfg, s.cfg):
			ch.Changed = append(ch.Changed, name)
			stop = append(stop, s)
			if n.cfg.URL != s.cfg.URL {
				m.sayClearText(n)
			}
			if s.worker == nil { // never set up: it still starts from when it was added
				n.added = s.added
			}
		default:
			next[name] = s // untouched: the running worker goes on
		}
	}
	for _, name := range order {
		if _, had := old[name]; !had {
			ch.Added = append(ch.Added, name)
			next[name].added = now
			m.sayClearText(next[name])
		}
	}
	// Kept before their setup is tried: a process that stops during it
	// (or after it failed) starts them from now when it starts again.
	m.added.note(now, ch.Added, ch.Removed)
	slices.Sort(ch.Removed)
	slices.Sort(ch.Changed)
	// Stop first, so that a changed sink's partitions are free for its new
	// worker; its events wait in the consumers meanwhile. All at once, as
	// at shutdown: each hand-over may wait up to its 8 s for a delivery in
	// flight, and one after another, a reload changing or removing many
	// sinks with slow receivers outlasted its 2 minutes and left every
	// changed and added sink idle.
	for _, s := range stop {
		if s.stop != nil {
			s.stop()
		}
	}
	for _, s := range stop {
		if s.stop != nil {
			<-s.done
		}
		// Nothing delivers through it any more: its kept connections
		// would otherwise linger until they idle out (90 s).
		if c, ok := s.sink.(idleCloser); ok {
			c.CloseIdleConnections()
		}
	}
	var errs []error
	if m.shared != nil {
		var made []string
		// Sinks never set up last (added now, or idle since an earlier
		// setup failed): a delivery worker waits for the front end to make
		// such a sink's bucket, up to ctx's end, and a sink that ran,
		// changed now, set up after that wait would fail with it.
		var ran, neverSetUp []string
		for _, name := range order {
			if prev, had := old[name]; had && prev.worker != nil {
				ran = append(ran, name)
			} else {
				neverSetUp = append(neverSetUp, name)
			}
		}
		for _, name := range slices.Concat(ran, neverSetUp) {
			s := next[name]
			if s.worker != nil {
				continue // kept as it was
			}
			idle := old[name] == s // kept, but its last setup failed
			if s.worker, err = m.setupSink(ctx, s); err != nil {
				// The sink stays configured but idle; Ready reports it.
				// One added now has never had its state read: its state
				// read is now, so that ScimrelaySinkStateStale fires a
				// minute on, as for a sink whose reads stopped.
				if _, had := old[name]; !had && !m.o.SetupOnly {
					m.metrics.stateRead.WithLabelValues(name).SetToCurrentTime()
				}
				errs = append(errs, err)
				continue
			}
			made = append(made, name)
			if idle {
				ch.Restarted = append(ch.Restarted, name)
			}
		}
		m.added.note(time.Time{}, nil, made) // their consumers exist
	}
	for _, name := range ch.Removed {
		m.warnStranded(ctx, old[name])
	}
	m.mu.Lock()
	m.sinks, m.order = next, order
	// Under m.mu and after the swap: gauges are set only while their sink
	// is current (ifCurrent), so a removed sink's series stay gone.
	for _, s := range stop {
		if _, kept := next[s.cfg.Name]; !kept {
			m.metrics.forget(s.cfg.Name)
		}
	}
	if m.runCtx != nil && m.runCtx.Err() == nil {
		for _, name := range order {
			if s := next[name]; s.worker != nil && s.done == nil {
				m.start(s)
			}
		}
	}
	m.mu.Unlock()
	return ch, errors.Join(errs...)
}

// warnStranded says when a sink Apply removed keeps undelivered events or
// dead letters, which nothing delivers while it is gone: its consumers
// keep its events and its parking bucket its parked resources, which
// adding the name back delivers (unless it was forgotten), but the event
// stream drops them past its max_age; its dead letters go only with a
// redrive to a sink that is configured (RedriveQuery.To), and age out
// otherwise. Forget deletes all of it. Its metrics go with it (a removed
// sink's series are forgotten), so this line is what an operator sees.
func (m *Manager) warnStranded(ctx context.Context, s *sinkRuntime) {
	name := s.cfg.Name
	if s.worker != nil {
		b, err := s.worker.backlog(ctx)
		if err != nil {
			m.log.WarnContext(ctx, "a removed sink's undelivered events could not be counted", "sink", name, "err", err)
		} else if b.pending > 0 || b.inFlight > 0 || b.parked > 0 {
			m.log.WarnContext(ctx, "a removed sink keeps undelivered events: adding it back to relay.yaml delivers them, each resource's in order, from where it stopped; meanwhile the event stream drops those older than nats.stream.max_age, and no metric shows them; scimrelay sinks forget "+name+" --yes deletes what it left",
				"sink", name, "events", b.pending+uint64(b.inFlight), "parked_resources", b.parked, "oldest_stored", b.oldest)
		}
	}
	if m.dlq == nil {
		return
	}
	dead, err := m.dlq.count(ctx, name)
	if err != nil || dead == 0 {
		return
	}
	m.log.WarnContext(ctx, "a removed sink keeps dead letters: scimrelay dlq list --sink "+name+" shows them, and scimrelay dlq redrive --sink "+name+" --to SINK --all delivers them to a configured sink; otherwise they age out, or scimrelay sinks forget "+name+" --yes deletes them with the rest of what the sink left",
		"sink", name, "dead_letters", dead, "kept_for", dlqRetention.String())
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
		m.observeBacklog(ctx, m.runtimes())
	}
}

// observeBacklog sets the backlog and dead-letter gauges of sinks, a
// snapshot of runtimes(); a sink Apply removed or replaced since is left
// alone. A figure that cannot be read now (NATS away) keeps the value it
// had: a 0 would tell an alert that the backlog cleared just when delivery
// stopped. The read timestamp moves only when every figure was read, so
// that its age says how stale they are.
func (m *Manager) observeBacklog(ctx context.Context, sinks []*sinkRuntime) {
	for _, s := range sinks {
		name, w := s.cfg.Name, s.worker
		if w == nil {
			continue
		}
		u, uerr := w.undelivered(ctx)
		dead, derr := m.dlq.count(ctx, name)
		if err := errors.Join(uerr, derr); err != nil {
			m.log.Debug("reading the sink's backlog; its gauges keep their last values", "sink", name, "err", err)
		}
		m.ifCurrent(s, func() {
			if uerr == nil {
				m.metrics.oldest.WithLabelValues(name).Set(u.age)
				m.metrics.backlog.WithLabelValues(name, "pending").Set(u.pending)
				m.metrics.backlog.WithLabelValues(name, "in_flight").Set(u.inFlight)
				m.metrics.backlog.WithLabelValues(name, "parked").Set(u.parked)
			}
			if derr == nil {
				m.metrics.deadLetters.WithLabelValues(name).Set(float64(dead))
			}
			if uerr == nil && derr == nil {
				m.metrics.stateRead.WithLabelValues(name).SetToCurrentTime()
			}
		})
	}
}

// backlogFigures are what the backlog gauges show of a sink in one worker.
type backlogFigures struct {
	pending, inFlight, parked float64
	age                       float64 // seconds since the oldest was stored; 0: none waits
}

// undelivered reads the sink's events not yet delivered in the partitions
// this worker owns. It fails when any of them cannot be read, and while
// the worker is not among the sink's workers (it never joined, or lost
// contact and let its partitions go): owning none then says nothing of
// what waits in them.
func (w *worker) undelivered(ctx context.Context) (backlogFigures, error) {
	lost := errors.New("not among the sink's workers now: cannot reach them through NATS")
	if !w.members.leaseValid() {
		return backlogFigures{}, lost
	}
	var u backlogFigures
	var waiting []parkedAt // where undelivered events start
	for _, p := range w.ownedPartitions() {
		// Consumer reads the consumer's info: CachedInfo is current.
		c, err := w.js.Consumer(ctx, events.StreamName, p.name)
		if err != nil {
			return backlogFigures{}, fmt.Errorf("reading consumer %s: %w", p.name, err)
		}
		info := c.CachedInfo()
		u.pending += float64(info.NumPending)
		u.inFlight += float64(info.NumAckPending)
		waiting = append(waiting, consumerWaiting(info)...)
		u.parked += float64(p.parkedCount())
		waiting = append(waiting, p.parkedFrom()...)
	}
	// Again after the reads: a worker whose lease lapsed meanwhile may
	// have let its partitions go before the snapshot above.
	if !w.members.leaseValid() {
		return backlogFigures{}, lost
	}
	oldest, err := oldestStored(waiting, w.firstStored(ctx))
	if err != nil {
		return backlogFigures{}, err
	}
	if !oldest.IsZero() {
		u.age = max(time.Since(oldest).Seconds(), 0)
	}
	return u, nil
}

// ifCurrent calls set, which sets series of s, only while s is one of the
// manager's sinks, holding m.mu: Apply swaps the sinks and forgets a
// removed one's series under it, so that they do not come back (a replay
// or redrive still running when its sink is removed).
func (m *Manager) ifCurrent(s *sinkRuntime, set func()) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.sinks[s.cfg.Name] == s {
		set()
	}
}

// firstStored returns a lookup of the first event the stream stored at or
// after a place (sequence and filter): its sequence and when it was
// stored; 0 when there is none.
func (w *worker) firstStored(ctx context.Context) func(parkedAt) (uint64, time.Time, error) {
	return func(at parkedAt) (uint64, time.Time, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		raw, err := w.stream.GetMsg(ctx, at.from, jetstream.WithGetMsgSubject(at.filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, time.Time{}, nil
		case err != nil:
			return 0, time.Time{}, fmt.Errorf("reading the stream from sequence %d: %w", at.from, err)
		}
		return raw.Sequence, raw.Time, nil
	}
}

// oldestStored returns when the oldest of the waiting events was stored,
// zero when none is. first finds the first message at or after a place
// (its stream sequence and time; 0 when there is none). It looks up only
// the places that can hold the oldest: the stream stores in sequence
// order, and a place's first message is at or after it, so once a message
// was found at sequence s, no place from s on can be older. With a
// receiver down and thousands of resources parked, that is a lookup or two
// every few seconds, not thousands.
func oldestStored(waiting []parkedAt, first func(parkedAt) (uint64, time.Time, error)) (time.Time, error) {
	slices.SortFunc(waiting, func(a, b parkedAt) int { return cmp.Compare(a.from, b.from) })
	best, oldest := uint64(math.MaxUint64), time.Time{}
	for _, at := range waiting {
		if at.from >= best {
			break
		}
		seq, t, err := first(at)
		if err != nil {
			return time.Time{}, err
		}
		if seq != 0 && seq < best {
			best, oldest = seq, t
		}
	}
	return oldest, nil
}

func (m *Manager) sink(name string) (*sinkRuntime, error) {
	m.mu.RLock()
	s, ok := m.sinks[name]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownSink, name)
	}
	if m.dlq == nil {
		return nil, errors.New("sinks are not set up yet")
	}
	return s, nil
}

// Narrow is called by a reload before it serves tenants, the tenants it
// configures: it writes the consumers of each sink that lists tenants
// again where tenants holds one the process does not serve yet and the
// sink, as next (the sinks the reload configures) lists it, does not
// take. Its filter may still take that tenant: one this process's
// relay.yaml removed is kept as another front end's (othersKept), and a
// tenant given the name again, a new customer, purged before or not,
// was sent to the sink until a restart
// (TestReaddedTenantReachesNoSinkThatDoesNotListIt). A delivery worker
// serves no tenant: a front end's reload narrows the consumers they share.
func (m *Manager) Narrow(ctx context.Context, tenants []string, next []Config) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.RLock()
	cur := make([]*sinkRuntime, 0, len(m.order))
	for _, name := range m.order {
		cur = append(cur, m.sinks[name])
	}
	m.mu.RUnlock()
	var errs []error
	for _, s := range cur {
		listed := s.cfg.Tenants
		if i := slices.IndexFunc(next, func(c Config) bool { return c.Name == s.cfg.Name }); i >= 0 {
			listed = next[i].Tenants
		}
		errs = append(errs, m.narrow(ctx, s, tenants, listed))
	}
	return errors.Join(errs...)
}

// narrow writes the consumers of s again with tenants as the process's
// when tenants holds one the process does not serve yet and listed (the
// sink's tenants) leaves out. The caller holds applyMu: setups are its.
func (m *Manager) narrow(ctx context.Context, s *sinkRuntime, tenants, listed []string) error {
	w := s.worker
	if m.shared == nil || w == nil || len(w.tenants) == 0 || len(listed) == 0 {
		return nil
	}
	// Against the tenants the process serves (the last reload that took
	// them), not the worker's scope: a worker whose sink a reload left
	// unchanged keeps the scope of its setup, which may still hold a
	// tenant given up since (and taken by another front end meanwhile),
	// and a reload that failed after this wrote scope served nothing new.
	if !slices.ContainsFunc(tenants, func(t string) bool {
		return !slices.Contains(m.o.Tenants, t) && !slices.Contains(listed, t)
	}) {
		return nil
	}
	// Kept as it was when a write fails: the reload fails with the running
	// configuration kept, and the next one must find the gain again and
	// write every consumer (some may still take the tenant).
	was := w.scope.Load()
	scope := slices.Clone(tenants)
	w.scope.Store(&scope)
	for p := range m.shared.partitions {
		if err := events.Retry(ctx, "the consumers of sink "+s.cfg.Name, m.log, func(ctx context.Context) error {
			return w.setupConsumer(ctx, p)
		}); err != nil {
			w.scope.Store(was)
			return fmt.Errorf("holding the consumers of sink %s to its tenants: %w", s.cfg.Name, err)
		}
	}
	return nil
}
