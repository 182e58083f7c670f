// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events"
)

// connectProxy is an HTTPS proxy on loopback: it answers CONNECT by
// tunnelling to target, whatever host was asked for, and records the hosts.
type connectProxy struct {
	*httptest.Server
	mu    sync.Mutex
	asked []string
}

func newConnectProxy(t *testing.T, target string) *connectProxy {
	p := &connectProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.asked = append(p.asked, r.Host)
		p.mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			up.Close()
			return
		}
		_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() { _, _ = io.Copy(up, buf); up.Close() }()
		go func() { _, _ = io.Copy(conn, up); conn.Close() }()
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *connectProxy) hosts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}

// behindProxy is a TLS receiver (example.com and *.example.com are among
// its certificate's names), the pool that trusts it, and a CONNECT proxy
// that tunnels to it.
func behindProxy(t *testing.T) (*receiver, *connectProxy, *x509.CertPool) {
	rc := newReceiver(t, nil)
	rc.Close()
	rc.Server = httptest.NewTLSServer(rc.Config.Handler)
	t.Cleanup(rc.Close)
	pool := x509.NewCertPool()
	pool.AddCert(rc.Certificate())
	return rc, newConnectProxy(t, rc.Listener.Addr().String()), pool
}

// fakeDNS resolves the test's names: example.com is public, internal.example
// private; the rest is unknown.
func fakeDNS(_ context.Context, host string) ([]netip.Addr, error) {
	switch host {
	case "example.com":
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	case "internal.example":
		return []netip.Addr{netip.MustParseAddr("93.184.216.35"), netip.MustParseAddr("10.0.0.7")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestProxyWithGuard: with HTTPS_PROXY set, deliveries go through the proxy
// (a CONNECT tunnel) and are received signed; the guard still applies to the
// address dialled, the proxy's, which is on loopback and needs
// allow_private_proxy; and to the target, checked before the proxy is asked
// to reach it; NO_PROXY sends around the proxy.
func TestProxyWithGuard(t *testing.T) {
	rc, proxy, pool := behindProxy(t)
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "direct.example")

	build := func(target string, allowProxy bool) *Webhook {
		w, err := NewWebhook(WebhookOptions{Name: "x", URL: target, Secret: testSecret, AllowPrivateProxy: allowProxy,
			MaxRetries: -1, lookup: fakeDNS, rootCAs: pool}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	res := build("https://example.com/hook", true).Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
	if res.Err != nil || res.Status != 204 {
		t.Fatalf("through the proxy: %+v", res)
	}
	if got := proxy.hosts(); len(got) != 1 || got[0] != "example.com:443" {
		t.Fatalf("the proxy was asked for %v, want example.com:443", got)
	}
	verify(t, rc.requests()[0])

	res = build("https://example.com/hook", false).Deliver(ctx, testEvent(t, events.UserCreated, "u2", 1))
	if res.Err == nil || res.Permanent || !strings.Contains(res.Err.Error(), "allow_private_proxy") {
		t.Fatalf("a proxy on loopback without allow_private_proxy: %+v", res)
	}
	res = build("https://internal.example/hook", true).Deliver(ctx, testEvent(t, events.UserCreated, "u3", 1))
	if res.Err == nil || res.Permanent || !strings.Contains(res.Err.Error(), "10.0.0.7") {
		t.Fatalf("a target resolving to a private address, through the proxy: %+v", res)
	}
	if got := proxy.hosts(); len(got) != 1 || len(rc.requests()) != 1 {
		t.Fatalf("refused deliveries reached the proxy (%v) or the receiver (%d requests)", got, len(rc.requests()))
	}

	// NO_PROXY: the relay dials the target itself, and the dial guard decides.
	d := build("https://direct.example/hook", true).client.HTTPClient.Transport.(keptAlive).RoundTripper.(*http.Transport)
	// A host the relay's resolver does not know, but a proxy's would read
	// as an address, is refused before the proxy is asked (relay.yaml
	// refuses it already; this is the request's own check).
	for _, host := range []string{"2852039166", "0xa9.0xfe.0xa9.0xfe", "１６９.２５４.１６９.２５４",
		"2130706433.", "0x7f.0.0.1.", "0177.0.0.1.", "169.254.169.254.", "0xa9fea9fe."} {
		if u, err := d.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: host, Path: "/hook"}}); u != nil || err == nil {
			t.Errorf("a target %q through the proxy: proxy %v, %v; want it refused", host, u, err)
		}
	}
	if u, err := d.Proxy(&http.Request{URL: mustURL(t, "https://direct.example/hook")}); u != nil || err != nil {
		t.Fatalf("NO_PROXY: proxy %v, %v", u, err)
	}
	if u, err := d.Proxy(&http.Request{URL: mustURL(t, "https://example.com/hook")}); u == nil || u.Host != strings.TrimPrefix(proxy.URL, "http://") || err != nil {
		t.Fatalf("HTTPS_PROXY: proxy %v, %v", u, err)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(fmt.Errorf("parsing %s: %w", s, err))
	}
	return u
}
