// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// heldProxy passes NATS connections through to a server and, while held,
// holds what the clients send, passing it on in order once released: the
// server takes a publisher's messages late, after their acknowledgements
// timed out, as when a stream's leader changes or its disk is slow.
type heldProxy struct {
	addr  string
	mu    sync.Mutex
	held  bool
	conns []*heldConn
}

// heldConn is one client's connection: up is the server's side, backlog
// what the client sent while the proxy held it.
type heldConn struct {
	up      net.Conn
	backlog []byte
}

func newHeldProxy(t *testing.T, target string) *heldProxy {
	t.Helper()
	p := &heldProxy{}
	p.addr = eventstest.Proxy(t, target, func(c, up net.Conn) {
		hc := &heldConn{up: up}
		p.mu.Lock()
		p.conns = append(p.conns, hc)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
		go func() { p.pass(hc, c); up.Close() }()
	})
	return p
}

// pass copies what the client sends to the server, or to the backlog
// while held.
func (p *heldProxy) pass(hc *heldConn, from io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.held {
				hc.backlog = append(hc.backlog, buf[:n]...)
			} else if _, werr := hc.up.Write(buf[:n]); werr != nil {
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

func (p *heldProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = true
}

// release sends the server what was held, and passes everything on from
// then on.
func (p *heldProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = false
	for _, hc := range p.conns {
		_, _ = hc.up.Write(hc.backlog)
		hc.backlog = nil
	}
}

// heldEvents counts the events held on their way to the stream.
func (p *heldProxy) heldEvents() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, hc := range p.conns {
		n += bytes.Count(hc.backlog, []byte("HPUB "+strings.TrimSuffix(events.StreamSubjects, ">")))
	}
	return n
}

// TestAwaitSettledWaitsForUnansweredEvents: NATS stores an event late,
// after the publisher's wait for its acknowledgement timed out, signed as
// it was sent. The rotation of the event-signing key switches the signer
// and, once Publisher.AwaitSettled returns, retires the old key at the
// stream's last sequence: AwaitSettled must return only once the
// publisher has JetStream's answer for the event (its copy sent again,
// with the new key, is a duplicate naming where the first was stored), so
// that the last sequence then is at or past the old key's event. Waiting
// for the window under way alone (AwaitWindow) returned with the event
// still on its way: the bound left it out, and a worker dead-lettered it
// as signed by a retired key.
func TestAwaitSettledWaitsForUnansweredEvents(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	proxy := newHeldProxy(t, ns.Addr().String())
	log := slog.New(slog.DiscardHandler)
	nc, err := natsbus.Connect(natsbus.Options{URL: "nats://" + proxy.addr, ConnectTimeout: time.Second}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := events.NewSigner(newSecret())
	if err != nil {
		t.Fatal(err)
	}
	p := runPublisher(t, s, pjs, log, PublisherOptions{Signer: signer, AckTimeout: 200 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})

	proxy.hold()
	create(t, s, "acme", user(t, `"userName":"ann"`))
	// Sent, and sent again once the first wait timed out.
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := proxy.heldEvents(); n < 2 {
			return fmt.Errorf("%d copies of the event held, want 2", n)
		}
		return nil
	})
	old := signer.PublicKey()
	if err := signer.Switch(newSecret()); err != nil {
		t.Fatal(err)
	}
	lastSeq := func() (uint64, error) {
		st, err := js.Stream(context.Background(), events.StreamName)
		if err != nil {
			return 0, err
		}
		return st.CachedInfo().State.LastSeq, nil
	}
	type settled struct {
		lastSeq uint64
		err     error
	}
	done := make(chan settled, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		if err := p.AwaitSettled(ctx); err != nil {
			done <- settled{err: err}
			return
		}
		n, err := lastSeq()
		done <- settled{n, err}
	}()
	// Two more copies, signed with the new key, sent after the call: the
	// window under way when it was made has ended.
	sent := proxy.heldEvents()
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		select {
		case r := <-done:
			t.Fatalf("AwaitSettled returned (%v) with the event the old key signed still on its way to NATS", r.err)
		default:
		}
		if n := proxy.heldEvents(); n < sent+2 {
			return fmt.Errorf("%d copies of the event held, want %d", n, sent+2)
		}
		return nil
	})
	proxy.release()
	var r settled
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("AwaitSettled did not return once NATS had the events")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	st, err := js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if sig := strings.Fields(first.Header.Get(events.SignatureHeader)); len(sig) != 3 || sig[1] != old {
		t.Fatalf("the stream stored %v first; want the copy the old key %s signed, sent first", sig, old)
	}
	if r.lastSeq < first.Sequence {
		t.Errorf("when AwaitSettled returned, the stream's last sequence was %d: a key retired there would not verify the event it signed, stored at %d", r.lastSeq, first.Sequence)
	}
	if n, err := lastSeq(); err != nil || n != 1 {
		t.Errorf("the stream holds %d events (%v); want the one, its later copies duplicates", n, err)
	}

	// An event without an answer that leaves the outbox otherwise (its
	// tenant purged; deleted here as the purge deletes it) settles too,
	// at the next window's read, rather than hold a rotation until NATS
	// answers for the events after it.
	proxy.hold()
	create(t, s, "acme", user(t, `"userName":"bob"`))
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := proxy.heldEvents(); n < 2 {
			return fmt.Errorf("%d copies of bob's event held, want 2", n)
		}
		return nil
	})
	rows, err := s.ReadOutbox(0, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("the outbox holds %d rows (%v), want bob's", len(rows), err)
	}
	// While NATS does not answer, the wait ends with its context, in error.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err = p.AwaitSettled(short)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AwaitSettled with bob's event held and a context that ends: %v; want its deadline's error", err)
	}
	create(t, s, "acme", user(t, `"userName":"carl"`))
	if err := s.DeleteOutbox([]uint64{rows[0].Key}); err != nil {
		t.Fatal(err)
	}
	if err := p.AwaitSettled(ctx); err != nil {
		t.Fatalf("AwaitSettled with the unanswered event gone from the outbox: %v", err)
	}
	proxy.release()
}
