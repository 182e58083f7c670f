// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/net/idna"
)

// The SSRF guard: a sink may not reach loopback, private, link-local,
// CGNAT, multicast or unspecified addresses, nor the cloud metadata and
// platform endpoints, nor IPv6 ranges that embed or translate IPv4 ones,
// unless it sets allow_private. It checks the address actually
// dialled, after DNS, so that neither a DNS answer that changes nor a
// redirect can get around it.

// refusedError is a connection the guard refused.
type refusedError struct {
	addr netip.Addr
	// proxy: the address refused is the proxy's; host: the target's name
	// (a target checked before a proxy reaches it), "" when dialled.
	proxy bool
	host  string
	// form: why the target's name is refused as written (checkHost).
	form error
}

func (e *refusedError) Error() string {
	switch {
	case e.form != nil:
		return fmt.Sprintf("refused to send through the proxy: %v", e.form)
	case e.proxy:
		return fmt.Sprintf("refused to connect to the proxy at %s: a loopback, private or link-local address (set allow_private_proxy: true on the sink to allow it)", e.addr)
	case e.host != "":
		return fmt.Sprintf("refused to send to %s through the proxy: it resolves to %s, a loopback, private or link-local address (set allow_private: true on the sink to allow it)", e.host, e.addr)
	}
	return fmt.Sprintf("refused to connect to %s: a loopback, private or link-local address (set allow_private: true on the sink to allow it)", e.addr)
}

var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),         // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),     // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),      // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),     // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),       // reserved, and broadcast
	netip.MustParsePrefix("168.63.129.16/32"),  // Azure WireServer: platform DNS, health probes, VM agent
	netip.MustParsePrefix("fd00:ec2::254/128"), // AWS metadata over IPv6 (also inside fc00::/7)
	netip.MustParsePrefix("64:ff9b::/96"),      // NAT64, which can reach IPv4 private space
	netip.MustParsePrefix("64:ff9b:1::/48"),    // local-use NAT64 (RFC 8215), the same
	netip.MustParsePrefix("2002::/16"),         // 6to4, which embeds an IPv4 address (deprecated)
	netip.MustParsePrefix("::/96"),             // IPv4-compatible IPv6 (deprecated), ::a9fe:a9fe
	netip.MustParsePrefix("::ffff:0:0:0/96"),   // SIIT IPv4-translated (RFC 2765), ::ffff:0:7f00:1
	netip.MustParsePrefix("2001::/32"),         // Teredo, which embeds an IPv4 address
	netip.MustParsePrefix("100::/64"),          // discard-only (RFC 6666)
	netip.MustParsePrefix("fec0::/10"),         // site-local (deprecated)
}

// blocked reports whether the guard refuses addr. A zone ("::%lo",
// "64:ff9b::a9fe:a9fe%eth0") is dropped first: it only names a link-local
// address's interface, and the kernel dials the address without it (Linux
// dials :: as ::1), but netip's IsUnspecified and Prefix.Contains are false
// for any zoned address.
func blocked(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() ||
		addr.IsInterfaceLocalMulticast() || addr.IsMulticast() || addr.IsUnspecified() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// guardDial runs after DNS, before the connection: address is what will be
// dialled. It counts, in the delivery's attempt, what it dialled and
// refused (refusedOnly).
func guardDial(ctx context.Context, _, address string, _ syscall.RawConn) error {
	return counted(ctx, checkDialled(address, false))
}

// guardProxyDial is guardDial for a connection to the proxy.
func guardProxyDial(ctx context.Context, _, address string, _ syscall.RawConn) error {
	return counted(ctx, checkDialled(address, true))
}

// counted notes a dial and its refusal in ctx's attempt, and returns err.
func counted(ctx context.Context, err error) error {
	if at, _ := ctx.Value(attemptKey{}).(*attempt); at != nil {
		at.dials.Add(1)
		var refused *refusedError
		if errors.As(err, &refused) {
			at.refused.Add(1)
		}
	}
	return err
}

func checkDialled(address string, proxy bool) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refused to connect to %q: not an IP address", host)
	}
	if blocked(addr) {
		return &refusedError{addr: addr.Unmap(), proxy: proxy}
	}
	return nil
}

// Proxies. A sink honours HTTPS_PROXY, HTTP_PROXY and NO_PROXY (read when
// the sink is built, with Go's rules: golang.org/x/net/http/httpproxy).
// The guard still applies to what the relay dials, which through a proxy
// is the proxy: a proxy on a loopback or private address (the usual egress
// proxy) is refused unless the sink sets allow_private_proxy (or
// allow_private). The target is then reached by the proxy, not dialled by
// the relay, so before each request through a proxy the relay resolves the
// target's name itself and refuses it if any address is blocked; a name the
// relay's DNS does not know is left to the proxy, whose own egress rules
// govern what it connects to.

// dialer dials for one sink: through the guard unless allowed otherwise,
// the proxies' addresses under their own rule.
type dialer struct {
	direct, guarded, guardedProxy *net.Dialer
	allowPrivate, allowProxy      bool
	proxies                       map[string]bool // canonical host:port of the configured proxies
	lookup                        func(ctx context.Context, host string) ([]netip.Addr, error)
	proxyFor                      func(*url.URL) (*url.URL, error) // nil: no proxy configured
}

// newDialer's connections may take up to timeout (the sink's, which bounds
// the whole request), at least minConnectTimeout.
func newDialer(allowPrivate, allowPrivateProxy bool, timeout time.Duration, env *httpproxy.Config) *dialer {
	base := func(control func(context.Context, string, string, syscall.RawConn) error) *net.Dialer {
		return &net.Dialer{Timeout: max(minConnectTimeout, timeout), KeepAlive: 30 * time.Second, ControlContext: control}
	}
	d := &dialer{
		direct: base(nil), guarded: base(guardDial), guardedProxy: base(guardProxyDial),
		allowPrivate: allowPrivate, allowProxy: allowPrivate || allowPrivateProxy,
		proxies: map[string]bool{},
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
	if env != nil && (env.HTTPProxy != "" || env.HTTPSProxy != "") {
		d.proxyFor = env.ProxyFunc()
		for _, p := range []string{env.HTTPProxy, env.HTTPSProxy} {
			if u := parseProxyURL(p); u != nil {
				d.proxies[canonicalAddr(u)] = true
			}
		}
	}
	return d
}

// dial is the transport's DialContext.
func (d *dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	switch {
	case d.proxies[address]:
		if d.allowProxy {
			return d.direct.DialContext(ctx, network, address)
		}
		return d.guardedProxy.DialContext(ctx, network, address)
	case d.allowPrivate:
		return d.direct.DialContext(ctx, network, address)
	}
	return d.guarded.DialContext(ctx, network, address)
}

// proxy is the transport's Proxy: the environment's proxy for the request,
// once the target it will reach has passed the guard.
func (d *dialer) proxy(req *http.Request) (*url.URL, error) {
	if d.proxyFor == nil {
		return nil, nil
	}
	p, err := d.proxyFor(req.URL)
	if err != nil {
		return nil, err
	}
	// A direct request to a proxy's own address would pass as the proxy
	// at the dial: check it as a target too.
	if !d.allowPrivate && (p != nil || d.proxies[canonicalAddr(req.URL)]) {
		if err := d.checkTarget(req.Context(), req.URL.Hostname()); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// checkHost refuses a host the relay and a proxy could read differently:
// one not written in ASCII (Go's transport sends its ASCII form, which
// may be an address: fullwidth "１０.０.０.１" is 10.0.0.1), an IPv4
// address written other than in dotted decimal ("2852039166",
// "0xa9.0xfe.0xa9.0xfe", "0177.0.0.1"), and an IP address with a trailing
// dot ("169.254.169.254.", "2130706433."), which the relay's resolver
// does not know but a proxy's may. An address with a trailing dot is
// refused whatever its range: no receiver needs one, and refusing it
// needs no knowledge of allow_private here.
func checkHost(host string) error {
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf {
			ascii, err := idna.Lookup.ToASCII(host)
			if err != nil {
				return fmt.Errorf("%q is not a host name", host)
			}
			return fmt.Errorf("%q is not written in ASCII; write it as %q", host, ascii)
		}
	}
	// One trailing dot makes an address a name to the relay's resolver.
	bare := strings.TrimSuffix(host, ".")
	if _, err := netip.ParseAddr(bare); err == nil {
		if bare != host {
			return fmt.Errorf("%q is an IP address with a trailing dot; write it as %q", host, bare)
		}
		return nil
	}
	parts := strings.Split(bare, ".")
	if len(parts) > 4 {
		return nil
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 0, 32); err != nil {
			return nil // a name
		}
	}
	return fmt.Errorf("%q is an IPv4 address written other than in dotted decimal; write it as four decimal numbers", host)
}

// checkTarget refuses a target the relay will not dial itself when any
// address its name resolves to is blocked.
func (d *dialer) checkTarget(ctx context.Context, host string) error {
	if err := checkHost(host); err != nil {
		return &refusedError{form: err}
	}
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else {
		found, err := d.lookup(ctx, host)
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			return nil // only the proxy knows the name: its rules apply
		case err != nil:
			return fmt.Errorf("resolving %s to check it before the proxy reaches it: %w", host, err)
		}
		addrs = found
	}
	for _, a := range addrs {
		if blocked(a) {
			return &refusedError{addr: a.Unmap(), host: host}
		}
	}
	return nil
}

// parseProxyURL reads a proxy setting the way httpproxy does: a URL, or a
// host:port taken as http.
func parseProxyURL(s string) *url.URL {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		if u, err = url.Parse("http://" + s); err != nil {
			return nil
		}
	}
	return u
}

// canonicalAddr is host:port with the scheme's default port, as the
// transport dials it.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}
