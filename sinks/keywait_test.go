// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestForgedKeyWaitsNoLongerThanKeyWait: a message signed by a key the
// stream does not name waits for it at most KeyWait from when it was
// stored, whatever time it claims. Read back from the stream by direct
// get, a message whose header block hides the server's headers says its
// own time; one that says 2100 wedged its resource for good, and in one
// event per request the sink's only request slot with it, so that no
// other resource was delivered either. Now it is dead-lettered and the
// resource's next event, and another resource's, are delivered.
func TestForgedKeyWaitsNoLongerThanKeyWait(t *testing.T) {
	srv, nc, js := natsServer(t)
	p := newPublisher(t, js)
	signer, trust := signStream(t, nc, js)
	seed := make([]byte, 32)
	seed[0] = 7
	forger, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	var refuse atomic.Bool
	refuse.Store(true)
	var mu sync.Mutex
	var delivered []string
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if refuse.Load() {
			return http.StatusServiceUnavailable
		}
		mu.Lock()
		defer mu.Unlock()
		delivered = append(delivered, r.Header.Get("ce-subject")+"#"+strings.TrimLeft(r.Header.Get("ce-subjectseq"), "0"))
		return http.StatusNoContent
	})
	retry := slices.Repeat(Schedule{100 * time.Millisecond}, 100)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Concurrency = 1; c.Retry = retry })},
		JS: js, Trust: trust, LaneLimit: 1, KeyWait: time.Second})
	signed := func(id string, a events.Action) { p.publishSigned(signer, "acme", a, id) }
	// ann's first event fails: the resource is parked, and its events are
	// read back from the stream by direct get.
	signed("ann", events.UserCreated)
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n == 0 {
			return errors.New("ann's first event not tried yet")
		}
		return nil
	})
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The forgery: ann's second event, signed by a key the stream does not
	// name, stored with a header block that hides the server's headers
	// from nats.go behind its own (a bare LF, then an empty line), which
	// give its true sequence and subject and a time in 2100.
	forged, _ := p.next("acme", events.UserUpdated, "ann")
	if err := forger.Sign(forged); err != nil {
		t.Fatal(err)
	}
	storeHidingTheServersHeaders(t, srv.Addr().String(), forged, 2, strings.Replace(first.Subject, ".created.", ".updated.", 1), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
	signed("ann", events.UserUpdated)
	signed("bob", events.UserCreated)
	refuse.Store(false)

	want := []string{"Users/ann#1", "Users/ann#3", "Users/bob#1"}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		got := slices.Clone(delivered)
		mu.Unlock()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("delivered %v, want %v", got, want)
		}
		page, err := m.DeadLetters(ctx, "crm", "", 10)
		if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != forged.Header.Get("ce-id") {
			return fmt.Errorf("dead letters %+v, %v; want the forgery's", page, err)
		}
		return nil
	})
}

// TestStopHandsOverAnEventWaitingForItsKey: a worker that stops while an
// event waits for the stream to name its key hands the event over at once
// (the wait used to hold the hand-over past its time, which then became a
// hard stop), and the next worker delivers it once the key is named; it
// is not dead-lettered.
func TestStopHandsOverAnEventWaitingForItsKey(t *testing.T) {
	_, nc, js := natsServer(t)
	p := newPublisher(t, js)
	named, err := events.NewSigner(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	streamWith := func(key string) {
		t.Helper()
		if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, SigningKey: key}, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
	}
	streamWith(named.PublicKey())
	seed := make([]byte, 32)
	seed[0] = 5
	late, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, nil)
	logs := &eventstest.Log{}
	run := func() (*Manager, func()) {
		trust, err := events.NewTrust(ctx, nc)
		if err != nil {
			t.Fatal(err)
		}
		return runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, Trust: trust, KeyWait: time.Minute,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	}
	_, stop := run()
	msg, _ := p.next("acme", events.UserCreated, "ann")
	if err := late.Sign(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "its resource waits for its front end to write the key back") {
			return errors.New("the worker does not wait for the key")
		}
		return nil
	})
	stop()
	if strings.Contains(logs.String(), "outlasted its time") {
		t.Fatalf("the wait held the hand-over past its time:\n%s", logs.String())
	}

	streamWith(late.PublicKey()) // named beside the other
	m, _ := run()
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 1 {
			return fmt.Errorf("%d deliveries, want ann's one", n)
		}
		return nil
	})
	if page, err := m.DeadLetters(ctx, "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Fatalf("dead letters %+v, %v; want none", page, err)
	}
}

// TestEventWaitingForItsKeyLeavesItsRequestSlot: in one event per request,
// a resource waiting for the stream to name its event's key does not keep
// the sink's request slot: with concurrency 1, another resource's events
// are delivered meanwhile (they used to wait up to KeyWait behind it).
func TestEventWaitingForItsKeyLeavesItsRequestSlot(t *testing.T) {
	_, nc, js := natsServer(t)
	p := newPublisher(t, js)
	signer, trust := signStream(t, nc, js)
	seed := make([]byte, 32)
	seed[0] = 3
	late, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, nil)
	logs := &eventstest.Log{}
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Concurrency = 1 })}, JS: js, Trust: trust, KeyWait: time.Minute,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	p.publishSigned(late, "acme", events.UserCreated, "ann")
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "its resource waits for its front end to write the key back") {
			return errors.New("the worker does not wait for ann's key")
		}
		return nil
	})
	bob := p.publishSigned(signer, "acme", events.UserCreated, "bob")
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		got := rc.requests()
		if len(got) != 1 || got[0].header.Get("ce-id") != bob {
			return fmt.Errorf("%d deliveries; want bob's while ann's waits", len(got))
		}
		return nil
	})
	if page, err := m.DeadLetters(ctx, "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Fatalf("dead letters %+v, %v; want none while ann's event waits", page, err)
	}
}
