// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// lossyProxy passes NATS connections through to a server, and loses on the
// way to the client the first message that a consumer delivers of one
// stream sequence: what a worker sees when the NATS server it is connected
// to stops with a delivery in flight. The server counts the message as
// delivered (its delivery sequence moves on) and sends it again only after
// the ack wait.
type lossyProxy struct {
	addr     string
	target   string
	consumer string
	drop     atomic.Uint64 // the stream sequence to lose; 0: none
	dropped  atomic.Bool
}

func newLossyProxy(t testing.TB, target, consumer string) *lossyProxy {
	t.Helper()
	p := &lossyProxy{target: target, consumer: consumer}
	p.addr = eventstest.Proxy(t, target, func(c, up net.Conn) {
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { p.pass(c, up); c.Close() }()
	})
	return p
}

// pass copies the server's protocol to the client, message by message.
func (p *lossyProxy) pass(to io.Writer, from io.Reader) {
	eventstest.PassProtocol(to, from, func(f []string, _ []byte) bool { return p.loses(f) })
}

// loses reports whether the message whose protocol line is f is the one
// to lose. A consumer's delivery has its acknowledgement subject as reply:
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>…
// (with a domain and an account before the stream in the newer form).
func (p *lossyProxy) loses(f []string) bool {
	reply := ""
	switch {
	case f[0] == "MSG" && len(f) == 5, f[0] == "HMSG" && len(f) == 6:
		reply = f[3]
	default:
		return false
	}
	tokens := strings.Split(reply, ".")
	if len(tokens) < 7 || tokens[0] != "$JS" || tokens[1] != "ACK" {
		return false
	}
	for i := 2; i+2 < len(tokens); i++ {
		if tokens[i] == p.consumer {
			seq, _ := strconv.ParseUint(tokens[i+2], 10, 64)
			want := p.drop.Load()
			return want != 0 && seq == want && p.dropped.CompareAndSwap(false, true)
		}
	}
	return false
}

// TestDeliveryLostInTransitKeepsOrder loses a message on its way from NATS
// to the worker that owns its partition, as a NATS server that stops
// with a delivery in flight does. The consumer counts it delivered and
// would send it again only after the ack wait (longer than the test), and
// its resource's next event comes meanwhile. The worker sees the consumer
// skip a delivery number, takes nothing more, and takes the partition
// again from the ack floor: every event arrives, in its resource's order,
// once, long before the ack wait. Both when the lost message is one of a
// running partition's and when it is the first after the partition was
// taken, or when the consumer pins the worker anew before the next comes
// (a new consumer leader does; TestScaleOutEarly lost a message so). When
// nothing follows the lost message, the consumer's count of deliveries,
// ahead of what came, shows it (findLostTail), also when the lost message
// came with a pin the worker never learnt, once that pin has expired.
func TestDeliveryLostInTransitKeepsOrder(t *testing.T) {
	for _, c := range []struct {
		name      string
		first     bool // the lost message is the first after the partition was taken
		followers bool // later messages come after it
		repin     bool // the consumer's pin changes before they come
		newPin    bool // the lost message is the first under a new pin
	}{
		{name: "running", followers: true},
		{name: "first after taking the partition", first: true, followers: true},
		{name: "last, nothing follows"},
		{name: "the pin changes meanwhile", followers: true, repin: true},
		{name: "last, under a pin the worker never received", newPin: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := eventstest.RunServer(t)
			_, js := eventstest.Connect(t, eventstest.URL(s))
			if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Partitions: 1}, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			proxy := newLossyProxy(t, s.Addr().String(), consumerName("crm", 0))
			_, wjs := eventstest.Connect(t, "nats://"+proxy.addr)
			l := newLedger()
			rc := newReceiver(t, func(_ int, r *http.Request) int { return l.admit(r, func(string, uint64) int { return 204 }) })
			logs := &eventstest.Log{}
			o := Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: wjs, AckWait: time.Minute, Heartbeat: fastHeartbeat,
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
			within := 20 * time.Second
			if c.repin {
				// The worker releases the new pin, which it has received
				// no message under, rather than wait 14 s for it to expire.
				o.Heartbeat, within = time.Second, 8*time.Second
			}
			p := newPublisher(t, js)
			want := expect{"Users/a": 3, "Users/b": 2}
			if !c.followers {
				want = expect{"Users/a": 2, "Users/b": 1}
			}
			if c.first {
				// The partition's consumer exists, with nothing delivered,
				// and the events wait in it when the worker takes it: the
				// lost message is the first it delivers.
				direct := o
				direct.JS, direct.Logger = js, nil
				m0, stop := runManager(t, direct)
				eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m0.Ready(ctx) })
				stop()
				p.publish("acme", events.UserCreated, "a") // stream sequence 1, lost
				p.publish("acme", events.UserCreated, "b")
				p.publish("acme", events.UserUpdated, "a")
				p.publish("acme", events.UserUpdated, "b")
				p.publish("acme", events.UserDeactivated, "a")
				proxy.drop.Store(1)
				runManager(t, o)
			} else {
				m, _ := runManager(t, o)
				eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m.Ready(ctx) })
				p.publish("acme", events.UserCreated, "a")
				p.publish("acme", events.UserCreated, "b")
				eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
					return l.deliveredEach(expect{"Users/a": 1, "Users/b": 1})
				})
				if c.newPin {
					// As a new consumer leader does: the lost message is
					// the one its new pin comes with, so the worker never
					// learns the pin, which expires (pinnedTTL) as no pull
					// renews it; the ack wait is a minute.
					unpin(t, js)
				}
				proxy.drop.Store(3)
				p.publish("acme", events.UserUpdated, "a") // stream sequence 3, lost
				if c.repin {
					// As a new consumer leader does: it pins the worker's
					// next pull anew.
					eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
						if !proxy.dropped.Load() {
							return errors.New("the message is not lost yet")
						}
						return nil
					})
					unpin(t, js)
				}
				if c.followers {
					p.publish("acme", events.UserUpdated, "b")
					p.publish("acme", events.UserDeactivated, "a")
				}
			}
			l.wantDelivered(t, want, within, false)
			if !proxy.dropped.Load() {
				t.Fatal("the proxy lost no message")
			}
			if got := logs.String(); !strings.Contains(got, "never reached this worker") {
				t.Errorf("the log does not say that a delivery never came:\n%s", got)
			}
		})
	}
}
