// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/console"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/oauth"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/tracing"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

// Roles a relay process can take.
const (
	roleAll   = "all"   // everything on one machine (the default)
	roleSCIM  = "scim"  // SCIM front end and outbox publisher
	roleSinks = "sinks" // delivery workers only; no bbolt file
)

// server is one scimrelay process: what serve wires together from relay.yaml.
type server struct {
	mu   sync.RWMutex   // guards cfg, which a reload replaces
	cfg  *config.Config // read it with config()
	role string
	log  *slog.Logger
	out  io.Writer        // a terminal, where generated secrets are printed once; nil: they go to a file
	now  func() time.Time // nil: time.Now

	registry   *prometheus.Registry
	store      *relay.Store
	natsServer *natsbus.Embedded // nil with an external NATS
	nc         *nats.Conn
	js         jetstream.JetStream
	publisher  *relay.Publisher
	trust      *events.Trust // which events the relay published; nil with NATS embedded
	reqLog     *relay.RequestLog
	metrics    *relay.Metrics
	reqMetrics *httpmw.RequestMetrics
	sinks      *sinks.Manager
	jobs       *jobs.Runner         // the admin API's redrives and replays
	healer     *natsbus.StoreHealer // embedded NATS only
	tracing    *tracing.Tracing     // nil: not tracing (no OTEL_* asks for it)
	adminToken string
	// subscribers admits the embedded server's subscribers: the admin
	// API changes them, a reload of the tenants fits them to the tenants.
	subscribers *admin.SubscriberRegistry
	// tokenAttempts limits wrong admin tokens on the admin API and the
	// console's sign-in alike.
	tokenAttempts *admin.TokenAttempts
	console       *console.Console // nil: admin.console is off
	// adminReadTimeout is how long a request on the admin listener may
	// take to be read (admin.DefaultReadTimeout; tests shorten it).
	adminReadTimeout time.Duration
	// markerAge is how old the parking buckets' markers grow
	// (sinks.Options.MarkerAge; tests shorten it).
	markerAge time.Duration
	// keyWait is how long a worker waits for the stream to name the key
	// of an event it does not know (sinks.Options.KeyWait; tests shorten
	// it).
	keyWait time.Duration
	// signer signs a front end's events on an external NATS, with the key
	// it keeps named in the event stream every keyCheck
	// (events.KeepSigningKey; tests shorten it), which keys rotate events
	// changes; nil when it does not sign.
	signer   *events.Signer
	keyCheck time.Duration
	// maxReload bounds a reload (maxReload; tests shorten it).
	maxReload time.Duration
	stopping  atomic.Bool // set when shutdown begins: no longer ready

	scimHTTP, adminHTTP *http.Server
	scimLn, adminLn     net.Listener

	// What a reload changes (reload.go).
	configPath                string         // relay.yaml; "": no reload
	level                     *slog.LevelVar // the log's level; nil: fixed
	reloadMu                  sync.Mutex     // one reload at a time
	reloads                   reloadMetrics  // the last reload's outcome
	scimCurrent               atomic.Pointer[http.Handler]
	scimLimiter, oauthLimiter *httpmw.Limiter

	// serving ends when the relay stops (run's context); it ends a reload
	// under way, which the admin API's client cannot.
	serving atomic.Pointer[context.Context]
}

// Guards that neither package can hold: relay and natsbus may not import
// each other, and httpmw may not import oauth, which imports it.
var (
	_ relay.StoreHealer = (*natsbus.StoreHealer)(nil)
	_ oauth.Limiter     = (*httpmw.Limiter)(nil)
)

// config returns the configuration in force.
func (s *server) config() *config.Config {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cfg
}

// serverOption adjusts a server. serve passes withReload (reload.go); the
// others are test seams, shortening a wait or fixing the clock, and live in
// serveroptions_test.go so that production code cannot reach them.
type serverOption func(*server)

// newServer opens everything serve needs, in the order that lets it refuse
// early: the data file (so that a second serve fails at once), NATS, the
// stream, the sink consumers (before any SCIM request can produce an event),
// tokens, and the listeners. On error it closes what it opened.
func newServer(ctx context.Context, cfg *config.Config, role string, log *slog.Logger, out io.Writer, opts ...serverOption) (_ *server, err error) {
	if problems := checkConfig(cfg, role); len(problems) > 0 {
		return nil, sortProblems(problems)
	}
	warnEveryoneReads(log, filesRead(cfg, role))
	if why := clearTextOrigin(cfg); why != "" && role != roleSinks {
		log.Warn("public_url: " + why)
	}
	if !cfg.Embedded() && cfg.Sets("nats.listen") {
		// The example relay.yaml sets it: one switched to an external
		// NATS by adding nats.url keeps a setting that does nothing.
		log.Warn("nats.listen is the embedded NATS server's listener, and nats.url names an external NATS: the relay runs no NATS server and does not use nats.listen; remove it (subscribers connect to the external NATS)",
			"nats.listen", cfg.NATS.Listen)
	}
	s := &server{cfg: cfg, role: role, log: log, out: out, registry: prometheus.NewRegistry(), keyCheck: events.KeyCheckInterval, maxReload: maxReload}
	for _, o := range opts {
		o(s)
	}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfoMetric(currentBuild()))
	s.reloads = newReloadMetrics(s.registry)
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.tracing, err = tracing.FromEnv(ctx, versionString(), log.With("component", "tracing")); err != nil {
		return nil, err
	}
	if s.tracing != nil {
		log.Info("tracing: exporting spans over OTLP/HTTP as the OTEL_* environment variables say")
	}
	if role != roleSinks {
		so := storeOptions(cfg, log.With("component", "store"))
		so.Now, so.Tracer = s.now, s.tracing.Tracer()
		if s.store, err = relay.Open(cfg.DBPath(), so); err != nil {
			return nil, err
		}
		removeStaleCopies(cfg.DBPath(), logStaleCopy(log))
	}
	if err := s.connectNATS(ctx); err != nil {
		return nil, err
	}
	s.subscribers = admin.NewSubscriberRegistry(s.store, s.natsServer, s.js)
	if s.store != nil {
		if err := s.startNotes(ctx); err != nil {
			return nil, err
		}
	}
	streamCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	stream := streamOptions(cfg)
	if stream.Replicas == 0 { // automatic: 3 on a cluster; a single server cannot hold replicas
		stream.Replicas = 1
		if s.nc.ConnectedClusterName() != "" {
			stream.Replicas = 3
		}
	}
	// The relay that owns the stream sets it up as its relay.yaml says; a
	// delivery worker reads it (its partitions above all) as it is, and
	// waits for it when it starts first: its NATS user may create no stream
	// (README, Who can reach what), nor, below, the sinks' (so.OpenOnly).
	ensure := events.EnsureStream
	if role == roleSinks {
		ensure = events.OpenStream
	}
	// On an external NATS, clients other than the relay (the workers'
	// user) can have the event stream store what they choose: the front
	// end signs its events, and every reader takes only what it signed
	// (events.Trust; README, Who can reach what).
	if !cfg.Embedded() {
		if role == roleSinks {
			stream.Signed = true
		} else {
			if s.signer, err = events.NewSigner(s.store.EventSigningSeed()); err != nil {
				return nil, err
			}
			stream.SigningKey = s.signer.PublicKey()
		}
	}
	_, lookErr := s.js.Stream(streamCtx, events.StreamName)
	_, err = ensure(streamCtx, s.js, stream, log)
	if errors.Is(err, events.ErrRetiredKey) {
		stream.SigningKey, err = s.replaceRetiredKey()
		if err == nil {
			_, err = ensure(streamCtx, s.js, stream, log)
		}
	}
	if err != nil {
		return nil, err
	}
	if s.signer != nil {
		// A rotation a crash cut short: its old key is retired before
		// anything is published.
		if retired, err := admin.RetireEventKeys(streamCtx, s.store, s.js, log); err != nil {
			return nil, fmt.Errorf("retiring the event-signing keys a rotation replaced: %w", err)
		} else if len(retired) > 0 {
			log.Warn("a rotation of the event-signing key was cut short: its old key is now retired", "retired", retired)
		}
	}
	if !cfg.Embedded() {
		if s.trust, err = events.NewTrust(streamCtx, s.nc); err != nil {
			return nil, err
		}
	}
	s.registry.MustRegister(s.checkStreamKept(errors.Is(lookErr, jetstream.ErrStreamNotFound)))
	if s.natsServer != nil {
		// The subscribers' consumers, which the embedded server could not
		// make before the stream was there (a first start).
		// One whose consumer cannot be made is refused (and logged), not
		// the relay.
		if err := s.natsServer.EnsureConsumers(); err != nil && !natsbus.OnlyOthersNotAdmitted(err, "") {
			return nil, fmt.Errorf("making the subscribers' consumers: %w", err)
		}
	}
	s.registry.MustRegister(natsbus.StreamMetrics(s.js, append([]string{events.StreamName}, sinks.Streams()...)...))
	// The sinks' consumers exist before any SCIM request can produce an
	// event, in every role, so that no event is missed.
	so := sinkOptions(cfg)
	so.JS, so.Replicas, so.Logger, so.Registerer = s.js, stream.Replicas, log.With("component", "sinks"), s.registry
	so.Tracer, so.MarkerAge, so.KeyWait = s.tracing.Tracer(), s.markerAge, s.keyWait
	so.OpenOnly = role == roleSinks
	so.SetupOnly = role == roleSCIM // runs no worker: exports no sink gauge it would never read again
	so.Trust = s.trust
	// Where a sink a reload added keeps its start until its consumers
	// exist, should the process restart first.
	so.AddedFile = filepath.Join(cfg.DataDir, "sinks-added.json")
	if s.sinks, err = sinks.NewManager(so); err != nil {
		return nil, err
	}
	if err := s.sinks.Setup(streamCtx); err != nil {
		return nil, err
	}
	if s.adminToken, err = adminToken(cfg, log); err != nil {
		return nil, err
	}
	if err := refuseTenantTokensOpeningAdmin(cfg, s.adminToken); err != nil {
		return nil, err
	}
	if s.store != nil {
		if cr, ok := s.store.StoredCredentialOf(s.adminToken); ok {
			return nil, fmt.Errorf("the admin token in force (admin.token, or %s when it is empty) is the secret of %s %s of tenant %s; a tenant's credential must not open the admin API: set another admin token, and revoke that %s",
				cfg.AdminTokenPath(), cr.Kind, cr.ID, cr.Tenant, cr.Kind)
		}
	}
	if role != roleSinks {
		s.reqLog = relay.NewRequestLog(s.store, logOptions(cfg), log.With("component", "provisioning-log"))
		s.metrics = relay.NewMetrics(s.registry, s.store, s.reqLog)
		s.reqMetrics = httpmw.NewRequestMetrics(s.registry)
		po := publisherOptions(cfg)
		po.Observe, po.Quarantined, po.Resent = s.metrics.ObservePublished, s.metrics.ObserveQuarantined, s.metrics.ObserveResent
		po.Tracer, po.Signer = s.tracing.Tracer(), s.signer
		if s.healer != nil {
			po.Healer = s.healer
		}
		switch {
		// What the relay assumes of a server it does not run (README, Events).
		case cfg.SyncIntervalAssumed():
			log.Warn("nats.sync_interval is not set: assuming the external NATS server writes its store to disk at nats-server's default interval, and keeping published events in the outbox until it has; set it to the server's sync_interval, or 0 for sync_always or a cluster with replicas on other machines",
				"sync_interval", time.Duration(cfg.NATS.SyncInterval), "kept_for", po.KeepFor)
		case !cfg.Embedded():
			log.Info("published events are kept in the outbox until NATS has written them to disk, as nats.sync_interval says the external server does",
				"sync_interval", time.Duration(cfg.NATS.SyncInterval), "kept_for", po.KeepFor)
		}
		if s.publisher, err = relay.NewPublisher(s.store, s.nc, log.With("component", "publisher"), po); err != nil {
			return nil, err
		}
		s.metrics.WatchPublisher(s.publisher)
		if s.scimLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("SCIM listener: %w", err)
		}
		s.scimHTTP = s.newHTTPServer(s.closeWhenStopping(s.scimHandler()))
		if err := s.configureTLS(s.scimHTTP, "tls", "scim", cfg.TLS); err != nil {
			return nil, err
		}
	}
	if s.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	s.jobs = jobs.NewRunner(log.With("component", "jobs"))
	if s.tokenAttempts == nil {
		s.tokenAttempts = admin.NewTokenAttempts(admin.TokenPerAddress, admin.TokenOverall, log.With("component", "admin"))
	}
	s.registry.MustRegister(admin.ReadinessMetric(s.readinessChecks()))
	adminHandler, ui, err := s.adminListener()
	if err != nil {
		return nil, err
	}
	s.console = ui
	// No server-wide read or write timeout: an event tail and a backup
	// stream for as long as they are read (a backup bounds its own wait);
	// each request's read deadline is its own (guardAdminListener). A connection
	// kept alive with nothing asked is closed after two minutes, so that
	// idle connections cannot pile up on a listener that needs no token
	// for its probes.
	//
	// The answers that stream last as long as their client reads, and
	// Shutdown waits for every connection to go idle: the requests'
	// context ends when shutdown begins, so that a stop does not wait out
	// its deadline for them. An event tail, the console's live tail and a
	// profile end with their context; a backup under way goes on.
	requests, endRequests := context.WithCancel(context.Background())
	s.adminHTTP = &http.Server{Handler: s.guardAdminListener(adminHandler), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return requests }}
	s.adminHTTP.RegisterOnShutdown(endRequests)
	if err := s.configureTLS(s.adminHTTP, "admin.tls", "admin", cfg.Admin.TLS); err != nil {
		return nil, err
	}
	// Tokens last: a relay that cannot start (a port taken) must not have
	// created a token that nobody saw.
	if s.store != nil {
		if err := s.ensureTokens(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *server) connectNATS(ctx context.Context) error {
	o := natsOptions(s.config(), s.role)
	var err error
	if s.config().Embedded() {
		subscribers, err := s.store.Subscribers(ctx)
		if err != nil {
			return err
		}
		admitted, _ := admin.Admitted(subscribers, s.store.HasTenant) // the others are said by startNotes
		if s.natsServer, err = natsbus.StartEmbedded(o, admitted, s.log); err != nil {
			return err
		}
		if s.healer, err = natsbus.NewStoreHealer(s.natsServer.Server(), o, s.log); err != nil {
			return err
		}
		if url := s.natsServer.ClientURL(); url != "" {
			s.log.Info("embedded NATS is listening for subscribers (each with its own credential: scimrelay subscriber add)", "url", url, "subscribers", len(admitted))
		}
	}
	if s.nc, err = natsbus.Connect(o, s.natsServer, s.log.With("component", "nats")); err != nil {
		return err
	}
	if s.store != nil {
		// A change whose event NATS would refuse is refused before it is
		// committed and answered.
		s.store.LimitEvents(s.nc.MaxPayload())
	}
	// The outbox publisher has a JetStream context of its own
	// (relay.NewPublisher), with its limits and timeouts.
	if s.js, err = jetstream.New(s.nc); err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	return nil
}

// startNotes says at start what a reload says of the tenants it adds and
// removes (tenantNotes): of the tenants added since the data file was
// last used, and of every tenant not configured that NATS subscribers are
// scoped to (cut off, however long ago their tenant went); and it names
// the tenants whose purge did not finish.
func (s *server) startNotes(ctx context.Context) error {
	subscribers, err := s.store.Subscribers(ctx)
	if err != nil {
		return err
	}
	_, cutOff := admin.Admitted(subscribers, s.store.HasTenant)
	var gone []string
	for _, sub := range cutOff {
		if !slices.Contains(gone, sub.Tenant()) {
			gone = append(gone, sub.Tenant())
		}
	}
	s.tenantNotes(ctx, s.store.AddedSinceLastRun(), gone)
	purging, err := s.store.Purging()
	if err != nil {
		return err
	}
	for _, name := range purging {
		s.log.Warn("the purge of a tenant began and did not finish; what is left of it is deleted when it is run again", "tenant", name, "command", "scimrelay tenant purge "+name+" --yes")
	}
	return s.store.RecordTenants()
}

// tenantURL is the SCIM base URL of a tenant as Entra reaches it.
func (s *server) tenantURL(tenant string) string {
	return scim.TenantURL(publicOrigin(s.config()), tenant)
}

// originHint is a line to print under a Tenant URL whose host no identity
// provider can reach (unreachableOrigin); empty otherwise.
func (s *server) originHint() string {
	hint := unreachableOrigin(s.config())
	if hint == "" {
		return ""
	}
	return "                 (" + hint + ")\n"
}

// scimOrigin is where identity providers reach the SCIM listener:
// public_url, else the address the listener is bound to.
func (s *server) scimOrigin() string {
	cfg := s.config()
	if public, _ := publicURL(cfg.PublicURL); public != "" || s.scimLn == nil {
		return publicOrigin(cfg)
	}
	return schemeOf(cfg.TLS) + "://" + s.scimLn.Addr().String()
}

// tenantInfos describes the tenants as the admin API shows them.
func (s *server) tenantInfos() []admin.TenantInfo {
	origin := s.scimOrigin()
	cfg := s.config()
	list := make([]admin.TenantInfo, 0, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		unique, err := relay.UniqueMode(t.Unique)
		if err != nil { // refused when the config was loaded
			unique = relay.UniqueUserName
		}
		list = append(list, admin.TenantInfo{
			Name: t.Name, SCIMURL: scim.TenantURL(origin, t.Name),
			TokenEndpoint: tokenEndpoint(origin, t.Name),
			Unique:        unique, Required: t.Required,
		})
	}
	return list
}

// guardAdminListener bounds the time each request on the admin listener
// may take to be read and, whatever address it is bound to, refuses
// requests to DNS names other than localhost and admin.hosts (DNS
// rebinding): a container's 0.0.0.0 is reached through the operator's
// 127.0.0.1 too. Probes and scrapers name the pod's address, which passes.
func (s *server) guardAdminListener(h http.Handler) http.Handler {
	if s.adminReadTimeout <= 0 {
		s.adminReadTimeout = admin.DefaultReadTimeout
	}
	cfg := s.config()
	hosts := cfg.Admin.Hosts
	// admin_listen may name the host by a name, which the CLI and the
	// health check then send.
	if name, _, err := net.SplitHostPort(cfg.AdminListen); err == nil && name != "" && net.ParseIP(name) == nil {
		hosts = append(slices.Clone(hosts), name)
	}
	return admin.KnownHostsOnly(admin.WithReadDeadline(h, s.adminReadTimeout), hosts, s.log)
}

// adminListener serves the admin listener: the admin API, and the web
// console under /ui/ when admin.console is on. The console calls the API
// in-process; it has no other way to the relay. It returns the console too
// (nil when it is off), whose sweep of sessions run starts.
func (s *server) adminListener() (http.Handler, *console.Console, error) {
	api := s.adminHandler()
	cfg := s.config()
	if !cfg.Admin.Console {
		return api, nil, nil
	}
	ui, err := console.New(console.Options{
		Admin:         api,
		Logger:        s.log.With("component", "console"),
		IdleTimeout:   time.Duration(cfg.Admin.SessionIdle),
		Now:           s.now,
		TokenAttempts: s.tokenAttempts,
	})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(console.Prefix, ui)
	mux.Handle("GET /ui", ui) // its redirect to /ui/ carries the console's headers
	// A path under /ui/ that is not clean (/ui//log, /ui/x/../log) is the
	// console's too: this mux's redirect to the clean path carried none
	// of the console's headers, the console's own mux makes the same one
	// with them.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, console.Prefix) {
			ui.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}), ui, nil
}

func (s *server) adminHandler() http.Handler {
	o := admin.Options{
		Token:   s.adminToken,
		Logger:  s.log.With("component", "admin"),
		Metrics: promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}),
		Sinks:   s.sinks,
		Attempts: func(ctx context.Context, q sinks.AttemptQuery) ([]sinks.Attempt, error) {
			return sinks.Attempts(ctx, s.js, q)
		},
		Events: s.js,
		Trust:  s.trust,
		Jobs:   s.jobs,
		Checks: s.readinessChecks(),

		TokenAttempts: s.tokenAttempts,
	}
	o.Subscribers = s.subscribers
	o.Tenants = s.tenantInfos
	if s.configPath != "" {
		o.Reload = s.reload
	}
	if s.store != nil {
		o.Tokens, o.Clients, o.Backup, o.Log, o.Outbox = s.store.Tokens(), s.store.Clients(), s.store, s.reqLog, s.store
		o.Quarantine, o.Storage = s.store, s.store
		// A front end's NATS user has the account's JetStream API; a
		// delivery worker's may not delete a sink's bucket or dead letters.
		o.ForgetSinks = s.sinks
		o.Purge = admin.NewTenantPurger(s.store, s.reqLog, s.publisher, s.subscribers, s.nc, s.sinks)
		o.Keys = admin.NewKeys(admin.KeyOptions{Store: s.store, JS: s.js, Signer: s.signer, Publisher: s.publisher, Logger: s.log.With("component", "keys"),
			TokenLifetime: func() time.Duration { return time.Duration(s.config().OAuth.TokenLifetime) }})
	}
	return admin.NewHandler(o)
}

// replaceRetiredKey gives a front end whose stored event-signing key the
// event stream lists as retired a new one, stored in the data file, and
// returns its public key: a data file from before scimrelay keys rotate
// events (a backup restored) must not sign with the key the rotation
// retired, whose events the workers refuse.
func (s *server) replaceRetiredKey() (string, error) {
	retired := s.signer.PublicKey()
	seed, err := s.store.RotateEventSigningSeed("") // retired already
	if err != nil {
		return "", err
	}
	if err := s.signer.Switch(seed); err != nil {
		return "", err
	}
	s.log.Warn("the data file's event-signing key is retired in the event stream (a backup from before scimrelay keys rotate events restored?): this front end signs with a new key, now stored in the data file",
		"retired", retired, "key", s.signer.PublicKey())
	return s.signer.PublicKey(), nil
}

// readinessChecks are what /readyz asks, by role. A SCIM front end (roles
// all and scim) is ready when it can commit writes: NATS, the publisher
// and the sinks are listed but do not gate it, since the outbox keeps
// every write while they are away. A delivery worker (role sinks) is ready
// when its workers deliver.
func (s *server) readinessChecks() []admin.Check {
	checks := []admin.Check{{Name: "shutdown", Check: func(context.Context) error {
		if s.stopping.Load() {
			return errors.New("shutting down")
		}
		return nil
	}}}
	scimRole := s.store != nil
	if scimRole {
		checks = append(checks, admin.Check{Name: "store", Check: func(context.Context) error {
			if err := s.store.Ping(); err != nil {
				return err
			}
			return s.store.Writable()
		}})
	}
	checks = append(checks, admin.Check{Name: "nats", Informational: scimRole, Check: func(context.Context) error {
		if s.nc == nil || !s.nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		if s.healer != nil {
			return s.healer.WriteError()
		}
		return nil
	}})
	if scimRole {
		checks = append(checks, admin.Check{Name: "publisher", Informational: true, Check: func(context.Context) error {
			if !s.publisher.Healthy() {
				return errors.New("the last attempt to publish events failed; they wait in the outbox")
			}
			return nil
		}})
	}
	if s.role != roleSCIM {
		checks = append(checks, admin.Check{Name: "sinks", Informational: scimRole, Check: s.sinks.Ready})
	}
	return checks
}

// scimHandler serves the SCIM listener: the SCIM endpoints and the token
// endpoint, as the current configuration says (a reload swaps them; the
// requests under way finish with the ones they started with).
func (s *server) scimHandler() http.Handler {
	cfg := s.config()
	s.scimLimiter = httpmw.NewLimiter(scimLimits(cfg))
	s.oauthLimiter = httpmw.NewLimiter(oauthLimits(cfg))
	s.store.ChargeTo(s.scimLimiter.Charge) // the events and membership reads of a request
	s.setSCIMHandler(cfg)
	return s.tracing.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.scimCurrent.Load()).ServeHTTP(w, r)
	}))
}

// setSCIMHandler builds the SCIM listener's handler from cfg and makes it
// the one new requests get.
func (s *server) setSCIMHandler(cfg *config.Config) {
	l := cfg.Limits
	// As the events' source takes it: locations and sources agree.
	public, _ := publicURL(cfg.PublicURL)
	h := scim.NewHandler(s.store, s.store, scim.Options{
		BaseURL:           public,
		Logger:            s.log.With("component", "scim"),
		MaxBodyBytes:      int64(l.MaxBody),
		MaxJSONDepth:      l.MaxJSONDepth,
		MaxSortMatches:    l.MaxSortMatches,
		Limiter:           s.scimLimiter,
		Observe:           s.observe,
		BulkMaxOperations: l.BulkMaxOperations,
		BulkMaxPayload:    int64(l.BulkMaxPayload),
		TokenPath:         oauth.PathPattern,
		BasicAuth:         cfg.OAuth.BasicAuth,
		ValidTenant:       events.ValidName,
	})
	token := oauth.NewHandler(oauth.Options{
		Issuer:   s.store,
		Lifetime: time.Duration(cfg.OAuth.TokenLifetime),
		Limiter:  s.oauthLimiter,
		Observe:  s.observe,
		Logger:   s.log.With("component", "oauth"),
	})
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, oauth.PathPrefix) {
			token.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	s.scimCurrent.Store(&handler)
}

// scimLimits are the SCIM listener's rate limits: limits.rate and burst,
// and the tenants' own: a tenant's rate and burst, each where it is not 0,
// replace limits.rate and limits.burst for that tenant.
func scimLimits(cfg *config.Config) (httpmw.Limit, map[string]httpmw.Limit) {
	def := httpmw.Limit{Rate: cfg.Limits.Rate, Burst: cfg.Limits.Burst}
	overrides := map[string]httpmw.Limit{}
	for _, t := range cfg.Tenants {
		if t.Rate == 0 && t.Burst == 0 {
			continue
		}
		l := def
		if t.Rate > 0 {
			l.Rate = t.Rate
		}
		if t.Burst > 0 {
			l.Burst = t.Burst
		}
		overrides[t.Name] = l
	}
	return def, overrides
}

// oauthLimits are the token endpoint's rate limit, the same for every
// client's bucket and every caller address's.
func oauthLimits(cfg *config.Config) (httpmw.Limit, map[string]httpmw.Limit) {
	return httpmw.Limit{Rate: cfg.OAuth.Rate, Burst: cfg.OAuth.Burst}, nil
}

func (s *server) newHTTPServer(h http.Handler) *http.Server {
	l := s.config().Limits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: time.Duration(l.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(l.ReadTimeout),
		WriteTimeout:      time.Duration(l.WriteTimeout),
		IdleTimeout:       time.Duration(l.IdleTimeout),
		MaxHeaderBytes:    int(l.MaxHeader),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// run serves until ctx ends, then shuts down in reverse order of start:
// HTTP (letting in-flight requests finish), the publisher, NATS, the store.
func (s *server) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	s.serving.Store(&gctx)
	if s.configPath != "" {
		hup, stop := hangUps()
		defer stop()
		g.Go(func() error { s.reloadOnHangUp(gctx, hup); return nil })
	}
	if s.scimHTTP != nil {
		s.log.Info("serving SCIM", "addr", s.scimLn.Addr().String(), "tenants", len(s.config().Tenants))
		g.Go(func() error { return serveHTTP(s.scimHTTP, s.scimLn, "SCIM") })
	}
	s.log.Info("serving admin API, health and metrics", "addr", s.adminLn.Addr().String())
	g.Go(func() error { return serveHTTP(s.adminHTTP, s.adminLn, "admin") })
	// The publisher and the sinks stop after the HTTP servers, so that
	// what in-flight requests commit is still published.
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g.Go(func() error { s.tokenAttempts.Run(workCtx); return nil })
	if s.console != nil {
		g.Go(func() error { s.console.Run(workCtx); return nil })
	}
	if s.healer != nil {
		g.Go(func() error { s.healer.Watch(workCtx, 2*time.Second); return nil })
	}
	if s.signer != nil {
		g.Go(func() error {
			events.KeepSigningKey(workCtx, s.js, s.signer.PublicKey, s.keyCheck, s.log.With("component", "events"))
			return nil
		})
	}
	if s.publisher != nil {
		g.Go(func() error { return s.publisher.Run(workCtx) })
		g.Go(func() error { return s.reqLog.Run(workCtx) })
		g.Go(func() error {
			s.store.WarnExpiringTokens(workCtx, s.log.With("component", "tokens"), relay.ExpiryWarningEvery)
			return nil
		})
	}
	if s.role != roleSCIM {
		// Even without sinks: a reload may add some.
		if names := s.sinks.Names(); len(names) > 0 {
			s.log.Info("delivering to sinks", "sinks", names)
		}
		g.Go(func() error { return s.sinks.Run(workCtx) })
	}
	if s.store != nil {
		// A commit that failed in bbolt itself stops the relay, so that it
		// reads the data file from disk again when it is started again
		// (relay.ErrWritesStopped); it exits with that error.
		g.Go(func() error {
			select {
			case <-s.store.Failed():
				return s.store.Failure()
			case <-gctx.Done():
				return nil
			}
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.stopping.Store(true)
		s.log.Info("shutting down")
		var errs []error
		if ctx.Err() != nil { // asked to stop, not stopping for a failure
			errs = append(errs, s.keepAnswering())
		}
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if s.scimHTTP != nil {
			errs = append(errs, shutdownHTTP(shutdownCtx, s.scimHTTP, "SCIM"))
		}
		stopWork()
		errs = append(errs, shutdownHTTP(shutdownCtx, s.adminHTTP, "admin"))
		s.jobs.Close() // running redrives and replays fail, saying why
		return errors.Join(errs...)
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, s.close())
}

// keepAnswering goes on serving the SCIM listener for
// limits.shutdown_delay once the relay is stopping, /readyz failing
// meanwhile: a load balancer still sending requests while it sees the
// relay leave (Kubernetes removes a pod from its Service's endpoints only
// after the stop began) has them answered rather than refused. Every
// answer meanwhile closes its connection (closeWhenStopping), so that
// clients on keep-alive connections open new ones, which the balancer
// sends elsewhere; a connection idle throughout is closed when the
// listener stops, and a request sent on it at that moment is reset, as
// HTTP/1.1 allows, to be sent again. A data file that fails meanwhile
// ends the delay, and is the stop's error, as it is while serving.
func (s *server) keepAnswering() error {
	d := time.Duration(s.config().Limits.ShutdownDelay)
	if d <= 0 || s.scimHTTP == nil {
		return nil
	}
	s.log.Info("shutting down: the SCIM listener answers meanwhile, /readyz failing", "for", d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.store.Failed():
		return s.store.Failure()
	}
}

// closeWhenStopping has every answer of h close its connection once the
// relay is stopping.
func (s *server) closeWhenStopping(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.stopping.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// serveHTTP serves srv on ln, over TLS when srv has a TLS configuration
// (configureTLS).
func serveHTTP(srv *http.Server, ln net.Listener, name string) error {
	serve := srv.Serve
	if srv.TLSConfig != nil {
		serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
	}
	if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	return nil
}

// shutdownHTTP stops srv, letting the requests under way finish until ctx
// ends. Then it closes the connections of those still running, which ends
// their context, rather than leave them serving while the store and NATS
// close.
func shutdownHTTP(ctx context.Context, srv *http.Server, name string) error {
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("stopping the %s listener: requests still running were cut off: %w", name, err)
	}
	return nil
}

// close releases everything in reverse order of opening. It is safe to call
// on a partly built server. It waits for a reload under way, which reads
// the store and the sinks it tears down (one asked through the admin API
// runs to its end, and may outlast the admin listener's shutdown).
func (s *server) close() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	var errs []error
	for _, ln := range []net.Listener{s.scimLn, s.adminLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.nc != nil {
		s.nc.Close()
		s.nc = nil
	}
	if s.natsServer != nil {
		s.natsServer.Shutdown()
		s.natsServer = nil
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store = nil
	}
	if s.tracing != nil {
		// Last, so that the spans of what shut down are sent too.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.tracing.Shutdown(ctx); err != nil {
			s.log.Warn("sending the last spans failed", "err", err)
		}
		cancel()
		s.tracing = nil
	}
	return errors.Join(errs...)
}
