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
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// The README's "Events" section, where the tests beside this file leave a
// promise unchecked as the relay is deployed.

// TestPublicURLIsTheEventSource: with public_url set in relay.yaml, an
// event's source is the absolute https://relay.example.com/scim/v2/<tenant>
// and its resource's meta.location is absolute too.
func TestPublicURLIsTheEventSource(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.PublicURL = "https://relay.example.com"
	p := startRelay(t, cfg, roleAll)
	id := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201).str("id")
	readStream(t, p.srv.js, 1)
	ctx := context.Background()
	st, err := p.srv.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.FromMsg(m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Source() != "https://relay.example.com/scim/v2/acme" {
		t.Errorf("source %q, want https://relay.example.com/scim/v2/acme", e.Source())
	}
	d, err := events.DataOf(e)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Meta struct{ Location string } `json:"meta"`
	}
	if err := json.Unmarshal(d.Resource, &r); err != nil || r.Meta.Location != "https://relay.example.com/scim/v2/acme/Users/"+id {
		t.Errorf("the event's resource has meta.location %q (%v), want the public URL's", r.Meta.Location, err)
	}
}

// recorder is a reverse proxy in front of the admin API that keeps every
// request it passes on, headers (but the admin token) and body, as the
// relay receives them.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var head bytes.Buffer
		h := req.Header.Clone()
		h.Del("Authorization") // the admin token: not what this looks for, and not for the test's output
		_ = h.Write(&head)
		r.mu.Lock()
		r.seen = append(r.seen, req.Method+" "+req.URL.String()+"\n"+head.String()+"\n"+string(body))
		r.mu.Unlock()
		req.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.seen, "\n----\n")
}

// TestSubscriberAddSendsOnlyThePublicKey: "the CLI … generates the nkey
// pair and sends the relay only the public key": everything the relay
// receives from subscriber add, with a seed file and with --stdout, holds
// the public key and neither the seed nor the private key. The seed goes
// to ./NAME.nk (0600) by default, and add says how to connect with each
// client the README names.
func TestSubscriberAddSendsOnlyThePublicKey(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.Listen = fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))
	p := startRelay(t, cfg, roleAll)
	rec := newRecorder(t, p.adminURL)
	viaRecorder := *p
	viaRecorder.adminURL = rec.URL
	cliCfg := cliConfig(t, &viaRecorder, adminSecret)
	dir := t.TempDir()
	t.Chdir(dir)

	code, out, stderr := cli(t, "subscriber", "add", "billing-users", "--subjects", "scimrelay.acme.user.>", "--config", cliCfg)
	if code != exitOK {
		t.Fatalf("subscriber add: %d %s %s", code, out, stderr)
	}
	fi, err := os.Stat("billing-users.nk")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("./billing-users.nk: %v %v, want a file of mode 0600", fi, err)
	}
	seed, err := os.ReadFile("billing-users.nk")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nats://" + cfg.NATS.Listen, "nats.NkeyOptionFromSeed", "nkeyAuthenticator", "--nkey", "_INBOX_billing-users",
		"nats.CustomInboxPrefix", "inboxPrefix", "--inbox-prefix",
		"nats.MaxReconnects(-1)", "nats.IgnoreAuthErrorAbort()", "nats.RetryOnFailedConnect(true)", "maxReconnectAttempts: -1", "ignoreAuthErrorAbort: true", "waitOnFirstConnect: true"} {
		if !strings.Contains(out, want) {
			t.Errorf("subscriber add does not say %q:\n%s", want, out)
		}
	}
	code, stdoutSeed, stderr := cli(t, "subscriber", "add", "audit", "--stdout", "--config", cliCfg)
	if code != exitOK {
		t.Fatalf("subscriber add --stdout: %d %s", code, stderr)
	}

	sent := rec.requests()
	if !strings.Contains(sent, "/admin/v1/subscribers") {
		t.Fatalf("the recorder saw no subscriber request:\n%s", sent)
	}
	for name, s := range map[string][]byte{"billing-users": seed, "audit": []byte(stdoutSeed)} {
		kp, err := nkeys.FromSeed(bytes.TrimSpace(s))
		if err != nil {
			t.Fatalf("%s: the seed it was given: %v", name, err)
		}
		pub, _ := kp.PublicKey()
		private, _ := kp.PrivateKey()
		if !strings.Contains(sent, pub) {
			t.Errorf("%s: the relay was not sent the public key %s", name, pub)
		}
		if strings.Contains(sent, string(bytes.TrimSpace(s))) || strings.Contains(sent, string(private)) {
			t.Errorf("%s: the relay was sent the seed or the private key", name)
		}
	}
	// The relay admits the seed's key: what it was sent is the pair's.
	if _, err := connectSubscriber(t, "nats://"+cfg.NATS.Listen, "billing-users", dir+"/billing-users.nk"); err != nil {
		t.Fatalf("connecting with the seed add wrote: %v", err)
	}
}

// TestSubscriberRemoveRefusesWithExternalNATS: "With an external NATS
// (nats.url) the subscriber commands refuse": remove too (add and list:
// TestSubscriberExternalNATS).
func TestSubscriberRemoveRefusesWithExternalNATS(t *testing.T) {
	ns := eventstest.RunServer(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	p := startRelay(t, cfg, roleAll)
	code, _, stderr := cli(t, "subscriber", "remove", "billing", "--config", cliConfig(t, p, adminSecret))
	if code != exitError || !strings.Contains(stderr, "external NATS") {
		t.Fatalf("subscriber remove: %d %s", code, stderr)
	}
}

// TestPublishedEventsWaitForTheDisk: "an acknowledged change is never lost"
// holds across a crash of the machine, not only of the process. The
// embedded NATS server writes its store to disk every nats.sync_interval,
// and the relay keeps each event JetStream acknowledged in its outbox for
// three times that, to be published again after such a crash; with 0 the
// server writes each message before acknowledging it and the relay keeps
// none. A SCIM front end on an external NATS (the shipped compose and Helm
// shape) keeps them as long, on the interval relay.yaml says that server
// has.
func TestPublishedEventsWaitForTheDisk(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		external bool
	}{{time.Second, false}, {0, false}, {time.Second, true}} {
		interval := tc.interval
		t.Run(fmt.Sprintf("sync_interval=%s/external=%t", interval, tc.external), func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			cfg.NATS.SyncInterval = config.Duration(interval)
			role := roleAll
			if tc.external {
				cfg.NATS.URL, role = eventstest.URL(eventstest.RunServer(t)), roleSCIM
			}
			p := startRelay(t, cfg, role)
			if !tc.external {
				js := p.srv.natsServer.Server().JetStreamConfig()
				if js.SyncInterval != interval && interval != 0 || js.SyncAlways != (interval == 0) {
					t.Fatalf("the embedded server writes to disk every %s, sync_always %t; relay.yaml says %s", js.SyncInterval, js.SyncAlways, interval)
				}
			}
			before := time.Now() // JetStream acknowledges the event after it
			p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
			readStream(t, p.srv.js, 1)
			n, err := p.srv.store.OutboxDepth()
			if err != nil {
				t.Fatal(err)
			}
			if interval > 0 && n != 1 {
				t.Fatalf("the outbox holds %d events once JetStream has the one, want it kept for %s", n, 3*interval)
			}
			eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if n, err := p.srv.store.OutboxDepth(); err != nil || n != 0 {
					return fmt.Errorf("the outbox still holds %d events (%v)", n, err)
				}
				return nil
			})
			// Kept three intervals from its acknowledgement, which came
			// after before. With 0, nothing is kept: the delete took far
			// less than a second.
			kept := time.Since(before)
			if interval > 0 && kept < 3*interval {
				t.Fatalf("the event was deleted %s after the request that made it, want it kept %s after JetStream had it", kept, 3*interval)
			}
			if interval == 0 && kept >= time.Second {
				t.Fatalf("the event was kept %s with sync_always, want it deleted at once", kept)
			}
		})
	}
}

// TestExternalNATSWithoutSyncInterval: a relay.yaml that points at an
// external NATS and leaves nats.sync_interval out makes the relay assume
// nats-server's own default, 2m, and keep published events 6m; it says so
// as a warning at start. The embedded server's 250ms would let it delete
// events such a server had not yet written to disk. One that keeps
// nats.listen (the example relay.yaml sets it), which an external NATS
// leaves unused, is told so at start too.
func TestExternalNATSWithoutSyncInterval(t *testing.T) {
	for _, tt := range []struct {
		name, sync string
		keep       time.Duration
		warned     bool
	}{
		{"unset", "", 3 * config.ExternalSyncInterval, true},
		{"set", "  sync_interval: 10s\n", 30 * time.Second, false},
		{"set, with nats.listen", "  sync_interval: 10s\n  listen: 127.0.0.1:4222\n", 30 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := eventstest.URL(eventstest.RunServer(t))
			text := "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nadmin: {token: " + adminSecret + "}\ndata_dir: " + t.TempDir() +
				"\nnats:\n  url: " + url + "\n" + tt.sync + "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
			cfg, err := config.Parse([]byte(text), os.LookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			var logs eventstest.Log
			p := startRelayWith(t, cfg, roleSCIM, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), io.Discard)
			p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
			readStream(t, p.srv.js, 1)
			warned := strings.Contains(logs.String(), "level=WARN msg=\"nats.sync_interval is not set")
			if !strings.Contains(logs.String(), "kept_for="+tt.keep.String()) || warned != tt.warned {
				t.Fatalf("want published events kept %s, warned %t; the log:\n%s", tt.keep, tt.warned, logs.String())
			}
			if n, err := p.srv.store.OutboxDepth(); err != nil || n != 1 {
				t.Fatalf("the outbox holds %d events (%v) once JetStream has the one, want it kept", n, err)
			}
			listening := strings.Contains(tt.sync, "listen:")
			if said := strings.Contains(logs.String(), "level=WARN msg=\"nats.listen is the embedded NATS server's listener"); said != listening {
				t.Errorf("nats.listen set %t, said unused %t; the log:\n%s", listening, said, logs.String())
			}
		})
	}
}

// TestChangeTooLargeForItsEventIsRefused: "an acknowledged change is never
// lost". An update's event carries the resource and the old and new
// values, so a change the SCIM listener takes can make an event larger
// than NATS takes: it is refused, 413, and nothing changes; it was
// answered 200 and its event quarantined. A resource is at most 256 KiB
// (relay.MaxResourceBytes), so an event is at most about three times that,
// under the embedded server's 8 MiB: here an external NATS takes 512 KiB
// (an operator's max_payload).
func TestChangeTooLargeForItsEventIsRefused(t *testing.T) {
	ns := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *natsserver.Options) { o.MaxPayload = 512 << 10 })
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = eventstest.URL(ns)
	p := startRelay(t, cfg, roleAll)
	title := strings.Repeat("x", 200<<10)
	id := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann","title":"`+title+`"}`).want(t, 201).str("id")
	r := p.scim("acme", acmeToken, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"`+strings.Repeat("y", 200<<10)+`"}]}`)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.raw), "too large for its event") {
		t.Fatalf("a change whose event NATS would refuse: %d %.300s", r.status, r.raw)
	}
	if u := p.scim("acme", acmeToken, "GET", "/Users/"+id, "").want(t, 200); u.str("title") != title || u.header.Get("ETag") != `W/"1"` {
		t.Fatalf("ann after the refused change: version %s", u.header.Get("ETag"))
	}
	if got := readStream(t, p.srv.js, 1); got[0].action != events.UserCreated {
		t.Fatalf("the stream holds %v, want ann's user.created alone", got[0].action)
	}
}

// TestPublicURLIsWrittenAsEventsReadIt: public_url is taken as Go writes
// the URL it parses, so that an event's source reads back the same: the
// signature of an event on an external NATS covers its source, and a
// dead letter encodes the event again from what it read.
func TestPublicURLIsWrittenAsEventsReadIt(t *testing.T) {
	for in, want := range map[string]string{
		"https://relay.example.com/":     "https://relay.example.com",
		"HTTPS://relay.example.com":      "https://relay.example.com",
		"https://relay.example.com/über": "https://relay.example.com/%C3%BCber",
		"https://relay.example.com/a b/": "https://relay.example.com/a%20b",
	} {
		got, err := publicURL(in)
		if err != nil || got != want {
			t.Errorf("public_url %q is taken as %q (%v), want %q", in, got, err, want)
			continue
		}
		e := event.New()
		e.SetSource(got + "/scim/v2/acme")
		if e.Source() != got+"/scim/v2/acme" {
			t.Errorf("public_url %q: an event's source %q reads back as %q", in, got+"/scim/v2/acme", e.Source())
		}
	}
	// A bare "?" is a query too: every source would be one.
	if got, err := publicURL("https://relay.example.com/?"); err == nil {
		t.Errorf("public_url https://relay.example.com/? is taken as %q", got)
	}

	// The SCIM answers' Location and meta.location take it the same way:
	// they name where the event's source says the resource is.
	cfg := testConfig(t, t.TempDir())
	cfg.PublicURL = "HTTPS://relay.example.com/a b/"
	p := startRelay(t, cfg, roleAll)
	created := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
	source := readStream(t, p.srv.js, 1)[0].source
	want := source + "/Users/" + created.str("id")
	if !strings.HasPrefix(want, "https://relay.example.com/a%20b/scim/v2/acme/") {
		t.Fatalf("event source %q", source)
	}
	meta, _ := created.body["meta"].(map[string]any)
	if loc := created.header.Get("Location"); loc != want || meta["location"] != want {
		t.Errorf("Location %q, meta.location %v; the event's source says the resource is at %q", loc, meta["location"], want)
	}
}
