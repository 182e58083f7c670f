// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// adminRequest sends a request to the admin listener with a token (none
// when "") and a Host (the listener's address when "").
func adminRequest(t *testing.T, p *relayProc, method, path, token, host string) reply {
	t.Helper()
	req, err := http.NewRequest(method, p.adminURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if host != "" {
		req.Host = host
	}
	return do(t, req)
}

// adminJSON sends a request to the admin listener with the admin token,
// and body, when not "", as JSON.
func adminJSON(t *testing.T, p *relayProc, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, p.adminURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(t, req)
}

// TestWrongAdminTokensAreLimited: a guesser of the admin token gets 10
// tries a minute from its address, then 429 with Retry-After, the right
// token included; the console's sign-in spends the same budget; the
// refusals are one line in the log, not one each.
func TestWrongAdminTokensAreLimited(t *testing.T) {
	var logBuf eventstest.Log
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll, slog.New(slog.NewTextHandler(&logBuf, nil)), io.Discard)
	// The budget gives a try back every 6 s: on a loaded machine the 300
	// guesses can take longer than that, and a guess the refill let
	// through is compared (401). No more than the refill allows are.
	start, compared := time.Now(), 0
	guess := func(i int) reply {
		t.Helper()
		r := adminRequest(t, p, "GET", "/admin/v1/tokens", fmt.Sprintf("guess-%d-0123456789abcdef", i), "")
		switch {
		case r.status == http.StatusUnauthorized:
			compared++
		case r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "":
			t.Fatalf("wrong token %d: %d (Retry-After %q), want 401 or 429", i, r.status, r.header.Get("Retry-After"))
		}
		return r
	}
	for i := range 300 {
		if r := guess(i); i < 10 && r.status != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i, r.status)
		}
	}
	if most := 10 + int(time.Since(start)/(6*time.Second)); compared < 10 || compared > most {
		t.Fatalf("%d of 300 wrong tokens compared in %s, want 10 and at most one every 6 s after: 429 once 10 were wrong", compared, time.Since(start))
	}
	// Spent, the budget refuses the right token too, at the API and at the
	// console's sign-in. A guess first spends any try that came back.
	i := 300
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		guess(i)
		i++
		if r := adminRequest(t, p, "GET", "/admin/v1/tokens", adminSecret, ""); r.status != http.StatusTooManyRequests {
			return fmt.Errorf("the right token from the guesser's address: %d, want 429 until its budget refills", r.status)
		}
		return nil
	})
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		guess(i)
		i++
		if pg := newBrowser(t, p).signIn(adminSecret); pg.status != http.StatusTooManyRequests || !strings.Contains(pg.body, "too many sign-in attempts") {
			return fmt.Errorf("signing in with the right token from the guesser's address: %d %q, want 429 saying too many sign-in attempts", pg.status, pg.body)
		}
		return nil
	})
	if most := 10 + int(time.Since(start)/(6*time.Second)); compared > most {
		t.Fatalf("%d wrong tokens compared in %s, want at most %d", compared, time.Since(start), most)
	}
	if n := strings.Count(logBuf.String(), "admin token refused"); n != 1 {
		t.Fatalf("%d log lines for 300 refusals, want 1 (the rest summed up once a minute):\n%s", n, logBuf.String())
	}
}

// relayRequestID is the relay's own id of a request, as every answer's
// X-Request-Id carries it.
var relayRequestID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// TestAdminListenerHostOnLoopback: on loopback the admin listener answers
// only requests to IP addresses, localhost and the names admin.hosts
// lists for a reverse proxy (421 otherwise, probes and console included),
// which a DNS-rebinding page cannot send. The first refusal of each name
// is logged, with its request id.
func TestAdminListenerHostOnLoopback(t *testing.T) {
	var logBuf eventstest.Log
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(p.adminURL, "http://"))
	for _, host := range []string{"rebound.example.com:" + port, "rebound.example.com", "127.0.0.1.nip.io:" + port, "localhost.example.com", "127.1", "2130706433"} {
		for _, path := range []string{"/healthz", "/metrics", "/admin/v1/tokens", "/ui/login"} {
			if r := adminRequest(t, p, "GET", path, adminSecret, host); r.status != http.StatusMisdirectedRequest || !relayRequestID.MatchString(r.header.Get("X-Request-Id")) {
				t.Errorf("GET %s with Host %s: %d with X-Request-Id %q, want 421 with the relay's id", path, host, r.status, r.header.Get("X-Request-Id"))
			}
		}
	}
	first := adminRequest(t, p, "GET", "/metrics", "", "first-seen.example.com")
	for name, want := range map[string]int{"host=rebound.example.com ": 1, "host=127.0.0.1.nip.io ": 1, "host=first-seen.example.com ": 1, "request_id=" + first.header.Get("X-Request-Id"): 1, "its host name is not in admin.hosts": 6, "remote_addr=127.0.0.1:": 6} {
		if n := strings.Count(logBuf.String(), name); n != want {
			t.Errorf("%q in %d lines of the log, want %d (a refused name is said once):\n%s", name, n, want, logBuf.String())
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "localhost.", "[::1]:" + port, "127.0.0.2", "10.0.0.1:" + port} {
		if r := adminRequest(t, p, "GET", "/admin/v1/tokens", adminSecret, host); r.status != http.StatusOK {
			t.Errorf("GET /admin/v1/tokens with Host %s: %d, want 200", host, r.status)
		}
	}
	if code, _ := p.get("/healthz"); code != http.StatusOK {
		t.Fatalf("healthz as probes ask it: %d", code)
	}

	// A reverse proxy on the machine that passes the client's Host (Caddy,
	// Traefik): its names are listed in admin.hosts.
	cfg := testConfig(t, t.TempDir())
	cfg.Admin.Hosts = []string{"console.example.com", "status.example.com."}
	proxied := startRelay(t, cfg, roleAll)
	_, port, _ = net.SplitHostPort(strings.TrimPrefix(proxied.adminURL, "http://"))
	for host, want := range map[string]int{"console.example.com": 200, "Console.Example.COM:443": 200, "console.example.com.": 200,
		"status.example.com": 200, "other.example.com": 421, "127.0.0.1:" + port: 200} {
		if r := adminRequest(t, proxied, "GET", "/admin/v1/tokens", adminSecret, host); r.status != want {
			t.Errorf("with admin.hosts, GET /admin/v1/tokens with Host %s: %d, want %d", host, r.status, want)
		}
	}
	cfg.Admin.Hosts = []string{"https://console.example.com"}
	if problems := checkConfig(cfg, roleAll); len(problems) == 0 || !strings.Contains(fmt.Sprint(problems), "admin.hosts[0]") {
		t.Errorf("admin.hosts with a scheme: %v", problems)
	}
}

// TestAdminListenerHostOnAnyAddress: an admin listener on another address
// than loopback (a container's 0.0.0.0, published on the host's
// 127.0.0.1 or reached through kubectl port-forward) refuses a DNS name
// not in admin.hosts with 421 as one on loopback does, /metrics, the
// console and the admin API included: a page whose DNS was rebound to the
// operator's 127.0.0.1 sends one. An IP address (the pod's, as probes and
// Prometheus send it) and localhost are answered; a Service's name that a
// scraper uses is answered once it is in admin.hosts, and so is the name
// admin_listen gives.
func TestAdminListenerHostOnAnyAddress(t *testing.T) {
	// Every address, as a container binds it, reached through 127.0.0.1
	// as compose publishes it (tests send traffic to loopback only).
	bind, dial := "0.0.0.0", "127.0.0.1"
	start := func(hosts ...string) (*relayProc, string) {
		cfg := testConfig(t, t.TempDir())
		cfg.AdminListen = net.JoinHostPort(bind, "0")
		cfg.Admin.Hosts = hosts
		p := startRelay(t, cfg, roleAll)
		_, port, _ := net.SplitHostPort(p.srv.adminLn.Addr().String())
		p.adminURL = "http://" + net.JoinHostPort(dial, port)
		return p, port
	}
	p, port := start()
	for _, host := range []string{"rebound.example.com:" + port, "rebound.example.com", "scimrelay-admin.monitoring.svc:" + port, "127.0.0.1.nip.io"} {
		for _, path := range []string{"/metrics", "/ui/login", "/admin/v1/tokens", "/healthz"} {
			if r := adminRequest(t, p, "GET", path, adminSecret, host); r.status != http.StatusMisdirectedRequest || !relayRequestID.MatchString(r.header.Get("X-Request-Id")) {
				t.Errorf("GET %s with Host %s on %s: %d with X-Request-Id %q, want 421 with the relay's id", path, host, bind, r.status, r.header.Get("X-Request-Id"))
			}
		}
	}
	// A rebinding page cannot spend the budget of wrong tokens either.
	for i := range 12 {
		if r := adminRequest(t, p, "GET", "/admin/v1/tokens", fmt.Sprintf("guess-%d-0123456789abcdef", i), "rebound.example.com:"+port); r.status != http.StatusMisdirectedRequest {
			t.Fatalf("a wrong token from a rebound name: %d, want 421", r.status)
		}
	}
	for _, host := range []string{dial + ":" + port, "127.0.0.1:" + port, "10.1.2.3:" + port, "[fd00::1]:" + port, "localhost:" + port, "localhost"} {
		for _, path := range []string{"/metrics", "/ui/login", "/admin/v1/tokens", "/healthz"} {
			if r := adminRequest(t, p, "GET", path, adminSecret, host); r.status != http.StatusOK {
				t.Errorf("GET %s with Host %s on %s: %d, want 200", path, host, bind, r.status)
			}
		}
	}

	// A scraper that uses a Service's DNS name needs it in admin.hosts.
	named, port := start("scimrelay-admin.monitoring.svc")
	if r := adminRequest(t, named, "GET", "/metrics", "", "scimrelay-admin.monitoring.svc:"+port); r.status != http.StatusOK {
		t.Fatalf("/metrics by a name in admin.hosts: %d, want 200", r.status)
	}
	if r := adminRequest(t, named, "GET", "/metrics", "", "rebound.example.com:"+port); r.status != http.StatusMisdirectedRequest {
		t.Fatalf("/metrics by a name not in admin.hosts: %d, want 421", r.status)
	}

	// admin_listen given by a name (here the machine's, when it resolves):
	// the CLI and the health check send it.
	host, err := os.Hostname()
	if addrs, lerr := net.LookupHost(host); err != nil || lerr != nil || len(addrs) == 0 || strings.EqualFold(host, "localhost") {
		t.Logf("the machine's name %q does not resolve: admin_listen by name not tried", host)
		return
	}
	cfg := testConfig(t, t.TempDir())
	cfg.AdminListen = net.JoinHostPort(host, "0")
	byName := startRelay(t, cfg, roleAll)
	_, port, _ = net.SplitHostPort(byName.srv.adminLn.Addr().String())
	if r := adminRequest(t, byName, "GET", "/admin/v1/tokens", adminSecret, net.JoinHostPort(host, port)); r.status != http.StatusOK {
		t.Fatalf("the admin API by the name admin_listen gives, %s: %d, want 200", host, r.status)
	}
}

// TestAdminListenerReadDeadline: a request that trickles its body, here
// without a token, has its connection closed once the read deadline
// passes; an event tail, which reads nothing for as long as it streams,
// outlives it.
func TestAdminListenerReadDeadline(t *testing.T) {
	const deadline = 300 * time.Millisecond
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll, withAdminReadTimeout(deadline))
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.adminURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /admin/v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 20 ms, for ever
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(10 * time.Second))
	answer, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection of a trickled body is open after %s (read deadline %s); read %q", time.Since(start), deadline, answer)
	}
	if took := time.Since(start); took > deadline+5*time.Second {
		t.Fatalf("the connection of a trickled body closed after %s, read deadline %s", took, deadline)
	}

	// A tail outlives the deadline: an event created after it arrives.
	req, _ := http.NewRequest("GET", p.adminURL+"/admin/v1/events?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("tail: %d", res.StatusCode)
	}
	// What is tested is the deadline passing, and a tail cut by it would
	// end only after the fetch it is in (up to a second): wait for both.
	<-time.After(deadline + 2*time.Second)
	id := p.createUser(t, "after-the-deadline")
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), id) {
				line <- sc.Text()
				return
			}
		}
		line <- "tail ended: " + fmt.Sprint(sc.Err())
	}()
	select {
	case l := <-line:
		if !strings.Contains(l, id) {
			t.Fatalf("the tail ended past the read deadline: %s", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event created after the read deadline did not reach the tail")
	}
}

// TestStopEndsAdminStreams: a stop ends the answers of the admin listener
// that stream for as long as they are read (the CLI's event tail, the
// console's live tail) and serve returns nil, as without them. The
// listener's shutdown used to wait for their connections to go idle,
// which they never do, and serve stopped 30 s later with "context
// deadline exceeded" (exit 1). A follow of the CLI then ends saying the
// relay stopped, exit 3, rather than waiting for events that will not come.
func TestStopEndsAdminStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		// open opens a stream on p's admin listener and returns once it
		// streams, with a function that checks how it ended.
		open func(t *testing.T, p *relayProc, b *browser) (ended func(t *testing.T))
	}{
		{"events tail", func(t *testing.T, p *relayProc, _ *browser) func(*testing.T) {
			id := p.createUser(t, "ann")
			f := followCLI(t, "events", "tail", "--since", "1h", "--config", cliConfig(t, p, adminSecret))
			f.waitFor(t, id)
			return func(t *testing.T) { f.wantEnd(t, exitNotReady, "the relay ended the event tail") }
		}},
		{"log --follow", func(t *testing.T, p *relayProc, _ *browser) func(*testing.T) {
			p.createUser(t, "ann")
			f := followCLI(t, "log", "--follow", "--config", cliConfig(t, p, adminSecret))
			f.waitFor(t, "ann")
			return func(t *testing.T) { f.wantEnd(t, exitNotReady, "cannot reach the relay") }
		}},
		{"console live tail", func(t *testing.T, _ *relayProc, b *browser) func(*testing.T) {
			tail := openTail(t, b, "/ui/events/stream")
			t.Cleanup(tail.close)
			return func(t *testing.T) {
				deadline := time.After(10 * time.Second)
				for {
					select {
					case _, open := <-tail.events:
						if !open {
							return
						}
					case <-deadline:
						t.Fatal("the live tail is open 10 s after the relay stopped")
					}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, b := consoleRelay(t, nil)
			ended := tc.open(t, p, b)
			p.interrupt(t, 10*time.Second, "a "+tc.name+" open")
			ended(t)
		})
	}
}

// interrupt stops the relay as SIGTERM does, while with (what is open)
// holds, and returns how long it took; past within the test fails, and
// interrupt waits on.
func (p *relayProc) interrupt(t *testing.T, within time.Duration, with string) time.Duration {
	t.Helper()
	start := time.Now()
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("the relay stopped with %v", err)
		}
	case <-time.After(within):
		t.Errorf("the relay did not stop within %s with %s (it takes a fraction of a second without)", within, with)
		if err := <-p.done; err != nil {
			t.Errorf("the relay stopped with %v", err)
		}
	}
	return time.Since(start)
}

// followingCLI is a command of the CLI that runs until it ends by itself.
type followingCLI struct {
	stdout, stderr *eventstest.Log
	code           chan int
}

// followCLI runs the CLI with args in the background.
func followCLI(t *testing.T, args ...string) *followingCLI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	f := &followingCLI{stdout: &eventstest.Log{}, stderr: &eventstest.Log{}, code: make(chan int, 1)}
	go func() { f.code <- execute(ctx, args, f.stdout, f.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-f.code
	})
	return f
}

// waitFor waits until the command has printed s.
func (f *followingCLI) waitFor(t *testing.T, s string) {
	t.Helper()
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(f.stdout.String(), s) {
			return fmt.Errorf("no %q in what the command printed: %q (stderr %q)", s, f.stdout.String(), f.stderr.String())
		}
		return nil
	})
}

// wantEnd checks that the command ends by itself, with code and a message
// saying says.
func (f *followingCLI) wantEnd(t *testing.T, code int, says string) {
	t.Helper()
	select {
	case got := <-f.code:
		f.code <- got // for the cleanup
		if got != code || !strings.Contains(f.stderr.String(), says) {
			t.Errorf("the command ended with %d, stderr %q; want %d saying %q", got, f.stderr.String(), code, says)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the command still runs 10 s after the relay stopped")
	}
}

// TestStopEndsTailWhileNATSIsAway: a stop does not wait for an event tail
// whose NATS is away either. Stopped NATS refuses at once; one that hangs,
// or a network that drops what it carries, leaves each request to its
// timeout, and nats.go's fetch, which takes no context, waited up to 10 s
// to make the tail's consumer: a stop took 7.5 s with a tail open, 0.1 s
// without one.
func TestStopEndsTailWhileNATSIsAway(t *testing.T) {
	path := newStallingPath(t, eventstest.URL(eventstest.RunServer(t)))
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = path.url()
	p := startRelay(t, cfg, roleAll)
	id := p.createUser(t, "ann")
	tail := followCLI(t, "events", "tail", "--since", "1h", "--config", cliConfig(t, p, adminSecret))
	tail.waitFor(t, id)

	path.stall()
	// The tail's next fetch makes its consumer anew (an ordered consumer
	// does at each fetch) and waits for an answer that will not come.
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !path.sent("$JS.API.CONSUMER.CREATE.SCIMRELAY.") {
			return errors.New("the tail has not asked for its consumer since NATS went away")
		}
		return nil
	})
	// Generous: it takes a fraction of a second, and took up to 10 s.
	if took := p.interrupt(t, 20*time.Second, "a tail open while NATS was away"); took > 3*time.Second {
		t.Errorf("the relay took %s to stop with a tail open while NATS was away", took)
	}
	tail.wantEnd(t, exitNotReady, "the relay ended the event tail")
}

// stallingPath carries TCP connections to a NATS server until it stalls;
// then it carries nothing either way and closes nothing, as a network that
// drops packets or a NATS that hangs does: requests wait for their
// timeouts, and the connection stays up until its pings fail (minutes).
type stallingPath struct {
	ln      net.Listener
	stalled atomic.Bool
	open    sync.Map // net.Conn → true: both ends of every connection carried
	mu      sync.Mutex
	held    []byte // what the client sent once stalled
}

func newStallingPath(t *testing.T, natsURL string) *stallingPath {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingPath{ln: ln}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		conns.Wait()
	})
	to := strings.TrimPrefix(natsURL, "nats://")
	conns.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", to)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.open.Store(in, true)
			p.open.Store(out, true)
			conns.Go(func() { p.carry(out, in, true) })
			conns.Go(func() { p.carry(in, out, false) })
		}
	})
	return p
}

// carry copies from src to dst until either closes, holding back what
// comes once the path stalls (noting what the client sent).
func (p *stallingPath) carry(dst, src net.Conn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.stalled.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			} else if fromClient {
				p.mu.Lock()
				p.held = append(p.held, buf[:n]...)
				p.mu.Unlock()
			}
		}
		if err != nil {
			if !p.stalled.Load() {
				_ = dst.Close()
			}
			return
		}
	}
}

func (p *stallingPath) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallingPath) stall() { p.stalled.Store(true) }

// heal cuts the stalled connections and carries new ones again: the
// client reconnects, as after a network that came back (a test's relay
// then stops at once rather than waiting out its bounds on NATS).
func (p *stallingPath) heal() {
	p.stalled.Store(false)
	p.cut()
}

// cut closes every connection the path carries.
func (p *stallingPath) cut() {
	p.open.Range(func(c, _ any) bool {
		_ = c.(net.Conn).Close()
		p.open.Delete(c)
		return true
	})
}

// sent reports whether the client sent s once the path stalled.
func (p *stallingPath) sent(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Contains(string(p.held), s)
}

// TestAdminCommandsSayNATSIsAway: the commands that need NATS say that it
// is away, rather than "internal error", while it is; a following tail
// started then waits for it and carries on once it is back.
func TestAdminCommandsSayNATSIsAway(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns := eventstest.RunServerAt(t, dir, port)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	withSink(cfg, "crm", newHook(t).URL, nil)
	p := startRelay(t, cfg, roleAll)
	config := cliConfig(t, p, adminSecret)
	ns.Shutdown()
	ns.WaitForShutdown()
	for _, args := range [][]string{
		{"dlq", "list", "--sink", "crm"},
		{"dlq", "redrive", "--sink", "crm", "--all"},
		{"sinks", "replay", "--sink", "crm", "--since", "1h"},
		{"log", "--deliveries"},
		{"events", "tail", "--no-follow"},
	} {
		code, _, stderr := cli(t, append(args, "--config", config)...)
		if code != exitError || !strings.Contains(stderr, "NATS is away") || strings.Contains(stderr, "internal error") {
			t.Errorf("%s: exit %d, stderr %q; want 1 saying NATS is away", strings.Join(args, " "), code, stderr)
		}
	}
	tail := followCLI(t, "events", "tail", "--config", config)
	eventstest.RunServerAt(t, dir, port)
	t.Cleanup(p.stop) // the sinks hand their partitions over before this server shuts down
	id := p.createUser(t, "ann")
	tail.waitFor(t, id)
}

// TestConsoleSaysNATSIsAwayAsTheAPIDoes: with NATS silent, the console's
// sinks page says what the admin API says, 503 "JetStream did not answer
// in time", after the API's 5 s. The console's in-process call carried its
// client's one-minute deadline, which nats.go took instead of those 5 s,
// and the listener's read deadline (30 s; 2 s here), still set while the
// page was made, ended it: "internal error". The next page on the same
// keep-alive connection, which needs no NATS, is served (it failed at
// once, as every later one on the connection did).
func TestConsoleSaysNATSIsAwayAsTheAPIDoes(t *testing.T) {
	path := newStallingPath(t, eventstest.URL(eventstest.RunServer(t)))
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = path.url()
	withSink(cfg, "crm", newHook(t).URL, nil)
	p := startRelay(t, cfg, roleAll, withAdminReadTimeout(2*time.Second))
	b := newBrowser(t, p)
	b.signIn(adminSecret).redirect(t, "/ui/")
	b.get("/ui/sinks").want(t, http.StatusOK, "crm")
	path.stall()
	b.get("/ui/sinks").want(t, http.StatusServiceUnavailable, "JetStream did not answer in time")
	b.get("/ui/tenants/acme").want(t, http.StatusOK, "Generate token")
	path.heal()
}

// adminListenerHandler is adminListener's handler alone, for tests that
// serve the admin listener without running the console's sweep.
func (s *server) adminListenerHandler() (http.Handler, error) {
	h, _, err := s.adminListener()
	return h, err
}

// TestRefusedAdminRequestsLogPrintableBoundedLines: the path of a request
// refused for its admin token, or for its Host (421), is the caller's, who
// needs no credential, and is logged at Warn. With log.format json it held
// a terminal's controls raw (the C1 CSI U+009B, the bidi override U+202E),
// which act on the terminal of an operator tailing the log; the text format
// escapes them (strconv.Quote), and so now does the JSON one, as the CLI's
// JSON does (printableJSON). And a line carried all of it, as long as the
// request line Go takes (about 1 MiB): one request a minute wrote 1.8 MB a
// minute (a hunt of the log's integrity).
func TestRefusedAdminRequestsLogPrintableBoundedLines(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	out := &eventstest.Log{}
	cfg.Log.Format, cfg.Log.Level = "json", "info"
	log, err := newLogger(cfg.Log, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := startRelayWith(t, cfg, roleAll, log, io.Discard)
	// CSI 2J (clear screen), CSI 3J (clear scrollback), then a RLO; then
	// a path as long as a request line may be, with and without a token.
	adminRequest(t, p, "GET", "/admin/v1/%C2%9B2J%C2%9B3J%E2%80%AEnimda"+strings.Repeat("%01", 300_000), "wrong-token-0123456789abcdef", "")
	adminRequest(t, p, "GET", "/admin/v1/%C2%9B2J"+strings.Repeat("%01", 300_000), adminSecret, "rebound.example.com")
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "admin token refused") || !strings.Contains(out.String(), "(421)") {
			return errors.New("no refusal lines yet")
		}
		return nil
	})
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 16<<10 {
			t.Errorf("one unauthenticated request wrote a log line of %d bytes: %.200q…", len(line), line)
		}
		if i := strings.IndexFunc(line, func(r rune) bool { return !unicode.IsGraphic(r) && r != '\t' }); i >= 0 {
			t.Errorf("a JSON log line holds %U raw, which a terminal acts on: %.300q", []rune(line[i:])[0], line)
		}
	}
}
