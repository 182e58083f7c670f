// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
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
