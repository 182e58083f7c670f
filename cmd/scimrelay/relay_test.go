// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/console"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/scim/scimtest"
)

const (
	acmeToken   = "acme-static-token-0123456789abcdef"
	globexToken = "globex-static-token-0123456789abcdef"
	adminSecret = "admin-token-0123456789abcdef"
)

// testConfig is a relay.yaml for tests: a data directory of the test's own,
// random loopback ports, the embedded NATS in-process only, two tenants
// with static tokens.
func testConfig(t testing.TB, dataDir string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dataDir
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.NATS.Listen = ""
	cfg.Admin.Token = adminSecret
	cfg.Limits.Rate = 0
	cfg.Tenants = []config.Tenant{
		{Name: "acme", Tokens: []string{acmeToken}},
		{Name: "globex", Tokens: []string{globexToken}},
	}
	return cfg
}

// relayProc is a relay running in this process, as serve runs it.
type relayProc struct {
	t        testing.TB
	srv      *server
	cancel   context.CancelFunc
	done     chan error
	scimURL  string
	adminURL string
}

func startRelay(t testing.TB, cfg *config.Config, role string, opts ...serverOption) *relayProc {
	t.Helper()
	return startRelayWith(t, cfg, role, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard, opts...)
}

// startFrontEndFor starts the SCIM front end (role scim) beside a
// delivery worker of cfg, with its own data directory: it makes the
// streams and buckets that a worker only opens, as deployed.
func startFrontEndFor(t testing.TB, cfg *config.Config) *relayProc {
	t.Helper()
	front := *cfg
	front.DataDir = t.TempDir()
	return startRelay(t, &front, roleSCIM)
}

// startRelayWith starts a relay logging to log; out is its terminal (nil: none).
func startRelayWith(t testing.TB, cfg *config.Config, role string, log *slog.Logger, out io.Writer, opts ...serverOption) *relayProc {
	t.Helper()
	srv, err := newServer(context.Background(), cfg, role, log, out, opts...)
	if err != nil {
		t.Fatalf("starting the relay: %v", err)
	}
	return runServer(t, srv)
}

// runServer runs a relay newServer made, until the test ends.
func runServer(t testing.TB, srv *server) *relayProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := srv.config()
	p := &relayProc{t: t, srv: srv, cancel: cancel, done: make(chan error, 1), adminURL: schemeOf(cfg.Admin.TLS) + "://" + srv.adminLn.Addr().String()}
	if srv.scimLn != nil {
		p.scimURL = schemeOf(cfg.TLS) + "://" + srv.scimLn.Addr().String()
	}
	go func() { p.done <- srv.run(ctx) }()
	t.Cleanup(p.stop)
	return p
}

// stop shuts the relay down the way SIGTERM does and waits for it.
func (p *relayProc) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Errorf("relay stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		p.t.Fatal("relay did not stop within 30s")
	}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

// scim sends a SCIM request to a tenant with a token, and any headers given
// as name, value pairs.
func (p *relayProc) scim(tenant, token, method, path, body string, header ...string) reply {
	p.t.Helper()
	r, err := p.send(tenant, token, method, path, body, header...)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// send is scim returning its error, for a request sent from a goroutine
// of the test's own (which may not call t.Fatal).
func (p *relayProc) send(tenant, token, method, path, body string, header ...string) (reply, error) {
	req, err := http.NewRequest(method, p.scimURL+"/scim/v2/"+tenant+path, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return sendRequest(req)
}

// answered sends up to n+1 GET /Users as tenant and says how many were
// answered before the first 429 (n+1 when none was refused).
func (p *relayProc) answered(tenant, token string, n int) int {
	p.t.Helper()
	for i := range n + 1 {
		switch r := p.scim(tenant, token, "GET", "/Users", ""); r.status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			return i
		default:
			p.t.Fatalf("%s: %d %s", tenant, r.status, r.raw)
		}
	}
	return n + 1
}

// do sends req and reads its answer, failing the test when it cannot.
func do(t testing.TB, req *http.Request) reply {
	t.Helper()
	r, err := sendRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendRequest sends req and reads its answer.
func sendRequest(req *http.Request) (reply, error) {
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r, nil
}

func (r reply) want(t testing.TB, status int) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

func (r reply) str(key string) string {
	v := r.body[key]
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// entraFixture is the Entra reference fixture, shared with scim's tests.
const entraFixture = "../../scim/testdata/entra-requests.json"

// entraBodies returns the documented request bodies by step id.
func entraBodies(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range scimtest.LoadEntraSteps(t, entraFixture) {
		if s.RequestBody != nil {
			out[s.ID] = s.Body()
		}
	}
	return out
}

func q(filter string) string { return "filter=" + url.QueryEscape(filter) }

type streamed struct {
	action     events.Action
	id         string
	subject    string
	tenant     string
	seq        uint64
	subjectSeq uint64
	time       time.Time
	data       events.Data
	source     string
}

// publishUserEvent puts a user event of acme into the event stream as the
// relay's own NATS connection does, its resource's title and its change's
// old and new title given: for events a SCIM request can no longer make
// (a resource is at most 256 KiB, relay.MaxResourceBytes) but an earlier
// release stored, which stay for the stream's retention.
func publishUserEvent(t testing.TB, p *relayProc, a events.Action, id, title, oldTitle, newTitle string) {
	t.Helper()
	encode := func(v any) []byte { // as the relay does: '&' as it is, not \u0026
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	}
	resource := encode(map[string]any{"schemas": []string{scim.UserSchema}, "id": id, "userName": id, "title": title,
		"meta": map[string]any{"resourceType": "User", "created": "2026-11-23T09:00:00Z", "lastModified": "2026-11-23T09:00:00Z", "version": `W/"1"`}})
	d := events.Data{Tenant: "acme", ResourceType: "User", ID: id, Resource: resource}
	if oldTitle != "" || newTitle != "" {
		d.Changes = []events.Change{{Path: "title", Old: encode(oldTitle), New: encode(newTitle)}}
	}
	e, err := events.New(events.Meta{Tenant: "acme", Action: a, ResourceID: id, Sequence: 1 << 20, SubjectSeq: 1, Time: time.Now()}, d)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(p.srv.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
}

func readStream(t testing.TB, js jetstream.JetStream, n int) []streamed {
	t.Helper()
	ctx := context.Background()
	var stream jetstream.Stream
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		var err error
		if stream, err = js.Stream(ctx, events.StreamName); err != nil {
			return err // NATS may still be reconnecting
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs < uint64(n) {
			return fmt.Errorf("%d events in the stream, want %d", info.State.Msgs, n)
		}
		return nil
	})
	info, _ := stream.Info(ctx)
	var out []streamed
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		// Every event the relay publishes matches the contract.
		eventstest.ValidateEvent(t, e)
		eventstest.ValidateNATSHeaders(t, m.Header)
		a, _ := events.ActionOf(e)
		s, _ := events.Sequence(e)
		ss, _ := events.SubjectSeq(e)
		d, err := events.DataOf(e)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := events.ResourceID(e)
		if stored, err := events.ParseStoredSubject(m.Subject); err != nil || stored.Tenant != events.Tenant(e) || stored.Action != a || stored.ResourceID != id {
			t.Errorf("event %s on subject %s, want %s.<partition> (%v)", e.ID(), m.Subject, events.Subject(events.Tenant(e), a, id), err)
		}
		out = append(out, streamed{a, e.ID(), e.Subject(), events.Tenant(e), s, ss, e.Time(), d, e.Source()})
	}
	if len(out) != n {
		t.Fatalf("the stream holds %d events, want exactly %d", len(out), n)
	}
	return out
}

// TestConfigDefaultsAgreeWithPackages: the config package may import no
// other package of the project, so a default that relay.yaml and a package
// both state is written twice; this keeps the two the same.
func TestConfigDefaultsAgreeWithPackages(t *testing.T) {
	d := config.Default()
	for _, c := range []struct {
		key           string
		config, owner any
	}{
		{"nats.stream.partitions", d.NATS.Stream.Partitions, events.DefaultPartitions},
		{"limits.max_body", int64(d.Limits.MaxBody), int64(scim.DefaultMaxBodyBytes)},
		{"limits.max_json_depth", d.Limits.MaxJSONDepth, scim.DefaultMaxJSONDepth},
		{"limits.max_sort_matches", d.Limits.MaxSortMatches, scim.DefaultMaxSortMatches},
		{"limits.bulk_max_operations", d.Limits.BulkMaxOperations, scim.DefaultBulkMaxOperations},
		{"limits.bulk_max_payload", int64(d.Limits.BulkMaxPayload), int64(scim.DefaultBulkMaxPayload)},
		{"storage.batch_size", d.Storage.BatchSize, relay.DefaultMaxBatch},
		{"oauth.token_lifetime", time.Duration(d.OAuth.TokenLifetime), relay.DefaultAccessTokenLifetime},
		{"provisioning_log.max_bytes", int64(d.ProvisioningLog.MaxBytes), int64(relay.DefaultLogMaxBytes)},
		{"admin.session_idle", time.Duration(d.Admin.SessionIdle), console.DefaultIdleTimeout},
	} {
		if c.config != c.owner {
			t.Errorf("%s defaults to %v in config, to %v in the package that uses it", c.key, c.config, c.owner)
		}
	}
}
