// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestReadBackTakesUnsignedOnlyAsStored: on a stream a release that did
// not sign made, a parked resource's events are read back by direct get,
// whose answer gives the sequence as a header; a message stored with a
// header block of its own that hides the server's (an empty line after a
// bare LF, which nats.go stops at and nats-server does not) can say it
// was stored before the relay signed. Such a message is taken unsigned
// only as what the stream holds at that sequence: the forged event is
// not delivered, and the resource's signed events around it are, in
// order.
func TestReadBackTakesUnsignedOnlyAsStored(t *testing.T) {
	srv, nc, js := natsServer(t) // as an older release made the stream: unsigned
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A front end that signs starts: signing begins at 2.
	signer, trust := signStream(t, nc, js)
	rc := newParkingReceiver(t)
	// One event waits in the worker at most: the rest are read back from the
	// stream, by direct get.
	runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, Trust: trust, LaneLimit: 1})
	signed := func(a events.Action) string { return p.publishSigned(signer, "acme", a, "ann") }
	second := signed(events.UserUpdated) // refused: ann is parked
	rc.waitTried(t)
	// The forgery, as an answer aimed at the stream stores it.
	forged, id := p.next("acme", events.UserDeleted, "ann")
	storeHidingTheServersHeaders(t, srv.Addr().String(), forged, 1, strings.Replace(first.Subject, ".created.", ".deleted.", 1), first.Time)
	third := signed(events.UserUpdated)
	rc.refuse.Store(false)
	rc.wantDelivered(t, id, second, third)
}

// TestReadBackRefusesARetiredKeysForgeryClaimingAnEarlierSequence: the
// key of a leaked data file is retired (keys rotate events) at the
// stream's last sequence. A client that can have the stream store a
// message (a worker's user) stores an event signed by the leaked key,
// after the bound, with a header block that hides the server's and says
// it was stored at a sequence up to the bound, ahead of the parked
// resource's reader: it is read again where the sequence is the
// server's, refused, and the resource's events around it delivered in
// order (before, it was delivered).
func TestReadBackRefusesARetiredKeysForgeryClaimingAnEarlierSequence(t *testing.T) {
	srv, nc, js := natsServer(t)
	p := newPublisher(t, js)
	leaked, trust := signStream(t, nc, js) // signing from 1
	rc := newParkingReceiver(t)
	runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Tenants = []string{"acme"} })}, JS: js, Trust: trust, LaneLimit: 1})
	first := p.publishSigned(leaked, "acme", events.UserCreated, "ann") // seq 1: ann parks
	rc.waitTried(t)
	// Other tenants' events the sink does not take: the stream moves on.
	for range 5 {
		p.publishSigned(leaked, "globex", events.UserUpdated, "bob") // seq 2..6
	}
	// The rotation: a new key named, the leaked one retired at seq 6.
	next, r := rotateSigner(t, js, leaked)
	if r.UpTo != 6 {
		t.Fatalf("retired at %d, want 6", r.UpTo)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The forgery, signed by the retired key, stored at 7 and saying 3.
	forged, id := p.next("acme", events.UserDeleted, "ann")
	if err := leaked.Sign(forged); err != nil {
		t.Fatal(err)
	}
	// As when the rotation answers: the readers have read the retirement.
	subject := strings.Replace(stored.Subject, ".created.", ".deleted.", 1)
	h := nats.Header{}
	for k, v := range forged.Header {
		h[k] = slices.Clone(v)
	}
	h.Set(jetstream.ExpectedStreamHeader, events.StreamName)
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, err := trust.Published(7, subject, h, forged.Data); !errors.Is(err, events.ErrUnknownKey) {
			return fmt.Errorf("the reader takes the retired key's event at 7: %v", err)
		}
		return nil
	})
	storeHidingTheServersHeaders(t, srv.Addr().String(), forged, 3, subject, time.Now())
	third := p.publishSigned(next, "acme", events.UserUpdated, "ann")
	rc.refuse.Store(false)
	rc.wantDelivered(t, id, first, third)
}

// signStream has the event stream name a new signing key, as a front end
// that signs does at its start, and returns the key and a reader's trust.
func signStream(t testing.TB, nc *nats.Conn, js jetstream.JetStream) (*events.Signer, *events.Trust) {
	t.Helper()
	signer, err := events.NewSigner(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, SigningKey: signer.PublicKey()}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	trust, err := events.NewTrust(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	return signer, trust
}

// publishSigned publishes a resource's next event signed by signer and
// returns its id.
func (p *publisher) publishSigned(signer *events.Signer, tenant string, a events.Action, id string) string {
	p.t.Helper()
	msg, eventID := p.next(tenant, a, id)
	if err := signer.Sign(msg); err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		p.t.Fatal(err)
	}
	return eventID
}

// storeHidingTheServersHeaders has the server at addr store msg with a
// header block that hides the server's own headers from nats.go (a bare
// LF, then an empty line, which nats.go stops at and nats-server does
// not) behind headers that say it was stored at seq, on subject, at at:
// what a client that may aim a JetStream answer at the stream can store.
func storeHidingTheServersHeaders(t testing.TB, addr string, msg *nats.Msg, seq uint64, subject string, at time.Time) {
	t.Helper()
	header := "NATS/1.0\r\nX-A: a\n" +
		jetstream.ExpectedStreamHeader + ": " + events.StreamName + "\n" +
		jetstream.StreamHeader + ": " + events.StreamName + "\n" +
		jetstream.SequenceHeader + ": " + strconv.FormatUint(seq, 10) + "\n" +
		jetstream.SubjectHeader + ": " + subject + "\n" +
		jetstream.TimeStampHeaer + ": " + at.Format(time.RFC3339Nano) + "\n"
	for k, v := range msg.Header {
		header += k + ": " + v[0] + "\n"
	}
	header += "\nX-B: b\r\n\r\n"
	eventstest.RawPublish(t, addr, "", "", msg.Subject, header, msg.Data)
}

// TestRetiredKeysEventIsRefusedAtOnce: an event signed by a retired key
// and stored after its bound is dead-lettered at once, not after the key
// wait (10 minutes here) that an unknown key's event gets: reading the
// keys again cannot make it verify. Before, the worker re-verified it in
// a loop without a pause for the whole wait, a core spent and its
// resource held (a leaked key's holder could do that per message).
func TestRetiredKeysEventIsRefusedAtOnce(t *testing.T) {
	_, nc, js := natsServer(t)
	p := newPublisher(t, js)
	leaked, trust := signStream(t, nc, js)
	rc := newReceiver(t, nil)
	const keyWait = 10 * time.Minute // far longer than the test waits
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, Trust: trust, KeyWait: keyWait})
	p.publishSigned(leaked, "acme", events.UserCreated, "ann")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(rc.requests()) != 1 {
			return errors.New("ann's first event not delivered yet")
		}
		return nil
	})
	rotateSigner(t, js, leaked)
	// As when the rotation answers: the reader has read the retirement.
	probe, _ := p.next("acme", events.UserUpdated, "probe")
	if err := leaked.Sign(probe); err != nil {
		t.Fatal(err)
	}
	probe.Header.Set(jetstream.ExpectedStreamHeader, events.StreamName)
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, err := trust.Published(100, probe.Subject+".0", probe.Header, probe.Data); !errors.Is(err, events.ErrUnknownKey) {
			return fmt.Errorf("the reader takes the retired key's event at 100: %v", err)
		}
		return nil
	})
	start := time.Now()
	id := p.publishSigned(leaked, "acme", events.UserUpdated, "ann") // after the bound
	eventstest.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		page, err := m.DeadLetters(ctx, "crm", "", 10)
		if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != id {
			return fmt.Errorf("dead letters %+v, %v; want the retired key's event", page, err)
		}
		if why := page.DeadLetters[0].Error; !strings.Contains(why, "lists this signing key as retired at stream sequence") {
			t.Errorf("the dead letter says %q; want why: retired", why)
		}
		return nil
	})
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
}

// rotateSigner does what scimrelay keys rotate events does to the stream:
// names a new key, and retires old at the stream's last sequence.
func rotateSigner(t *testing.T, js jetstream.JetStream, old *events.Signer) (*events.Signer, events.RetiredKey) {
	t.Helper()
	next, err := events.NewSigner([]byte(strings.Repeat("n", 32)))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if err := events.NameSigningKey(ctx, js, next.PublicKey(), log); err != nil {
		t.Fatal(err)
	}
	r, err := events.RetireSigningKey(ctx, js, old.PublicKey(), log)
	if err != nil {
		t.Fatal(err)
	}
	return next, r
}

// parkingReceiver answers 503 while refuse is set, so that the sink parks
// the resource, and 204 after, noting the event ids it took, in order.
type parkingReceiver struct {
	*receiver
	refuse    atomic.Bool
	mu        sync.Mutex
	tried     int
	delivered []string
}

func newParkingReceiver(t *testing.T) *parkingReceiver {
	r := &parkingReceiver{}
	r.refuse.Store(true)
	r.receiver = newReceiver(t, func(_ int, req *http.Request) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.tried++
		if r.refuse.Load() {
			return http.StatusServiceUnavailable
		}
		r.delivered = append(r.delivered, req.Header.Get("ce-id"))
		return http.StatusNoContent
	})
	return r
}

// waitTried returns once a delivery was tried (and refused).
func (r *parkingReceiver) waitTried(t *testing.T) {
	t.Helper()
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.tried == 0 {
			return errors.New("no delivery tried yet")
		}
		return nil
	})
}

// wantDelivered waits until the events taken are want, in order, failing
// at once if forged is among them.
func (r *parkingReceiver) wantDelivered(t *testing.T, forged string, want ...string) {
	t.Helper()
	eventstest.CheckFor(t, 40*time.Second, 10*time.Millisecond, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if slices.Contains(r.delivered, forged) {
			t.Fatalf("the forged event %s was delivered: %v", forged, r.delivered)
		}
		if !slices.Equal(r.delivered, want) {
			return fmt.Errorf("delivered %v; want %v, in order", r.delivered, want)
		}
		return nil
	})
}
