// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// TestSinkConsumersExistBeforeServing holds the README's "Webhooks"
// promise: "Each sink in relay.yaml gets one durable JetStream consumer per
// partition (scimrelay-sink-<name>-P0 … -P15), created before the relay
// answers any SCIM request", each holding at most 1,000 events (the
// consumer's window), with its parking bucket scimrelay-parked-<sink>. The
// server is built as serve builds it, and looked at before it serves.
func TestSinkConsumersExistBeforeServing(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", "http://127.0.0.1:1/hook", nil)
	srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	ctx := context.Background()
	stream, err := srv.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	list := stream.ConsumerNames(ctx)
	for name := range list.Name() {
		if strings.HasPrefix(name, "scimrelay-sink-") {
			names = append(names, name)
		}
	}
	if err := list.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) != 16 {
		t.Fatalf("before serving, the sink's consumers are %v; want scimrelay-sink-crm-P0 … -P15", names)
	}
	for p := range 16 {
		c, err := stream.Consumer(ctx, fmt.Sprintf("scimrelay-sink-crm-P%d", p))
		if err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
		info := c.CachedInfo()
		if info.Config.Durable == "" || info.Config.MaxAckPending != 1000 || info.Config.DeliverPolicy != jetstream.DeliverNewPolicy {
			t.Fatalf("partition %d: durable %q, window %d, deliver policy %v; want durable, 1,000, new events", p, info.Config.Durable, info.Config.MaxAckPending, info.Config.DeliverPolicy)
		}
	}
	if _, err := srv.js.KeyValue(ctx, "scimrelay-parked-crm"); err != nil {
		t.Fatalf("the sink's parking bucket: %v", err)
	}
}

// TestStreamDropsEventsOnlyByAge holds "No retry is put off past the time
// the stream drops its event (nats.stream.max_age, 7 days …) … Events the
// stream drops by its other limits (an external stream given max_bytes or
// max_msgs) are not covered: the relay's stream sets neither."
func TestStreamDropsEventsOnlyByAge(t *testing.T) {
	srv, err := newServer(context.Background(), testConfig(t, t.TempDir()), roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	stream, err := srv.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	c := stream.CachedInfo().Config
	if c.MaxAge != 7*24*time.Hour || c.MaxBytes > 0 || c.MaxMsgs > 0 || c.MaxMsgsPerSubject > 0 {
		t.Fatalf("the stream keeps events %s, at most %d bytes, %d messages, %d per subject; want 7 days and no other limit", c.MaxAge, c.MaxBytes, c.MaxMsgs, c.MaxMsgsPerSubject)
	}
}

// TestRefusedRedriveAndReplayFormsDoNothing: the console's redrive and
// replay forms it refuses (without the session's form token, with a forged
// or another session's, sent from another site, or with a since or a
// choice it cannot take) and the CLI's refused redrive and replay
// commands (neither or both of --id and --all, a since that is no
// duration, a sink that does not exist) do nothing: no delivery, the dead
// letters untouched. The replay and redrive sent after them deliver
// exactly their own events, which they could not if a refused one had run.
func TestRefusedRedriveAndReplayFormsDoNothing(t *testing.T) {
	hook := newFlakyHook(t)
	hook.fail(http.StatusGone)
	p, b := consoleRelay(t, func(c *config.Config) { withSink(c, "crm", hook.URL, nil) })
	cfg := cliConfig(t, p, adminSecret)
	for _, name := range []string{"ann", "bob"} {
		p.createUser(t, name)
	}
	deadLetters := func() []string {
		t.Helper()
		page, err := p.srv.sinks.DeadLetters(context.Background(), "crm", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, dl := range page.DeadLetters {
			ids = append(ids, dl.ID)
		}
		return ids
	}
	var dead []string
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if dead = deadLetters(); len(dead) != 2 {
			return fmt.Errorf("%d dead letters, want the two users' events", len(dead))
		}
		return nil
	})
	hook.fail(0) // from now on every delivery is taken, and counted

	other := newBrowser(t, p)
	other.signIn(adminSecret).redirect(t, "/ui/")
	other.get("/ui/")
	b.get("/ui/sinks/crm")
	forms := map[string]url.Values{
		"/ui/sinks/crm/redrive": {"all": {"1"}},
		"/ui/sinks/crm/replay":  {"since": {"1h"}},
	}
	for path, form := range forms {
		for name, token := range map[string]string{"no token": "", "a forged one": "forged", "another session's": other.csrf} {
			f := url.Values{"csrf": {token}}
			for k, v := range form {
				f[k] = v
			}
			if res := b.post(path, f); res.status != http.StatusForbidden {
				t.Errorf("POST %s with %s: %d, want 403", path, name, res.status)
			}
		}
		f := url.Values{"csrf": {b.csrf}}
		for k, v := range form {
			f[k] = v
		}
		req, _ := http.NewRequest("POST", b.base+path, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if res := b.do(req); res.status != http.StatusForbidden {
			t.Errorf("cross-site POST %s: %d, want 403", path, res.status)
		}
	}
	b.post("/ui/sinks/crm/replay", url.Values{"since": {"yesterday"}}).want(t, http.StatusBadRequest, "since:")
	b.post("/ui/sinks/crm/replay", url.Values{"since": {"0"}}).want(t, http.StatusBadRequest, "since:")
	b.post("/ui/sinks/crm/redrive", url.Values{}).want(t, http.StatusBadRequest, "either an id or all")
	b.post("/ui/sinks/crm/redrive", url.Values{"id": {dead[0]}, "all": {"1"}}).want(t, http.StatusBadRequest, "either an id or all")
	for _, args := range [][]string{
		{"dlq", "redrive", "--sink", "crm"},
		{"dlq", "redrive", "--sink", "crm", "--id", dead[0], "--all"},
		{"dlq", "redrive", "--sink", "erp", "--all"},
		{"sinks", "replay", "--sink", "crm", "--since", "yesterday"},
		{"sinks", "replay", "--sink", "crm", "--since", "0"},
		{"sinks", "replay", "--sink", "erp", "--since", "1h"},
		{"sinks", "replay", "--sink", "crm"},
	} {
		if code, _, stderr := cli(t, append(args, "--config", cfg)...); code == exitOK {
			t.Errorf("%v: exit 0, want a refusal; %s", args, stderr)
		}
	}
	if n := hook.delivered(); n != 0 {
		t.Errorf("refused redrives and replays delivered %d events", n)
	}
	if got := deadLetters(); !slices.Equal(got, dead) {
		t.Errorf("after the refusals the dead letters are %v, want %v", got, dead)
	}

	// Each kind runs one at a time per sink: these would be refused (409)
	// if a refused one were running, and would find the dead letters gone
	// if one had run.
	if code, out, stderr := cli(t, "sinks", "replay", "--sink", "crm", "--since", "1h", "--config", cfg); code != exitOK || !strings.Contains(out, "2 delivered") {
		t.Fatalf("replay: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := cli(t, "dlq", "redrive", "--sink", "crm", "--all", "--config", cfg); code != exitOK || !strings.Contains(out, "delivered 2,") {
		t.Fatalf("redrive: exit %d\n%s\n%s", code, out, stderr)
	}
	if n := hook.delivered(); n != 4 {
		t.Errorf("the receiver took %d deliveries, want 4: two replayed and two redriven", n)
	}
}

// TestJobFieldsAsTheREADMEListsThem: the README's bullet on jobs names
// every field of a job as the admin API answers it, and of a redrive's,
// replay's and purge's progress: a field added without a word there
// fails (the admin API's job results had no field listed anywhere).
func TestJobFieldsAsTheREADMEListsThem(t *testing.T) {
	_, bullet, ok := strings.Cut(readme(t, "Webhooks"), "- **Redrive and replay run as jobs.**")
	if !ok {
		t.Fatal("README, Webhooks: no bullet on jobs")
	}
	bullet, _, _ = strings.Cut(bullet, "\n- ")
	var fields func(reflect.Type) []string
	fields = func(typ reflect.Type) []string {
		var names []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case f.Anonymous && f.Type.Kind() == reflect.Struct && name == "":
				names = append(names, fields(f.Type)...)
			case f.IsExported() && name != "-":
				names = append(names, cmp.Or(name, f.Name))
			}
		}
		return names
	}
	for _, v := range []any{jobs.Job{}, sinks.RedriveResult{}, sinks.ReplayResult{}, admin.PurgeResult{}} {
		for _, name := range fields(reflect.TypeOf(v)) {
			if !strings.Contains(bullet, "`"+name+"`") {
				t.Errorf("README, Webhooks, the bullet on jobs: no `%s` of %T", name, v)
			}
		}
	}
}
