// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestCreateFloodDoesNotBlockOthers: a subscriber that floods consumer
// creations delays only its own. They all used to wait in one queue, each
// up to ten seconds, so that another subscriber's creation timed out; and
// large bodies filled that queue until others' creations were dropped.
func TestCreateFloodDoesNotBlockOthers(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "scimrelay.globex.>")
	b := startBus(t, billing, audit)
	flooder := connectAs(t, b.url, "billing", billingSeed)
	ac := connectAs(t, b.url, "audit", auditSeed)

	t.Run("a body over the limit is refused", func(t *testing.T) {
		body := `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","description":"` + strings.Repeat("x", 100<<10) + `"}}`
		res, err := flooder.nc.Request("$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", []byte(body), 5*time.Second)
		if err != nil || !strings.Contains(string(res.Data), "at most") {
			t.Fatalf("%v, want it refused for its size", err)
		}
	})

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	body := []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","ack_policy":"explicit"}}`)
	wg.Go(func() {
		for ctx.Err() == nil {
			for range 500 {
				if flooder.nc.PublishRequest("$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", natsbus.InboxPrefix("billing")+".x", body) != nil {
					return
				}
			}
			_ = flooder.nc.Flush()
		}
	})
	for i := range 3 {
		cctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := ac.js.CreateOrUpdateConsumer(cctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", FilterSubject: "scimrelay.globex.>", AckPolicy: jetstream.AckExplicitPolicy})
		cancel()
		if err != nil {
			t.Fatalf("audit's creation %d during billing's flood: %v", i, err)
		}
	}
}

// TestRemovedSubscriberCannotReviveItsConsumer: creations a subscriber
// queued before its removal do not bring its consumer back once it is
// gone, and added again limited to fewer subjects it reads only those.
// Creations passed on after a removal used to bring back the deleted
// consumer, unfiltered, and the narrowed subscriber pulled every tenant's
// events from it; now the relay answers creations and makes nothing.
func TestRemovedSubscriberCannotReviveItsConsumer(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, billing, audit)
	ctx := t.Context()
	old := connectAs(t, b.url, "billing", billingSeed)
	body := []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","ack_policy":"explicit"}}`)
	for range 2000 {
		if err := old.nc.PublishRequest("$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", natsbus.InboxPrefix("billing")+".x", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Removed as the admin API removes it.
	if err := b.e.SetSubscribers([]natsbus.Subscriber{audit}); err != nil {
		t.Fatal(err)
	}
	if err := b.js.DeleteConsumer(ctx, events.StreamName, "billing"); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatal(err)
	}
	// A creation of another subscriber's, answered after billing's.
	ac := connectAs(t, b.url, "audit", auditSeed)
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := ac.js.CreateOrUpdateConsumer(actx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if c, err := b.js.Consumer(ctx, events.StreamName, "billing"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("billing's consumer is back (filter %q): %v", c.CachedInfo().Config.FilterSubject, err)
	}
	// Added again with a new key, limited to acme.
	narrowed, narrowedSeed := newSubscriber(t, "billing", "scimrelay.acme.>")
	if err := b.e.SetSubscribers([]natsbus.Subscriber{audit, narrowed}); err != nil {
		t.Fatal(err)
	}
	nc := connectAs(t, b.url, "billing", narrowedSeed)
	for _, s := range fetchAll(t, nc.consumer(t, "billing"), 3) {
		if !strings.HasPrefix(s, "scimrelay.acme.") {
			t.Errorf("the narrowed billing read %s", s)
		}
	}
}

// TestSubscriberPullsWaitAtMost110s: a subscriber's consumer lets a pull
// wait at most 110 s, so that the pulls of a client that went away are
// not kept for ever.
func TestSubscriberPullsWaitAtMost110s(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	ctx := t.Context()
	c := connectAs(t, b.url, "billing", seed)
	// Asked for, and ignored: the relay answers creations itself.
	if _, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing", MaxRequestExpires: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	cons, err := b.js.Consumer(ctx, events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.MaxRequestExpires; got <= 0 || got >= 2*time.Minute {
		t.Fatalf("max_expires %v, want less than two minutes", got)
	}
}

// TestSubscriberAccountsBounded: subscribers added, removed and changed
// again and again (new keys, other subjects) reuse their accounts; each
// change used to register an account for the life of the process.
func TestSubscriberAccountsBounded(t *testing.T) {
	b := startBus(t)
	before := b.e.Server().NumLoadedAccounts()
	for i := range 60 {
		sub, _ := newSubscriber(t, "billing", []string{"", "scimrelay.acme.>", "scimrelay.globex.>"}[i%3])
		if err := b.e.SetSubscribers([]natsbus.Subscriber{sub}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := b.e.SetSubscribers(nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := b.e.Server().NumLoadedAccounts() - before; n > 2 {
		t.Fatalf("%d accounts for one subscriber name, want at most 2", n)
	}
}

// TestSubscriberFloodsLeaveNoRoutes: a subscriber's requests leave
// nothing behind in the relay's account. Through service imports each
// request with a reply left a response route there until answered: an
// acknowledgement with a reply is never answered, and a pull's route
// lasted two minutes, so that one connection filled the relay's memory
// with millions of them. Consumer creations came through one until an
// attack round: those its queue dropped left their routes for 15 to 30 s,
// 623,000 after 15 s of one connection's flood.
func TestSubscriberFloodsLeaveNoRoutes(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "scimrelay.acme.>")
	b := startBus(t, billing)
	c := connectAs(t, b.url, "billing", seed)
	c.consumer(t, "billing")
	const flood = 20000
	reply := natsbus.InboxPrefix("billing") + ".x"
	for i := range flood {
		for _, req := range []struct{ subject, body string }{
			{fmt.Sprintf("$JS.ACK.SCIMRELAY.billing.1.%d.%d.0.0", i+100, i+100), ""},
			{"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.billing", `{"batch":1,"no_wait":true}`},
			{"$JS.API.CONSUMER.INFO.SCIMRELAY.billing", ""},
			{"$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"}}`},
		} {
			if err := c.nc.PublishRequest(req.subject, reply, []byte(req.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.nc.FlushTimeout(time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := b.e.Server().GlobalAccount().NumPendingAllResponses(); n > 0 {
		t.Fatalf("%d response routes in the relay's account after %d of each request", n, flood)
	}
}

// TestSubscriberRequestsRateLimited: the relay passes a subscriber's
// requests on at most SubscriberRequestsPerSecond a second (a second's
// worth at once) and drops, saying so, what waits beyond its queue;
// meanwhile another subscriber's requests, and the relay's own, are
// answered. A flood used to reach JetStream's API queue whole, and the
// relay's own requests (reading parked resources back, hand-overs) timed
// out while it lasted.
func TestSubscriberRequestsRateLimited(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "")
	logs := &eventstest.Log{}
	b := startBusLogging(t, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})), billing, audit)
	flooder := connectAs(t, b.url, "billing", billingSeed)
	// Connected before the flood: under -race on two busy cores a dial
	// during it can outlast its 2 s timeout, which is not what this test
	// is about.
	ac := connectAs(t, b.url, "audit", auditSeed)
	start := time.Now()
	var answered atomic.Int64
	var tooMany atomic.Value // the first answer beyond the rate, as an error
	inbox := natsbus.InboxPrefix("billing") + ".flood"
	if _, err := flooder.nc.Subscribe(inbox, func(*nats.Msg) {
		n, since := answered.Add(1), time.Since(start)
		if allowed := natsbus.SubscriberRequestsPerSecond * (1 + since.Seconds()); float64(n) > allowed {
			tooMany.CompareAndSwap(nil, fmt.Errorf("%d of billing's requests answered %v after the flood began, want at most %.0f", n, since, allowed))
		}
	}); err != nil {
		t.Fatal(err)
	}
	const flood = 5000
	for range flood {
		if err := flooder.nc.PublishRequest("$JS.API.CONSUMER.INFO.SCIMRELAY.billing", inbox, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := flooder.nc.FlushTimeout(time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := ac.js.Stream(ctx, events.StreamName); err != nil {
		t.Fatalf("audit's stream info during billing's flood: %v", err)
	}
	if _, err := b.js.Stream(ctx, events.StreamName); err != nil {
		t.Fatalf("the relay's stream info during billing's flood: %v", err)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := answered.Load(); n < 2*natsbus.SubscriberRequestsPerSecond {
			return fmt.Errorf("%d of billing's requests answered, want two seconds' worth", n)
		}
		if !strings.Contains(logs.String(), "requests were dropped") {
			return errors.New("the relay did not say that it dropped billing's requests")
		}
		return nil
	})
	if err, _ := tooMany.Load().(error); err != nil {
		t.Fatal(err)
	}
}
