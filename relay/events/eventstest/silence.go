// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"bytes"
	"context"
	"encoding/json"
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
	// A node's route port (runClusterBehindProxies with routes): each
	// connection is known by the node that made it (its CONNECT's name, the
	// server's ID), and LoseFrom silences those of one node.
	routes   bool
	lostFrom map[string]bool
}

// NewSilencingProxy returns a proxy to target, a server's address.
func NewSilencingProxy(t testing.TB, target string) *SilencingProxy {
	t.Helper()
	return newSilencingProxy(t, func() string { return target }, false)
}

func newSilencingProxy(t testing.TB, target func() string, routes bool) *SilencingProxy {
	t.Helper()
	p := &SilencingProxy{silent: make(chan struct{}), routes: routes, lostFrom: map[string]bool{}}
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	pass := func(to, from net.Conn, quiet func() bool) {
		buf := make([]byte, 32<<10)
		for {
			n, err := from.Read(buf)
			if quiet() {
				<-ended // read no more and pass nothing: the peer's writes fill the buffers
				return
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
		var node string // a route's: the ID of the node that made it
		quiet := func() bool {
			select {
			case <-silent:
				return true
			default:
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			return node != "" && p.lostFrom[node]
		}
		if !p.routes {
			go pass(up, c, quiet)
			go pass(c, up, quiet)
			return
		}
		// A route: the node that made it writes its CONNECT first, without
		// waiting for the other's INFO; nothing passes the other way
		// until it is known whose the route is.
		known := make(chan struct{})
		go func() {
			id, head, err := readConnect(c)
			p.mu.Lock()
			node = id
			p.mu.Unlock()
			close(known)
			if quiet() {
				<-ended
				return
			}
			if _, werr := up.Write(head); werr != nil || err != nil {
				_ = up.Close()
				return
			}
			pass(up, c, quiet)
		}()
		go func() {
			select {
			case <-known:
				pass(c, up, quiet)
			case <-ended:
			}
		}()
	})
	return p
}

// readConnect reads a route's first line, its CONNECT, and returns the
// name in it (the server's ID) and the bytes read.
func readConnect(c net.Conn) (id string, head []byte, err error) {
	buf := make([]byte, 4<<10)
	for !bytes.Contains(head, []byte("\n")) {
		n, rerr := c.Read(buf)
		head = append(head, buf[:n]...)
		if rerr != nil {
			return "", head, rerr
		}
	}
	line, _, _ := bytes.Cut(head, []byte("\n"))
	if js, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("CONNECT ")); ok {
		var connect struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(js, &connect) == nil {
			id = connect.Name
		}
	}
	return id, head, nil
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

// LoseFrom makes the connections of one node, id (its server ID), pass
// nothing more, those made so far and those made later, on a proxy to a
// node's route port: the route from a node whose machine is lost.
func (p *SilencingProxy) LoseFrom(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lostFrom[id] = true
}

// runClusterBehindProxies is RunCluster with each node's clients reaching
// it only through a SilencingProxy of its own, proxies[i] node i's. The
// nodes advertise their proxy's address to clients (ClientAdvertise), as a
// deployment's nodes advertise the addresses its clients are given: a
// client learns of no other way to a node. With routesToo the nodes'
// routes are behind proxies too, routes[i] to node i's route port: each
// node routes to its peers' proxies and advertises its own to them
// (Cluster.Advertise, which the routes its peers learn of from each other
// go to as well), so that a peer reaches a node by no other way.
func runClusterBehindProxies(t testing.TB, n int, routesToo bool) (nodes []*server.Server, proxies, routes []*SilencingProxy) {
	t.Helper()
	var mu sync.Mutex
	targets := make([]string, n)      // the nodes' client addresses, once they run
	routeTargets := make([]string, n) // their route addresses, set before they start
	for i := range n {
		proxies = append(proxies, newSilencingProxy(t, func() string {
			mu.Lock()
			defer mu.Unlock()
			return targets[i]
		}, false))
		if routesToo {
			routes = append(routes, newSilencingProxy(t, func() string {
				mu.Lock()
				defer mu.Unlock()
				return routeTargets[i]
			}, true))
		}
	}
	nodes = RunClusterWith(t, n, func(i int, o *server.Options) {
		o.ClientAdvertise = proxies[i].Addr
		if !routesToo {
			return
		}
		mu.Lock()
		routeTargets[i] = fmt.Sprintf("%s:%d", o.Cluster.Host, o.Cluster.Port)
		mu.Unlock()
		o.Cluster.Advertise = routes[i].Addr
		var peers []string
		for j, p := range routes {
			if j != i {
				peers = append(peers, "nats-route://"+p.Addr)
			}
		}
		o.Routes = server.RoutesFromStr(strings.Join(peers, ","))
	})
	mu.Lock()
	defer mu.Unlock()
	for i, s := range nodes {
		targets[i] = s.Addr().String()
	}
	return nodes, proxies, routes
}

// proxyURLs returns the addresses of proxies as NATS URLs, comma-separated.
func proxyURLs(proxies []*SilencingProxy) string {
	urls := make([]string, len(proxies))
	for i, p := range proxies {
		urls[i] = "nats://" + p.Addr
	}
	return strings.Join(urls, ",")
}

// SilentLeader is the deployed shape for a node falling silent: three
// nodes behind silencing proxies, the event stream on them (three
// replicas, one partition), and On, the node holding the stream's leader,
// which a test connects its clients to and then silences. With RoutesToo,
// RouteProxies are the nodes' route proxies, and the silence cuts On from
// its peers as well.
type SilentLeader struct {
	Nodes        []*server.Server
	Proxies      []*SilencingProxy
	RouteProxies []*SilencingProxy
	On           int
	t            testing.TB
	connect      func(url string) (*nats.Conn, error)
	routesToo    bool
	cut          bool   // CutRoutes done
	group        string // the stream's Raft group
}

// A SilenceOption changes the shape RunSilentLeader sets up.
type SilenceOption func(*SilentLeader)

// RoutesToo puts the nodes' routes behind silencing proxies too: Lose
// then cuts the leader's node from its peers as from its clients, its
// connections to them and theirs to it open and passing nothing, new ones
// too (its machine lost whole, its peers not told either). CutRoutes cuts
// the routes alone, first.
func RoutesToo(c *SilentLeader) { c.routesToo = true }

// RunSilentLeader starts it, for a test that skips it when short and
// runs in parallel (it waits out the pings, 20 to 30 s). connect makes a
// client connection to url, the proxies' (the relay's: natsbus.Connect);
// each is closed when the test ends.
func RunSilentLeader(t *testing.T, connect func(url string) (*nats.Conn, error), log *slog.Logger, opts ...SilenceOption) *SilentLeader {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and waits out the pings")
	}
	t.Parallel()
	c := &SilentLeader{t: t, connect: connect}
	for _, o := range opts {
		o(c)
	}
	c.Nodes, c.Proxies, c.RouteProxies = runClusterBehindProxies(t, 3, c.routesToo)
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
	c.group = st.CachedInfo().Cluster.RaftGroup
	return c
}

func (c *SilentLeader) dial() *nats.Conn {
	c.t.Helper()
	nc, err := c.connect(proxyURLs(c.Proxies))
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

// Others returns the nodes other than the silenced one, for a test's own
// connection, which the silence does not touch (it goes to the nodes
// directly, not through the proxies).
func (c *SilentLeader) Others() []*server.Server {
	var others []*server.Server
	for i, s := range c.Nodes {
		if i != c.On {
			others = append(others, s)
		}
	}
	return others
}

// Lose silences the leader's node for its clients (with RoutesToo for its
// peers too), after checking that it still holds the leader: an election
// on a loaded machine may have moved it, which is logged.
func (c *SilentLeader) Lose(t testing.TB, js jetstream.JetStream) time.Time {
	t.Helper()
	if !c.cut {
		c.checkLeader(t, js)
	}
	if c.routesToo {
		c.cutRoutes()
	}
	c.Proxies[c.On].Lose()
	return time.Now()
}

// CutRoutes (RoutesToo) cuts the leader's node from its peers alone, its
// clients still reaching it: a message it takes then it cannot replicate
// (LeaderLog). Lose cuts its clients off after.
func (c *SilentLeader) CutRoutes(t testing.TB, js jetstream.JetStream) time.Time {
	t.Helper()
	if !c.routesToo {
		t.Fatal("CutRoutes without RoutesToo: the routes are not behind proxies")
	}
	c.checkLeader(t, js)
	c.cutRoutes()
	return time.Now()
}

func (c *SilentLeader) cutRoutes() {
	c.cut = true
	c.RouteProxies[c.On].Lose()
	for i, p := range c.RouteProxies {
		if i != c.On {
			p.LoseFrom(c.Nodes[c.On].ID())
		}
	}
}

// checkLeader makes sure the stream's leader is still on c.On before the
// silence: an election on a loaded machine (a follower that missed the
// leader's heartbeats for 4 to 9 s) may have moved it. Then it is moved
// back (a step-down naming c.On), as the test's shape needs: a node cut
// off while it follows takes no event into its log (LeaderLog), and the
// test would fail on a premise, not on the relay.
func (c *SilentLeader) checkLeader(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	want := c.Nodes[c.On].Name()
	logged := false
	CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st, err := js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return err
		}
		ci := st.CachedInfo().Cluster
		if ci != nil && ci.Leader == want {
			for _, r := range ci.Replicas {
				if !r.Current {
					return fmt.Errorf("stream %s's replica on %s is not current", events.StreamName, r.Name)
				}
			}
			return nil
		}
		if !logged {
			t.Logf("the stream's leader moved off %s before the silence; moving it back", want)
			logged = true
		}
		if ci != nil && ci.Leader != "" {
			req := fmt.Sprintf(`{"placement":{"preferred":%q}}`, want)
			_, _ = js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+events.StreamName, []byte(req), 5*time.Second)
		}
		return fmt.Errorf("the stream's leader is %q, not %s", leaderOf(ci), want)
	})
}

func leaderOf(ci *jetstream.ClusterInfo) string {
	if ci == nil {
		return ""
	}
	return ci.Leader
}

// LeaderLog returns the stream's Raft log as the silenced node has it: the
// index of its last entry and of the last one committed (an entry after
// that it took and has not replicated to a quorum).
func (c *SilentLeader) LeaderLog(t testing.TB) (last, committed uint64) {
	t.Helper()
	s := c.Nodes[c.On]
	status := s.Raftz(&server.RaftzOptions{AccountFilter: s.GlobalAccount().Name, GroupFilter: c.group})
	if status != nil {
		for _, groups := range *status {
			if g, ok := groups[c.group]; ok {
				return g.PIndex, g.Committed
			}
		}
	}
	t.Fatalf("node %s has no Raft group %q", c.Nodes[c.On].Name(), c.group)
	return 0, 0
}

// Left reports, as an error for CheckFor, whether nc is connected to a
// node other than the silenced one.
func (c *SilentLeader) Left(who string, nc *nats.Conn, since time.Time) error {
	if !nc.IsConnected() || nc.ConnectedServerName() == c.Nodes[c.On].Name() {
		return fmt.Errorf("the %s is not on another node %s after %s fell silent", who, time.Since(since).Round(time.Second), c.Nodes[c.On].Name())
	}
	return nil
}
