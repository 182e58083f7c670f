// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestFailedAcknowledgementsAreSentAgain: the receiver takes events while
// the worker's NATS server is away, so that their acknowledgements fail
// (the worker's connection, like the relay's, buffers nothing while it
// reconnects). Once the server is back the worker sends them again: the
// consumers hold no event unacknowledged long before their AckWait (a
// minute), which would otherwise hold each consumer's ack floor back and
// have a next owner of the partition send those events again.
func TestFailedAcknowledgementsAreSentAgain(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns, js := natsStreamAt(t, dir, port)
	release := make(chan struct{})
	rc := newReceiver(t, func(int, *http.Request) int {
		<-release
		return http.StatusNoContent
	})
	nc, err := natsbus.Connect(natsbus.Options{URL: eventstest.URL(ns), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := runManager(t, Options{JS: wjs, AckWait: time.Minute,
		Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Timeout = time.Minute })}})
	p := newPublisher(t, js)
	const n = 3
	for i := range n {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := len(rc.requests()); got != n {
			return fmt.Errorf("the receiver holds %d requests, want %d", got, n)
		}
		return nil
	})
	ns.Shutdown()
	ns.WaitForShutdown()
	// Released once the worker's connection knows: an acknowledgement it
	// takes before that is lost with the connection, which this does not
	// cover (README).
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("the worker's connection has not seen the server go")
		}
		return nil
	})
	close(release)
	w := m.sinks["crm"].worker
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		w.lostAcks.mu.Lock()
		defer w.lostAcks.mu.Unlock()
		// Those whose partition stopped first are not acknowledged at all.
		if len(w.lostAcks.msgs) == 0 {
			return fmt.Errorf("no acknowledgement kept; want those that failed with NATS away")
		}
		return nil
	})

	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		names, err := consumerNames(js)
		if err != nil {
			return err
		}
		for _, name := range names {
			c, err := js.Consumer(ctx, events.StreamName, name)
			if err != nil {
				return err
			}
			if ci := c.CachedInfo(); ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
				return fmt.Errorf("consumer %s: %d unacknowledged, %d redelivered", name, ci.NumAckPending, ci.NumRedelivered)
			}
		}
		return nil
	})
	if got := len(rc.requests()); got != n {
		t.Errorf("the receiver had %d requests, want %d: none sent again", got, n)
	}
}

// consumerNames lists the event stream's consumers.
func consumerNames(js jetstream.JetStream) ([]string, error) {
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	var names []string
	l := st.ConsumerNames(ctx)
	for name := range l.Name() {
		names = append(names, name)
	}
	return names, l.Err()
}

// ackLosingProxy passes NATS connections through to a server and, while
// losing is set, drops on the way to the server the acknowledgements
// clients publish: what a worker's connection does with those it has
// taken when its NATS node stops before reading them. The client sees no
// error.
type ackLosingProxy struct {
	addr    string
	losing  atomic.Bool
	dropped atomic.Int64
}

func newAckLosingProxy(t testing.TB, target string) *ackLosingProxy {
	t.Helper()
	p := &ackLosingProxy{}
	p.addr = eventstest.Proxy(t, target, func(c, up net.Conn) {
		go func() { eventstest.PassProtocol(up, c, p.loses); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	})
	return p
}

// loses reports whether the client's message with protocol line f and
// payload is an acknowledgement to lose: PUB <subject> [reply] <size>, or
// HPUB <subject> [reply] <header size> <total size>, on $JS.ACK.….
func (p *ackLosingProxy) loses(f []string, payload []byte) bool {
	if len(f) < 3 || !strings.EqualFold(f[0], "PUB") && !strings.EqualFold(f[0], "HPUB") || !strings.HasPrefix(f[1], "$JS.ACK.") {
		return false
	}
	body := payload[:len(payload)-2]
	if strings.EqualFold(f[0], "HPUB") {
		hdr, err := strconv.Atoi(f[len(f)-2])
		if err != nil || hdr > len(body) {
			return false
		}
		body = body[hdr:]
	}
	if string(body) != "+ACK" || !p.losing.Load() {
		return false
	}
	p.dropped.Add(1)
	return true
}

// ackLoss is a worker whose acknowledgements of its first 20 events were
// lost on the way to NATS with nothing failing on the worker (its
// connection took them, and its node stopped before reading them, or the
// consumer had no leader), so that its consumers' ack floors stay where
// they were; the loss has ended. The AckWait (a minute) is longer than
// the tests: the server's redelivery cannot stand in for the
// acknowledgements.
type ackLoss struct {
	js      jetstream.JetStream // not through the proxy
	o       Options
	l       *ledger
	want    expect
	logs    *eventstest.Log
	m       *Manager
	stop    func()
	publish func(events.Action)
}

func loseAcks(t *testing.T, edit func(*Options)) *ackLoss {
	t.Helper()
	s, _, js := natsServer(t)
	proxy := newAckLosingProxy(t, s.Addr().String())
	_, wjs := eventstest.Connect(t, "nats://"+proxy.addr)
	a := &ackLoss{js: js, l: newLedger(), want: expect{}, logs: &eventstest.Log{}}
	rc := newReceiver(t, func(_ int, r *http.Request) int { return a.l.admit(r, func(string, uint64) int { return 204 }) })
	a.o = Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: wjs, AckWait: time.Minute, Heartbeat: fastHeartbeat,
		Logger: slog.New(slog.NewTextHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if edit != nil {
		edit(&a.o)
	}
	a.m, a.stop = runManager(t, a.o)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return a.m.Ready(ctx) })

	p := newPublisher(t, js)
	a.publish = func(act events.Action) {
		for i := range 10 {
			id := fmt.Sprintf("u%d", i)
			p.publish("acme", act, id)
			a.want["Users/"+id]++
		}
	}
	proxy.losing.Store(true)
	a.publish(events.UserCreated)
	a.publish(events.UserUpdated)
	a.l.wantDelivered(t, a.want, 20*time.Second, false)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := proxy.dropped.Load(); n < 20 {
			return fmt.Errorf("%d acknowledgements lost, want 20", n)
		}
		return nil
	})
	proxy.losing.Store(false)
	return a
}

// TestAcknowledgementsLostInTheConnectionAreSentAgainAtHandOver: the
// worker whose acknowledgements were lost stops cleanly at once: as it
// hands its partitions over it sends those acknowledgements again, and
// the next owner, which would otherwise reset each consumer to its ack
// floor, sends nothing twice.
func TestAcknowledgementsLostInTheConnectionAreSentAgainAtHandOver(t *testing.T) {
	a := loseAcks(t, nil)
	a.stop() // a clean stop: each partition handed over
	o := a.o
	o.JS, o.Logger = a.js, nil
	m2, _ := runManager(t, o)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return m2.Ready(ctx) })
	a.publish(events.UserDeactivated)
	a.l.wantDelivered(t, a.want, 20*time.Second, false)
	// Sent again by the hand-over or, had the stop come later, while the
	// partition still ran (TestAcknowledgementsLostWhileRunningAreSentAgain).
	if got := a.logs.String(); !strings.Contains(got, "sent again") && !strings.Contains(got, "sent them again") || strings.Contains(got, "did not all land") {
		t.Errorf("no acknowledgement was said sent again, or some were said not to land:\n%s", got)
	}
}

// TestAcknowledgementsLostWhileRunningAreSentAgain: the worker whose
// acknowledgements were lost keeps running. Within a few looks at its
// consumers, not the minute of the ack wait, it finds them waiting for
// acknowledgements it sent and sends them again, so that their ack floors
// reach what it delivered: a later reset of a consumer to its floor (a new
// owner after a kill, a message lost in transit) then sends nothing twice.
func TestAcknowledgementsLostWhileRunningAreSentAgain(t *testing.T) {
	a := loseAcks(t, nil)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		names, err := consumerNames(a.js)
		if err != nil {
			return err
		}
		for _, name := range names {
			c, err := a.js.Consumer(ctx, events.StreamName, name)
			if err != nil {
				return err
			}
			if n := c.CachedInfo().NumAckPending; n != 0 {
				return fmt.Errorf("consumer %s waits for %d acknowledgements", name, n)
			}
		}
		return nil
	})
	if got := a.logs.String(); !strings.Contains(got, "sent them again") {
		t.Errorf("sending the acknowledgements again was not said:\n%s", got)
	}
	a.l.wantDelivered(t, a.want, time.Second, false)
}

// TestAcknowledgementsLostAreSentAgainAtAHardStop: the worker whose
// acknowledgements were lost is cut off from the other workers for longer
// than its lease (here: its lease made to lapse) and stops its partitions
// hard, without a hand-over. As each stops it sends those acknowledgements
// again, once, so that the consumers' ack floors reach what it delivered:
// taken again (by itself here, by another worker as deployed), each
// consumer is reset to its floor, and nothing is sent twice. The resend
// while running (findLostAcks) is kept from coming first.
func TestAcknowledgementsLostAreSentAgainAtAHardStop(t *testing.T) {
	a := loseAcks(t, func(o *Options) { o.ackLooks = 1_000_000 })
	w := a.m.sinks["crm"].worker
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		w.members.leaseUntil.Store(1) // long past; a heartbeat that lands first renews it
		if !strings.Contains(a.logs.String(), "lost contact for too long") {
			return errors.New("the worker has not stopped its partitions hard yet")
		}
		return nil
	})
	a.publish(events.UserDeactivated)
	a.l.wantDelivered(t, a.want, 20*time.Second, false)
	if got := a.logs.String(); !strings.Contains(got, "a partition stopped hard; its acknowledgements above the consumer's ack floor were sent again") {
		t.Errorf("sending the acknowledgements again at the hard stop was not said:\n%s", got)
	}
}

// TestSentAcksKeepTheLatestAndTheirSubjects: the ring keeps the latest
// maxSentAcks acknowledgements, and gives each back with the subject it was
// sent on, whether the server's form (kept as numbers) or another (kept
// whole).
func TestSentAcksKeepTheLatestAndTheirSubjects(t *testing.T) {
	var s sentAcks
	subject := func(seq uint64) string {
		return fmt.Sprintf("$JS.ACK.SCIMRELAY_EVENTS.crm-3.%d.%d.%d.1764816000123456789.%d", seq%3+1, seq, seq+7, 50-seq%50)
	}
	total := uint64(maxSentAcks + 100)
	for seq := uint64(1); seq <= total; seq++ {
		s.add(seq, subject(seq))
	}
	s.add(total+1, "an.ack.of.another.form")
	s.add(total+2, "") // no subject: nothing to send again, not kept
	got := s.above(0)
	if len(got) != maxSentAcks {
		t.Fatalf("%d kept, want %d", len(got), maxSentAcks)
	}
	seen := map[uint64]string{}
	for _, a := range got {
		seen[a.seq] = a.subject()
	}
	if _, ok := seen[101]; ok {
		t.Errorf("the acknowledgement of 101 was kept past the newest %d", maxSentAcks)
	}
	for seq := uint64(102); seq <= total; seq++ {
		if seen[seq] != subject(seq) {
			t.Fatalf("acknowledgement of %d: subject %q, want %q", seq, seen[seq], subject(seq))
		}
	}
	if _, ok := seen[total+2]; ok {
		t.Error("an acknowledgement with no subject was kept")
	}
	if seen[total+1] != "an.ack.of.another.form" {
		t.Errorf("acknowledgement of another form: subject %q", seen[total+1])
	}
	if n := len(s.above(total - 10)); n != 11 {
		t.Errorf("above the floor %d: %d, want 11", total-10, n)
	}
}

// BenchmarkSentAcksAdd is what keeping an acknowledgement costs each
// acknowledged event.
func BenchmarkSentAcksAdd(b *testing.B) {
	var s sentAcks
	b.ReportAllocs()
	for i := range b.N {
		seq := uint64(i + 1)
		s.add(seq, "$JS.ACK.SCIMRELAY_EVENTS.crm-3.1."+strconv.FormatUint(seq, 10)+".4711.1764816000123456789.12")
	}
}
