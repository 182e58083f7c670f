// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// SlowProxy passes connections through to a NATS server, holding what the
// server sends back for a delay (none until SetDelay): a NATS that answers
// every request late, but answers, as one far away or overloaded does.
// What it holds keeps its order; what the client sends passes at once.
// Addr is the address to connect to instead of the server's.
type SlowProxy struct {
	Addr  string
	delay atomic.Int64 // time.Duration
}

// NewSlowProxy starts a SlowProxy to target, a server's address.
func NewSlowProxy(t testing.TB, target string) *SlowProxy {
	t.Helper()
	p := &SlowProxy{}
	p.Addr = Proxy(t, target, func(client, server net.Conn) {
		go func() {
			defer server.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					if _, werr := server.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go p.holdBack(client, server)
	})
	return p
}

// SetDelay makes the server's answers arrive d late from now on.
func (p *SlowProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// holdBack carries what the server sends to the client, each read delay
// after it arrived.
func (p *SlowProxy) holdBack(client, server net.Conn) {
	type chunk struct {
		data []byte
		due  time.Time
	}
	held := make(chan chunk, 1024)
	go func() {
		defer close(held)
		for {
			buf := make([]byte, 32<<10)
			n, err := server.Read(buf)
			if n > 0 {
				held <- chunk{buf[:n], time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	defer client.Close()
	broken := false
	for c := range held { // to the end, so that the reader never blocks
		if broken {
			continue
		}
		time.Sleep(time.Until(c.due)) // the network's latency, not a wait for anything
		if _, err := client.Write(c.data); err != nil {
			broken = true
			_ = server.Close() // the reader's end
		}
	}
}
