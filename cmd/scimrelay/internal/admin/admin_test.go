// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/httpmw"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

const (
	adminToken = "admin-token-0123456789abcdef"
	sinkSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

// client gives up on an answer that does not end: a tail that should have
// ended fails the test instead of hanging it.
var client = &http.Client{Timeout: 30 * time.Second}

// fixture is an admin API over real parts: a bbolt store and its
// provisioning log, an in-process JetStream server, the sinks with one sink
// "crm" posting to a test receiver, and the job runner.
type fixture struct {
	t       *testing.T
	url     string
	h       *Handler
	store   *relay.Store
	reqLog  *relay.RequestLog
	js      jetstream.JetStream
	nats    *server.Server
	natsDir string
	natsURL string
	sinks   *sinks.Manager
	sinkURL string // the receiver's, of sink crm
	signer  *events.Signer
	log     *eventstest.Log
	// stop ends the request log's and the sinks' goroutines. Cleanups run
	// last-registered first, so it is registered after what they use, to
	// end them before it is closed; a test that starts a NATS server of
	// its own registers it again after that.
	stop func()
	// status is what the receiver answers; block, when set, holds requests.
	status atomic.Int32
	block  atomic.Pointer[chan struct{}]
	got    atomic.Int32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, log: &eventstest.Log{}, natsDir: t.TempDir()}
	f.status.Store(http.StatusNoContent)
	log := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.stop = func() { cancel(); wg.Wait() }

	var err error
	f.store, err = relay.Open(filepath.Join(t.TempDir(), "scimrelay.db"), relay.Options{Tenants: []relay.TenantOptions{{Name: "acme"}, {Name: "globex"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.store.Close() })
	f.reqLog = relay.NewRequestLog(f.store, relay.LogOptions{Retention: time.Hour, Reads: relay.LogReadsAll}, log)
	wg.Go(func() { _ = f.reqLog.Run(ctx) })
	t.Cleanup(f.stop) // before the store is closed

	f.nats = eventstest.RunServerAt(t, f.natsDir, eventstest.FreePort(t))
	f.natsURL = eventstest.URL(f.nats)
	// As the relay connects: publishes fail at once while NATS is away.
	nc, err := nats.Connect(f.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if f.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, f.js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, log); err != nil {
		t.Fatal(err)
	}

	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if b := f.block.Load(); b != nil {
			<-*b
		}
		f.got.Add(1)
		w.WriteHeader(int(f.status.Load()))
	}))
	t.Cleanup(receiver.Close)
	f.sinkURL = receiver.URL
	f.sinks, err = sinks.NewManager(sinks.Options{
		Sinks: []sinks.Config{{Name: "crm", URL: receiver.URL, Secret: sinkSecret, AllowPrivate: true, Tenants: []string{"acme"}}},
		JS:    f.js, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.sinks.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = f.sinks.Run(ctx) })
	t.Cleanup(f.stop) // before NATS and the receiver are closed

	runner := jobs.NewRunner(log)
	t.Cleanup(runner.Close)
	// As on a relay with an external NATS, whose events are signed.
	if f.signer, err = events.NewSigner(f.store.EventSigningSeed()); err != nil {
		t.Fatal(err)
	}
	publisher, err := relay.NewPublisher(f.store, nc, log, relay.PublisherOptions{Signer: f.signer})
	if err != nil {
		t.Fatal(err)
	}
	f.h = NewHandler(Options{
		Token: adminToken, Logger: log,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "scimrelay_up 1\n") }),
		Checks:  []Check{{Name: "sinks", Check: f.sinks.Ready}},
		Tokens:  f.store.Tokens(), Clients: f.store.Clients(), Backup: f.store, Log: f.reqLog, Sinks: f.sinks,
		Attempts: func(ctx context.Context, q sinks.AttemptQuery) ([]sinks.Attempt, error) {
			return sinks.Attempts(ctx, f.js, q)
		},
		Events: f.js, Jobs: runner, Outbox: f.store, Quarantine: f.store, Storage: f.store,
		Tenants: func() []TenantInfo {
			return []TenantInfo{{Name: "acme", SCIMURL: "https://relay.example.com/scim/v2/acme", TokenEndpoint: "https://relay.example.com/oauth2/acme/token", Unique: "userName"}}
		},
		// As on a relay with an external NATS, whose subscribers are its operator's.
		Subscribers: NewSubscriberRegistry(f.store, nil, f.js),
		Keys:        NewKeys(KeyOptions{Store: f.store, JS: f.js, Signer: f.signer, Publisher: publisher, Logger: log}),
	})
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// answer is an HTTP answer, its body read.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// request sends an admin request with the admin token.
// request sends a request with the admin token and any headers given as
// name, value pairs.
func (f *fixture) request(method, path, body string, header ...string) answer {
	return f.requestAs(adminToken, method, path, body, header...)
}

func (f *fixture) requestAs(token, method, path, body string, header ...string) answer {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, b}
}

// want checks the status and decodes the JSON body into v (when not nil).
func (a answer) want(t *testing.T, status int, v any) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	if v != nil {
		if err := json.Unmarshal(a.body, v); err != nil {
			t.Fatalf("%v: %s", err, a.body)
		}
	}
	return a
}

// wantError checks an error answer: its status, and that its message says detail.
func (a answer) wantError(t *testing.T, status int, detail string) errorBody {
	t.Helper()
	var e errorBody
	a.want(t, status, &e)
	if !strings.Contains(e.Error, detail) || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("error %q, want it to say %q", e.Error, detail)
	}
	return e
}

// message is an event of tenant about user id, as the relay puts it on NATS.
func message(t *testing.T, tenant string, a events.Action, id string, seq uint64) (*nats.Msg, string) {
	t.Helper()
	e, err := events.New(events.Meta{Tenant: tenant, Action: a, ResourceID: id, Sequence: seq, SubjectSeq: 1, Time: time.Now()},
		events.Data{Tenant: tenant, ResourceType: a.ResourceType(), ID: id, Resource: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	return msg, e.ID()
}

// publish puts n events of tenant, about users u0, u1 …, on the stream and
// returns their ids.
func (f *fixture) publish(tenant string, a events.Action, n int) []string {
	f.t.Helper()
	var ids []string
	for i := range n {
		msg, id := message(f.t, tenant, a, fmt.Sprintf("u%d", i), uint64(i+1))
		if _, err := f.js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// routes are every admin route, with a request each would accept.
var routes = []struct{ method, path, body string }{
	{"GET", "/admin/v1/tokens", ""},
	{"POST", "/admin/v1/tokens", `{"tenant":"acme"}`},
	{"POST", "/admin/v1/tokens/rotate", `{"tenant":"acme"}`},
	{"DELETE", "/admin/v1/tokens/tok_x", ""},
	{"GET", "/admin/v1/clients", ""},
	{"POST", "/admin/v1/clients", `{"tenant":"acme"}`},
	{"POST", "/admin/v1/clients/rotate", `{"tenant":"acme"}`},
	{"DELETE", "/admin/v1/clients/cli_x", ""},
	{"GET", "/admin/v1/backup", ""},
	{"GET", "/admin/v1/log", ""},
	{"GET", "/admin/v1/log/00", ""},
	{"GET", "/admin/v1/stats", ""},
	{"GET", "/admin/v1/storage", ""},
	{"POST", "/admin/v1/reload", ""},
	{"POST", "/admin/v1/tenants/initech/purge", ""},
	{"GET", "/admin/v1/tenants", ""},
	{"GET", "/admin/v1/sinks", ""},
	{"GET", "/admin/v1/sinks/crm", ""},
	{"GET", "/admin/v1/events?follow=false", ""},
	{"GET", "/admin/v1/dlq", ""},
	{"GET", "/admin/v1/sinks/crm/dlq", ""},
	{"POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`},
	{"POST", "/admin/v1/sinks/crm/replay", `{"since":"1h"}`},
	{"GET", "/admin/v1/deliveries", ""},
	{"GET", "/admin/v1/jobs/job_x", ""},
	{"GET", "/admin/v1/outbox/quarantine", ""},
	{"GET", "/admin/v1/subscribers", ""},
	{"POST", "/admin/v1/subscribers", `{"name":"billing"}`},
	{"DELETE", "/admin/v1/subscribers/billing", ""},
	{"GET", "/admin/v1/schemas", ""},
	{"GET", "/admin/v1/schemas/event.json", ""},
	{"GET", "/admin/v1/keys", ""},
	{"POST", "/admin/v1/keys/events/rotate", ""},
	{"POST", "/admin/v1/keys/oauth/rotate", `{"overlap":"0s"}`},
	{"GET", "/admin/v1/nothing-here", ""},
	{"GET", "/debug/pprof/", ""},
	{"GET", "/debug/pprof/heap", ""},
	// Profiles take GET alone; other methods are refused the token first
	// (before, the mux answered them 405 in plain text).
	{"POST", "/debug/pprof/", ""},
	{"DELETE", "/debug/pprof/symbol", ""},
}

// TestAuthentication: every admin route refuses a missing or wrong admin
// token, before doing anything; health, readiness and metrics are open.
func TestAuthentication(t *testing.T) {
	f := newFixture(t)
	f.h.attempts = NewTokenAttempts(httpmw.Limit{}, httpmw.Limit{}, nil) // more wrong tokens than a guesser may send
	for _, r := range routes {
		for _, token := range []string{"", "wrong-token-0123456789abcdef", adminToken + "x", "Basic " + adminToken} {
			a := f.requestAs(token, r.method, r.path, r.body)
			a.wantError(t, http.StatusUnauthorized, "Authorization: Bearer <admin token>")
			if a.header.Get("WWW-Authenticate") == "" || a.header.Get("X-Request-Id") == "" {
				t.Fatalf("%s %s: headers %v", r.method, r.path, a.header)
			}
		}
	}
	if toks, _ := f.store.Tokens().List(context.Background(), ""); len(toks) != 0 {
		t.Fatalf("a refused request created tokens: %+v", toks)
	}
	if f.got.Load() != 0 {
		t.Fatal("a refused request reached the sink")
	}
	// A relay without an admin token refuses everyone.
	closed := httptest.NewServer(NewHandler(Options{Tokens: f.store.Tokens()}))
	defer closed.Close()
	req, _ := http.NewRequest("GET", closed.URL+"/admin/v1/tokens", nil)
	req.Header.Set("Authorization", "Bearer ")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an empty admin token: %v %v", res, err)
	}
	// Probes and scrapers need no token.
	if a := f.requestAs("", "GET", "/healthz", ""); a.status != 200 || string(a.body) != "ok\n" {
		t.Fatalf("healthz: %d %s", a.status, a.body)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a := f.requestAs("", "GET", "/readyz", ""); a.status != 200 || string(a.body) != "ok\n" {
			return fmt.Errorf("readyz: %d %s", a.status, a.body)
		}
		return nil
	})
	// The console reads it as JSON.
	var ready Readiness
	f.requestAs("", "GET", "/readyz?format=json", "").want(t, 200, &ready)
	if !ready.Ready || len(ready.Checks) != 1 || ready.Checks[0].Name != "sinks" || !ready.Checks[0].OK {
		t.Fatalf("readyz in JSON: %+v", ready)
	}
	if a := f.requestAs("", "GET", "/readyz/sinks", ""); a.status != 200 || string(a.body) != "[+]sinks ok\n" {
		t.Fatalf("readyz/sinks: %d %s", a.status, a.body)
	}
	if a := f.requestAs("", "GET", "/readyz/nope", ""); a.status != 404 {
		t.Fatalf("readyz/nope: %d %s", a.status, a.body)
	}
	if a := f.requestAs("", "GET", "/metrics", ""); a.status != 200 || !strings.Contains(string(a.body), "scimrelay_up") {
		t.Fatalf("metrics: %d %s", a.status, a.body)
	}
	// The profiles answer with the token.
	if a := f.request("GET", "/debug/pprof/", ""); a.status != 200 {
		t.Fatalf("pprof: %d", a.status)
	}
	f.request("GET", "/admin/v1/nothing-here", "").wantError(t, http.StatusNotFound, "no admin endpoint GET /admin/v1/nothing-here")
}

func TestTokens(t *testing.T) {
	f := newFixture(t)
	f.h.o.Tenants = func() []TenantInfo { return []TenantInfo{{Name: "acme"}, {Name: "globex"}} } // as the store holds
	// A body is one JSON value: one with more is refused, not acted on.
	for _, body := range []string{`{"tenant":"acme"} trailing garbage`, `{"tenant":"acme"}{"tenant":"acme"}`, `{"tenant":"acme"} 1`} {
		f.request("POST", "/admin/v1/tokens", body).wantError(t, http.StatusBadRequest, "data after the JSON value")
	}
	if toks, _ := f.store.Tokens().List(context.Background(), ""); len(toks) != 0 {
		t.Fatalf("a body with trailing data created tokens: %+v", toks)
	}
	f.request("POST", "/admin/v1/tokens", `{"tenant":"globex"}`+" \n\t").want(t, http.StatusCreated, nil)
	var created TokenResponse
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"entra","expires":"30d"}`).want(t, http.StatusCreated, &created)
	if err := f.store.Authenticate(context.Background(), "acme", created.Secret); err != nil || created.Token.Name != "entra" ||
		time.Until(created.Token.Expires) < 29*24*time.Hour {
		t.Fatalf("created %+v: %v", created.Token, err)
	}
	var never TokenResponse
	f.request("POST", "/admin/v1/tokens", `{"tenant":"globex","expires":"never"}`).want(t, http.StatusCreated, &never)
	if !never.Token.Expires.IsZero() || never.Token.Name != "unnamed" {
		t.Fatalf("never: %+v", never.Token)
	}
	var list []relay.Token
	a := f.request("GET", "/admin/v1/tokens?tenant=acme", "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != created.Token.ID || strings.Contains(string(a.body), created.Secret) {
		t.Fatalf("list: %s", a.body)
	}
	var rotated TokenResponse
	f.request("POST", "/admin/v1/tokens/rotate", `{"tenant":"acme","overlap":"1h"}`).want(t, http.StatusCreated, &rotated)
	if rotated.Token.Name != "rotated" || len(rotated.Expired) != 1 || rotated.Expired[0].ID != created.Token.ID {
		t.Fatalf("rotate: %+v", rotated)
	}
	var revoked relay.Token
	f.request("DELETE", "/admin/v1/tokens/"+created.Token.ID, "").want(t, http.StatusOK, &revoked)
	if revoked.Revoked.IsZero() || f.store.Authenticate(context.Background(), "acme", created.Secret) == nil {
		t.Fatalf("revoked %+v still authenticates", revoked)
	}
	// The caller's mistakes.
	f.request("DELETE", "/admin/v1/tokens/tok_nope", "").wantError(t, http.StatusNotFound, "no such token")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"initech"}`).wantError(t, http.StatusNotFound, `tenant: no such tenant "initech"`)
	f.request("POST", "/admin/v1/tokens/rotate", `{"tenant":"initech"}`).wantError(t, http.StatusNotFound, `tenant: no such tenant "initech"`)
	f.request("POST", "/admin/v1/tokens", `{"name":"x"}`).wantError(t, http.StatusBadRequest, "tenant is required")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","expires":"soon"}`).wantError(t, http.StatusBadRequest, "expires:")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","expires":"-1h"}`).wantError(t, http.StatusBadRequest, "expires:")
	f.request("POST", "/admin/v1/tokens/rotate", `{"tenant":"acme","overlap":"a while"}`).wantError(t, http.StatusBadRequest, "overlap:")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"`).wantError(t, http.StatusBadRequest, "request body")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","tenants":["x"]}`).wantError(t, http.StatusBadRequest, "unknown field")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"`+strings.Repeat("a", 2<<20)+`"}`).wantError(t, http.StatusRequestEntityTooLarge, "request body")
	// A body its sender says is not JSON, and a method the path does not
	// take, are refused as such; nothing is issued.
	count := func() int {
		toks, err := f.store.Tokens().List(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		return len(toks)
	}
	before := count()
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"}`, "Content-Type", "text/plain").wantError(t, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"}`, "Content-Type", "application/x-www-form-urlencoded").wantError(t, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	// Read as the SCIM listener reads one: a body a JSON decoder would read
	// other than as sent (a Latin-1 "é", what Windows PowerShell 5.1 sends
	// by default; an unpaired surrogate escape) is refused, not stored with
	// U+FFFD in its place, and one in another charset or a content coding
	// is 415.
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"caf`+"\xe9"+`"}`).wantError(t, http.StatusBadRequest, "not valid UTF-8")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme","name":"x\ud800y"}`).wantError(t, http.StatusBadRequest, "surrogate")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"}`, "Content-Type", "application/json; charset=iso-8859-1").wantError(t, http.StatusUnsupportedMediaType, "UTF-8")
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"}`, "Content-Encoding", "br").wantError(t, http.StatusUnsupportedMediaType, "Content-Encoding")
	if after := count(); after != before {
		t.Fatalf("%d tokens after bodies that are not JSON, want %d", after, before)
	}
	f.request("POST", "/admin/v1/tokens", `{"tenant":"acme"}`, "Content-Type", "application/json; charset=utf-8").want(t, http.StatusCreated, nil)
	if a := f.request("PUT", "/admin/v1/tokens", ``); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "GET, POST" {
		t.Fatalf("PUT /admin/v1/tokens: %d, Allow %q: %s", a.status, a.header.Get("Allow"), a.body)
	}
	f.request("PATCH", "/admin/v1/tokens/tok_x", ``).wantError(t, http.StatusMethodNotAllowed, "takes DELETE")
	f.request("GET", "/admin/v1/nothing-here", ``).wantError(t, http.StatusNotFound, "no admin endpoint")
	f.request("POST", "/debug/pprof/symbol", ``).wantError(t, http.StatusMethodNotAllowed, "takes GET")
}

// TestClients: OAuth clients go through the same routes and errors as tokens.
func TestClients(t *testing.T) {
	f := newFixture(t)
	var created TokenResponse
	f.request("POST", "/admin/v1/clients", `{"tenant":"acme","name":"okta"}`).want(t, http.StatusCreated, &created)
	if err := f.store.AuthenticateBasic(context.Background(), "acme", created.Token.ID, created.Secret); err != nil {
		t.Fatalf("the new client's id and secret: %v", err)
	}
	var list []relay.Token
	a := f.request("GET", "/admin/v1/clients?tenant=acme", "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != created.Token.ID || strings.Contains(string(a.body), created.Secret) {
		t.Fatalf("list: %s", a.body)
	}
	if toks, _ := f.store.Tokens().List(context.Background(), ""); len(toks) != 0 {
		t.Fatalf("a client was listed as a token: %+v", toks)
	}
	f.request("DELETE", "/admin/v1/clients/"+created.Token.ID, "").want(t, http.StatusOK, nil)
	f.request("DELETE", "/admin/v1/clients/cli_nope", "").wantError(t, http.StatusNotFound, "no such client cli_nope")
	f.request("POST", "/admin/v1/clients", `{"tenant":"initech"}`).wantError(t, http.StatusNotFound, `tenant: no such tenant "initech"`)
	// Audited as the client's actions, without its secret.
	for _, want := range []string{
		`msg="admin action" action=client.issue tenant=acme id=` + created.Token.ID + ` name=okta via=api`,
		`msg="admin action" action=client.revoke tenant=acme id=` + created.Token.ID + ` name=okta via=api`,
	} {
		if !strings.Contains(f.log.String(), want) {
			t.Errorf("the log has no line holding\n%s\n%s", want, f.log.String())
		}
	}
	if strings.Contains(f.log.String(), created.Secret) {
		t.Fatal("the log holds the client's secret")
	}
}

// TestSchemasAndSubscribers: the event schemas are served, and a relay
// that does not run NATS itself says so for its subscribers (409).
func TestSchemasAndSubscribers(t *testing.T) {
	f := newFixture(t)
	var names []string
	f.request("GET", "/admin/v1/schemas", "").want(t, http.StatusOK, &names)
	if !slices.Contains(names, "event.json") || !slices.Contains(names, "user.created.json") {
		t.Fatalf("schemas: %v", names)
	}
	if a := f.request("GET", "/admin/v1/schemas/event.json", ""); a.status != http.StatusOK || a.header.Get("Content-Type") != "application/schema+json" || !json.Valid(a.body) {
		t.Fatalf("event.json: %d %v", a.status, a.header)
	}
	f.request("GET", "/admin/v1/schemas/nothing.json", "").wantError(t, http.StatusNotFound, `no schema "nothing.json"`)
	f.request("GET", "/admin/v1/subscribers", "").wantError(t, http.StatusConflict, "external NATS")
	f.request("POST", "/admin/v1/subscribers", `{"name":"billing","public_key":"UA"}`).wantError(t, http.StatusConflict, "external NATS")
	f.request("POST", "/admin/v1/subscribers", `{"name":`).wantError(t, http.StatusBadRequest, "request body")
}

func TestLog(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	for i, e := range []relay.LogEntry{
		{Tenant: "acme", Operation: "create", Name: "ann@acme.com", Status: 201},
		{Tenant: "acme", Operation: "create", Name: "ANN@acme.com", Status: 409, ScimType: "uniqueness"},
		{Tenant: "globex", Operation: "get", Status: 200},
		{Tenant: "globex", Operation: "patch", Name: "E-1024", Email: "Bob@Globex.example", Status: 200},
	} {
		e.Time, e.RequestID, e.Method, e.Path = now.Add(time.Duration(i)*time.Millisecond), fmt.Sprint("r", i), "POST", "/scim/v2/"+e.Tenant+"/Users"
		f.reqLog.Record(e)
	}
	var all []relay.LogEntry
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := json.Unmarshal(f.request("GET", "/admin/v1/log?since=1h", "").body, &all); err != nil || len(all) != 4 {
			return fmt.Errorf("%d entries (%v)", len(all), err)
		}
		return nil
	})
	var list []relay.LogEntry
	f.request("GET", "/admin/v1/log?tenant=acme&status=4xx", "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].ScimType != "uniqueness" {
		t.Fatalf("4xx of acme: %+v", list)
	}
	f.request("GET", "/admin/v1/log?user=ann@&limit=1", "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].RequestID != "r0" {
		t.Fatalf("first page: %+v", list)
	}
	f.request("GET", "/admin/v1/log?user=ann@&limit=1&after="+list[0].Key, "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].RequestID != "r1" {
		t.Fatalf("second page: %+v", list)
	}
	// A user is found by email too; operation and until narrow the search.
	f.request("GET", "/admin/v1/log?user=bob@globex", "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].RequestID != "r3" || list[0].Email != "Bob@Globex.example" {
		t.Fatalf("by email: %+v", list)
	}
	f.request("GET", "/admin/v1/log?operation=create", "").want(t, http.StatusOK, &list)
	if len(list) != 2 || list[0].RequestID != "r0" || list[1].RequestID != "r1" {
		t.Fatalf("creates: %+v", list)
	}
	f.request("GET", "/admin/v1/log?until="+url.QueryEscape(all[2].Time.Format(time.RFC3339Nano)), "").want(t, http.StatusOK, &list)
	if len(list) != 2 || list[1].RequestID != "r1" {
		t.Fatalf("until the third entry: %+v", list)
	}
	// Newest first, a page at a time.
	f.request("GET", "/admin/v1/log?order=newest&limit=3", "").want(t, http.StatusOK, &list)
	if len(list) != 3 || list[0].RequestID != "r3" || list[2].RequestID != "r1" {
		t.Fatalf("newest first: %+v", list)
	}
	f.request("GET", "/admin/v1/log?order=newest&limit=3&after="+list[2].Key, "").want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].RequestID != "r0" {
		t.Fatalf("the page of older ones: %+v", list)
	}
	f.request("GET", "/admin/v1/log?order=newest&until="+url.QueryEscape(all[2].Time.Format(time.RFC3339Nano))+"&operation=create", "").want(t, http.StatusOK, &list)
	if len(list) != 2 || list[0].RequestID != "r1" {
		t.Fatalf("newest creates before the third entry: %+v", list)
	}
	f.request("GET", "/admin/v1/log?order=sideways", "").wantError(t, http.StatusBadRequest, "order:")
	var one relay.LogEntry
	f.request("GET", "/admin/v1/log/"+all[1].Key, "").want(t, http.StatusOK, &struct {
		Entry *relay.LogEntry `json:"entry"`
	}{&one})
	if one.RequestID != "r1" || one.Key != all[1].Key {
		t.Fatalf("entry %s: %+v", all[1].Key, one)
	}
	f.request("GET", "/admin/v1/log/"+strings.Repeat("0", 32), "").wantError(t, http.StatusNotFound, "no such log entry")
	// The error names what was sent: the path's key, not a parameter.
	if e := f.request("GET", "/admin/v1/log/zz", "").wantError(t, http.StatusBadRequest, `key "zz": not a log entry key`); strings.Contains(e.Error, "after") {
		t.Fatalf("GET /admin/v1/log/zz: %q names a parameter not sent", e.Error)
	}
	f.request("GET", "/admin/v1/log?operation=dance", "").wantError(t, http.StatusBadRequest, "operation:")
	f.request("GET", "/admin/v1/log?until=soon", "").wantError(t, http.StatusBadRequest, "until:")
	f.request("GET", "/admin/v1/log?status=teapot", "").wantError(t, http.StatusBadRequest, "status:")
	f.request("GET", "/admin/v1/log?since=yesterday", "").wantError(t, http.StatusBadRequest, "since:")
	f.request("GET", "/admin/v1/log?limit=0", "").wantError(t, http.StatusBadRequest, "limit:")
	f.request("GET", "/admin/v1/log?after=zz", "").wantError(t, http.StatusBadRequest, `after: "zz": not a log entry key`)
}

// TestInternalErrors: a failure of the relay itself is answered 500 with a
// request id and without its text, which goes to the log under that id.
func TestInternalErrors(t *testing.T) {
	f := newFixture(t)
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	a := f.request("GET", "/admin/v1/log", "")
	e := a.wantError(t, http.StatusInternalServerError, "internal error")
	if e.RequestID == "" || e.RequestID != a.header.Get("X-Request-Id") || strings.Contains(e.Error, "database") {
		t.Fatalf("answer %+v, header id %q", e, a.header.Get("X-Request-Id"))
	}
	if log := f.log.String(); !strings.Contains(log, "request_id="+e.RequestID) || !strings.Contains(log, "database not open") {
		t.Fatalf("the log does not have the failure under its request id:\n%s", log)
	}
	// A caller's request id is not the request's: the relay's own is
	// (TestCallersDoNotChooseRequestIDs follows the caller's to the log).
	req, _ := http.NewRequest("GET", f.url+"/admin/v1/log", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("X-Request-Id", "trace-42")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if id := res.Header.Get("X-Request-Id"); id == "" || id == "trace-42" {
		t.Fatalf("request id %q: want the relay's own", id)
	}
}

// TestNATSAwayIsSaid: what needs NATS while it is away (stopped here) is
// answered 503 naming NATS, with Retry-After, not 500 "internal error":
// nothing failed in the relay, and the caller can try again. Once NATS is
// back they answer again.
func TestNATSAwayIsSaid(t *testing.T) {
	f := newFixture(t)
	back := f.stopNATS()
	needNATS := []struct{ method, path, body string }{
		{"GET", "/admin/v1/events?follow=false", ""},
		{"GET", "/admin/v1/events?tenant=acme&since=1h&follow=false", ""},
		{"GET", "/admin/v1/dlq", ""},
		{"GET", "/admin/v1/sinks/crm/dlq", ""},
		{"POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`},
		{"GET", "/admin/v1/sinks", ""}, // sinks replay asks it first
		{"GET", "/admin/v1/sinks/crm", ""},
		{"GET", "/admin/v1/deliveries", ""},
	}
	for _, r := range needNATS {
		a := f.request(r.method, r.path, r.body)
		e := a.wantError(t, http.StatusServiceUnavailable, "NATS is away (the relay is not connected to NATS)")
		if a.header.Get("Retry-After") != "5" || e.RequestID != "" {
			t.Errorf("%s %s: Retry-After %q, request_id %q; want 5 and none (the answer says it all)", r.method, r.path, a.header.Get("Retry-After"), e.RequestID)
		}
		if !strings.Contains(f.log.String(), "request_id="+a.header.Get("X-Request-Id")) {
			t.Errorf("%s %s: the log has no line of request %s", r.method, r.path, a.header.Get("X-Request-Id"))
		}
	}
	if strings.Contains(f.log.String(), "level=ERROR") {
		t.Errorf("NATS being away is logged as the relay's own failure:\n%s", f.log.String())
	}

	back()
	for _, r := range needNATS {
		if r.method != "GET" {
			continue
		}
		eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			if a := f.request(r.method, r.path, r.body); a.status != http.StatusOK {
				return fmt.Errorf("%s %s: %d %s", r.method, r.path, a.status, a.body)
			}
			return nil
		})
	}
}

// TestUnavailableInRole: a process without the data file (role sinks)
// answers what it cannot do with 503.
func TestUnavailableInRole(t *testing.T) {
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken}))
	defer srv.Close()
	f := &fixture{t: t, url: srv.URL}
	for _, r := range routes {
		// The schemas, tenants and stats need no data file (stats say what
		// they lack); subscribers are TestSchemasAndSubscribers'.
		if !strings.HasPrefix(r.path, "/admin/v1/") || r.path == "/admin/v1/nothing-here" ||
			strings.HasPrefix(r.path, "/admin/v1/schemas") || strings.HasPrefix(r.path, "/admin/v1/subscribers") ||
			r.path == "/admin/v1/tenants" || r.path == "/admin/v1/stats" {
			continue
		}
		f.request(r.method, r.path, r.body).wantError(t, http.StatusServiceUnavailable, "is not available on this relay")
	}
}

func TestBackup(t *testing.T) {
	f := newFixture(t)
	if _, _, err := f.store.Tokens().Create(context.Background(), "acme", "kept", time.Time{}); err != nil {
		t.Fatal(err)
	}
	a := f.request("GET", "/admin/v1/backup", "")
	if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("backup: %d %v", a.status, a.header)
	}
	// The length is announced, so that a copy cut short is not taken whole.
	if n := a.header.Get("Content-Length"); n != strconv.Itoa(len(a.body)) {
		t.Errorf("backup of %d bytes announced Content-Length %q", len(a.body), n)
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, a.body, 0o600); err != nil {
		t.Fatal(err)
	}
	copyStore, err := relay.Open(path, relay.Options{Tenants: []relay.TenantOptions{{Name: "acme"}, {Name: "globex"}}})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer copyStore.Close()
	if toks, _ := copyStore.Tokens().List(context.Background(), "acme"); len(toks) != 1 || toks[0].Name != "kept" {
		t.Fatalf("tokens in the backup: %+v", toks)
	}
}

// TestBackupGivesUpOnAStalledClient: a backup's client that stops taking
// the copy is cut off after backupStall, so that the copy's read
// transaction, which a growing data file's remap would wait for, ends.
func TestBackupGivesUpOnAStalledClient(t *testing.T) {
	f := newFixture(t)
	f.h.backupStall = 100 * time.Millisecond
	for i := range 200 { // a copy far larger than the sockets' small buffers below
		if _, _, err := f.store.Tokens().Create(context.Background(), "acme", fmt.Sprintf("token-%03d-%s", i, strings.Repeat("x", 200)), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewUnstartedServer(f.h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "GET /admin/v1/backup HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer %s\r\n\r\n", adminToken); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil)
	if err != nil || res.StatusCode != http.StatusOK || res.ContentLength < 128<<10 {
		t.Fatalf("backup: %v, %+v; want 200 and a copy of at least 128 KiB", err, res)
	}
	// The client reads no more.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(f.log.String(), "i/o timeout") {
			return errors.New("the backup still waits for its client")
		}
		return nil
	})
}

// smallBuffers is a listener whose connections send through a small
// socket buffer, so that a client that stops reading is felt at once.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

func TestEventsTail(t *testing.T) {
	f := newFixture(t)
	f.h.tailWait = time.Minute // a tail that waited for a fetch to time out would not end in time
	acme := f.publish("acme", events.UserCreated, 3)
	f.publish("globex", events.UserCreated, 2)
	f.publish("acme", events.UserDeactivated, 1)

	lines := func(query string) []map[string]any {
		t.Helper()
		a := f.request("GET", "/admin/v1/events?"+query, "")
		if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("%s: %d %s", query, a.status, a.body)
		}
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(string(a.body)), "\n") {
			if l == "" {
				continue
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("%s: line %q: %v", query, l, err)
			}
			out = append(out, e)
		}
		return out
	}
	if got := lines("since=1h&follow=false"); len(got) != 6 {
		t.Fatalf("every event: %d", len(got))
	}
	got := lines("tenant=acme&since=1h&follow=false")
	if len(got) != 4 || got[0]["id"] != acme[0] || got[3]["type"] != "io.scimrelay.user.deactivated" {
		t.Fatalf("acme's events: %v", got)
	}
	if got := lines("tenant=acme&type=user.deactivated&since=1h&follow=false"); len(got) != 1 {
		t.Fatalf("by type: %v", got)
	}
	if got := lines("tenant=acme&from_seq=3&follow=false"); len(got) != 1 || got[0]["id"] != acme[2] {
		t.Fatalf("from sequence 3: %v", got)
	}
	// With nothing pending, a tail that does not follow ends at once.
	if got := lines("follow=false"); len(got) != 0 {
		t.Fatalf("new events only: %v", got)
	}
	if got := lines("tenant=globex&since=1h&follow=false"); len(got) != 2 {
		t.Fatalf("the events a tenant no longer configured left: %v", got)
	}
	f.request("GET", "/admin/v1/events?tenant=initech&since=1h&follow=false", "").wantError(t, http.StatusNotFound, `tenant: no such tenant "initech"`)
	f.request("GET", "/admin/v1/events?tenant=Acme", "").wantError(t, http.StatusBadRequest, "tenant:")
	f.request("GET", "/admin/v1/events?type=user.exploded", "").wantError(t, http.StatusBadRequest, "no such event")
	f.request("GET", "/admin/v1/events?since=ages", "").wantError(t, http.StatusBadRequest, "since:")
	// follow is read as strconv.ParseBool reads it; anything else is
	// refused rather than taken as following for ever.
	for _, bad := range []string{"maybe", "no", "off", "yes", "2", "%20false"} {
		f.request("GET", "/admin/v1/events?since=1h&follow="+bad, "").wantError(t, http.StatusBadRequest, "follow: want true or false")
	}
	for _, no := range []string{"FALSE", "False", "0", "f"} {
		if got := lines("tenant=acme&since=1h&follow=" + no); len(got) != 4 {
			t.Fatalf("follow=%s: %d events", no, len(got))
		}
	}
	f.request("GET", "/admin/v1/events?from_seq=3", "").wantError(t, http.StatusBadRequest, "from_seq needs a tenant")
	// Both starts at once are refused, as the CLI refuses them, rather
	// than one of them taken without a word.
	f.request("GET", "/admin/v1/events?tenant=acme&since=1h&from_seq=3", "").wantError(t, http.StatusBadRequest, "since and from_seq exclude each other")
}

// TestEventsTailAcrossOutage: a following tail keeps going while NATS is
// away, retrying with a growing wait rather than in a loop, and carries on
// with the events published once it is back.
func TestEventsTailAcrossOutage(t *testing.T) {
	f := newFixture(t)
	lines := eventIDs(f.follow("tenant=acme"))
	first := f.publish("acme", events.UserCreated, 1)[0]
	if id := <-lines; id != first {
		t.Fatalf("first line %s, want %s", id, first)
	}

	back := f.stopNATS()
	down := time.Now()
	failures := func() int { return strings.Count(f.log.String(), "reading the stream failed") }
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := failures(); n < 4 {
			return fmt.Errorf("%d failed fetches so far", n)
		}
		return nil
	})
	// Waits of 100 ms, 200 ms, 400 ms …: n failures take at least
	// 100 ms × (2^(n-1) - 1); a loop would fail thousands of times.
	n, elapsed := failures(), time.Since(down)
	if most := 2 + int(elapsed/(100*time.Millisecond)); n > most {
		t.Fatalf("%d failed fetches in %s: not backing off", n, elapsed)
	}
	back()
	wantLine(t, lines, f.publishWhenBack("acme", events.UserUpdated), "after the outage")
}

// TestNoFollowTailEndsWhenNATSGoes: a tail that does not follow, for a
// script, ends with an error when NATS goes away while it reads a backlog
// of more than one batch (256 events): it retried until NATS was back (for
// ever, if it never came), and an error after the answer began ended the
// answer as a whole one ends, so the CLI exited 0 with part of the events.
func TestNoFollowTailEndsWhenNATSGoes(t *testing.T) {
	f := newFixture(t)
	pad := strings.Repeat("x", 64<<10) // 300 × 64 KiB: more than the sockets hold
	for i := range 300 {
		e, err := events.New(events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: fmt.Sprintf("u%d", i), Sequence: uint64(i + 1), SubjectSeq: 1, Time: time.Now()},
			events.Data{Tenant: "acme", ResourceType: "User", ID: fmt.Sprintf("u%d", i), Resource: json.RawMessage(`{"pad":"` + pad + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := events.ToMsg(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), "GET", f.url+"/admin/v1/events?tenant=acme&since=1h&follow=false", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("tail: %v %v", res, err)
	}
	defer res.Body.Close()
	r := bufio.NewReaderSize(res.Body, 1<<20)
	if _, err := r.ReadString('\n'); err != nil { // the first batch is on its way
		t.Fatal(err)
	}
	f.stopNATS() // and not back
	ended := make(chan error, 1)
	lines := 1
	go func() {
		for {
			if _, err := r.ReadString('\n'); err != nil {
				ended <- err
				return
			}
			lines++
		}
	}()
	select {
	case err := <-ended:
		if err == io.EOF || lines >= 300 {
			t.Errorf("the tail ended as a whole answer ends (%v) after %d of 300 events", err, lines)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("a tail that does not follow still runs 30 s after NATS went away, %d of 300 events read", lines)
	}
}

// TestEventsTailStartedDuringOutage: a following tail asked for while NATS
// is away begins, waits for NATS as a tail that began before the outage
// does, and then has the events stored since it was asked: the first one
// published once NATS is back (as the outbox publishes what was written
// meanwhile) included, and none from before. It used to fail at once, 500
// "internal error".
func TestEventsTailStartedDuringOutage(t *testing.T) {
	f := newFixture(t)
	f.publish("acme", events.UserCreated, 1)
	back := f.stopNATS()
	lines := eventIDs(f.follow("tenant=acme"))
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(f.log.String(), "reading the stream failed") {
			return errors.New("the tail has not tried again yet")
		}
		return nil
	})
	back()
	wantLine(t, lines, f.publishWhenBack("acme", events.UserUpdated), "first, published once NATS was back")
}

// wantLine waits for the next id a tail sends and checks it is want.
func wantLine(t *testing.T, lines <-chan string, want, what string) {
	t.Helper()
	select {
	case id := <-lines:
		if id != want {
			t.Fatalf("line %s, want %s (%s)", id, want, what)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no line within 30 s; want %s (%s)", want, what)
	}
}

// stopNATS stops the fixture's NATS server and returns what starts it
// again, at the same address and with the same store.
func (f *fixture) stopNATS() (back func()) {
	f.t.Helper()
	port := f.nats.Addr().(*net.TCPAddr).Port
	f.nats.Shutdown()
	f.nats.WaitForShutdown()
	return func() {
		f.t.Helper()
		f.nats = eventstest.RunServerAt(f.t, f.natsDir, port)
		f.t.Cleanup(f.stop) // the sinks hand their partitions over before this server shuts down
	}
}

// eventIDs reads a tail's lines and sends their event ids.
func eventIDs(res *http.Response) <-chan string {
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		dec := json.NewDecoder(res.Body)
		for {
			var e struct{ ID string }
			if dec.Decode(&e) != nil {
				return
			}
			lines <- e.ID
		}
	}()
	return lines
}

// publishWhenBack publishes one event as soon as NATS takes it.
func (f *fixture) publishWhenBack(tenant string, a events.Action) string {
	f.t.Helper()
	msg, id := message(f.t, tenant, a, "u9", 9)
	eventstest.CheckFor(f.t, 20*time.Second, 50*time.Millisecond, func() error {
		_, err := f.js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(events.StreamName))
		return err
	})
	return id
}

// TestOutboxQuarantine lists the outbox rows the publisher set aside, a
// page at a time, and refuses a bad cursor or limit.
func TestOutboxQuarantine(t *testing.T) {
	f := newFixture(t)
	f.createUsers("acme", "ann", "bob", "cid")
	rows, err := f.store.ReadOutbox(0, 10)
	if err != nil || len(rows) != 3 {
		t.Fatalf("outbox: %d rows, %v", len(rows), err)
	}
	for _, row := range rows {
		if err := f.store.QuarantineOutbox(row.Key, "a test put it here"); err != nil {
			t.Fatal(err)
		}
	}
	var page QuarantinePage
	f.request("GET", "/admin/v1/outbox/quarantine?limit=2", "").want(t, 200, &page)
	if len(page.Rows) != 2 || page.Rows[0].Key != rows[0].Key || page.NextAfter != rows[1].Key || page.Rows[0].Reason != "a test put it here" || page.Rows[0].Row == "" {
		t.Fatalf("first page: %+v", page)
	}
	next := page.NextAfter
	page = QuarantinePage{}
	f.request("GET", fmt.Sprintf("/admin/v1/outbox/quarantine?limit=2&after=%d", next), "").want(t, 200, &page)
	if len(page.Rows) != 1 || page.Rows[0].Key != rows[2].Key || page.NextAfter != 0 {
		t.Fatalf("second page: %+v", page)
	}
	f.request("GET", "/admin/v1/outbox/quarantine?after=x", "").wantError(t, http.StatusBadRequest, "after")
	f.request("GET", "/admin/v1/outbox/quarantine?limit=0", "").wantError(t, http.StatusBadRequest, "limit")
}

// createUsers creates users of the given userNames in a tenant.
func (f *fixture) createUsers(tenant string, names ...string) {
	f.t.Helper()
	for _, name := range names {
		r, err := scim.ParseResource(scim.UserResourceType, []byte(`{"schemas":["`+scim.UserSchema+`"],"userName":"`+name+`"}`))
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.store.Create(context.Background(), tenant, r); err != nil {
			f.t.Fatal(err)
		}
	}
}

// TestStorage: the data file's size by bucket, for operators and the
// bench's scale run; behind the admin token like the rest of the API.
func TestStorage(t *testing.T) {
	f := newFixture(t)
	f.createUsers("acme", "ann", "bob", "cid")
	f.requestAs("", "GET", "/admin/v1/storage", "").want(t, 401, nil)
	var st relay.StorageStats
	f.request("GET", "/admin/v1/storage", "").want(t, 200, &st)
	byName := map[string]relay.BucketStats{}
	for _, b := range st.Buckets {
		byName[b.Name] = b
	}
	users, ix := byName["tenants/acme/users"], byName["tenants/acme/ix_username"]
	if st.FileBytes <= 0 || users.Keys != 3 || users.Bytes <= 0 || ix.Keys != 3 || byName["tenants/globex/users"].Keys != 0 || byName["outbox"].Keys != 3 {
		t.Fatalf("storage: %+v", st)
	}
	// The file's size is one figure wherever it is read: here, on the
	// overview (stats) and in scimrelay_store_file_bytes, all the file on
	// disk (bbolt grows it ahead of the pages it uses).
	var stats Stats
	f.request("GET", "/admin/v1/stats", "").want(t, 200, &stats)
	if stats.DataFile == nil || st.FileBytes != stats.DataFile.Bytes {
		t.Fatalf("storage says the file takes %d bytes, stats %+v", st.FileBytes, stats.DataFile)
	}
}

// TestLogFilterTakesEveryOperation: every operation the SCIM handler can
// log (/Me, answered 501, among them) and the token endpoint's can be
// filtered on; the handler's own test (scim's TestOperationsAreRouted)
// keeps scim.Operations true to its routes.
func TestLogFilterTakesEveryOperation(t *testing.T) {
	f := newFixture(t)
	for _, op := range append(scim.Operations(), "token") {
		f.request("GET", "/admin/v1/log?operation="+op, "").want(t, http.StatusOK, nil)
	}
}

// TestReadinessEndsAtItsBound: a check that does not answer (the data
// file's, behind a remap that waits for a backup) fails /readyz's run of
// the checks at its bound, the others answered, and a scrape of
// scimrelay_ready says 0 for it: both waited for it.
func TestReadinessEndsAtItsBound(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	checks := []Check{
		{Name: "shutdown", Check: func(context.Context) error { return nil }},
		{Name: "store", Check: func(context.Context) error { <-release; return nil }},
		{Name: "nats", Informational: true, Check: func(context.Context) error { return errors.New("away") }},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	res := readiness(ctx, checks)
	if res.Ready || len(res.Checks) != 3 || !res.Checks[0].OK || res.Checks[1].OK || !strings.Contains(res.Checks[1].Error, "did not answer") || res.Checks[2].Error != "away" {
		t.Fatalf("readiness with the store check stuck: %+v", res)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(ReadinessMetric(checks))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if len(got) != 2 || got["shutdown"] != 1 || got["store"] != 0 {
		t.Errorf("scimrelay_ready with the store check stuck: %v, want shutdown 1, store 0, nats (informational) left out", got)
	}
}

// TestAHungCheckRunsOnceAtATime: probes and scrapes that come while a check
// hangs wait for the run under way instead of each starting its own (each
// would hold a goroutine, and in a hung system call a thread, for good).
func TestAHungCheckRunsOnceAtATime(t *testing.T) {
	var runs atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	h := NewHandler(Options{Checks: []Check{{Name: "store", Check: func(context.Context) error {
		runs.Add(1)
		<-release
		return nil
	}}}})
	readyz := func(wait time.Duration) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil).WithContext(ctx))
		return rec.Code, rec.Body.String()
	}
	for range 10 {
		if code, body := readyz(10 * time.Millisecond); code != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer within") {
			t.Fatalf("/readyz while the store check hangs: %d %q, want 503 saying it did not answer", code, body)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("10 probes while the check hung started %d runs of it, want 1", n)
	}
	unblock()
	if code, _ := readyz(time.Minute); code != http.StatusOK {
		t.Fatalf("/readyz once the check answers: %d, want 200", code)
	}
}
