// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortsAreBelowTheEphemeralRange checks that FreePorts' ports are
// distinct, bindable, and out of the range the kernel gives outgoing
// connections, which could otherwise take one before its server binds it.
func TestFreePortsAreBelowTheEphemeralRange(t *testing.T) {
	low, high := belowEphemeral()
	if high <= low {
		t.Skip("the kernel's ephemeral port range cannot be read here")
	}
	ports := FreePorts(t, 20)
	seen := map[int]bool{}
	for _, p := range ports {
		if p < low || p >= high {
			t.Errorf("port %d is outside [%d, %d)", p, low, high)
		}
		if seen[p] {
			t.Errorf("port %d returned twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d cannot be bound: %v", p, err)
			continue
		}
		l.Close()
	}
}
