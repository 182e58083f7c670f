// SPDX-License-Identifier: Apache-2.0

// Package admin serves the admin listener: /healthz, /readyz, /metrics and
// the admin API under /admin/v1/ that the CLI uses, guarded by the admin
// token. It is the composition layer's one place that knows the relay and
// the sinks together. Each service it exposes is a small interface defined
// here, so that a process without a bbolt file (role sinks) serves what it
// has; every endpoint returns its error to one adapter (errors.go).
package admin

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

// Check is one readiness check: nil when ready. An informational check
// does not gate /readyz (a SCIM front end keeps taking writes while NATS
// is away: that is what the outbox is for); /readyz?verbose lists it and
// /readyz/<name> answers it alone.
type Check struct {
	Name          string
	Check         func(ctx context.Context) error
	Informational bool
}

// Options configures the admin handler. A nil service is answered with
// 503 "not available in this role".
type Options struct {
	Token   string
	Logger  *slog.Logger
	Metrics http.Handler
	Checks  []Check
	Tokens  Credentials // SCIM bearer tokens
	Clients Credentials // OAuth clients
	Backup  Backup
	Log     Log
	// Tenants returns the tenants of relay.yaml with their URLs (as of
	// the last reload).
	Tenants func() []TenantInfo
	// Reload re-reads relay.yaml and applies it; nil: not offered.
	Reload Reloader
	// Outbox reports the outbox's depth; nil in a role without the data file.
	Outbox Outbox
	// Subscribers manages the embedded NATS server's subscribers.
	Subscribers Subscribers
	Sinks       Sinks
	// ForgetSinks deletes what a removed sink left in NATS; nil in a
	// role whose NATS user may not (a delivery worker's).
	ForgetSinks SinkForgetter
	// Attempts reads the delivery attempts q selects.
	Attempts func(ctx context.Context, q sinks.AttemptQuery) ([]sinks.Attempt, error)
	// Events is where the event stream is tailed from.
	Events jetstream.JetStream
	// Trust says which of its messages the relay published (the tail and
	// the log's event details show only those); nil with NATS embedded.
	Trust *events.Trust
	// Jobs runs redrives and replays in the background.
	Jobs *jobs.Runner
	// Quarantine lists the outbox rows that could not be published.
	Quarantine Quarantine
	// Storage reports the data file's size by bucket.
	Storage Storage
	// Purge deletes what a tenant no longer configured left; nil in a role
	// without the data file.
	Purge Purger
	// Keys lists and rotates the data file's keys; nil in a role without
	// the data file.
	Keys *Keys
	// TokenAttempts limits and logs wrong admin tokens, shared with the
	// console's sign-in; nil: a limiter of the API's own.
	TokenAttempts *TokenAttempts
}

// Handler serves the admin listener.
type Handler struct {
	o        Options
	mux      *http.ServeMux
	root     http.Handler // mux, each request with an id
	log      *slog.Logger
	tailWait time.Duration // how long a tail's fetch waits for events
	// backupStall is how long a backup waits for its client to take more.
	backupStall time.Duration
	attempts    *TokenAttempts
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns the admin handler. /healthz, /readyz and /metrics are
// open, for probes and scrapers on the admin listener's network; the admin
// API and the profiles need the admin token.
func NewHandler(o Options) *Handler {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o.Checks = oneAtATime(o.Checks)
	h := &Handler{o: o, mux: http.NewServeMux(), log: log, tailWait: tailWait, backupStall: backupStall, attempts: o.TokenAttempts}
	if h.attempts == nil {
		h.attempts = NewTokenAttempts(TokenPerAddress, TokenOverall, log)
	}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	h.mux.HandleFunc("GET /readyz", h.ready)
	h.mux.HandleFunc("GET /readyz/{check}", h.readyCheck)
	if o.Metrics != nil {
		h.mux.Handle("GET /metrics", o.Metrics)
	}
	h.credentialRoutes("/admin/v1/tokens", "token management", "token", o.Tokens)
	h.clientRoutes(o.Clients)
	h.keyRoutes()
	h.api("GET /admin/v1/backup", h.backup)
	h.api("GET /admin/v1/log", h.queryLog, "tenant", "since", "until", "after", "status", "user", "operation", "order", "limit")
	h.api("GET /admin/v1/log/{key}", h.logEntry)
	h.api("GET /admin/v1/stats", h.stats, "since")
	h.api("GET /admin/v1/storage", h.storage)
	h.api("GET /admin/v1/tenants", h.tenants)
	h.api("POST /admin/v1/tenants/{tenant}/purge", takesNoBody(h.purgeTenant))
	h.api("POST /admin/v1/reload", takesNoBody(h.reload))
	h.api("GET /admin/v1/sinks", h.listSinks)
	h.api("GET /admin/v1/sinks/{sink}", h.sinkStatus)
	if o.Subscribers != nil {
		h.api("GET /admin/v1/subscribers", h.listSubscribers)
		h.api("POST /admin/v1/subscribers", h.addSubscriber)
		h.api("DELETE /admin/v1/subscribers/{name}", takesNoBody(h.removeSubscriber))
	}
	h.api("GET /admin/v1/schemas", h.listSchemas)
	h.api("GET /admin/v1/schemas/{name}", h.schema)
	h.api("GET /admin/v1/events", h.tailEvents, "tenant", "type", "since", "from_seq", "follow")
	h.api("GET /admin/v1/dlq", h.listDeadLetterQueues)
	h.api("GET /admin/v1/sinks/{sink}/dlq", h.listDeadLetters, "after", "limit")
	h.api("POST /admin/v1/sinks/{sink}/dlq/redrive", h.redrive)
	h.api("POST /admin/v1/sinks/{sink}/replay", h.replay)
	h.api("POST /admin/v1/sinks/{sink}/forget", takesNoBody(h.forgetSink))
	h.api("GET /admin/v1/deliveries", h.deliveries, "sink", "tenant", "since", "until", "after", "status", "limit")
	h.api("GET /admin/v1/jobs/{id}", h.job)
	h.api("GET /admin/v1/outbox/quarantine", h.listQuarantine, "after", "limit")
	// Profiles, for when the relay is slow and nobody knows why; behind the
	// admin token like the rest of the API.
	h.api("GET /debug/pprof/", profile, anyQuery) // seconds, debug, gc: net/http/pprof's
	h.api("/admin/", h.noEndpoint)
	h.api("/debug/pprof/", h.noEndpoint)
	h.root = withRequestID(h.mux)
	return h
}

// takesNoBody routes an action that takes no body: one given, other than
// none, white space or {}, is refused before the action (noBody). Checked
// in each handler, four of six forgot it, and a purge, a sink forgotten,
// a revocation and a subscriber removal acted on {"dry_run":true}
// (TestActionsThatTakeNoBodyRefuseOne).
func takesNoBody(f apiFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := noBody(r); err != nil {
			return err
		}
		return f(w, r)
	}
}

// noEndpoint answers a request no admin endpoint takes: 405 with the
// methods the path takes when it is an endpoint's, else 404.
func (h *Handler) noEndpoint(w http.ResponseWriter, r *http.Request) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		other := r.Clone(r.Context())
		other.Method = m
		if _, pattern := h.mux.Handler(other); strings.HasPrefix(pattern, m+" ") {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return errorf(http.StatusNotFound, "no admin endpoint %s %s", r.Method, r.URL.Path)
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return errorf(http.StatusMethodNotAllowed, "%s %s: the endpoint takes %s", r.Method, r.URL.Path, strings.Join(allow, ", "))
}

// ServeHTTP routes a request, giving it a request id.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.root.ServeHTTP(w, r) }

// api routes pattern to f behind the admin token; f's error, and a refused
// token, are answered by writeError. An endpoint takes the query
// parameters params names, each once, and no other (checkQuery).
func (h *Handler) api(pattern string, f apiFunc, params ...string) {
	h.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &responseWriter{ResponseWriter: w}
		err := h.authenticate(w, r)
		if err == nil && strings.Contains(pattern, " ") { // an endpoint's, not a catch-all's
			err = checkQuery(r, params)
		}
		if err == nil {
			r = withClientRequestID(r)
			err = f(rw, r)
		}
		if err != nil {
			h.writeError(rw, r, err)
		}
	}))
}

// anyQuery, among an endpoint's parameters, takes every query (the
// profiles, whose parameters are net/http/pprof's).
const anyQuery = "*"

// checkQuery refuses a query parameter the endpoint does not read, and one
// given twice. An action reads none (its input is the path and the JSON
// body), so one given, ?dry_run=true, was ignored while a purge, a
// revocation or a removal went ahead; a listing that was given one it
// does not read, misspelt (?tenat=acme), answered as if none had been
// given: every tenant's tokens.
func checkQuery(r *http.Request, params []string) error {
	if r.URL.RawQuery == "" || slices.Contains(params, anyQuery) {
		return nil
	}
	takes := "takes no query parameters"
	if len(params) > 0 {
		takes = "takes the query parameters " + strings.Join(params, ", ")
	}
	after := ""
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		after = ": nothing was done"
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return badRequest("%s %s: the query is not valid (%v)%s", r.Method, r.URL.Path, scim.Truncate(err.Error(), 96), after)
	}
	for _, name := range slices.Sorted(maps.Keys(q)) {
		switch {
		case !slices.Contains(params, name):
			return badRequest("%s %s %s, got %q%s", r.Method, r.URL.Path, takes, scim.Truncate(name, 64), after)
		case len(q[name]) > 1:
			return badRequest("%s %s: %s is given %d times; give it once", r.Method, r.URL.Path, name, len(q[name]))
		}
	}
	return nil
}

// authenticate requires the admin token as a bearer token. A client that
// sent too many wrong ones is refused with 429 before its token is
// compared (attempts.go); a request without a token is not a guess and is
// not charged. The console's in-process calls are limited by the console.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) error {
	var attempt *Attempt // nil: not limited
	if r.RemoteAddr != InProcess {
		var wait time.Duration
		if attempt, wait = h.attempts.Begin(r, "admin API"); attempt == nil {
			after := int(math.Ceil(max(wait.Seconds(), 1)))
			w.Header().Set("Retry-After", strconv.Itoa(after))
			return errorf(http.StatusTooManyRequests, "too many wrong admin tokens from this address, or from all; retry in %ds", after)
		}
	}
	defer attempt.Done()
	header := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(header, " ")
	if h.o.Token == "" || !strings.EqualFold(scheme, "Bearer") ||
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), []byte(h.o.Token)) != 1 {
		if header != "" {
			attempt.Wrong()
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="scimrelay-admin"`)
		return errorf(http.StatusUnauthorized, "the admin API needs Authorization: Bearer <admin token> (admin.token in relay.yaml, or data_dir/admin.token)")
	}
	return nil
}

// profile serves the pprof index and profiles.
func profile(w http.ResponseWriter, r *http.Request) error {
	switch r.URL.Path {
	case "/debug/pprof/profile":
		NoReadDeadline(w) // ?seconds= may be longer than the deadline
		pprof.Profile(w, r)
	case "/debug/pprof/trace":
		NoReadDeadline(w)
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r)
	}
	return nil
}

// Readiness is the answer of /readyz in JSON (?format=json, or Accept:
// application/json): ready when every gating check passes.
type Readiness struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

// CheckResult is one readiness check's outcome. An informational check does
// not gate readiness.
type CheckResult struct {
	Name          string `json:"name"`
	OK            bool   `json:"ok"`
	Error         string `json:"error,omitempty"`
	Informational bool   `json:"informational,omitempty"`
}

// readiness runs checks, at once, each until ctx ends: one that has not
// answered by then has failed. The data file's check waits behind a remap
// of it, which waits for a backup's read (README, Backup and recovery),
// and does not heed ctx; /readyz, and a scrape of scimrelay_ready, waited
// with it.
func readiness(ctx context.Context, checks []Check) Readiness {
	res := Readiness{Ready: true, Checks: []CheckResult{}}
	answers := make([]chan error, len(checks))
	for i, c := range checks {
		answers[i] = make(chan error, 1)
		go func() { answers[i] <- c.Check(ctx) }()
	}
	for i, c := range checks {
		cr := CheckResult{Name: c.Name, OK: true, Informational: c.Informational}
		var err error
		select {
		case err = <-answers[i]:
		case <-ctx.Done():
			select { // an answer and the end at once: the answer
			case err = <-answers[i]:
			default:
				err = errNoAnswer
			}
		}
		if err != nil {
			cr.OK, cr.Error = false, err.Error()
			res.Ready = res.Ready && c.Informational
		}
		res.Checks = append(res.Checks, cr)
	}
	return res
}

// readinessTimeout bounds one run of the readiness checks: for /readyz,
// and for a scrape of scimrelay_ready.
const readinessTimeout = 5 * time.Second

// errNoAnswer is a check's failure when it has not answered by then.
var errNoAnswer = fmt.Errorf("did not answer within %s", readinessTimeout)

// readyDesc is scimrelay_ready{check}.
var readyDesc = prometheus.NewDesc("scimrelay_ready",
	"1 while the check passes, 0 while it fails: each check that gates /readyz, run at each scrape.",
	[]string{"check"}, nil)

// ReadinessMetric exports scimrelay_ready{check} for each of checks that
// gates /readyz (an informational one has its own alert: the outbox's,
// the sinks' state), run at each scrape as /readyz runs it. A process
// whose /readyz fails is one its orchestrator sends nothing to: on
// Kubernetes, a SCIM front end on a full data disk is out of its Service,
// so the identity provider's requests fail before they reach it, and no
// SCIM error or refusal is there to alert on. ScimrelayNotReady alerts on
// this instead; Prometheus scrapes an unready pod too (the chart's metrics
// Service publishes unready addresses).
func ReadinessMetric(checks []Check) prometheus.Collector {
	return readinessMetric(oneAtATime(slices.DeleteFunc(slices.Clone(checks), func(c Check) bool { return c.Informational })))
}

// oneAtATime makes each of checks run once at a time: a caller that comes
// while a run is under way waits for that run's answer, up to its own
// context's end, instead of starting another. A run has readinessTimeout
// of its own, whoever asked. A check that hangs (a data file on a network
// mount that stopped answering holds its thread in the kernel) then holds
// one goroutine and one thread, not one for each probe and scrape: the
// kubelet's probe every 10 s and Prometheus's every 15 s would pile them
// up to Go's 10,000 threads, which end the process.
func oneAtATime(checks []Check) []Check {
	out := slices.Clone(checks)
	for i, c := range out {
		var runs singleflight.Group
		out[i].Check = func(ctx context.Context) error {
			run := runs.DoChan("", func() (any, error) {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readinessTimeout)
				defer cancel()
				return nil, c.Check(ctx)
			})
			select {
			case r := <-run:
				return r.Err
			case <-ctx.Done():
				return errNoAnswer
			}
		}
	}
	return out
}

type readinessMetric []Check

func (m readinessMetric) Describe(ch chan<- *prometheus.Desc) { ch <- readyDesc }

func (m readinessMetric) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), readinessTimeout)
	defer cancel()
	for _, c := range readiness(ctx, m).Checks {
		v := 0.0
		if c.OK {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, v, c.Name)
	}
}

// ready answers the way Kubernetes' own /readyz does: 200 "ok" when every
// gating check passes, else 503 naming the failing ones; ?verbose lists
// every check, [+] passed or [-] failed. The console asks for JSON.
func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
	defer cancel()
	res := readiness(ctx, h.o.Checks)
	status := http.StatusOK
	if !res.Ready {
		status = http.StatusServiceUnavailable
	}
	if wantsJSON(r) {
		writeJSON(w, status, res)
		return
	}
	_, verbose := r.URL.Query()["verbose"]
	var b strings.Builder
	for _, c := range res.Checks {
		if verbose || (!c.OK && !c.Informational) {
			b.WriteString(checkLine(c))
		}
	}
	switch {
	case !res.Ready:
		b.WriteString("readyz check failed\n")
	case verbose:
		b.WriteString("readyz check passed\n")
	default:
		b.WriteString("ok\n")
	}
	writeText(w, status, b.String())
}

// readyCheck answers one check alone: 200 when it passes, 503 when not,
// whether or not it gates /readyz.
func (h *Handler) readyCheck(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("check")
	var names []string
	for _, c := range h.o.Checks {
		names = append(names, c.Name)
		if c.Name != name {
			continue
		}
		ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
		defer cancel()
		res := readiness(ctx, []Check{c})
		status := http.StatusOK
		if !res.Checks[0].OK {
			status = http.StatusServiceUnavailable
		}
		if wantsJSON(r) {
			writeJSON(w, status, res.Checks[0])
			return
		}
		writeText(w, status, checkLine(res.Checks[0]))
		return
	}
	writeText(w, http.StatusNotFound, fmt.Sprintf("no readiness check %q; this relay has %s\n", name, strings.Join(names, ", ")))
}

func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}

func checkLine(c CheckResult) string {
	line := "[+]" + c.Name + " ok"
	if !c.OK {
		line = "[-]" + c.Name + " failed: " + c.Error
	}
	if c.Informational {
		line += " (does not gate readiness)"
	}
	return line + "\n"
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text)
}
