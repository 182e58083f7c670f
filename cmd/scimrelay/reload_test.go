// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// reloadFile is a relay.yaml that a test rewrites while the relay runs.
type reloadFile struct {
	t       *testing.T
	path    string
	dataDir string
	// natsListen is where the embedded NATS listens for subscribers;
	// "": nowhere.
	natsListen string
}

// write writes relay.yaml: the test relay's fixed part, then extra (YAML
// at the top level: log, limits, tenants, sinks …; a listen of its own
// first).
func (f reloadFile) write(extra string) {
	f.t.Helper()
	text := fmt.Sprintf("admin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  listen: %q\n%s", f.dataDir, adminSecret, f.natsListen, extra)
	if !strings.HasPrefix(extra, "listen:") {
		text = "listen: 127.0.0.1:0\n" + text
	}
	if err := os.WriteFile(f.path, []byte(text), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// twoTenants is relay.yaml's tenants acme and globex, with their tokens.
const twoTenants = "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n  - name: globex\n    tokens: [" + globexToken + "]\n"

func sinkYAML(name, url string) string {
	return fmt.Sprintf("  - name: %s\n    url: %s\n    secret: %s\n    allow_private: true\n", name, url, sinkSecret)
}

// TestReload rewrites a running relay's relay.yaml and reloads it through
// the CLI: a sink added starts receiving new events while the one already
// there is not restarted; a tenant added works at once; a limit and the
// log level change; a setting that needs a restart is reported and kept; a
// sink removed stops receiving (its events wait in its consumers); a
// broken file is refused with its problems, exit 1, and the relay goes on
// with the configuration it had.
func TestReload(t *testing.T) {
	hookA, hookB := newHook(t), newHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write(`log:
  level: info
  format: json
limits:
  rate: 0
tenants:
  - name: acme
    tokens: [` + acmeToken + `]
sinks:
` + sinkYAML("a", hookA.URL))
	var out eventstest.Log
	p := startReloadable(t, f.path, &out)
	cliConf := cliConfig(t, p, adminSecret)
	p.createUser(t, "ann")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if hookA.distinct() != 1 {
			return fmt.Errorf("sink a got %d events", hookA.distinct())
		}
		return nil
	})
	if strings.Contains(out.String(), `"msg":"scim request"`) {
		t.Fatal("a Debug line at level info")
	}

	// Add a sink and a tenant, limit the rate, log at debug, move listen
	// and public_url.
	f.write(`listen: 127.0.0.1:1
public_url: https://moved.example.com
log:
  level: debug
  format: json
limits:
  rate: 1
  burst: 1
` + twoTenants + `sinks:
` + sinkYAML("a", hookA.URL) + sinkYAML("b", hookB.URL))
	// A request under way when the reload happens is answered as usual.
	pending, send := io.Pipe()
	inFlight := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", p.scimURL+"/scim/v2/acme/Users", pending)
		req.Header.Set("Authorization", "Bearer "+acmeToken)
		req.Header.Set("Content-Type", "application/scim+json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			inFlight <- 0
			return
		}
		res.Body.Close()
		inFlight <- res.StatusCode
	}()
	if _, err := io.WriteString(send, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],`); err != nil {
		t.Fatal(err) // the client is sending it: the request is under way
	}
	code, stdout, stderr := cli(t, "reload", "--config", cliConf)
	if code != exitOK {
		t.Fatalf("reload: %d %s %s", code, stdout, stderr)
	}
	_, _ = io.WriteString(send, `"userName":"during-reload"}`)
	send.Close()
	if status := <-inFlight; status != http.StatusCreated {
		t.Errorf("the request under way during the reload: %d, want 201", status)
	}
	for _, want := range []string{"tenant globex added", "sink b added", "limits.rate: 0 → 1", "limits.burst: 400 → 1", "log.level: info → debug", "listen changed: needs a restart", "public_url changed: needs a restart"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("reload says:\n%s\nwithout %q", stdout, want)
		}
	}
	if strings.Contains(stdout, "sink a") {
		t.Errorf("sink a did not change, but reload says:\n%s", stdout)
	}
	// The keys that need a restart are in the log too, at Warn, for an
	// operator who sent the SIGHUP without reading an answer.
	var warn string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "only a restart applies") {
			warn = line
		}
	}
	if !strings.Contains(warn, `"level":"WARN"`) || !strings.Contains(warn, "listen") || !strings.Contains(warn, "public_url") {
		t.Errorf("no Warn naming listen and public_url as needing a restart; the log has %q", warn)
	}
	created := p.scim("globex", globexToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob"}`).want(t, 201)
	bob := created.str("id")
	// At once: the bucket gives a token back a second after bob's, and the
	// wait for bob's event below can take longer than that on a slow machine.
	if r := p.scim("globex", globexToken, "GET", "/Users/"+bob, ""); r.status != http.StatusTooManyRequests {
		t.Errorf("a second request within the second at rate 1, burst 1: %d", r.status)
	}
	if loc := created.header.Get("Location"); !strings.HasPrefix(loc, p.scimURL) {
		t.Errorf("Location %q after a reload that changed public_url: want the running value, %s…, until a restart", loc, p.scimURL)
	}
	// Nor does the event's source move.
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		stream, err := p.srv.js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return err
		}
		info, err := stream.Info(context.Background())
		if err != nil {
			return err
		}
		m, err := stream.GetMsg(context.Background(), info.State.LastSeq)
		if err != nil {
			return err
		}
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		if e.Subject() != "Users/"+bob {
			return fmt.Errorf("bob's event is not in the stream yet")
		}
		if e.Source() != "/scim/v2/globex" {
			t.Errorf("event source %q after a reload that changed public_url: want the running value, /scim/v2/globex, until a restart", e.Source())
		}
		return nil
	})
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if hookB.distinct() != 2 || hookA.distinct() != 3 {
			return fmt.Errorf("sink a got %d events (want 3), sink b %d (want 2: those committed after it was added)", hookA.distinct(), hookB.distinct())
		}
		return nil
	})
	if !strings.Contains(out.String(), `"msg":"scim request"`) {
		t.Error("no Debug line after the level became debug")
	}

	// Remove sink a: it stops receiving; its events wait in its consumers.
	f.write(`log:
  level: debug
  format: json
` + twoTenants + `sinks:
` + sinkYAML("b", hookB.URL))
	if code, stdout, stderr := cli(t, "reload", "--config", cliConf); code != exitOK || !strings.Contains(stdout, "sink a removed") || !strings.Contains(stdout, "limits.rate: 1 → 200") {
		t.Fatalf("reload: %d %s %s", code, stdout, stderr)
	}
	p.createUser(t, "cid")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if hookB.distinct() != 3 {
			return fmt.Errorf("sink b got %d events, want 3", hookB.distinct())
		}
		if n := consumersPending(t, p, "a"); n != 1 {
			return fmt.Errorf("sink a's consumers hold %d events, want the 1 it no longer delivers", n)
		}
		return nil
	})
	if hookA.distinct() != 3 {
		t.Errorf("removed sink a got %d events, want 3", hookA.distinct())
	}
	if _, err := p.srv.sinks.Status(context.Background(), "a"); err == nil {
		t.Error("removed sink a still has a status")
	}

	// A broken file is refused whole; the relay keeps what it had, and
	// its metrics say the running configuration is not the file's.
	applied := metric(t, p, "scimrelay_config_last_reload_success_timestamp_seconds")
	if ok := metric(t, p, "scimrelay_config_last_reload_successful"); ok != 1 || time.Since(time.Unix(int64(applied), 0)) > time.Minute {
		t.Errorf("after successful reloads: scimrelay_config_last_reload_successful %v, its time %v; want 1, now", ok, applied)
	}
	f.write(`limits:
  rate: fast
tenants:
  - name: acme
    tokens: [` + acmeToken + `]
sinks:
  - name: c
    url: ftp://nowhere
    secret: whsec_short
`)
	code, stdout, stderr = cli(t, "reload", "--config", cliConf)
	if code != exitError || !strings.Contains(stderr, "limits.rate") || !strings.Contains(stderr, "sinks[0].url") || !strings.Contains(stderr, "running configuration stays") {
		t.Errorf("reload of a broken file: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(out.String(), "reloading relay.yaml refused") {
		t.Error("the refusal is not logged")
	}
	if ok, at := metric(t, p, "scimrelay_config_last_reload_successful"), metric(t, p, "scimrelay_config_last_reload_success_timestamp_seconds"); ok != 0 || at != applied {
		t.Errorf("after a refused reload: scimrelay_config_last_reload_successful %v, its time %v; want 0, still %v", ok, at, applied)
	}
	req, _ := http.NewRequest("POST", p.adminURL+"/admin/v1/reload", nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	r := do(t, req).want(t, http.StatusUnprocessableEntity)
	var body struct{ Problems []string }
	if err := json.Unmarshal(r.raw, &body); err != nil || len(body.Problems) < 3 {
		t.Errorf("refusal's problems: %s", r.raw)
	}
	if names := p.srv.sinks.Names(); strings.Join(names, ",") != "b" {
		t.Errorf("sinks after a refused reload: %v", names)
	}
	p.scim("globex", globexToken, "GET", "/Users/"+bob, "").want(t, 200) // globex is still there
	p.createUser(t, "dee")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if hookB.distinct() != 4 {
			return fmt.Errorf("sink b got %d events, want 4", hookB.distinct())
		}
		return nil
	})

	// A tenant removed is refused like any unknown one (its data stays),
	// with its OAuth clients' access tokens too; a tenant added without a
	// token gets its first one, as at start.
	clientSecret, client, err := p.srv.store.Clients().Create(context.Background(), "globex", "entra", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	access, err := p.srv.store.IssueAccessToken(context.Background(), "globex", client.ID, clientSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p.scim("globex", access.Token, "GET", "/Users/"+bob, "").want(t, 200)
	f.write(`log:
  level: debug
  format: json
tenants:
  - name: acme
    tokens: [` + acmeToken + `]
  - name: initech
sinks:
` + sinkYAML("b", hookB.URL))
	code, stdout, stderr = cli(t, "reload", "--config", cliConf)
	if code != exitOK || !strings.Contains(stdout, "tenant globex removed") || !strings.Contains(stdout, "tenant initech added") {
		t.Fatalf("reload removing globex, adding initech: %d %s %s", code, stdout, stderr)
	}
	if r := p.scim("globex", globexToken, "GET", "/Users/"+bob, ""); r.status != http.StatusUnauthorized {
		t.Errorf("globex after it was removed: %d, want 401", r.status)
	}
	for _, path := range []string{"/Users/" + bob, "/ServiceProviderConfig"} {
		if r := p.scim("globex", access.Token, "GET", path, ""); r.status != http.StatusUnauthorized {
			t.Errorf("GET %s with an access token of globex after it was removed: %d, want 401", path, r.status)
		}
	}
	if toks, err := p.srv.store.Tokens().List(context.Background(), "initech"); err != nil || len(toks) != 1 {
		t.Errorf("initech's tokens after it was added without one: %d, %v; want its first", len(toks), err)
	}

	// Added again under its name, globex has its users and its stored
	// credentials back (README: revoke them first to start afresh).
	f.write(`log:
  level: debug
  format: json
tenants:
  - name: acme
    tokens: [` + acmeToken + `]
  - name: initech
  - name: globex
sinks:
` + sinkYAML("b", hookB.URL))
	if code, stdout, stderr := cli(t, "reload", "--config", cliConf); code != exitOK || !strings.Contains(stdout, "tenant globex added") {
		t.Fatalf("reload adding globex again: %d %s %s", code, stdout, stderr)
	}
	if ok, at := metric(t, p, "scimrelay_config_last_reload_successful"), metric(t, p, "scimrelay_config_last_reload_success_timestamp_seconds"); ok != 1 || at < applied {
		t.Errorf("after a successful reload: scimrelay_config_last_reload_successful %v, its time %v; want 1, %v or later", ok, at, applied)
	}
	p.scim("globex", access.Token, "GET", "/Users/"+bob, "").want(t, 200)
	if r := p.scim("globex", globexToken, "GET", "/Users/"+bob, ""); r.status != http.StatusUnauthorized {
		t.Errorf("globex's token from the file it no longer has: %d, want 401", r.status)
	}
}

// consumersPending sums the events waiting in a sink's partition consumers.
func consumersPending(t *testing.T, p *relayProc, sink string) int {
	t.Helper()
	n := 0
	for _, info := range partitionConsumers(t, p, sink) {
		n += int(info.NumPending) + info.NumAckPending
	}
	return n
}

// partitionConsumers reads a sink's partition consumers, by partition.
func partitionConsumers(t *testing.T, p *relayProc, sink string) []*jetstream.ConsumerInfo {
	t.Helper()
	partitions, err := events.Partitions(context.Background(), p.srv.js)
	if err != nil {
		t.Fatal(err)
	}
	infos := make([]*jetstream.ConsumerInfo, partitions)
	for i := range partitions {
		c, err := p.srv.js.Consumer(context.Background(), events.StreamName, fmt.Sprintf("scimrelay-sink-%s-P%d", sink, i))
		if err != nil {
			t.Fatal(err)
		}
		if infos[i], err = c.Info(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return infos
}

// deployedShape runs the deployed shape, a front end and two sink workers
// on one JetStream, each with a relay.yaml of its own that write writes
// (every one the same, with these sinks), for reloads.
type deployedShape struct {
	t     *testing.T
	nats  string
	paths []string
	procs []*relayProc // the front end, worker 1, worker 2
}

func runDeployedShape(t *testing.T, sinks string) *deployedShape {
	d := &deployedShape{t: t, nats: eventstest.URL(eventstest.RunServer(t))}
	for range 3 {
		d.paths = append(d.paths, filepath.Join(t.TempDir(), "relay.yaml"))
	}
	d.write(sinks)
	for i, role := range []string{roleSCIM, roleSinks, roleSinks} {
		d.procs = append(d.procs, startReloadableAs(t, d.paths[i], role, io.Discard, withMaxReload(20*time.Second)))
	}
	return d
}

func (d *deployedShape) write(sinks string) { d.writeTenants(twoTenants, sinks) }

// writeTenants writes every process's relay.yaml with these tenants (a
// tenants: section) and sinks.
func (d *deployedShape) writeTenants(tenants, sinks string) {
	for i, path := range d.paths {
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  url: %s\n"+tenants+"sinks:\n%s",
			filepath.Join(filepath.Dir(path), fmt.Sprint("data", i)), adminSecret, d.nats, sinks)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			d.t.Fatal(err)
		}
	}
}

// reload reloads the processes given at once, and fails the test if one
// fails.
func (d *deployedShape) reload(procs ...*relayProc) {
	errs := make([]error, len(procs))
	var reloads sync.WaitGroup
	for i, p := range procs {
		reloads.Go(func() { _, errs[i] = p.srv.reload(context.Background()) })
	}
	reloads.Wait()
	for i, err := range errs {
		if err != nil {
			d.t.Errorf("the reload of %s: %v", []string{"the front end", "worker 1", "worker 2"}[slices.Index(d.procs, procs[i])], err)
		}
	}
}

// TestConcurrentReloadsAddingASink: the deployed shape reloaded at once
// with a sink added, as a script reloading each process does: every
// reload succeeds, the first process to make the sink's consumers
// starting them from its own reload and the others taking them as made,
// and the sink delivers. Before, a process that found no consumer and
// created one with its own start was refused ("start time can not be
// updated") when another had made it meanwhile: its reload failed, a
// front end that lost left the sink's bucket unmade (the workers' reloads
// then failed waiting for it), and the sink delivered nothing until the
// next reload.
func TestConcurrentReloadsAddingASink(t *testing.T) {
	a, b := newHook(t), newHook(t)
	d := runDeployedShape(t, sinkYAML("a", a.URL))
	d.write(sinkYAML("a", a.URL) + sinkYAML("b", b.URL))
	d.reload(d.procs...)
	d.procs[0].createUser(t, "ann")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if b.distinct() == 0 {
			return errors.New("sink b got nothing")
		}
		return nil
	})
}

// TestWideningAcrossProcesses: in the deployed shape, a tenant added to a
// sink's tenants is taken from the first process's reload on, here the
// front end's, which widens the sink's consumers: the workers, not
// reloaded yet, deliver the added tenant's events, each once. Before, a
// worker not reloaded passed over (acknowledged, never sent) the events
// of a tenant its relay.yaml did not give the sink, all those of the
// window between the first process's reload and its own.
func TestWideningAcrossProcesses(t *testing.T) {
	h := newHook(t)
	d := runDeployedShape(t, sinkYAML("crm", h.URL)+"    tenants: [acme]\n")
	d.write(sinkYAML("crm", h.URL) + "    tenants: [acme, globex]\n")
	d.reload(d.procs[0])
	var want []string
	for i := range 2 * events.DefaultPartitions { // on the partitions of both workers
		id := d.procs[0].scim("globex", globexToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"g%d"}`, i)).want(t, 201).str("id")
		want = append(want, "Users/"+id+" user.created")
	}
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		got := h.received()
		if missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) }); len(missing) > 0 {
			return fmt.Errorf("%d of the %d globex users' events not delivered by the workers not reloaded, %s the first", len(missing), len(want), missing[0])
		}
		return nil
	})
	if n := h.repeated(); n > 0 {
		t.Errorf("%d events delivered twice", n)
	}
	d.reload(d.procs[1:]...)
}

// TestReloadOnSIGHUP runs the binary with SCIMRELAY_CONFIG naming its
// relay.yaml (no --config), adds a sink to the file and sends SIGHUP: the
// sink receives the next event.
func TestReloadOnSIGHUP(t *testing.T) {
	bin := binary(t)
	path, addrs := processConfig(t, t.TempDir())
	hook := newHook(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), configEnv+"="+path)
	p := &proc{cmd: cmd, stderr: &eventstest.Log{}, exited: make(chan struct{})}
	cmd.Stderr, cmd.Stdout = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.exited })
	waitReady(t, p, addrs.admin)

	file, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteString("sinks:\n" + sinkYAML("late", hook.URL)); err != nil {
		t.Fatal(err)
	}
	file.Close()
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(p.stderr.String(), "sink late added") {
			return fmt.Errorf("no reload in the log yet:\n%s", p.stderr.String())
		}
		return nil
	})
	req, _ := http.NewRequest("POST", "http://"+addrs.scim+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	req.Header.Set("Content-Type", "application/scim+json")
	do(t, req).want(t, 201)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if hook.distinct() != 1 {
			return fmt.Errorf("the sink added by SIGHUP got %d events", hook.distinct())
		}
		return nil
	})
	select {
	case <-p.exited:
		t.Fatalf("SIGHUP ended the relay: %v", p.err)
	default:
	}
}

// TestReloadableKeysExist: every key a reload applies names a relay.yaml
// key (applicable finds each by its yaml name).
func TestReloadableKeysExist(t *testing.T) {
	cfg := config.Default()
	next := config.Default()
	next.Log.Level = "debug"
	got := applicable(cfg, next) // panics on a key that does not exist
	if got.Log.Level != "debug" || cfg.Log.Level == "debug" {
		t.Errorf("applicable: log.level %q (running %q), want the file's debug in a copy", got.Log.Level, cfg.Log.Level)
	}
}

// TestReloadAppliesOAuth: a reload applies every oauth.* key to requests
// that arrive after it, through the SCIM listener. basic_auth: a client's
// id and secret that worked as Basic credentials get 401 once it is off,
// and work again once it is back on. token_lifetime: a token issued after
// the reload lives the new lifetime while one issued before keeps its own.
// rate and burst: the token endpoint refuses beyond the new bucket, and
// a reload that does not change them does not refill it.
func TestReloadAppliesOAuth(t *testing.T) {
	clock := newTestClock()
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	oauthYAML := func(lifetime string, rate float64, burst int, basic bool) string {
		return fmt.Sprintf("oauth:\n  token_lifetime: %s\n  rate: %v\n  burst: %d\n  basic_auth: %v\nlimits:\n  rate: 0\n%s", lifetime, rate, burst, basic, twoTenants)
	}
	f.write(oauthYAML("1h", 0, 20, true))
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, cfg, roleAll, withReload(f.path, nil), withClock(clock.now))
	c := createClient(t, p, "acme")
	basic := func() int {
		return p.scim("acme", "", "GET", "/Users", "", "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(c.id+":"+c.secret))).status
	}
	if got := basic(); got != http.StatusOK {
		t.Fatalf("Basic credentials with basic_auth on: %d", got)
	}
	before := p.tokenRequest("acme", grant(), c.id+":"+c.secret).accessToken(t) // 1 h
	reload := func(want ...string) {
		t.Helper()
		applied := reloadNow(t, p)
		for _, w := range want {
			if !slices.ContainsFunc(applied, func(a string) bool { return strings.HasPrefix(a, w+": ") }) {
				t.Errorf("reload applied %q, without %s", applied, w)
			}
		}
	}

	f.write(oauthYAML("2h", 0.001, 1, false)) // one token request per 1,000 s
	reload("oauth.token_lifetime", "oauth.rate", "oauth.burst", "oauth.basic_auth")
	if got := basic(); got != http.StatusUnauthorized {
		t.Errorf("Basic credentials after a reload turned basic_auth off: %d, want 401", got)
	}
	r := p.tokenRequest("acme", grant(), c.id+":"+c.secret)
	if r.status != http.StatusOK || r.body["expires_in"] != float64(7200) {
		t.Fatalf("token after a reload to a 2 h lifetime: %d %s", r.status, r.raw)
	}
	after, _ := r.body["access_token"].(string)
	if r := p.tokenRequest("acme", grant(), c.id+":"+c.secret); r.status != http.StatusTooManyRequests {
		t.Errorf("a second token request at burst 1: %d, want 429", r.status)
	}
	clock.add(90 * time.Minute)
	p.scim("acme", after, "GET", "/Users", "").want(t, http.StatusOK)
	p.scim("acme", before, "GET", "/Users", "").want(t, http.StatusUnauthorized)
	// A reload that leaves the token endpoint's limit alone leaves its
	// bucket empty.
	f.write(oauthYAML("3h", 0.001, 1, false))
	reload("oauth.token_lifetime")
	if r := p.tokenRequest("acme", grant(), c.id+":"+c.secret); r.status != http.StatusTooManyRequests {
		t.Errorf("a token request after a reload that kept the limit: %d, want 429", r.status)
	}

	f.write(oauthYAML("2h", 0, 1, true))
	reload("oauth.rate", "oauth.basic_auth")
	if got := basic(); got != http.StatusOK {
		t.Errorf("Basic credentials after a reload turned basic_auth back on: %d, want 200", got)
	}
	if r := p.tokenRequest("acme", grant(), c.id+":"+c.secret); r.status != http.StatusOK {
		t.Errorf("token request after a reload lifted the rate limit: %d %s", r.status, r.raw)
	}
}

// TestReloadKeepsRateLimits: the SCIM rate limiter outlives a reload. A
// tenant whose limit the reload does not change keeps its bucket as it
// was (one that used up its burst is still refused right after); one whose
// limit changes starts with a full bucket of the new size.
func TestReloadKeepsRateLimits(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	// A rate of one request per 1,000 s: nothing refills during the test.
	limits := func(burst int, globex string) string {
		return fmt.Sprintf("limits:\n  rate: 0.001\n  burst: %d\ntenants:\n  - name: acme\n    tokens: [%s]\n  - name: globex\n    tokens: [%s]\n%s",
			burst, acmeToken, globexToken, globex)
	}
	f.write(limits(2, ""))
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, cfg, roleAll, withReload(f.path, nil))
	answered := p.answered
	if got := answered("acme", acmeToken, 2); got != 2 {
		t.Fatalf("acme at burst 2: %d answered", got)
	}
	for _, step := range []struct {
		what        string
		burst       int    // limits.burst
		globex      string // globex's own limit
		acme, globe int    // requests answered after the reload
	}{
		// globex gets a limit of its own; acme's stays as it was.
		{"globex given burst 3", 2, "    rate: 0.001\n    burst: 3\n", 0, 3},
		// The default changes: acme (on the default) starts full at the
		// new size; globex (its own limit, unchanged) keeps its empty bucket.
		{"limits.burst raised to 5", 5, "    rate: 0.001\n    burst: 3\n", 5, 0},
	} {
		f.write(limits(step.burst, step.globex))
		reloadNow(t, p)
		if got := answered("acme", acmeToken, step.acme); got != step.acme {
			t.Errorf("after a reload (%s), acme: %d answered, want %d", step.what, got, step.acme)
		}
		if got := answered("globex", globexToken, step.globe); got != step.globe {
			t.Errorf("after a reload (%s), globex: %d answered, want %d", step.what, got, step.globe)
		}
	}
}

// reloadNow reloads a relay started withReload and says what it applied.
func reloadNow(t *testing.T, p *relayProc) []string {
	t.Helper()
	res, err := p.srv.reload(context.Background())
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	return res.Applied
}

// TestReloadEndsWithTheRelay: "a reload ends when the relay stops". A
// reload whose turn comes once the relay is stopping applies nothing: the
// admin API's client cannot end it, the relay's stop does.
func TestReloadEndsWithTheRelay(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write("limits:\n  rate: 5\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, cfg, roleAll, withReload(f.path, nil))
	f.write("limits:\n  rate: 7\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	// run stores its context as it starts, which may be after the
	// listeners answer.
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if p.srv.serving.Load() == nil {
			return errors.New("the relay's run has not started")
		}
		return nil
	})
	serving := *p.srv.serving.Load()
	stopped, stop := context.WithCancel(context.Background())
	stop() // as run's context is when the relay stops
	p.srv.serving.Store(&stopped)
	_, err = p.srv.reload(context.WithoutCancel(context.Background())) // as the admin API calls it
	p.srv.serving.Store(&serving)
	if err == nil || !strings.Contains(err.Error(), "not reloaded") {
		t.Fatalf("a reload once the relay is stopping: %v, want it not to apply", err)
	}
	if rate := p.srv.config().Limits.Rate; rate != 5 {
		t.Errorf("limits.rate is %v after a reload that applied nothing, want 5", rate)
	}
	// While the relay serves, the same reload applies.
	if res, err := p.srv.reload(context.WithoutCancel(context.Background())); err != nil || p.srv.config().Limits.Rate != 7 {
		t.Fatalf("a reload while serving: %+v, %v; limits.rate %v", res, err, p.srv.config().Limits.Rate)
	}
}

// TestReloadOfASinksWorkerListsWhatItApplies: a delivery worker (role
// sinks) has no SCIM listener, so a reload that changes the SCIM limits
// does not list them as applied there; the sinks it runs it does.
func TestReloadOfASinksWorkerListsWhatItApplies(t *testing.T) {
	ns := eventstest.RunServer(t)
	hook := newHook(t)
	// The front end and the worker, each with its relay.yaml and data_dir.
	path, frontPath := filepath.Join(t.TempDir(), "relay.yaml"), filepath.Join(t.TempDir(), "relay.yaml")
	dataDir, frontDataDir := t.TempDir(), t.TempDir()
	write := func(rate int, sinks string) {
		for _, f := range []struct{ path, dataDir string }{{path, dataDir}, {frontPath, frontDataDir}} {
			text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  url: %s\nlimits:\n  rate: %d\ntenants:\n  - name: acme\n    tokens: [%s]\nsinks:\n%s",
				f.dataDir, adminSecret, eventstest.URL(ns), rate, acmeToken, sinks)
			if err := os.WriteFile(f.path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(200, "")
	front := startReloadableAs(t, frontPath, roleSCIM, io.Discard)
	p := startReloadableAs(t, path, roleSinks, io.Discard)
	write(10, sinkYAML("a", hook.URL))
	if _, err := front.srv.reload(context.Background()); err != nil { // it makes sink a's bucket
		t.Fatal(err)
	}
	code, stdout, stderr := cli(t, "reload", "--config", cliConfig(t, p, adminSecret))
	if code != exitOK || !strings.Contains(stdout, "sink a added") || strings.Contains(stdout, "limits.rate") {
		t.Fatalf("reload of a sinks worker: exit %d, stdout %q, stderr %q; want sink a added and no limits.rate", code, stdout, stderr)
	}
}

// TestReloadGivesUp: "a reload ... gives up after 2 minutes (a NATS
// outage while it sets up a sink's consumers), reporting what it
// applied". The bound is shortened to a second here.
func TestReloadGivesUp(t *testing.T) {
	if maxReload != 2*time.Minute {
		t.Fatalf("a reload is bounded by %s; README says 2 minutes", maxReload)
	}
	ns := eventstest.RunServer(t)
	hook := newHook(t)
	path, dataDir := filepath.Join(t.TempDir(), "relay.yaml"), t.TempDir()
	write := func(rate int, sinks string) {
		text := fmt.Sprintf("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  url: %s\n  sync_interval: 0s\nlimits:\n  rate: %d\ntenants:\n  - name: acme\n    tokens: [%s]\nsinks:\n%s",
			dataDir, adminSecret, eventstest.URL(ns), rate, acmeToken, sinks)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(5, "")
	p := startReloadableAs(t, path, roleAll, io.Discard, withMaxReload(time.Second))
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if status, body := p.get("/readyz"); status != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", status, body)
		}
		return nil
	})
	ns.Shutdown()
	ns.WaitForShutdown()
	write(7, sinkYAML("a", hook.URL))
	type result struct {
		res admin.ReloadResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := p.srv.reload(context.WithoutCancel(context.Background()))
		done <- result{res, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("a reload adding a sink while NATS is away did not give up")
	}
	if !errors.Is(r.err, context.DeadlineExceeded) || !slices.ContainsFunc(r.res.Applied, func(a string) bool { return strings.Contains(a, "limits.rate") }) {
		t.Fatalf("the reload that gave up: %+v, %v; want it to have waited for NATS until its time ran out, and limits.rate among what it applied", r.res, r.err)
	}
	if rate := p.srv.config().Limits.Rate; rate != 7 {
		t.Errorf("limits.rate is %v after the reload that gave up, want 7 (applied)", rate)
	}
}

// TestReloadOfANamedPipeIsRefused: relay.yaml as a named pipe (sops
// exec-file's default), read at start, is refused at a reload, naming it,
// and the relay stops on SIGTERM after; the read was not bounded and held
// the reload, and the relay's stop behind it, for ever.
func TestReloadOfANamedPipeIsRefused(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write("tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	cfg, err := loadConfig(f.path, roleAll)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelay(t, cfg, roleAll, withReload(f.path, nil))
	pipe := makePipe(t, f.path)
	done := make(chan error, 1)
	go func() {
		_, err := p.srv.reload(context.WithoutCancel(context.Background())) // as the admin API and SIGHUP call it
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, admin.ErrReloadRefused) || !strings.Contains(err.Error(), "is a named pipe") {
			t.Errorf("reload of relay.yaml as a named pipe: %v, want it refused, naming the pipe", err)
		}
	case <-time.After(time.Minute):
		pipe.release()
		t.Fatal("the reload of a named pipe did not end")
	}
	p.cancel() // SIGTERM
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("relay stopped with %v", err)
		}
	case <-time.After(time.Minute):
		pipe.release()
		<-p.done
		t.Fatal("SIGTERM after the refused reload: the relay did not stop")
	}
	// A file that does not answer: the read gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := loadBounded(ctx, f.path, roleAll); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("reading a pipe nobody writes, bounded: %v, want the context's end", err)
	}
}

// namedPipe is a FIFO in place of a file.
type namedPipe struct{ path string }

// makePipe replaces the file at path with a named pipe, whose blocked
// readers the test's end releases.
func makePipe(t *testing.T, path string) namedPipe {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	p := namedPipe{path}
	t.Cleanup(p.release)
	return p
}

// release gives each reader blocked on the pipe an end of file: a writer
// that opens and closes it.
func (p namedPipe) release() {
	if w, err := os.OpenFile(p.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		w.Close()
	}
}

// TestRemovedTenantsSubscribers: a subscriber for a tenant that is not
// configured is refused (one for every tenant is not). Removing a tenant
// cuts off the subscribers scoped to it, and the reload says so, naming
// them, in its answer and at Warn; its consumer stays. Adding the name
// back, for a new customer, says what the name still holds (users, live
// stored credentials, subscribers), and the old subscriber reads the new
// customer's events. A restart says the same as a reload: of every
// subscriber cut off, and of a tenant added since the last run.
func TestRemovedTenantsSubscribers(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir(),
		natsListen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t))}
	const logJSON = "log:\n  format: json\n"
	const acmeOnly = logJSON + "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	const newGlobexToken = "newcustomer-globex-token-ZZZZZZZZZZ"
	const acmeAndNewGlobex = acmeOnly + "  - name: globex\n    tokens: [" + newGlobexToken + "]\n"
	f.write(logJSON + twoTenants)
	var out eventstest.Log
	p := startReloadable(t, f.path, &out)
	cliConf := cliConfig(t, p, adminSecret)
	url, dir := "nats://"+f.natsListen, t.TempDir()
	newUser := func(tenant, token, name string) {
		p.scim(tenant, token, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201)
	}
	// warned returns the log's Warn lines that hold every one of want.
	warned := func(log string, want ...string) []string {
		var found []string
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, `"level":"WARN"`) && !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
				found = append(found, line)
			}
		}
		return found
	}

	seed := filepath.Join(dir, "globexsub.nk")
	if code, stdout, stderr := cli(t, "subscriber", "add", "globexsub", "--subjects", "scimrelay.globex.>", "--out", seed, "--config", cliConf); code != exitOK {
		t.Fatalf("subscriber add globexsub: %d %s %s", code, stdout, stderr)
	}
	code, _, stderr := cli(t, "subscriber", "add", "hoolisub", "--subjects", "scimrelay.hooli.>", "--out", filepath.Join(dir, "hooli.nk"), "--config", cliConf)
	if code != exitUsage || !strings.Contains(stderr, `tenant "hooli", which is not configured`) || !strings.Contains(stderr, "acme, globex") {
		t.Errorf("subscriber add for a tenant that is not configured: %d %s", code, stderr)
	}
	if code, stdout, stderr := cli(t, "subscriber", "add", "allusers", "--subjects", "scimrelay.*.user.>", "--out", filepath.Join(dir, "all.nk"), "--config", cliConf); code != exitOK {
		t.Fatalf("subscriber add for every tenant: %d %s %s", code, stdout, stderr)
	}
	newUser("globex", globexToken, "gina")
	sub, cons := bindSubscriber(t, url, "globexsub", seed)
	if got := next(t, cons); got != "scimrelay.globex.user.created gina" {
		t.Fatalf("globexsub read %q", got)
	}
	if _, _, err := p.srv.store.Tokens().Create(context.Background(), "globex", "entra", time.Time{}); err != nil {
		t.Fatal(err)
	}

	// globex removed: globexsub is cut off at once, and the reload says so.
	f.write(acmeOnly)
	code, stdout, stderr := cli(t, "reload", "--config", cliConf)
	if code != exitOK || !strings.Contains(stdout, "tenant globex removed: its NATS subscribers globexsub are cut off") || strings.Contains(stdout, "allusers") {
		t.Fatalf("reload removing globex: %d %s %s", code, stdout, stderr)
	}
	if len(warned(out.String(), "cut off", `"tenant":"globex"`, "globexsub")) != 1 {
		t.Errorf("no Warn naming globexsub cut off with globex:\n%s", out.String())
	}
	wantCutOff(t, sub, url, "globexsub", seed)
	if _, err := p.srv.js.Consumer(t.Context(), events.StreamName, "globexsub"); err != nil {
		t.Errorf("globexsub's consumer after globex was removed: %v", err)
	}
	if code, stdout, _ := cli(t, "subscriber", "list", "--config", cliConf); code != exitOK || !strings.Contains(stdout, "scimrelay.globex.> (cut off") {
		t.Errorf("subscriber list does not say globexsub is cut off:\n%s", stdout)
	}
	if code, _, stderr := cli(t, "subscriber", "add", "globexsub", "--replace", "--out", filepath.Join(dir, "again.nk"), "--config", cliConf); code != exitUsage || !strings.Contains(stderr, `tenant "globex"`) {
		t.Errorf("a new key for globexsub while globex is not configured: %d %s", code, stderr)
	}
	// Its stored token is listed by its tenant, to be revoked; a name that
	// holds none is still bad usage.
	if code, stdout, stderr := cli(t, "token", "list", "--tenant", "globex", "--config", cliConf); code != exitOK || !strings.Contains(stdout, "globex") || !strings.Contains(stderr, "tenant globex is not configured") {
		t.Errorf("token list --tenant globex after its removal: %d %s %s", code, stdout, stderr)
	}
	if code, _, stderr := cli(t, "token", "list", "--tenant", "glob", "--config", cliConf); code != exitUsage || !strings.Contains(stderr, "no such tenant") {
		t.Errorf("token list --tenant glob: %d %s", code, stderr)
	}
	// Its log and its events are read too, until it is purged.
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error { // the log is written behind the requests
		if code, stdout, stderr := cli(t, "log", "--tenant", "globex", "--json", "--config", cliConf); code != exitOK || !strings.Contains(stdout, `"tenant":"globex"`) {
			return fmt.Errorf("log --tenant globex after its removal: %d %s %s", code, stdout, stderr)
		}
		return nil
	})
	if code, stdout, stderr := cli(t, "events", "tail", "--tenant", "globex", "--since", "1h", "--no-follow", "--config", cliConf); code != exitOK || !strings.Contains(stdout, "user.created") {
		t.Errorf("events tail --tenant globex after its removal: %d %s %s", code, stdout, stderr)
	}
	if code, _, stderr := cli(t, "log", "--tenant", "glob", "--config", cliConf); code != exitUsage || !strings.Contains(stderr, "no such tenant") {
		t.Errorf("log --tenant glob: %d %s", code, stderr)
	}

	// globex added again for a new customer: the reload says the name is
	// not fresh, and globexsub, back, reads the new customer's events.
	f.write(acmeAndNewGlobex)
	code, stdout, stderr = cli(t, "reload", "--config", cliConf)
	const notFresh = "tenant globex added: the name is not fresh: 1 user, 1 live stored token, 1 NATS subscriber (globexsub) from before are back"
	if code != exitOK || !strings.Contains(stdout, notFresh) {
		t.Fatalf("reload adding globex again: %d %s %s\nwant %q", code, stdout, stderr, notFresh)
	}
	if len(warned(out.String(), "from before", `"tenant":"globex"`, `"users":1`, `"tokens":1`, "globexsub")) != 1 {
		t.Errorf("no Warn counting what globex holds from before:\n%s", out.String())
	}
	newUser("globex", newGlobexToken, "newcustomer-alice")
	_, cons = bindSubscriber(t, url, "globexsub", seed)
	if got := next(t, cons); got != "scimrelay.globex.user.created newcustomer-alice" {
		t.Fatalf("globexsub, back, read %q; want the new customer's event", got)
	}

	// A restart does the same, and says it: globexsub is cut off while
	// globex is away, and let in when it is back.
	for _, step := range []struct {
		file, want string
		admitted   bool
	}{{acmeOnly, "cut off", false}, {acmeAndNewGlobex, "from before", true}} {
		p.stop()
		f.write(step.file)
		var restarted eventstest.Log
		p = startReloadable(t, f.path, &restarted)
		if len(warned(restarted.String(), step.want, `"tenant":"globex"`, "globexsub")) != 1 {
			t.Errorf("a restart with %q: no Warn saying %q of globex and globexsub:\n%s", step.file, step.want, restarted.String())
		}
		if _, err := connectSubscriber(t, url, "globexsub", seed); step.admitted != (err == nil) || !step.admitted && !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("a restart with %q: globexsub connecting: %v, want it admitted: %v", step.file, err, step.admitted)
		}
		// The start line counts the subscribers let in (allusers, and
		// globexsub when globex is there), not those cut off.
		admitted := 1
		if step.admitted {
			admitted = 2
		}
		if want := fmt.Sprintf(`"subscribers":%d`, admitted); !strings.Contains(restarted.String(), `"embedded NATS is listening for subscribers`) || !strings.Contains(restarted.String(), want) {
			t.Errorf("a restart with %q: the start line does not say %s:\n%s", step.file, want, restarted.String())
		}
	}
}

// TestReloadDoesNotUndoARevocation: a tenant's first token is issued once
// (at start here); revoked by the operator (a leak, a customer paused), it
// is not replaced by the next reload, whatever that changes (a log level
// here), nor the next start: each issued a new live token, written to the
// first-token file, and the reload's answer did not say so.
func TestReloadDoesNotUndoARevocation(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	const tenants = "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n  - name: initech\n"
	f.write("log:\n  level: info\n" + tenants)
	p := startReloadable(t, f.path, io.Discard)
	cfg := cliConfig(t, p, adminSecret)
	list, err := p.srv.store.Tokens().List(t.Context(), "initech")
	if err != nil || len(list) != 1 {
		t.Fatalf("initech's tokens at start: %v %v", list, err)
	}
	if code, out, stderr := cli(t, "token", "revoke", list[0].ID, "--config", cfg); code != exitOK {
		t.Fatalf("token revoke: %d %s %s", code, out, stderr)
	}
	live := func(when string) {
		t.Helper()
		list, err := p.srv.store.Tokens().List(t.Context(), "initech")
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range list {
			if tok.Revoked.IsZero() {
				t.Errorf("%s, initech, whose token was revoked, has a live token %s (%q)", when, tok.ID, tok.Name)
			}
		}
	}
	f.write("log:\n  level: debug\n" + tenants)
	reloadNow(t, p)
	live("after a reload")
	p.stop()
	p = startReloadable(t, f.path, io.Discard)
	live("after a restart")
}

// TestJobsAcrossAReloadThatNarrowsTheSink: a redrive of three dead
// letters of globex to sink crm, or a replay of globex's three events to
// it, is under way (its first delivery at the receiver) when a reload
// narrows crm to tenant acme. "Once a reload narrows them, nothing they
// leave out is sent": the job may not send the other two, as it did
// with the sink as it was when it began.
func TestJobsAcrossAReloadThatNarrowsTheSink(t *testing.T) {
	for _, job := range []struct {
		name string
		args []string
	}{
		{"redrive", []string{"dlq", "redrive", "--sink", "crm", "--all"}},
		{"replay", []string{"sinks", "replay", "--sink", "crm", "--since", "1h"}},
	} {
		t.Run(job.name, func(t *testing.T) {
			rcv := newJobReceiver(t, `"userName":"globex-`, http.StatusNoContent)
			f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
			sinkWith := func(tenants string) string {
				return "sinks:\n" + sinkYAML("crm", rcv.URL) + "    tenants: [" + tenants + "]\n"
			}
			f.write(twoTenants + sinkWith("acme, globex"))
			p := startReloadable(t, f.path, io.Discard)
			conf := cliConfig(t, p, adminSecret)
			for i := range 3 {
				p.scim("globex", globexToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"globex-%d"}`, i)).want(t, 201)
			}
			p.awaitDeadLetters(t, "crm", 3)
			ran := rcv.run(t, append(job.args, "--config", conf)...)
			f.write(twoTenants + sinkWith("acme"))
			if code, out, stderr := cli(t, "reload", "--config", conf); code != exitOK || !strings.Contains(out, "sink crm changed") {
				t.Fatalf("reload narrowing crm: %d %s %s", code, out, stderr)
			}
			rcv.answer()
			r := ran.wait(t)
			if n := rcv.deliveries(); n != 1 {
				t.Errorf("after the reload that narrowed crm to acme, the %s sent %d more of globex's events to crm (%d in all; exit %d %s %s)", job.name, n-1, n, r.code, r.stdout, r.stderr)
			}
		})
	}
}

// jobReceiver is a sink's receiver for a test of a job (a redrive, a
// replay) under way: the deliveries of events whose body holds mark are
// answered 410 (dead-lettered at once) until the job runs; the job's are
// counted and answered status, the first once answer is called, so that
// the test can change the world while it is at the receiver. Other
// deliveries are taken.
type jobReceiver struct {
	*httptest.Server
	status  int
	mu      sync.Mutex
	job     bool
	n       int
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func newJobReceiver(t *testing.T, mark string, status int) *jobReceiver {
	r := &jobReceiver{status: status, reached: make(chan struct{}), release: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if !bytes.Contains(body, []byte(mark)) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		r.mu.Lock()
		job := r.job
		if job {
			r.n++
		}
		first := job && r.n == 1
		r.mu.Unlock()
		if !job {
			w.WriteHeader(http.StatusGone)
			return
		}
		if first {
			close(r.reached)
			<-r.release
		}
		w.WriteHeader(r.status)
	}))
	t.Cleanup(r.Close)
	t.Cleanup(r.answer) // before the server closes
	return r
}

// answer lets the job's first delivery be answered.
func (r *jobReceiver) answer() { r.once.Do(func() { close(r.release) }) }

// deliveries counts the job's deliveries.
func (r *jobReceiver) deliveries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// run starts the CLI command of the job, and returns once its first
// delivery is at the receiver.
func (r *jobReceiver) run(t *testing.T, args ...string) *cliRun {
	t.Helper()
	r.mu.Lock()
	r.job = true
	r.mu.Unlock()
	c := &cliRun{done: make(chan cliResult, 1)}
	go func() {
		code, stdout, stderr := cli(t, args...)
		c.done <- cliResult{code, stdout, stderr}
	}()
	select {
	case <-r.reached:
	case res := <-c.done:
		t.Fatalf("%v ended before its first delivery: %d %s %s", args, res.code, res.stdout, res.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%v never reached the receiver", args)
	}
	return c
}

// cliRun is a CLI command running.
type cliRun struct{ done chan cliResult }

type cliResult struct {
	code           int
	stdout, stderr string
}

// wait returns the command's result once it ends.
func (c *cliRun) wait(t *testing.T) cliResult {
	t.Helper()
	select {
	case r := <-c.done:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("the command did not end")
		return cliResult{}
	}
}

// TestRemovedTenantLeavesTheRequestMetrics: a tenant a reload removes
// takes its SCIM request series off /metrics with it, as a removed sink
// takes its own, and the tenants that stay keep theirs; a request to the
// removed name afterwards counts under tenant="", as for any name no
// tenant has. Before, every tenant ever served kept its series until a
// restart (from a review of what grows in a relay that runs for months).
func TestRemovedTenantLeavesTheRequestMetrics(t *testing.T) {
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	f.write("limits:\n  rate: 0\n" + twoTenants)
	p := startReloadable(t, f.path, io.Discard)
	for _, tt := range []struct{ tenant, token string }{{"acme", acmeToken}, {"globex", globexToken}} {
		p.scim(tt.tenant, tt.token, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ann"}`).want(t, 201)
	}
	series := func(tenant string) int {
		_, body := p.get("/metrics")
		n := 0
		for line := range strings.SplitSeq(body, "\n") {
			if strings.HasPrefix(line, "scimrelay_scim_request") && strings.Contains(line, `tenant="`+tenant+`"`) {
				n++
			}
		}
		return n
	}
	if series("acme") == 0 || series("globex") == 0 {
		t.Fatalf("before the reload: %d series of acme, %d of globex; want some of each", series("acme"), series("globex"))
	}
	f.write("limits:\n  rate: 0\ntenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n")
	reloadNow(t, p)
	if n := series("globex"); n != 0 {
		t.Errorf("globex, removed by the reload, still has %d lines of SCIM request series on /metrics", n)
	}
	if series("acme") == 0 {
		t.Error("acme, still configured, lost its SCIM request series at the reload")
	}
	p.scim("globex", globexToken, "GET", "/Users", "").want(t, 401)
	if n := series("globex"); n != 0 {
		t.Errorf("a request to the removed tenant made %d lines of series under its name again", n)
	}
}

// consumersTaking returns the partitions whose consumer of sink takes
// tenant's events.
func consumersTaking(t *testing.T, p *relayProc, sink, tenant string) []int {
	t.Helper()
	var taking []int
	for i, info := range partitionConsumers(t, p, sink) {
		for _, f := range append(info.Config.FilterSubjects, info.Config.FilterSubject) {
			if f != "" && events.PatternTenant(f) == tenant {
				taking = append(taking, i)
			}
		}
	}
	return taking
}

// TestReaddedTenantReachesNoSinkThatDoesNotListIt: sink crm takes acme
// and globex. globex leaves (out of tenants and of crm's tenants in one
// reload, as check requires), and stays in crm's consumers' filter as a
// tenant this process does not configure; later a reload gives the name
// to a new customer and leaves crm as it is, tenants [acme]. From the
// moment the new globex is served, crm's consumers must not take it
// ("events and tenants select what a sink is sent"): before, crm was sent
// the new customer's events until a restart, purged before or not, while
// another sink's hand-over held the reload up, and in the deployed shape
// (a front end and two workers, each reloaded).
func TestReaddedTenantReachesNoSinkThatDoesNotListIt(t *testing.T) {
	for _, c := range []struct {
		name                  string
		purge, slow, deployed bool
	}{
		{"given back", false, false, false},
		{"purged, then given back", true, false, false},
		{"given back while another sink's hand-over waits", false, true, false},
		{"given back to a front end and two workers", false, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			crm, all := newHook(t), newHook(t)
			reached, release := make(chan struct{}), make(chan struct{})
			var reachedOnce, releaseOnce sync.Once
			free := func() { releaseOnce.Do(func() { close(release) }) }
			slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if body, _ := io.ReadAll(r.Body); bytes.Contains(body, []byte("slowpoke")) {
					reachedOnce.Do(func() { close(reached) })
					<-release
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			t.Cleanup(slow.Close)
			t.Cleanup(free)
			const newGlobexToken = "newcustomer-globex-token-ZZZZZZZZZZ"
			sinks := func(crmTenants, slowTimeout string) string {
				return sinkYAML("crm", crm.URL) + "    tenants: [" + crmTenants + "]\n" + sinkYAML("all", all.URL) +
					sinkYAML("slow", slow.URL) + "    tenants: [acme]\n    timeout: " + slowTimeout + "\n"
			}
			acmeOnly := "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
			// write writes every process's relay.yaml; procs[0] serves SCIM.
			var write func(tenants, sinks string)
			var procs []*relayProc
			if c.deployed {
				d := runDeployedShape(t, sinks("acme, globex", "20s"))
				write, procs = d.writeTenants, d.procs
			} else {
				f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
				write = func(tenants, sinks string) { f.write("limits:\n  rate: 0\n" + tenants + "sinks:\n" + sinks) }
				write(twoTenants, sinks("acme, globex", "20s"))
				procs = []*relayProc{startReloadable(t, f.path, io.Discard)}
			}
			p := procs[0]
			// reload reloads every process at once; wait runs while they
			// may still be under way (slow's hand-over holds them until
			// free).
			reload := func(wait func()) {
				errs := make(chan error, len(procs))
				for _, q := range procs {
					go func() { _, err := q.srv.reload(context.Background()); errs <- err }()
				}
				if wait != nil {
					wait()
				}
				for range procs {
					if err := <-errs; err != nil {
						t.Fatal(err)
					}
				}
			}
			user := func(tenant, token, name string) string {
				r := p.scim(tenant, token, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`)
				r.want(t, 201)
				return r.body["id"].(string)
			}
			has := func(h *hook, id string) bool {
				return slices.ContainsFunc(h.received(), func(s string) bool { return strings.Contains(s, id) })
			}
			waitFor := func(h *hook, id string) {
				t.Helper()
				eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
					if !has(h, id) {
						return fmt.Errorf("%s not received", id)
					}
					return nil
				})
			}
			waitFor(crm, user("globex", globexToken, "gina"))

			// globex leaves: out of tenants and of crm's tenants.
			write(acmeOnly, sinks("acme", "20s"))
			reload(nil)
			if len(consumersTaking(t, p, "crm", "globex")) == 0 {
				t.Fatal("crm's consumers no longer take globex: the case this test is about (a tenant taken out of every relay.yaml stays in the filter) did not arise")
			}
			if c.purge { // as the reload's answer advises for a new customer
				if code, stdout, stderr := cli(t, "tenant", "purge", "globex", "--yes", "--config", cliConfig(t, p, adminSecret)); code != exitOK {
					t.Fatalf("tenant purge globex: %d %s %s", code, stdout, stderr)
				}
			}
			if c.slow {
				user("acme", acmeToken, "slowpoke")
				select {
				case <-reached:
				case <-time.After(20 * time.Second):
					t.Fatal("slow's receiver was not reached")
				}
			}

			// A new customer is given the name; crm is left as it is (slow's
			// timeout changes: its worker is handed over).
			write(acmeOnly+"  - name: globex\n    tokens: ["+newGlobexToken+"]\n", sinks("acme", "21s"))
			var fresh string
			reload(func() {
				eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
					if r, err := p.send("globex", newGlobexToken, "GET", "/Users?count=0", ""); err != nil || r.status != 200 {
						return fmt.Errorf("the new globex is not served yet: %v %d", err, r.status)
					}
					return nil
				})
				if taking := consumersTaking(t, p, "crm", "globex"); len(taking) > 0 {
					t.Errorf("the new globex is served while crm's consumers of partitions %v take it", taking)
				}
				fresh = user("globex", newGlobexToken, "newcustomer-alice")
				waitFor(all, fresh)
				free()
			})
			waitFor(crm, user("acme", acmeToken, "ann"))
			if has(crm, fresh) {
				t.Errorf("crm, whose tenants are [acme], received the new globex customer's user.created %s", fresh)
			}
		})
	}
}

// TestRefusedReloadKeepsARemovedTenantInTheFilter: globex leaves the relay
// (its events the stream still holds are still sent: README, "a tenant
// taken out of every relay.yaml stays in the filter ... until a process
// configures it again"); a reload giving the name back is then refused
// (its relay.yaml token is acme's stored token), "with the running
// configuration kept". The consumers of crm must still take globex.
func TestRefusedReloadKeepsARemovedTenantInTheFilter(t *testing.T) {
	crm := newHook(t)
	f := reloadFile{t: t, path: filepath.Join(t.TempDir(), "relay.yaml"), dataDir: t.TempDir()}
	write := func(tenants, crmTenants string) {
		f.write("limits:\n  rate: 0\n" + tenants + "sinks:\n" + sinkYAML("crm", crm.URL) + "    tenants: [" + crmTenants + "]\n")
	}
	acmeOnly := "tenants:\n  - name: acme\n    tokens: [" + acmeToken + "]\n"
	write(twoTenants, "acme, globex")
	p := startReloadable(t, f.path, io.Discard)
	write(acmeOnly, "acme")
	if _, err := p.srv.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(consumersTaking(t, p, "crm", "globex")) == 0 {
		t.Fatal("crm's consumers no longer take globex after it left: the case does not arise")
	}
	code, secret, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "entra", "--config", cliConfig(t, p, adminSecret))
	if code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	secret = strings.TrimSpace(secret)
	write(acmeOnly+"  - name: globex\n    tokens: ["+secret+"]\n", "acme")
	if _, err := p.srv.reload(context.Background()); !errors.Is(err, relay.ErrSharedToken) {
		t.Fatalf("a reload giving globex acme's stored token: %v, want it refused", err)
	}
	if p.scim("globex", globexToken, "GET", "/Users?count=0", "").status == 200 {
		t.Fatal("globex is served after the refused reload")
	}
	if len(consumersTaking(t, p, "crm", "globex")) == 0 {
		t.Errorf("the refused reload (running configuration kept, globex not served) took globex out of crm's consumers: the events of globex the stream still holds are no longer sent")
	}
}
