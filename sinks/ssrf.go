// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// The SSRF guard: a sink may not reach loopback, private, link-local,
// CGNAT, multicast or unspecified addresses, nor the cloud metadata
// endpoints, unless it sets allow_private. It checks the address actually
// dialled, after DNS, so that neither a DNS answer that changes nor a
// redirect can get around it.

// refusedError is a dial the guard refused.
type refusedError struct{ addr netip.Addr }

func (e *refusedError) Error() string {
	return fmt.Sprintf("refused to connect to %s: a loopback, private or link-local address (set allow_private: true on the sink to allow it)", e.addr)
}

var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),         // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),     // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),      // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),     // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),       // reserved, and broadcast
	netip.MustParsePrefix("fd00:ec2::254/128"), // AWS metadata over IPv6 (also inside fc00::/7)
	netip.MustParsePrefix("64:ff9b::/96"),      // NAT64, which can reach IPv4 private space
}

// blocked reports whether the guard refuses addr.
func blocked(addr netip.Addr) bool {
	addr = addr.Unmap()
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

func netipAddr(host string) (netip.Addr, error) { return netip.ParseAddr(host) }

// guardDial runs after DNS, before the connection: address is what will be dialled.
func guardDial(_ context.Context, _, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refused to connect to %q: not an IP address", host)
	}
	if blocked(addr) {
		return &refusedError{addr: addr.Unmap()}
	}
	return nil
}
