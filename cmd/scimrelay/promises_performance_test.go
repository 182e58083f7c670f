// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// performanceSection returns the README's Performance section.
func performanceSection(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "\n## Performance\n")
	j := strings.Index(text, "\n## Configuration\n")
	if i < 0 || j < i {
		t.Fatal("the README has no Performance section before its Configuration section")
	}
	return text[i:j]
}

// codeBlock returns the first fenced block of the language lang in text
// after the line starting with after.
func codeBlock(t *testing.T, text, after, lang string) string {
	t.Helper()
	i := strings.Index(text, "\n"+after)
	if i < 0 {
		t.Fatalf("the README's Performance section has no paragraph starting %q", after)
	}
	text = text[i:]
	fence := "\n```" + lang + "\n"
	i = strings.Index(text, fence)
	if i < 0 {
		t.Fatalf("no %s block after %q", lang, after)
	}
	text = text[i+len(fence):]
	return text[:strings.Index(text, "\n```")]
}

// shellCommand returns the arguments of the command of block that starts
// with name, its continued lines joined, without name.
func shellCommand(t *testing.T, block, name string) []string {
	t.Helper()
	joined := strings.ReplaceAll(block, "\\\n", " ")
	for line := range strings.SplitSeq(joined, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == name {
			return f[1:]
		}
	}
	t.Fatalf("no %s command in:\n%s", name, block)
	return nil
}

// withFlags returns args with the values of the flags in set replaced.
func withFlags(t *testing.T, args []string, set map[string]string) []string {
	t.Helper()
	out := slices.Clone(args)
	for flag, v := range set {
		i := slices.Index(out, flag)
		if i < 0 || i+1 == len(out) {
			t.Fatalf("the README's command %v has no %s", args, flag)
		}
		out[i+1] = v
	}
	return out
}

var loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

// TestTheREADMEBenchRuns runs the Performance section's Entra cycle as
// the README gives it, at a small size: from a directory holding its
// relay.yaml (ports of the test's own), with its exports, `scimrelay
// serve` and then its `scimrelay bench` command with --fail-on-errors.
// Every event reaches the bench's receiver once and in order, in batches,
// each signature verified with the secret the README exports; the token
// it exports is one the relay takes. Then its million-user command, at
// that size too: the scale mode reads the relay's heap, outbox and data
// file through the admin API of that relay.yaml, whose admin token is the
// one serve generated in data_dir, and measures the filter GETs at
// concurrency 8; and so it does with the relay.yaml $SCIMRELAY_CONFIG
// names instead of --config.
func TestTheREADMEBenchRuns(t *testing.T) {
	section := performanceSection(t)
	yaml := codeBlock(t, section, "**An Entra cycle end to end.**", "yaml")
	sh := codeBlock(t, section, "**An Entra cycle end to end.**", "sh")
	ports, taken := map[string]string{}, map[string]bool{}
	ours := func(addr string) string {
		for ports[addr] == "" { // each address a port of its own
			if a := freeAddr(t); !taken[a] {
				ports[addr], taken[a] = a, true
			}
		}
		return ports[addr]
	}
	yaml = loopbackAddr.ReplaceAllStringFunc(yaml, ours)
	sh = loopbackAddr.ReplaceAllStringFunc(sh, ours)
	for _, kv := range shellCommand(t, sh, "export") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv(configEnv, "")
	t.Chdir(t.TempDir())
	if err := os.WriteFile("relay.yaml", []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	startReloadable(t, "relay.yaml", io.Discard)

	if !strings.Contains(sh, "scimrelay serve --config relay.yaml &") {
		t.Fatalf("the README's commands do not start the relay as this test does:\n%s", sh)
	}
	bench := shellCommand(t, sh, "scimrelay")
	if bench[0] != "bench" {
		t.Fatalf("the README's command is %v, want the bench", bench)
	}
	bench = withFlags(t, bench, map[string]string{"--users": "40", "--groups": "2", "--members-per-group": "20"})
	code, out, stderr := cli(t, append(bench, "--prefix", "readme", "--json", "--fail-on-errors")...)
	var cycle struct {
		Events struct {
			Expected           int  `json:"expected"`
			Received           int  `json:"received"`
			Missing            int  `json:"missing"`
			Duplicated         int  `json:"duplicated"`
			OutOfOrder         int  `json:"out_of_order"`
			SignatureFailures  int  `json:"signature_failures"`
			SignaturesVerified bool `json:"signatures_verified"`
			Requests           int  `json:"requests"`
		} `json:"events"`
		Baseline *json.RawMessage `json:"baseline"`
	}
	if err := json.Unmarshal([]byte(out), &cycle); err != nil || code != exitOK {
		t.Fatalf("the README's bench: exit %d, %v\n%s\n%s", code, err, out, stderr)
	}
	// 40 users, 2 groups of 20 and the incremental cycle's changes.
	if e := cycle.Events; e.Expected < 40+2+40 || e.Received != e.Expected || e.Missing+e.Duplicated+e.OutOfOrder+e.SignatureFailures != 0 || !e.SignaturesVerified {
		t.Errorf("events %+v: want every one received once, in order, its signature verified", e)
	}
	if e := cycle.Events; e.Requests >= e.Received {
		t.Errorf("%d events in %d requests: the README's sink batches", e.Received, e.Requests)
	}
	if cycle.Baseline == nil {
		t.Error("no baseline in the report, though the README's command asks for it")
	}

	scale := shellCommand(t, codeBlock(t, section, "**At a million users.**", "sh"), "scimrelay")
	scale = withFlags(t, scale, map[string]string{"--url": bench[slices.Index(bench, "--url")+1],
		"--users": "40", "--groups": "2", "--members-per-group": "10", "--requests": "20", "--drain-timeout": "30s"})
	code, out, stderr = cli(t, append(scale, "--prefix", "readme-scale", "--json", "--fail-on-errors")...)
	var sized struct {
		ReadConcurrency int `json:"read_concurrency"`
		FilterGet       struct {
			Count int `json:"count"`
		} `json:"filter_get"`
		Outbox *struct {
			Left int64 `json:"left"`
		} `json:"outbox"`
		Relay *struct {
			HeapInuseMax int64 `json:"heap_inuse_max_bytes"`
			FileBytes    int64 `json:"file_bytes"`
		} `json:"relay"`
	}
	if err := json.Unmarshal([]byte(out), &sized); err != nil || code != exitOK {
		t.Fatalf("the README's scale bench: exit %d, %v\n%s\n%s", code, err, out, stderr)
	}
	if sized.Relay == nil || sized.Relay.HeapInuseMax <= 0 || sized.Relay.FileBytes <= 0 || sized.Outbox == nil || sized.Outbox.Left != 0 {
		t.Errorf("the relay's figures were not read through its relay.yaml: relay %+v, outbox %+v\n%s", sized.Relay, sized.Outbox, stderr)
	}
	if sized.ReadConcurrency != 8 || sized.FilterGet.Count != 20 {
		t.Errorf("filter GETs at size: %d at concurrency %d, want 20 at 8", sized.FilterGet.Count, sized.ReadConcurrency)
	}

	// The same without --config: the relay.yaml $SCIMRELAY_CONFIG names,
	// as for every command (moved, so that ./relay.yaml is not found).
	if err := os.Mkdir("env", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename("relay.yaml", filepath.Join("env", "relay.yaml")); err != nil {
		t.Fatal(err)
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(configEnv, filepath.Join(dir, "env", "relay.yaml"))
	i := slices.Index(scale, "--config")
	scale = slices.Delete(slices.Clone(scale), i, i+2)
	code, out, stderr = cli(t, append(scale, "--prefix", "readme-env", "--json", "--fail-on-errors")...)
	sized.Relay = nil
	if err := json.Unmarshal([]byte(out), &sized); err != nil || code != exitOK || sized.Relay == nil || sized.Relay.FileBytes <= 0 {
		t.Errorf("the scale bench with $%s: exit %d, %v, relay %+v\n%s", configEnv, code, err, sized.Relay, stderr)
	}
}

// TestBenchFailOnErrorsInEveryMode: "with --fail-on-errors [the bench]
// exits 1 after its report when a request failed or, in the cycle, an
// event was missing, repeated, out of order or badly signed, in every
// mode", and "unset, signatures are not verified and the report says so".
// TestCLIBench holds failed requests in the cycle and the ops mode; here,
// events signed with another secret than the receiver's (so refused, and
// missing) in the cycle, and failed requests in the scale mode.
func TestBenchFailOnErrorsInEveryMode(t *testing.T) {
	receiver := freeAddr(t)
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "bench", "http://"+receiver+"/hook", nil)
	p := startRelay(t, cfg, roleAll)
	t.Setenv(benchTokenEnv, acmeToken)
	cycle := func(prefix string) (int, string, string) {
		return cli(t, "bench", "--url", p.scimURL+"/scim/v2/acme", "--users", "4", "--groups", "1", "--members-per-group", "2",
			"--concurrency", "2", "--receiver", receiver, "--drain-timeout", "1s", "--prefix", prefix, "--fail-on-errors")
	}

	t.Setenv(receiverSecretEnv, "")
	code, out, stderr := cycle("unverified")
	if code != exitOK || !strings.Contains(out, "(signatures not verified: no secret)") {
		t.Errorf("a run without $%s: exit %d; the report does not say the signatures were not verified:\n%s\n%s", receiverSecretEnv, code, out, stderr)
	}

	t.Setenv(receiverSecretEnv, "whsec_"+strings.Repeat("A", 32)) // not the sink's
	code, out, stderr = cycle("badly-signed")
	if code != exitError || !strings.Contains(out, "webhooks at "+receiver) ||
		!strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "signatures that did not verify") || !strings.Contains(stderr, "events missing") {
		t.Errorf("a run whose events were badly signed: exit %d, want %d after the report, naming what failed\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}

	t.Setenv(benchTokenEnv, "not-a-token")
	t.Setenv(configEnv, "")
	t.Chdir(t.TempDir()) // no relay.yaml: the scale mode measures the endpoint alone
	code, out, stderr = cli(t, "bench", "--mode", "scale", "--url", p.scimURL+"/scim/v2/acme", "--users", "3", "--groups", "0",
		"--requests", "2", "--concurrency", "2", "--prefix", "scale-fails", "--fail-on-errors")
	if code != exitError || !strings.Contains(out, "fill") || !strings.Contains(stderr, "--fail-on-errors:") || !strings.Contains(stderr, "fill requests failed (401") {
		t.Errorf("a scale run with failures and --fail-on-errors: exit %d, want %d after the report\nstdout:\n%s\nstderr:\n%s", code, exitError, out, stderr)
	}
}

// TestStreamDuplicateWindow holds what the README says of
// nats.stream.duplicates: "The window is how long a re-published event
// ... is still recognised and dropped; past it the event is stored twice,
// with the same event id ... The default stays 10 minutes." A relay
// started with the default makes its stream with a 10-minute window. One
// given a short window drops an event published again (with its
// Nats-Msg-Id, as the publisher re-publishes after a crash) within it,
// and stores it past it. The sink's worker that delivered the event skips
// the copy (an event of a resource not after the last it delivered); a
// worker that does not remember it (after a restart) delivers it again,
// with the same id.
func TestStreamDuplicateWindow(t *testing.T) {
	ctx := context.Background()
	window := func(p *relayProc) time.Duration {
		t.Helper()
		st, err := p.srv.js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Duplicates
	}
	if d := window(startRelay(t, testConfig(t, t.TempDir()), roleAll)); d != 10*time.Minute {
		t.Errorf("a relay with the default nats.stream.duplicates made its stream with a window of %s, want 10m", d)
	}

	// Long enough that the event is published again within it on a loaded
	// machine (CI once took more than 250 ms from the delivery to the
	// publish), short enough to wait out.
	const short = 2 * time.Second
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.Stream.Duplicates = config.Duration(short)
	cfg.NATS.SyncInterval = config.Duration(short / 5) // kept three times that, inside the window, as check demands
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	if d := window(p); d != short {
		t.Fatalf("nats.stream.duplicates: %s made a window of %s", short, d)
	}
	p.createUser(t, "ann")
	// Read and published again at once: the delivery, waited for below,
	// can take much of the window on a loaded machine.
	stored := readStream(t, p.srv.js, 1)[0]
	// Published as the relay publishes it: on its subject before the
	// stream appends the partition, with the Nats-Msg-Id it was stored with.
	subject := events.Subject(stored.tenant, stored.action, stored.data.ID)
	var header nats.Header
	var data []byte
	copies := func(p *relayProc) uint64 {
		t.Helper()
		st, err := p.srv.js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := st.GetMsg(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		header, data = raw.Header, raw.Data
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	copies(p)
	if id := header.Get(jetstream.MsgIDHeader); id != stored.id {
		t.Fatalf("the stored event's Nats-Msg-Id is %q, its id %q", id, stored.id)
	}
	again := func(p *relayProc) *jetstream.PubAck {
		t.Helper()
		ack, err := p.srv.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: header, Data: data}, jetstream.WithExpectStream(events.StreamName))
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	if ack := again(p); !ack.Duplicate || copies(p) != 1 {
		t.Fatalf("an event published again within the window was stored (sequence %d)", ack.Sequence)
	}
	waitDelivered(t, h, 1) // before its copy is stored past the window
	pastTheWindow := func(p *relayProc) {
		t.Helper()
		eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if ack := again(p); ack.Duplicate {
				return fmt.Errorf("still recognised as a duplicate")
			}
			return nil
		})
	}
	pastTheWindow(p)
	if n := copies(p); n != 2 {
		t.Fatalf("the stream holds %d messages, want the event twice", n)
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		families, err := (&adminclient.Client{BaseURL: p.adminURL, Timeout: 10 * time.Second}).Metrics(ctx)
		if err != nil {
			return err
		}
		if f := families["scimrelay_sink_events_total"]; f == nil || sumSeries(f, "sink", "crm", "outcome", "duplicate") != 1 {
			return fmt.Errorf("the worker has not skipped the copy")
		}
		return nil
	})
	if n := h.repeated(); n != 0 {
		t.Fatalf("the worker that delivered the event delivered its copy too")
	}

	p.stop()
	p = startRelay(t, cfg, roleAll)
	pastTheWindow(p)
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := h.repeated(); n != 1 {
			return fmt.Errorf("%d events delivered twice, want the one stored again", n)
		}
		return nil
	})
	if n := h.distinct(); n != 1 {
		t.Errorf("the receiver got %d distinct event ids, want the one, twice", n)
	}
}

// TestServeLeavesGOMAXPROCSAtGosDefault: the README measured the relay
// "at the default 2" on two cores and says "the default is left as it
// is": serve does not set GOMAXPROCS (the variable still does).
func TestServeLeavesGOMAXPROCSAtGosDefault(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" || flag.Lookup("test.cpu").Value.String() != "" {
		t.Skip("this test process does not run at Go's default GOMAXPROCS to compare with")
	}
	bin := binary(t)
	configPath, addrs := processConfig(t, t.TempDir())
	p := startProcess(t, bin, configPath)
	waitReady(t, p, addrs.admin)
	if got, want := scrapeGauge(t, addrs.admin, "go_sched_gomaxprocs_threads"), runtime.GOMAXPROCS(0); got != float64(want) {
		t.Errorf("the relay runs with GOMAXPROCS %v; Go's default here is %d", got, want)
	}
}

// TestPerformanceSettingsAsTheREADMESays: the settings the Performance
// section names have the defaults it gives, reach the relay as set, and
// take the values it names: storage.batch_delay "defaults to 0", "Leave it
// at 0", and a relay.yaml that sets it keeps working (500µs: relay.yaml
// takes the µ), fsync off with
// storage.no_sync, the provisioning log's max_bytes of 512 MiB.
func TestPerformanceSettingsAsTheREADMESays(t *testing.T) {
	readme := strings.Join(strings.Fields(performanceSection(t)), " ")
	for _, says := range []string{
		"`storage.batch_delay`, how long the committer waits for more writes before it commits, defaults to 0.",
		"Leave it at 0, several IdPs or bulk imports included; the key stays, so that a relay.yaml that sets it keeps working",
		"fsync off (`storage.no_sync`)",
		"its `provisioning_log.max_bytes`, 512 MiB",
	} {
		if !strings.Contains(readme, says) {
			t.Errorf("the README's Performance section no longer says %q: update this test", says)
		}
	}
	d := config.Default()
	if o := storeOptions(d, nil); o.BatchDelay != 0 || o.NoSync {
		t.Errorf("by default the store waits %s for more writes (no_sync %v), want 0 and fsync on", o.BatchDelay, o.NoSync)
	}
	if o := logOptions(d); o.MaxBytes != 512<<20 {
		t.Errorf("the provisioning log is bounded at %d bytes by default, want 512 MiB", o.MaxBytes)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte("storage: {batch_delay: 500µs, no_sync: true}\ntenants: [{name: acme}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, roleAll)
	if err != nil {
		t.Fatalf("batch_delay: 500µs: %v", err)
	}
	if o := storeOptions(cfg, nil); o.BatchDelay != 500*time.Microsecond || !o.NoSync {
		t.Errorf("storage: {batch_delay: 500µs, no_sync: true} reaches the store as %s, no_sync %v", o.BatchDelay, o.NoSync)
	}
}

// TestFilterAnswersAreTheStoredUsers: Entra's userName eq query, and an
// externalId eq alone, "answer from each user's stored JSON, copied into
// the answer rather than decoded and written again: each user is in the
// answer as GET /Users/<id> gives it, byte for byte". Each user a filter
// finds is in the list answer as GET /Users/<id> gives it: Entra's
// documented user with its extensions, in two groups, and a user in none
// with an extension the relay does not know.
func TestFilterAnswersAreTheStoredUsers(t *testing.T) {
	t.Parallel()
	readme := strings.Join(strings.Fields(performanceSection(t)), " ")
	if says := "answer from each user's stored JSON, copied into the answer rather than decoded and written again: each user is in the answer as GET /Users/<id> gives it, byte for byte"; !strings.Contains(readme, says) {
		t.Errorf("README Performance does not say %q", says)
	}
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	body := entraBodies(t)["create-user"]
	ann := p.scim("acme", acmeToken, "POST", "/Users", body).want(t, 201)
	bob := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob@example.com","externalId":"Bob-1","urn:example:custom:2.0:User":{"b":[2,1],"a":"x"}}`).want(t, 201)
	for _, name := range []string{"Sales", "Süpport"} {
		p.scim("acme", acmeToken, "POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q,"members":[{"value":%q}]}`, name, ann.str("id"))).want(t, 201)
	}
	for _, tc := range []struct {
		user   reply
		filter string
	}{
		{ann, fmt.Sprintf(`userName eq %q`, strings.ToUpper(ann.str("userName")))},
		{ann, fmt.Sprintf(`externalId eq %q`, ann.str("externalId"))},
		{bob, `userName eq "BOB@example.com"`},
		{bob, `externalId eq "Bob-1"`},
	} {
		got := p.scim("acme", acmeToken, "GET", "/Users?"+q(tc.filter), "").want(t, 200)
		var list struct {
			Total     int               `json:"totalResults"`
			Resources []json.RawMessage `json:"Resources"`
		}
		if err := json.Unmarshal(got.raw, &list); err != nil || list.Total != 1 || len(list.Resources) != 1 {
			t.Fatalf("%s: %v %s", tc.filter, err, got.raw)
		}
		want := p.scim("acme", acmeToken, "GET", "/Users/"+tc.user.str("id"), "").want(t, 200)
		if string(list.Resources[0]) != string(want.raw) {
			t.Errorf("%s found\n%s\nGET by id gives\n%s", tc.filter, list.Resources[0], want.raw)
		}
	}
	if groups := p.scim("acme", acmeToken, "GET", "/Users/"+ann.str("id"), "").body["groups"]; len(groups.([]any)) != 2 {
		t.Fatalf("ann's groups: %v", groups)
	}
}

// TestEmbeddedPublisherChains (README, Events): on the embedded server,
// where no one but the relay may publish, the publisher is the stream's
// sole one and chains a window's events, unless the server writes each
// message to disk before it answers (sync_always), where a chain waits
// for every write; on an external server, which other front ends may
// share, it sends them in atomic batches
// (relay.TestSolePublisherChainsItsWindows,
// relay.TestStreamOrderUnderPartialFailure).
func TestEmbeddedPublisherChains(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	if !publisherOptions(cfg).Sole {
		t.Error("on the embedded server the publisher does not chain its windows")
	}
	cfg.NATS.SyncInterval = 0
	if publisherOptions(cfg).Sole {
		t.Error("on the embedded server with sync_always the publisher chains its windows, each event waiting for its own write")
	}
	cfg.NATS.SyncInterval = config.Duration(250 * time.Millisecond)
	cfg.NATS.URL = "nats://nats.example.com:4222"
	if publisherOptions(cfg).Sole {
		t.Error("on an external server the publisher chains its windows, where another front end's events can fill a gap")
	}
}
