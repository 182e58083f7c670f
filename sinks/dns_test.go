// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/scimrelay/scimrelay/relay/events"
)

// dnsServer answers every A query with addrs, in that order, on a UDP
// port of loopback, and returns its address.
func dnsServer(t *testing.T, addrs ...string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) != nil || len(m.Questions) == 0 {
				continue
			}
			q := m.Questions[0]
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: m.ID, Response: true, Authoritative: true}, Questions: m.Questions}
			if q.Type == dnsmessage.TypeA {
				for _, a := range addrs {
					resp.Answers = append(resp.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
						Body:   &dnsmessage.AResource{A: netip.MustParseAddr(a).As4()},
					})
				}
			}
			out, _ := resp.Pack()
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestGuardRefusalIsRetriedOnTheSchedule: a receiver's name that resolves
// only to private addresses is refused by the SSRF guard, once per
// delivery (its answer will not have changed a moment later), and retried
// on the sink's schedule, not dead-lettered: a receiver's DNS answering a
// private address for a while (split-horizon DNS gone wrong) used to
// dead-letter every event at once, to be redriven behind the later ones.
// A name resolving to a private address and to a public one that fails
// for a moment is retried too, whichever comes first in the DNS answer
// (the dialer reports its first address's error, which may be the
// guard's refusal).
func TestGuardRefusalIsRetriedOnTheSchedule(t *testing.T) {
	for _, tt := range []struct {
		answer  []string
		refused bool // every address refused: one try, saying allow_private
	}{
		{[]string{"10.1.2.3", "192.0.2.1"}, false},
		{[]string{"192.0.2.1", "10.1.2.3"}, false},
		{[]string{"10.1.2.3", "172.16.0.9"}, true},
	} {
		srv := dnsServer(t, tt.answer...)
		w, err := NewWebhook(WebhookOptions{Name: "crm", URL: "http://receiver.test/hook", Secret: testSecret, MaxRetries: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		d := newDialer(false, false, 0, nil)
		d.guarded.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "udp", srv)
		}}
		w.transport.DialContext = d.dial
		// 192.0.2.1 (TEST-NET-1) goes nowhere: refused, unreachable or
		// timed out, never the guard's refusal.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1))
		cancel()
		if res.Err == nil || res.Permanent {
			t.Errorf("A records %v: permanent %t (%v), want a failure retried on the schedule", tt.answer, res.Permanent, res.Err)
		}
		if tt.refused && (res.Attempts != 1 || !strings.Contains(res.Err.Error(), "allow_private")) {
			t.Errorf("A records %v: %d tries (%v), want one, saying allow_private", tt.answer, res.Attempts, res.Err)
		}
	}
}
