// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// SilencingProxy passes connections through to a NATS server until
// Silence; from then on the connections it holds pass nothing, either way,
// and stay open, as a server whose machine is lost looks to its client.
// Addr is the address to connect to instead of the server's.
type SilencingProxy struct {
	Addr   string
	mu     sync.Mutex
	silent chan struct{} // closed by Silence: the connections made before it
	lost   bool          // Lose: the connections made later too
}

// NewSilencingProxy returns a proxy to target, a server's address.
func NewSilencingProxy(t testing.TB, target string) *SilencingProxy {
	t.Helper()
	return newSilencingProxy(t, func() string { return target })
}

func newSilencingProxy(t testing.TB, target func() string) *SilencingProxy {
	t.Helper()
	p := &SilencingProxy{silent: make(chan struct{})}
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	pass := func(to, from net.Conn, silent <-chan struct{}) {
		buf := make([]byte, 32<<10)
		for {
			n, err := from.Read(buf)
			select {
			case <-silent:
				<-ended // read no more and pass nothing: the peer's writes fill the buffers
				return
			default:
			}
			if n > 0 {
				if _, werr := to.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = to.Close()
				return
			}
		}
	}
	p.Addr = proxyTo(t, target, func(c, up net.Conn) {
		p.mu.Lock()
		silent := p.silent
		p.mu.Unlock()
		go pass(up, c, silent)
		go pass(c, up, silent)
	})
	return p
}

// Silence makes the connections made so far pass nothing more. Connections
// made later pass: the server answers again, through a new connection.
func (p *SilencingProxy) Silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lost {
		return
	}
	close(p.silent)
	p.silent = make(chan struct{})
}

// Lose makes every connection pass nothing more, those made so far and
// those made later (accepted, and never answered): the server's machine
// lost, or cut off from its clients.
func (p *SilencingProxy) Lose() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lost {
		close(p.silent)
		p.lost = true
	}
}

// RunClusterBehindProxies is RunCluster with each node's clients reaching
// it only through a SilencingProxy of its own, proxies[i] node i's. The
// nodes advertise their proxy's address to clients (ClientAdvertise), as a
// deployment's nodes advertise the addresses its clients are given: a
// client learns of no other way to a node.
func RunClusterBehindProxies(t testing.TB, n int) (nodes []*server.Server, proxies []*SilencingProxy) {
	t.Helper()
	var mu sync.Mutex
	targets := make([]string, n) // the nodes' client addresses, once they run
	for i := range n {
		proxies = append(proxies, newSilencingProxy(t, func() string {
			mu.Lock()
			defer mu.Unlock()
			return targets[i]
		}))
	}
	nodes = RunClusterWith(t, n, func(i int, o *server.Options) { o.ClientAdvertise = proxies[i].Addr })
	mu.Lock()
	defer mu.Unlock()
	for i, s := range nodes {
		targets[i] = s.Addr().String()
	}
	return nodes, proxies
}

// ProxyURLs returns the addresses of proxies as NATS URLs, comma-separated.
func ProxyURLs(proxies []*SilencingProxy) string {
	urls := make([]string, len(proxies))
	for i, p := range proxies {
		urls[i] = "nats://" + p.Addr
	}
	return strings.Join(urls, ",")
}

// SilentLeader is the deployed shape for a node falling silent: three
// nodes behind silencing proxies, the event stream on them (three
// replicas, one partition), and On, the node holding the stream's leader,
// which a test connects its clients to and then silences.
type SilentLeader struct {
	Nodes   []*server.Server
	Proxies []*SilencingProxy
	On      int
	t       testing.TB
	connect func(url string) (*nats.Conn, error)
}

// RunSilentLeader starts it, for a test that skips it when short and
// runs in parallel (it waits out the pings, 20 to 30 s). connect makes a
// client connection to url, the proxies' (the relay's: natsbus.Connect);
// each is closed when the test ends.
func RunSilentLeader(t *testing.T, connect func(url string) (*nats.Conn, error), log *slog.Logger) *SilentLeader {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and waits out the pings")
	}
	t.Parallel()
	c := &SilentLeader{t: t, connect: connect}
	c.Nodes, c.Proxies = RunClusterBehindProxies(t, 3)
	setup := c.dial()
	defer setup.Close()
	js, err := jetstream.New(setup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Replicas: 3, Partitions: 1}, log); err != nil {
		t.Fatal(err)
	}
	AwaitStreamLeader(t, js, c.Nodes[c.node(setup.ConnectedServerName())])
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if c.On = c.node(st.CachedInfo().Cluster.Leader); c.On < 0 {
		t.Fatalf("the stream's leader is %q, no node of the cluster", st.CachedInfo().Cluster.Leader)
	}
	return c
}

func (c *SilentLeader) dial() *nats.Conn {
	c.t.Helper()
	nc, err := c.connect(ProxyURLs(c.Proxies))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

func (c *SilentLeader) node(name string) int {
	return slices.IndexFunc(c.Nodes, func(s *server.Server) bool { return s.Name() == name })
}

// Connect returns a client connection on the leader's node (nats.go picks
// a URL at random: connections elsewhere are closed and made again), with
// the stream known there to take events.
func (c *SilentLeader) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	for tries := 1; ; tries++ {
		nc := c.dial()
		if nc.ConnectedServerName() == c.Nodes[c.On].Name() {
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			AwaitStreamLeader(t, js, c.Nodes[c.On])
			return nc
		}
		nc.Close()
		if tries == 100 {
			t.Fatalf("no connection reached %s in 100 tries", c.Nodes[c.On].Name())
		}
	}
}

// Lose silences the leader's node for its clients (its routes to the
// other nodes stay), after checking that it still holds the leader: an
// election on a loaded machine may have moved it, which is logged.
func (c *SilentLeader) Lose(t testing.TB, js jetstream.JetStream) time.Time {
	t.Helper()
	if st, err := js.Stream(context.Background(), events.StreamName); err != nil || st.CachedInfo().Cluster.Leader != c.Nodes[c.On].Name() {
		t.Logf("the stream's leader moved off %s before the silence (%v)", c.Nodes[c.On].Name(), err)
	}
	c.Proxies[c.On].Lose()
	return time.Now()
}

// Left reports, as an error for CheckFor, whether nc is connected to a
// node other than the silenced one.
func (c *SilentLeader) Left(who string, nc *nats.Conn, since time.Time) error {
	if !nc.IsConnected() || nc.ConnectedServerName() == c.Nodes[c.On].Name() {
		return fmt.Errorf("the %s is not on another node %s after %s fell silent", who, time.Since(since).Round(time.Second), c.Nodes[c.On].Name())
	}
	return nil
}
