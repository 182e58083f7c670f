// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/scim"
)

// newPublisher returns a publisher from outbox over js's connection.
func newPublisher(t testing.TB, outbox Outbox, js jetstream.JetStream, log *slog.Logger, o PublisherOptions) *Publisher {
	t.Helper()
	p, err := NewPublisher(outbox, js.Conn(), log, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runPublisher runs a publisher on a stream the test set up itself.
func runPublisher(t testing.TB, outbox Outbox, js jetstream.JetStream, log *slog.Logger, o PublisherOptions) *Publisher {
	t.Helper()
	p := newPublisher(t, outbox, js, log, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx); err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// TestStreamOrderUnderPartialFailure: JetStream refuses one event in the
// middle of a window (a per-subject limit refuses the second user.updated
// of one user) and would take the ones after it. They must not overtake
// it: once the limit is lifted, the stream holds every event in commit
// order. On a cluster too, with the stream replicated: there a chain by
// the previous event's id (Nats-Expected-Last-Msg-Id) had the event after
// the refused one proposed unchecked, and every replica then stopped
// serving the stream as it found the id wrong (a write error, nats-server
// 2.15): no leader, and nothing more was stored (TestScaleOut lost the
// stream's leader that way in CI). And with the publisher the sole one
// (the embedded server), whose window is a chain by the stream's last
// sequence instead of atomic batches.
func TestStreamOrderUnderPartialFailure(t *testing.T) {
	for _, c := range []struct {
		name     string
		nodes    int
		replicas int
		sole     bool
	}{{"one server", 1, 1, false}, {"three-node cluster, three replicas", 3, 3, false}, {"one server, the sole publisher", 1, 1, true}} {
		t.Run(c.name, func(t *testing.T) {
			if c.nodes > 1 && testing.Short() {
				t.Skip("runs a 3-node NATS cluster")
			}
			var url string
			if c.nodes == 1 {
				url = eventstest.URL(eventstest.RunServer(t))
			} else {
				url = eventstest.ClusterURLs(eventstest.RunCluster(t, c.nodes))
			}
			streamOrderUnderPartialFailure(t, url, c.replicas, c.sole)
		})
	}
}

func streamOrderUnderPartialFailure(t *testing.T, url string, replicas int, sole bool) {
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, url)
	cfg := events.StreamConfig(events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Replicas: replicas})
	cfg.MaxMsgsPerSubject, cfg.Discard, cfg.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
	// A stream of three replicas on a cluster just formed may take longer
	// than the client's 5 s to be answered on a loaded machine (CI once):
	// asked again, an existing stream of the same configuration is taken.
	eventstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
	// Committed before the publisher starts, so that they share a window.
	first := create(t, s, "acme", user(t, `"userName":"first"`))
	for i := range 5 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"a%d"`, i)))
	}
	mustPatch(t, s, "acme", scim.UserResourceType, first.ID(), `{"op":"replace","path":"title","value":"One"}`)
	mustPatch(t, s, "acme", scim.UserResourceType, first.ID(), `{"op":"replace","path":"title","value":"Two"}`) // refused while the limit holds
	for i := range 20 {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"b%d"`, i)))
	}
	const total = 1 + 5 + 2 + 20
	p := runPublisher(t, s, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: 100 * time.Millisecond, Sole: sole})
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p.Healthy() {
			return fmt.Errorf("the refusal has not happened yet")
		}
		if n, _ := s.OutboxDepth(); n != 21 {
			return fmt.Errorf("outbox holds %d events, want the refused one and the 20 behind it", n)
		}
		return nil
	})
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := st.Info(ctx); info.State.Msgs != 7 {
		t.Fatalf("the stream took %d events while one was refused, want the 7 before it", info.State.Msgs)
	}
	cfg.MaxMsgsPerSubject = 100
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, streamContents(t, js, total))
}

// TestQuarantine: an outbox row that does not decode, and one that decodes
// but cannot become a NATS message, are set aside; the rows behind them
// are published, and the quarantine lists and counts them.
func TestQuarantine(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	create(t, s, "acme", user(t, `"userName":"one"`))
	corrupt := injectOutboxRow(t, s, []byte(`{"specversion":"1.0","id":`))
	create(t, s, "acme", user(t, `"userName":"two"`))
	bad := event.New()
	bad.SetID("0198f3c2-0000-7000-8000-00000000beef")
	bad.SetSource("/scim/v2/acme")
	bad.SetType(events.UserCreated.Type())
	bad.SetSubject("Users/not.a.token") // a valid CloudEvent, but no NATS subject can carry it
	bad.SetExtension(events.ExtTenant, "acme")
	raw, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	unencodable := injectOutboxRow(t, s, raw)
	create(t, s, "acme", user(t, `"userName":"three"`))

	logs := &eventstest.Log{}
	var counted atomic.Int32
	runPublisher(t, s, js, slog.New(slog.NewTextHandler(logs, nil)), PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: 100 * time.Millisecond,
		Quarantined: func() { counted.Add(1) }})
	list := streamContents(t, js, 3)
	checkOrder(t, list)
	outboxEmpties(t, s)
	q, err := s.QuarantinedRows(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].Key != corrupt || q[1].Key != unencodable || !strings.Contains(q[0].Reason, "decoding") ||
		!strings.Contains(q[1].Reason, "encoding") || q[1].Row != string(raw) {
		t.Fatalf("quarantine: %+v", q)
	}
	if n, err := s.QuarantineCount(); n != 2 || err != nil || counted.Load() != 2 {
		t.Fatalf("quarantine count %d (%v), counted %d", n, err, counted.Load())
	}
	for _, key := range []uint64{corrupt, unencodable} {
		if n := strings.Count(logs.String(), fmt.Sprintf("key=%d ", key)); n != 1 {
			t.Errorf("row %d is in the log %d times, want once:\n%s", key, n, logs.String())
		}
	}
}

// injectOutboxRow writes a row into the outbox the way emit does, with
// whatever bytes the test wants.
func injectOutboxRow(t testing.TB, s *Store, row []byte) uint64 {
	t.Helper()
	var key uint64
	if err := s.commits.do(func(tx *bolt.Tx) error {
		var err error
		if key, err = increment(tx.Bucket(bucketMeta), keyOutboxCounter); err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).Put(u64(key), row)
	}); err != nil {
		t.Fatal(err)
	}
	s.depth.Add(1)
	return key
}

// quarantineRefused is the store's outbox with a quarantine that takes no
// rows, counting the tries.
type quarantineRefused struct {
	*Store
	tries atomic.Int32
}

func (q *quarantineRefused) QuarantineOutbox(uint64, string) error {
	q.tries.Add(1)
	return errors.New("disk full")
}

// TestQuarantineThatFailsWaitsItsBackoff: a row that must go to quarantine
// while the quarantine takes no writes is tried again after the
// publisher's backoff, reported as a failure (the publisher is not
// healthy), not at once over and over while it says it is.
func TestQuarantineThatFailsWaitsItsBackoff(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	ensureStream(t, js)
	injectOutboxRow(t, s, []byte(`{"specversion":"1.0","id":`))
	q := &quarantineRefused{Store: s}
	p := runPublisher(t, q, js, slog.New(slog.DiscardHandler), PublisherOptions{AckTimeout: 2 * time.Second, MaxBackoff: time.Hour})
	eventstest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if q.tries.Load() < 2 || p.Healthy() {
			return fmt.Errorf("%d tries to quarantine, healthy %v", q.tries.Load(), p.Healthy())
		}
		return nil
	})
}

// TestWindowsWithoutAcksDoNotStallThePublisher: windows whose
// acknowledgements never come (no stream yet, and a plain subscriber on
// the events' subjects, so that the publishes are not refused for want of
// responders; the connection up throughout), more of them than the
// publisher's limit of pending acks holds, are given up on and let go of.
// Once the stream exists every event is published, in order, and no
// publish was refused as "stalled": nats.go used to keep the acks of a
// window given up on until a reconnect.
func TestWindowsWithoutAcksDoNotStallThePublisher(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	nc, js := eventstest.Connect(t, eventstest.URL(ns))
	const window, total = 4, 10
	for i := range total {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	var swallowed atomic.Int64
	sub, err := nc.Subscribe(events.StreamSubjects, func(*nats.Msg) { swallowed.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	logs := &eventstest.Log{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := runPublisher(t, s, js, log, PublisherOptions{Window: window, AckTimeout: 300 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	const stalled = "stalled"
	// Three windows given up on: more than the publisher's limit (two
	// windows) would hold if their acks stayed pending.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if strings.Contains(logs.String(), stalled) {
			t.Fatalf("a publish was refused as stalled while the stream was missing:\n%s", logs.String())
		}
		if n := swallowed.Load(); n < 3*window {
			return fmt.Errorf("%d events sent to a subject without a stream, want %d (three windows)", n, 3*window)
		}
		return nil
	})
	if p.Healthy() {
		t.Fatal("the publisher reports healthy while no window is acknowledged")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	ensureStream(t, js)
	checkOrder(t, streamContents(t, js, total))
	outboxEmpties(t, s)
	if strings.Contains(logs.String(), stalled) {
		t.Fatalf("a publish was refused as stalled:\n%s", logs.String())
	}
}

// TestUnansweredEventIsSentAgain: JetStream never answers an event the
// publisher sent (the stream's leader stopped leading with it in hand; here
// a proxy loses it). The publisher sends it again after ResendAfter, the
// same message, rather than wait its AckTimeout (a minute here; 10 s by
// default, and until 2026-12-04 a chaos run's every leader change held
// new events back that long): the first event of a window, lost twice,
// and the last, which commits the window's atomic batch, lost once (the
// batch goes again under a new id). One in the middle of a window, lost
// once, is not sent again on its own: JetStream answers the batch's
// commit at once that the batch is incomplete, and its rows go one at a
// time. Every event is stored once, in commit order, and the window is
// not counted a failure. When JetStream answers late instead (a slow
// disk: the proxy holds the messages), the copies are stored once too.
// On one server, and on a 3-node cluster with three replicas, the shape
// deployed, whose stream leader checks an event's id before its expected
// sequence (one server the other way round), through a proxy to one node:
// there the copies released with the event reach the leader while it is
// storing the event, and are answered "duplicate message id is in
// process", which the publisher took for a failure (a Warn, and the
// window sent again after a backoff) until it waited on for the event's
// own answer.
func TestUnansweredEventIsSentAgain(t *testing.T) {
	for _, c := range []unansweredCase{
		{name: "the first of a window, lost twice", events: 1, nth: 0, copies: 2, sentAgain: 2},
		{name: "in the middle of a window", events: 6, nth: 3, copies: 1},
		{name: "the commit of a batch", events: 12, nth: 11, copies: 1, sentAgain: 11}, // a batch of 11, past smallTail
		{name: "answered late", events: 6, late: true, sentAgain: 2},                   // the copies held with the event
		// The sole publisher's chain: the rows after the lost one are
		// refused by their expected sequence, and the next window
		// starts from them once its copy is stored.
		{name: "in the middle of a chain", events: 6, nth: 3, copies: 1, sentAgain: 1, sole: true},
		{name: "a chain answered late", events: 6, late: true, sentAgain: 2, sole: true},
	} {
		for _, replicas := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s, %d replicas", c.name, replicas), func(t *testing.T) {
				if replicas > 1 && testing.Short() {
					t.Skip("runs a 3-node NATS cluster")
				}
				c.run(t, replicas)
			})
		}
	}
}

// unansweredCase is a case of TestUnansweredEventIsSentAgain.
type unansweredCase struct {
	name        string
	events, nth int // events committed before the publisher starts; the one lost
	copies      int // copies of it lost
	sentAgain   int // copies counted as sent again, at least
	late        bool
	sole        bool // PublisherOptions.Sole
}

func (c unansweredCase) run(t *testing.T, replicas int) {
	var ns *server.Server
	url := ""
	if replicas == 1 {
		ns = eventstest.RunServer(t)
		url = eventstest.URL(ns)
	} else {
		servers := eventstest.RunCluster(t, replicas)
		ns, url = servers[0], eventstest.ClusterURLs(servers)
	}
	s, _, _ := openStore(t)
	_, js := eventstest.Connect(t, url)
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Replicas: replicas}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if replicas > 1 {
		eventstest.AwaitStreamLeader(t, js, ns)
	}
	addr := ""
	var losing *eventstest.EventLosingProxy
	var holding *heldProxy
	if c.late {
		holding = newHeldProxy(t, ns.Addr().String())
		addr = holding.addr
	} else {
		losing = eventstest.NewEventLosingProxy(t, ns.Addr().String(), c.nth, c.copies)
		addr = losing.Addr
	}
	_, pjs := eventstest.Connect(t, "nats://"+addr)
	if c.late {
		holding.hold() // once connected
	}
	for i := range c.events {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%d"`, i)))
	}
	logs := &eventstest.Log{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var resent, observed atomic.Int64
	runPublisher(t, s, pjs, log, PublisherOptions{AckTimeout: time.Minute, ResendAfter: 200 * time.Millisecond, Resent: func() { resent.Add(1) },
		Observe: func(time.Time) { observed.Add(1) }, Sole: c.sole})
	if c.late {
		// The first event and copies of it wait in the proxy.
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if n := holding.heldEvents(); n < 3 {
				return fmt.Errorf("%d copies of the first event held, want 3", n)
			}
			return nil
		})
		holding.release()
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n, err := s.OutboxDepth(); err != nil || n != 0 {
			return fmt.Errorf("the outbox still holds %d events (%v), AckTimeout being a minute", n, err)
		}
		return nil
	})
	checkOrder(t, streamContents(t, js, c.events))
	if losing != nil && losing.Lost() != c.copies {
		t.Fatalf("the proxy lost %d copies of the event, want %d", losing.Lost(), c.copies)
	}
	// Each lost copy was followed by another (and a late answer may have
	// let a few more go): each is counted.
	if resent.Load() < int64(c.sentAgain) {
		t.Fatalf("%d copies counted as sent again, want at least %d", resent.Load(), c.sentAgain)
	}
	if strings.Contains(logs.String(), "publishing events to NATS failed") {
		t.Fatalf("a resent event counted as a failure:\n%s", logs.String())
	}
	// Each event counted once as published, whichever copy's answer came.
	if observed.Load() != int64(c.events) {
		t.Fatalf("%d events published, counted %d times", c.events, observed.Load())
	}
}

// TestLeaderlessStreamIsTriedEachSecond: while the server answers that no
// stream takes the events (here none exists yet; in production a stream
// electing a leader, or without a quorum), the publisher tries again at
// least once a second, where its backoff doubles towards MaxBackoff for
// other failures: it finds the stream as soon as it is back. Once the
// stream exists the event is published.
func TestLeaderlessStreamIsTriedEachSecond(t *testing.T) {
	s, _, _ := openStore(t)
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	create(t, s, "acme", user(t, `"userName":"ann"`))
	logs := &eventstest.Log{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := runPublisher(t, s, js, log, PublisherOptions{MaxBackoff: time.Minute})
	// Five failed attempts: the backoff alone would be 1.6 s by then.
	retryIn := regexp.MustCompile(`publishing events to NATS (?:failed|still failing).* err=".*no response from stream" retry_in=(\S+)`)
	var waits []string
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		waits = nil
		for _, m := range retryIn.FindAllStringSubmatch(logs.String(), -1) {
			waits = append(waits, m[1])
		}
		if len(waits) < 5 {
			return fmt.Errorf("%d attempts failed, want 5:\n%s", len(waits), logs.String())
		}
		return nil
	})
	if p.Healthy() {
		t.Fatal("the publisher reports healthy while no stream takes its events")
	}
	for _, w := range waits {
		if d, err := time.ParseDuration(w); err != nil || d > time.Second {
			t.Fatalf("waits %v between attempts, want none above a second", waits)
		}
	}
	ensureStream(t, js)
	checkOrder(t, streamContents(t, js, 1))
	outboxEmpties(t, s)
}
