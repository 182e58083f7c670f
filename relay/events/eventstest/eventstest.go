// SPDX-License-Identifier: Apache-2.0

// Package eventstest starts real in-process NATS servers for the tests of
// relay, sinks and cmd, and holds the helpers they share: polling for a
// condition (CheckFor), a Log to read what the code under test logged, and
// the event contract's checks (schema.go): every event a test reads
// validated against the JSON Schemas in relay/events/schema (Schemas,
// ValidateEvent, ValidateNATSHeaders), and Event, a valid event of any
// action. It is a normal package so that tests of several packages can use
// it; nothing outside tests imports it. Disk faults are relay/disk/disktest's.
package eventstest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// RunServer starts a nats-server with JetStream, its store in t.TempDir(),
// on a random loopback port, and shuts it down when the test ends.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerAt(t, t.TempDir(), -1)
}

// RunServerAt starts a JetStream server storing in dir on port (-1 picks a
// random one), so that a test can stop a server and start it again on the
// same store and address.
func RunServerAt(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	return RunServerWith(t, dir, port, nil)
}

// DamageFirstBlock damages the first record of the event stream's first
// message block in dir, the store of a stopped server (RunServerAt's dir,
// a relay's NATSDir), as a disk error does: nats-server then opens the
// stream empty, its sequence back at 0, and keeps its consumers where
// they were.
func DamageFirstBlock(t testing.TB, dir string) {
	t.Helper()
	block := filepath.Join(dir, "jetstream", "$G", "streams", events.StreamName, "msgs", "1.blk")
	b, err := os.ReadFile(block)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(block, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// RestartLosingEvents stops s, a server RunServerAt started on dir and
// port, damages its event stream's first block (DamageFirstBlock) and
// starts it again, on the same store and port: a stream that lost its
// events.
func RestartLosingEvents(t testing.TB, s *server.Server, dir string, port int) *server.Server {
	t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	DamageFirstBlock(t, dir)
	return RunServerAt(t, dir, port)
}

// RunServerWith is RunServerAt with the server's options changed by edit
// first (nil: none), e.g. to give it users and their permissions.
func RunServerWith(t testing.TB, dir string, port int, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "test",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	}
	if edit != nil {
		edit(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("starting nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not become ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// URL returns the client URL of s.
func URL(s *server.Server) string { return s.ClientURL() }

// RunCluster starts an n-node JetStream cluster on loopback, each node with
// its own store, and waits until it has a meta leader that knows every
// node online.
//
// The nodes' route ports are picked free and then bound by the nodes, and
// another test may take one in between: that node never becomes ready.
// Such a start is shut down and tried again on other ports.
func RunCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	return RunClusterWith(t, n, nil)
}

// RunClusterWith is RunCluster with node i's options changed by edit(i, o)
// first (nil: none).
func RunClusterWith(t testing.TB, n int, edit func(i int, o *server.Options)) []*server.Server {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		servers, err := startCluster(t, n, edit)
		if err == nil {
			t.Cleanup(func() {
				for _, s := range servers {
					s.Shutdown()
					s.WaitForShutdown()
				}
			})
			AwaitMetaLeader(t, servers)
			return servers
		}
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
		if attempt == attempts {
			t.Fatalf("starting a %d-node cluster, %d times: %v", n, attempts, err)
		}
		t.Logf("starting a %d-node cluster: %v; trying again on other ports", n, err)
	}
}

// AwaitMetaLeader waits until the cluster of servers has a JetStream meta
// leader that knows every node online: one that does not yet refuses a
// stream of as many replicas ("no suitable peers for placement"), as CI
// once saw.
func AwaitMetaLeader(t testing.TB, servers []*server.Server) {
	t.Helper()
	CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				if peers := s.JetStreamClusterPeers(); len(peers) < len(servers) {
					return fmt.Errorf("the JetStream meta leader knows %d of %d nodes online", len(peers), len(servers))
				}
				return nil
			}
		}
		return fmt.Errorf("no JetStream meta leader yet")
	})
}

// AwaitStreamLeader waits until the event stream, replicated, has a leader,
// every replica is current, and node on, which a publisher is connected
// to, knows the stream takes events: a stream just made answers a publish
// there "no responders" until its leader's interest has reached that node
// (a test counting failures saw one in about 15 runs).
func AwaitStreamLeader(t testing.TB, js jetstream.JetStream, on *server.Server) {
	t.Helper()
	subject := events.Subject("acme", events.UserCreated, "00000000-0000-0000-0000-000000000000")
	CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if !on.GlobalAccount().SubscriptionInterest(subject) {
			return fmt.Errorf("node %s does not know the stream takes %s yet", on.Name(), subject)
		}
		st, err := js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return err
		}
		c := st.CachedInfo().Cluster
		if c == nil || c.Leader == "" {
			return fmt.Errorf("stream %s has no leader yet", events.StreamName)
		}
		for _, r := range c.Replicas {
			if !r.Current {
				return fmt.Errorf("stream %s's replica on %s is not current", events.StreamName, r.Name)
			}
		}
		return nil
	})
}

// startCluster starts the nodes of a cluster and waits for each to be
// ready; on error it returns the nodes it started, for the caller to shut
// down.
func startCluster(t testing.TB, n int, edit func(i int, o *server.Options)) ([]*server.Server, error) {
	ports := FreePorts(t, n)
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	var servers []*server.Server
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("node-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: "scimrelay-test",
				Host: "127.0.0.1",
				Port: ports[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		if edit != nil {
			edit(i, opts)
		}
		s, err := server.NewServer(opts)
		if err != nil {
			return servers, fmt.Errorf("node %d: %w", i, err)
		}
		go s.Start()
		servers = append(servers, s)
	}
	for i, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			return servers, fmt.Errorf("node %d did not become ready (its route port %d taken?)", i, ports[i])
		}
	}
	return servers, nil
}

// ClusterURLs returns the client URLs of servers, comma-separated.
func ClusterURLs(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// server a test stops and starts again on the same address.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n loopback TCP ports, different from each other, that
// were free a moment ago (FreePort twice may return one port twice: each
// is let go before the next is asked for).
//
// The ports come from below the kernel's ephemeral range. A port the
// kernel hands out for ":0" can be taken, between this returning and the
// server binding it, by any process's outgoing connection or ":0"
// listener; a CI run lost a relay's admin listener that way. Below the
// range only another test's own pick can collide. Where the range cannot
// be read, the kernel picks.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	low, high := belowEphemeral()
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		addr := "127.0.0.1:0"
		if high > low && tries < 100*n {
			addr = fmt.Sprintf("127.0.0.1:%d", low+rand.IntN(high-low))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr != "127.0.0.1:0" {
				continue // taken: pick again
			}
			t.Fatal(err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// belowEphemeral returns the ports [low, high) FreePorts picks from: from
// 10000 up to the start of the kernel's ephemeral range, or an empty range
// where that cannot be read or leaves too little room.
func belowEphemeral() (low, high int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil || first < 11000 {
		return 0, 0
	}
	return 10000, first
}

// Proxy listens on loopback for connections to target, a server's address
// (NATS's, the relay's), and returns the address to connect to instead. For each
// connection it dials target and calls pass with both ends, which copies
// between them as the test needs (losing or holding some of it); both
// close when the test ends.
func Proxy(t testing.TB, target string, pass func(client, server net.Conn)) string {
	t.Helper()
	return proxyTo(t, func() string { return target }, pass)
}

// proxyTo is Proxy to the address target returns when a connection comes,
// for a proxy whose address its server must know before it starts.
func proxyTo(t testing.TB, target func() string, pass func(client, server net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target())
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); up.Close() })
			pass(c, up)
		}
	}()
	return ln.Addr().String()
}

// PassProtocol copies NATS protocol from one end of a connection to the
// other, line by line, with each message's payload, dropping the messages
// (MSG and HMSG from the server, PUB and HPUB from the client) that drop
// picks by their protocol line's fields and payload (CRLF included): what
// a Proxy's pass does to lose some messages, in either direction.
func PassProtocol(to io.Writer, from io.Reader, drop func(f []string, payload []byte) bool) {
	r := bufio.NewReader(from)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		var payload []byte
		if len(f) > 0 && slices.Contains([]string{"MSG", "HMSG", "PUB", "HPUB"}, strings.ToUpper(f[0])) {
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			payload = make([]byte, n+2) // and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			if drop(f, payload) {
				continue
			}
		}
		if _, err := io.WriteString(to, line); err != nil {
			return
		}
		if _, err := to.Write(payload); err != nil {
			return
		}
	}
}

// EventLosingProxy passes NATS connections through to a server and loses,
// on their way to it, the first copies of one event the clients publish:
// what a stream's leader does with a message in hand as it stops leading
// (it answers nothing, and the next leader never sees it). The event is
// the nth (from 0) the proxy sees, told apart by its Nats-Msg-Id. Addr is
// the address to connect to instead of the server's.
type EventLosingProxy struct {
	Addr string
	nth  int
	mu   sync.Mutex
	ids  []string // the events seen, in the order first seen
	lose int      // copies of the nth still to lose
	lost int
}

// NewEventLosingProxy returns a proxy to target that loses the first
// copies of the nth event published through it.
func NewEventLosingProxy(t testing.TB, target string, nth, copies int) *EventLosingProxy {
	t.Helper()
	p := &EventLosingProxy{nth: nth, lose: copies}
	p.Addr = Proxy(t, target, func(c, up net.Conn) {
		go func() { PassProtocol(up, c, p.loses); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	})
	return p
}

// loses reports whether the client's message with protocol line f (HPUB
// <subject> [reply] <header size> <total size>) and payload is a copy of
// the event to lose.
func (p *EventLosingProxy) loses(f []string, payload []byte) bool {
	if len(f) < 4 || !strings.EqualFold(f[0], "HPUB") || !strings.HasPrefix(f[1], strings.TrimSuffix(events.StreamSubjects, ">")) {
		return false
	}
	size, err := strconv.Atoi(f[len(f)-2])
	if err != nil || size > len(payload) {
		return false
	}
	id := ""
	for _, line := range strings.Split(string(payload[:size]), "\r\n") {
		if v, ok := strings.CutPrefix(line, jetstream.MsgIDHeader+": "); ok {
			id = v
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.ids, id) {
		p.ids = append(p.ids, id)
	}
	if len(p.ids) <= p.nth || p.ids[p.nth] != id || p.lose == 0 {
		return false
	}
	p.lose--
	p.lost++
	return true
}

// Lost is how many copies of the event the proxy lost.
func (p *EventLosingProxy) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// Connect connects to urls and returns the connection and its JetStream
// context; both close when the test ends.
func Connect(t testing.TB, urls ...string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connecting to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// StreamMetadata reads the event stream's metadata: its signing keys,
// retired keys and when signing began.
func StreamMetadata(t testing.TB, js jetstream.JetStream) map[string]string {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.Metadata
}

// CheckFor calls f every `every` until it returns nil, failing the test
// with f's last error after total. Tests wait with it, never with sleeps.
func CheckFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", total, err)
		}
		time.Sleep(every) // the polling interval, not a wait for an outcome
	}
}

// RawPublish publishes a message in NATS's own protocol as user (none
// when ""), its header block exactly as given, and returns once the
// server has taken it: nats.go writes a line break in a header value as a
// space, and an attack on how nats-server and nats.go read a header block
// needs the bytes as they are.
func RawPublish(t testing.TB, addr, user, password, subject, header string, data []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("the server's first line: %q, %v", line, err)
	}
	opts := map[string]any{"headers": true, "verbose": false, "pedantic": false, "protocol": 1}
	if user != "" {
		opts["user"], opts["pass"] = user, password
	}
	connect, err := json.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "CONNECT %s\r\nHPUB %s %d %d\r\n%s%s\r\nPING\r\n", connect, subject, len(header), len(header)+len(data), header, data)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("publishing on %s as %s: %v", subject, user, err)
		}
		switch {
		case strings.HasPrefix(line, "PONG"):
			return
		case strings.HasPrefix(line, "-ERR"):
			t.Fatalf("publishing on %s as %s: %s", subject, user, line)
		}
	}
}

// WaitingForLock reports whether a goroutine with fn in its stack (a
// function's name as a stack shows it, "relay.Credentials.Create(") waits
// for a mutex or a read-write one: how a test knows a call has reached the
// lock it holds, to change the world before the call goes on.
func WaitingForLock(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) && (strings.Contains(g, "sync.(*Mutex).Lock") || strings.Contains(g, "sync.(*RWMutex).")) {
			return true
		}
	}
	return false
}
