// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// The tests in this file run the scimrelay binary as a separate process,
// because what they check (SIGKILL, SIGTERM, a second process on the same
// data) cannot happen inside the test's own process.

// built is a binary go build made once per test run.
type built struct {
	once sync.Once
	path string
	err  error
}

var (
	relayBinary      built
	natsServerBinary built
)

// binary builds scimrelay once per test run.
func binary(t *testing.T) string {
	t.Helper()
	return relayBinary.get(t, "scimrelay", ".")
}

// natsServerBin builds the nats-server go.mod names once per test run, for a
// test that reloads a server's configuration: nats-server cannot do that
// in the test's own process under the race detector (its reload writes
// the options its direct gets read unlocked).
func natsServerBin(t *testing.T) string {
	t.Helper()
	return natsServerBinary.get(t, "nats-server", "github.com/nats-io/nats-server/v2")
}

// TestMain removes the binaries the tests built once they have run.
func TestMain(m *testing.M) {
	code := m.Run()
	relayBinary.remove()
	natsServerBinary.remove()
	os.Exit(code)
}

// remove deletes the binary's directory, if it was built.
func (b *built) remove() {
	if b.path != "" {
		_ = os.RemoveAll(filepath.Dir(b.path))
	}
}

// get builds pkg into a binary named name the first time it is called.
func (b *built) get(t *testing.T, name, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs " + name)
	}
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", name+"-bin")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrs(t, 1)[0]
}

// freeAddrs returns n loopback addresses with ports of their own, for the
// listeners of one relay: freeAddr twice may give one port twice, and the
// relay then refuses its configuration (a CI run did).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for _, port := range eventstest.FreePorts(t, n) {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", port))
	}
	return out
}

// processConfig writes a relay.yaml for a subprocess and returns its path
// and the addresses it uses.
type procAddrs struct{ scim, admin, nats string }

func processConfig(t *testing.T, dataDir string) (string, procAddrs) {
	t.Helper()
	addrs := freeAddrs(t, 3)
	a := procAddrs{scim: addrs[0], admin: addrs[1], nats: addrs[2]}
	cfg := fmt.Sprintf(`listen: %s
admin_listen: %s
data_dir: %s
admin:
  token: %s
nats:
  listen: %s
limits:
  rate: 0
tenants:
  - name: acme
    tokens: [%s]
`, a.scim, a.admin, dataDir, adminSecret, a.nats, acmeToken)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, a
}

type proc struct {
	cmd    *exec.Cmd
	stderr *eventstest.Log
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
}

// startProcess runs serve on configPath, with env added to the test's
// environment.
func startProcess(t *testing.T, bin, configPath string, env ...string) *proc {
	t.Helper()
	return runProcess(t, bin, []string{"serve", "--config", configPath}, env...)
}

// runProcess runs bin with args, with env added to the test's environment,
// until the test ends.
func runProcess(t *testing.T, bin string, args []string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: &eventstest.Log{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr, p.cmd.Stdout = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func waitReady(t *testing.T, p *proc, admin string) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-p.exited:
			t.Fatalf("relay exited before it was ready: %v\n%s", p.err, p.stderr.String())
		default:
		}
		return ready(admin)
	})
}

// ready asks a relay's admin listener whether it is ready.
func ready(admin string) error {
	res, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("readyz %d", res.StatusCode)
	}
	return nil
}

// TestKillDuringWrites kills the relay with SIGKILL in the middle of a
// stream of writes, restarts it, and checks that every write it had
// acknowledged has its event in the stream, exactly once.
func TestKillDuringWrites(t *testing.T) {
	bin := binary(t)
	configPath, addrs := processConfig(t, t.TempDir())
	const trials = 5
	acked := &acknowledgedWrites{}
	for trial := 0; trial < trials; trial++ {
		p := startProcess(t, bin, configPath)
		waitReady(t, p, addrs.admin)
		stop := writeUsers(t, "http://"+addrs.scim, fmt.Sprintf("t%d", trial), acked)
		// Let a random number of writes through, then kill without warning,
		// writes still in flight.
		acked.await(t, acked.count()+50+rand.IntN(250))
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.exited
		stop()
	}
	acknowledged := acked.names
	if len(acknowledged) < trials*10 {
		t.Fatalf("only %d writes were acknowledged across %d trials; the test did not exercise anything", len(acknowledged), trials)
	}
	// Restart once more and let the outbox drain.
	p := startProcess(t, bin, configPath)
	waitReady(t, p, addrs.admin)
	// Read the stream as a subscriber would: the embedded NATS admits no one else.
	seedFile := filepath.Join(t.TempDir(), "check.nk")
	if out, err := exec.Command(bin, "subscriber", "add", "check", "--out", seedFile, "--config", configPath).CombinedOutput(); err != nil {
		t.Fatalf("subscriber add: %v\n%s", err, out)
	}
	sub, err := connectSubscriber(t, "nats://"+addrs.nats, "check", seedFile)
	if err != nil {
		t.Fatal(err)
	}
	js := sub.js
	names := map[string]int{}
	ids := map[string]bool{}
	// Wait for every acknowledged write's event, not for a count: writes
	// committed but cut off before their 201 have events too, so the stream
	// can hold as many events as acknowledged writes while the restarted
	// publisher is still sending some of theirs.
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		names, ids = map[string]int{}, map[string]bool{}
		if err := collectCreated(js, names, ids, len(acknowledged)); err != nil {
			return err
		}
		for _, name := range acknowledged {
			if names[name] == 0 {
				return fmt.Errorf("acknowledged write %s has no user.created event yet", name)
			}
		}
		return nil
	})
	for _, name := range acknowledged {
		if names[name] != 1 {
			t.Errorf("acknowledged write %s has %d user.created events in the stream, want 1", name, names[name])
		}
	}
	t.Logf("%d kill trials, %d acknowledged writes, all with exactly one event", trials, len(acknowledged))
}

// collectCreated reads the stream and counts user.created events by userName.
func collectCreated(js jetstream.JetStream, names map[string]int, ids map[string]bool, want int) error {
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs < uint64(want) {
		return fmt.Errorf("%d events in the stream, at least %d acknowledged", info.State.Msgs, want)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			return err
		}
		e, err := events.FromMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			return err
		}
		if ids[e.ID()] {
			return fmt.Errorf("event %s is in the stream twice", e.ID())
		}
		ids[e.ID()] = true
		d, err := events.DataOf(e)
		if err != nil {
			return err
		}
		var r struct {
			UserName string `json:"userName"`
		}
		_ = json.Unmarshal(d.Resource, &r)
		names[r.UserName]++
	}
	return nil
}

// TestGracefulAndExclusive checks that SIGTERM lets the relay exit cleanly
// and that a second serve on the same data directory fails at once.
func TestGracefulAndExclusive(t *testing.T) {
	bin := binary(t)
	configPath, addrs := processConfig(t, t.TempDir())
	p := startProcess(t, bin, configPath)
	waitReady(t, p, addrs.admin)

	start := time.Now()
	second := exec.Command(bin, "serve", "--config", configPath)
	out, err := second.CombinedOutput()
	if err == nil || time.Since(start) > 10*time.Second || !strings.Contains(string(out), "in use by another scimrelay process") {
		t.Fatalf("second serve: err %v after %s, output:\n%s", err, time.Since(start), out)
	}

	p.stopWith(t, syscall.SIGTERM)
}

// stopWith sends the relay sig and waits for it to exit with status 0.
func (p *proc) stopWith(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("relay exited with %v after %v:\n%s", p.err, sig, p.stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("relay did not exit within 40s of %v", sig)
	}
}

// TestServeKeepsAGCFloor checks that serve applies memory.gc_floor: the
// relay's GC percentage, as its metrics report it, is raised above Go's
// 100 while its heap is far below the default 128 MiB floor, and left at
// 100 when GOGC is set, which wins.
func TestServeKeepsAGCFloor(t *testing.T) {
	bin := binary(t)
	for _, c := range []struct {
		gogc   string
		raised bool
	}{{"", true}, {"100", false}} {
		configPath, addrs := processConfig(t, t.TempDir())
		p := startProcess(t, bin, configPath, "GOGC="+c.gogc)
		waitReady(t, p, addrs.admin)
		percent := scrapeGauge(t, addrs.admin, "go_gc_gogc_percent")
		if raised := percent > 100; raised != c.raised {
			t.Errorf("GOGC=%q: go_gc_gogc_percent %v; want it raised above 100: %v", c.gogc, percent, c.raised)
		}
	}
}

// TestServeSetsASoftMemoryLimit checks that serve gives Go a soft memory
// limit from the container's, as its metrics report it: 90% of it by
// default, the share AUTOMEMLIMIT names, and GOMEMLIMIT's value when that
// is set, which wins. The machine's memory stands in for a cgroup's limit
// (automemlimit's AUTOMEMLIMIT_EXPERIMENT=system, used only when there is
// no cgroup limit; where there is one, the cgroup's is expected).
func TestServeSetsASoftMemoryLimit(t *testing.T) {
	bin := binary(t)
	total, err := memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)()
	if err != nil {
		t.Skipf("neither a cgroup nor the system says how much memory there is: %v", err)
	}
	for _, k := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} { // the test's own must not reach the relay
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	cases := []struct {
		env  string
		want int64
	}{
		{"", int64(float64(total) * memoryLimitRatio)},
		{"AUTOMEMLIMIT=0.5", int64(float64(total) * 0.5)},
		{"GOMEMLIMIT=300MiB", 300 << 20},
	}
	admins := make([]string, len(cases))
	procs := make([]*proc, len(cases))
	for i, c := range cases { // start them all, then wait: they start in parallel
		configPath, addrs := processConfig(t, t.TempDir())
		procs[i] = startProcess(t, bin, configPath, "AUTOMEMLIMIT_EXPERIMENT=system", c.env)
		admins[i] = addrs.admin
	}
	for i, c := range cases {
		waitReady(t, procs[i], admins[i])
		if got := scrapeGauge(t, admins[i], "go_gc_gomemlimit_bytes"); got != float64(c.want) {
			t.Errorf("%q with %d bytes of memory: go_gc_gomemlimit_bytes %.0f, want %d", c.env, total, got, c.want)
		}
	}
}

// scrapeGauge reads one unlabelled gauge from a relay process's /metrics,
// through the admin client the CLI uses.
func scrapeGauge(t *testing.T, admin, name string) float64 {
	t.Helper()
	c := &adminclient.Client{BaseURL: "http://" + admin, Token: adminSecret, Timeout: 10 * time.Second}
	families, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := families[name]
	if f == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	return sumSeries(f)
}

// TestReloadWhileStarting: the systemd unit's ExecReload, scimrelay
// reload, run again and again from the moment the relay's process starts:
// it fails, saying the relay is not reachable (exit 3), until the relay
// is up, then reloads; the relay is never ended by it, as a SIGHUP in its
// first milliseconds would end it.
func TestReloadWhileStarting(t *testing.T) {
	bin := binary(t)
	configPath, _ := processConfig(t, t.TempDir())
	p := startProcess(t, bin, configPath)
	var codes []int
	eventstest.CheckFor(t, 60*time.Second, 10*time.Millisecond, func() error {
		select {
		case <-p.exited:
			t.Fatalf("relay exited while reloads were asked of it: %v\n%s", p.err, p.stderr.String())
		default:
		}
		out, err := exec.Command(bin, "reload", "--config", configPath).CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &exit) && exit.ExitCode() == exitNotReady:
			codes = append(codes, exitNotReady)
			return fmt.Errorf("reload: %s", out)
		default:
			t.Fatalf("reload while the relay starts: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("%d reloads refused (exit 3) before the relay was up", len(codes))
	select {
	case <-p.exited:
		t.Fatalf("relay exited after the reload: %v\n%s", p.err, p.stderr.String())
	default:
	}
}

// TestHangUpWhileStarting: a SIGHUP that arrives while the relay starts
// (opening its data file, starting NATS, before it reloads on SIGHUP) does
// not end it.
func TestHangUpWhileStarting(t *testing.T) {
	bin := binary(t)
	dataDir := t.TempDir()
	configPath, addrs := processConfig(t, dataDir)
	p := startProcess(t, bin, configPath)
	// From when it opens its data file (its Go code runs: before that a
	// signal meets a process not yet able to handle any) until it is ready.
	eventstest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(dataDir, "scimrelay.db"))
		return err
	})
	hups := 0
	eventstest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		select {
		case <-p.exited:
			t.Fatalf("relay exited after %d SIGHUPs while starting: %v\n%s", hups, p.err, p.stderr.String())
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err == nil {
			hups++
		}
		return ready(addrs.admin)
	})
	if hups < 1 {
		t.Fatal("no SIGHUP was sent before the relay was ready")
	}
	t.Logf("%d SIGHUPs while starting", hups)
	select {
	case <-p.exited:
		t.Fatalf("relay exited after the SIGHUPs: %v\n%s", p.err, p.stderr.String())
	default:
	}
}

// TestASecondSignalStopsAtOnce: the first SIGTERM begins a graceful stop,
// here one that answers for limits.shutdown_delay (10 s) with /readyz
// failing; a second signal ends the process at once, as an operator
// pressing Ctrl-C twice expects: one sent once the stop began, and one
// sent right behind the first (a double Ctrl-C reaching a process group,
// a supervisor and a wrapper each forwarding one), which used to be
// dropped while the first was still caught, the relay waiting out its
// delay.
func TestASecondSignalStopsAtOnce(t *testing.T) {
	bin := binary(t)
	for _, c := range []struct {
		name           string
		waitForTheStop bool
		second         syscall.Signal
	}{{"once the stop began", true, syscall.SIGTERM}, {"back to back", false, syscall.SIGINT}} {
		t.Run(c.name, func(t *testing.T) {
			configPath, addrs := processConfig(t, t.TempDir())
			text, err := os.ReadFile(configPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(configPath, []byte(strings.Replace(string(text), "  rate: 0\n", "  rate: 0\n  shutdown_delay: 10s\n", 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startProcess(t, bin, configPath)
			waitReady(t, p, addrs.admin)
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if c.waitForTheStop {
				eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
					if err := ready(addrs.admin); err == nil || !strings.Contains(err.Error(), "503") {
						return fmt.Errorf("/readyz once the stop began: %v, want 503", err)
					}
					return nil
				})
			}
			if err := p.cmd.Process.Signal(c.second); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.exited:
			case <-time.After(8 * time.Second): // the delay alone is 10 s
				t.Fatalf("the relay still runs 8 s after a second signal (/readyz: %v):\n%s", ready(addrs.admin), p.stderr.String())
			}
		})
	}
}

// TestStopWhileAWorkerWaitsForItsFrontEnd: SIGTERM reaches a delivery
// worker (`--role sinks`) that waits for its front end to make the event
// stream, as workers started first do on a first deployment: it stops at
// once, exit status 0, ending with `stopped`, not with an error that
// blames the front end (it exited 1, "start or reload it first: context
// canceled").
func TestStopWhileAWorkerWaitsForItsFrontEnd(t *testing.T) {
	bin := binary(t)
	ns := eventstest.RunServer(t)
	h := newHook(t)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf(`admin_listen: %s
data_dir: %s
admin:
  token: %s
nats:
  url: %s
tenants:
  - name: acme
    tokens: [%s]
sinks:
  - name: crm
    type: webhook
    url: %s
    secret: %s
    allow_private: true
`, freeAddr(t), t.TempDir(), adminSecret, eventstest.URL(ns), acmeToken, h.URL, sinkSecret)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := runProcess(t, bin, []string{"serve", "--role", "sinks", "--config", path})
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-p.exited:
			t.Fatalf("the worker exited: %v\n%s", p.err, p.stderr.String())
		default:
		}
		if !strings.Contains(p.stderr.String(), "waiting for the SCIM front end") {
			return errors.New("not waiting for the front end yet")
		}
		return nil
	})
	p.stopWith(t, syscall.SIGTERM)
	if !strings.Contains(p.stderr.String(), "msg=stopped") {
		t.Fatalf("the worker's log does not end with stopped:\n%s", p.stderr.String())
	}
}

// TestGracefulStopPublishesEveryAcknowledgedWrite: a front end on a NATS
// of its own (`--role scim`) stopped as SIGTERM stops it while eight
// clients create users: every write answered 201 has its event in the
// stream once the front end has stopped, not only when it starts again.
// The publisher used to stop with the serving context, right after the
// SCIM listener, leaving the last requests' events (53 of 525 in a
// review's run) in the outbox of a front end that may never come back.
func TestGracefulStopPublishesEveryAcknowledgedWrite(t *testing.T) {
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	acked := &acknowledgedWrites{}
	for trial := range 3 {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.URL(ns)
		cfg.NATS.SyncInterval = 0
		p := startRelay(t, cfg, roleSCIM)
		stop := writeUsers(t, p.scimURL, fmt.Sprintf("t%d", trial), acked)
		acked.await(t, acked.count()+100)
		p.stop() // writes still arriving
		stop()
	}
	acknowledged := acked.names
	names, ids := map[string]int{}, map[string]bool{}
	if err := collectCreated(js, names, ids, 0); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, name := range acknowledged {
		if names[name] != 1 {
			missing++
			t.Logf("acknowledged write %s has %d user.created events in the stream", name, names[name])
		}
	}
	if missing > 0 {
		t.Fatalf("after graceful stops, %d of %d writes answered 201 lack their one event in the stream", missing, len(acknowledged))
	}
}

// acknowledgedWrites are the userNames of the writes answered 201.
type acknowledgedWrites struct {
	mu    sync.Mutex
	names []string
}

func (a *acknowledgedWrites) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.names)
}

// await waits until n writes have been answered 201.
func (a *acknowledgedWrites) await(t *testing.T, n int) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, time.Millisecond, func() error {
		if got := a.count(); got < n {
			return fmt.Errorf("%d writes acknowledged, waiting for %d", got, n)
		}
		return nil
	})
}

// writeUsers has eight clients create users of acme on scimURL, named
// after prefix, until the relay stops answering or stop is called (which
// waits for them), adding each write answered 201 to acked.
func writeUsers(t *testing.T, scimURL, prefix string, acked *acknowledgedWrites) (stop func()) {
	t.Helper()
	var wg sync.WaitGroup
	done := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				name := fmt.Sprintf("%s-w%d-%d@example.com", prefix, w, i)
				req, err := http.NewRequest("POST", scimURL+"/scim/v2/acme/Users",
					strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer "+acmeToken)
				res, err := client.Do(req)
				if err != nil {
					return // the relay has stopped listening
				}
				res.Body.Close()
				if res.StatusCode == http.StatusCreated {
					acked.mu.Lock()
					acked.names = append(acked.names, name)
					acked.mu.Unlock()
				}
			}
		})
	}
	return func() { close(done); wg.Wait() }
}
