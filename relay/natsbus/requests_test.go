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

// publishUsers stores n more user events of acme in the bus's stream.
func publishUsers(t testing.TB, b *bus, n int) {
	t.Helper()
	for i := range n {
		if _, err := b.js.PublishAsync(events.Subject("acme", events.UserCreated, fmt.Sprint("many", i)), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("the events were not stored within a minute")
	}
}

// consumeAll consumes the subscriber's consumer, acknowledging each
// event, until it has had want; it returns how long that took.
func consumeAll(t testing.TB, cons jetstream.Consumer, want int) time.Duration {
	t.Helper()
	got, done := 0, make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			t.Error(err)
		}
		if got++; got == want {
			close(done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(time.Minute):
		info, _ := cons.Info(context.Background())
		t.Fatalf("%d of %d events consumed in a minute; the consumer: %+v", got, want, info)
		return 0
	}
}

// TestSubscriberAcknowledgesThroughTheRelay: a subscriber's
// acknowledgements reach its consumer through the relay, both plain ones
// and those that wait for JetStream's answer: it reads more events than
// its consumer lets it hold unacknowledged (1,000 by default), and the
// consumer's acknowledged floor is its last event.
func TestSubscriberAcknowledgesThroughTheRelay(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	publishUsers(t, b, 2500)
	ctx := t.Context()
	c := connectAs(t, b.url, "billing", seed)
	cons := c.consumer(t, "billing")
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.NumPending)
	consumeAll(t, cons, total-1)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("an acknowledgement waiting for JetStream's answer: %v", err)
		}
	}
	if info, err = cons.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Consumer != uint64(total) || info.NumAckPending != 0 {
		t.Fatalf("acknowledged up to %d of %d, %d pending", info.AckFloor.Consumer, total, info.NumAckPending)
	}
}

// BenchmarkSubscriberConsume: a subscriber consuming 20,000 events with
// explicit acknowledgements, every request through the relay.
func BenchmarkSubscriberConsume(b *testing.B) {
	billing, seed := newSubscriber(b, "billing", "")
	bus := startBus(b, billing)
	const n = 20000
	publishUsers(b, bus, n)
	c := connectAs(b, bus.url, "billing", seed)
	for b.Loop() {
		// The relay makes the consumer anew, from the first event.
		if err := bus.js.DeleteConsumer(b.Context(), events.StreamName, "billing"); err != nil {
			b.Fatal(err)
		}
		if err := bus.e.EnsureConsumers(); err != nil {
			b.Fatal(err)
		}
		cons := c.consumer(b, "billing")
		info, err := cons.Info(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		el := consumeAll(b, cons, int(info.NumPending))
		b.ReportMetric(float64(info.NumPending)/el.Seconds(), "events/s")
	}
}

// TestPullsStayBounded: a subscriber cannot make its consumer keep pulls
// without end. Through +NXT acknowledgements (pulls in disguise, at the
// acknowledgements' rate) with no expiry, and a consumer allowing 2^30
// waiting pulls, one connection grew the relay's heap by 35 MB a second
// for as long as it liked. Now the relay makes the consumer, which keeps
// at most 512, a creation asking for more changes nothing, +NXT does not
// pass, and every pull waits at most 110 s.
func TestPullsStayBounded(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	ctx := t.Context()
	c := connectAs(t, b.url, "billing", seed)
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy, MaxWaiting: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.MaxWaiting; got != 512 {
		t.Fatalf("the consumer keeps %d pulls waiting, want 512", got)
	}
	if _, err := c.nc.SubscribeSync(natsbus.InboxPrefix("billing") + ".>"); err != nil { // someone to deliver to
		t.Fatal(err)
	}
	// One real event, held unacknowledged: its acknowledgement, sent after
	// the flood on the same queue, says when the flood has been handled.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var held jetstream.Msg
	for m := range batch.Messages() {
		held = m
	}
	if held == nil {
		t.Fatal("no event to hold")
	}
	for i := range 5000 { // within the acknowledgements' queue, so that none is dropped
		subject := fmt.Sprintf("$JS.ACK.SCIMRELAY.billing.1.%d.%d.0.0", i+100, i+100)
		if err := c.nc.PublishRequest(subject, fmt.Sprintf("%s.p%d", natsbus.InboxPrefix("billing"), i), []byte(`+NXT {"batch":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := held.Ack(); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		switch {
		case err != nil:
			return err
		case info.NumAckPending > 0:
			return fmt.Errorf("the held event is not acknowledged yet: %d pending", info.NumAckPending)
		case info.NumWaiting > 0:
			t.Fatalf("%d pulls waiting after a flood of +NXT acknowledgements", info.NumWaiting)
		}
		return nil
	})
}

// TestCreationFloodCutsOnlyItsOwnConnection: consumer creations of up to
// the server's 8 MiB reach the relay before its size check. They used to
// reach one connection the relay checked every subscriber's creations
// on, which the server cut as a slow consumer within a second: another
// subscriber's creations failed for as long as the flood lasted. Now each
// subscriber's arrive on a connection of its own (in the subscriber's
// account since 2026-12-06; the passer's connection that passes requests
// on to JetStream is another, which the flood does not reach), and another
// subscriber's API requests, which share one place in JetStream's API
// queue with billing's, are answered during the flood. (An attack round
// saw a request in flight on a cut connection hold that place for a
// minute; passer.request now lets go when the connection drops. This
// test does not reproduce that timing.)
func TestCreationFloodCutsOnlyItsOwnConnection(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, billing, audit)
	ac := connectAs(t, b.url, "audit", auditSeed)
	body := make([]byte, 8<<20-4096)
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	// Every connection is made before the flood starts: under -race on two
	// busy cores a dial during it can outlast its 2 s timeout, which is
	// not what this test is about.
	flooders := make([]*client, 3)
	for i := range flooders {
		flooders[i] = connectAs(t, b.url, "billing", seed)
	}
	info := connectAs(t, b.url, "billing", seed)
	for _, c := range flooders {
		wg.Go(func() {
			for ctx.Err() == nil {
				if c.nc.Publish("$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", body) != nil {
					return
				}
			}
		})
	}
	// And API requests through the subscribers' one place in JetStream's
	// queue, whose answers the cuts lose.
	wg.Go(func() {
		for ctx.Err() == nil {
			if info.nc.PublishRequest("$JS.API.STREAM.INFO.SCIMRELAY", natsbus.InboxPrefix("billing")+".info", nil) != nil {
				return
			}
			time.Sleep(5 * time.Millisecond) // a request every 5 ms, as a client would loop
		}
	})
	// Before the fix audit's requests went unanswered for as long as the
	// flood lasted, which is until the test ends: a bound of 15 s a
	// request leaves room for two cores under -race and still fails then.
	for i := range 10 {
		cctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		_, err := ac.js.CreateOrUpdateConsumer(cctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy})
		cancel()
		if err != nil {
			t.Fatalf("audit's creation %d during billing's flood: %v", i, err)
		}
	}
	// Billing's API requests go on meanwhile; audit's are answered.
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		cctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		_, err := ac.js.Stream(cctx, events.StreamName)
		cancel()
		if err != nil {
			t.Fatalf("audit's stream info %v into billing's flood: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
}

// TestChangedKeyLosesWhatItQueued: what a subscriber's old key queued
// before the key changed is dropped, not passed on under the new key's
// configuration (the account, and so where requests arrive, stays the
// same): a consumer delete queued behind a second's worth of requests
// used to delete the new key's consumer a second after the change; a
// pull queued so would take the new key's events.
func TestChangedKeyLosesWhatItQueued(t *testing.T) {
	old, oldSeed := newSubscriber(t, "billing", "")
	b := startBus(t, old)
	ctx := t.Context()
	c := connectAs(t, b.url, "billing", oldSeed)
	reply := natsbus.InboxPrefix("billing") + ".x"
	for range 2 * natsbus.SubscriberRequestsPerSecond {
		if err := c.nc.PublishRequest("$JS.API.CONSUMER.INFO.SCIMRELAY.billing", reply, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.billing", reply, []byte(`{"batch":3,"no_wait":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	renewed, newSeed := newSubscriber(t, "billing", "")
	if err := b.e.SetSubscribers([]natsbus.Subscriber{renewed}); err != nil {
		t.Fatal(err)
	}
	connectAs(t, b.url, "billing", newSeed)
	// The pull was a second or two into the queue: watch longer.
	start := time.Now()
	for time.Since(start) < 3*time.Second {
		cons, err := b.js.Consumer(ctx, events.StreamName, "billing")
		if err != nil {
			t.Fatalf("the new key's consumer, %v after the change: %v", time.Since(start), err)
		}
		if n := cons.CachedInfo().Delivered.Consumer; n != 0 {
			t.Fatalf("%d events delivered to the old key's pull, %v after the change", n, time.Since(start))
		}
		time.Sleep(50 * time.Millisecond) // observing that nothing happens
	}
}

// TestLongRepliesDropped: a request whose reply is longer than any client
// makes is dropped: every pull JetStream keeps waiting holds its reply.
func TestLongRepliesDropped(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	c := connectAs(t, b.url, "billing", seed)
	long := natsbus.InboxPrefix("billing") + "." + strings.Repeat("r", 300)
	short := natsbus.InboxPrefix("billing") + ".short"
	longs, err := c.nc.SubscribeSync(long)
	if err != nil {
		t.Fatal(err)
	}
	shorts, err := c.nc.SubscribeSync(short)
	if err != nil {
		t.Fatal(err)
	}
	// Passed on one after the other: once the second is answered, the
	// first has been handled.
	for _, reply := range []string{long, short} {
		if err := c.nc.PublishRequest("$JS.API.INFO", reply, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := shorts.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("the request with a short reply: %v", err)
	}
	if m, err := longs.NextMsg(0); err == nil {
		t.Fatalf("the request with a %d-byte reply was answered: %s", len(long), m.Data)
	}
}

// watchRelay hands handle what is sent on subject in the relay's account,
// in the order the server sends it, from before it returns.
func watchRelay(t *testing.T, b *bus, subject string, handle nats.MsgHandler) {
	t.Helper()
	sub, err := b.js.Conn().Subscribe(subject, handle)
	if err == nil {
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = b.js.Conn().Flush()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestSubscriberAcksRateLimited: a subscriber's acknowledgements are passed
// on no faster than its rate, a second's worth at once; those beyond its
// queue are dropped, and the relay says so. The rate is lowered to 500 a
// second (SubscriberAcksPerSecond by default), which a flood outruns on
// any machine; what passes is counted where the relay sends it, in its own
// account.
func TestSubscriberAcksRateLimited(t *testing.T) {
	logs := &eventstest.Log{}
	b := startBusLogging(t, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	const perSecond = 500
	natsbus.SetPassRates(b.e, natsbus.SubscriberRequestsPerSecond, perSecond)
	billing, seed := newSubscriber(t, "billing", "")
	if err := b.e.SetSubscribers([]natsbus.Subscriber{billing}); err != nil {
		t.Fatal(err)
	}
	var passed atomic.Int64
	var tooMany atomic.Value // the first acknowledgement beyond the rate, as an error
	start := time.Now()
	watchRelay(t, b, "$JS.ACK."+events.StreamName+".billing.>", func(*nats.Msg) {
		n, since := passed.Add(1), time.Since(start)
		if allowed := perSecond * (1 + since.Seconds()); float64(n) > allowed {
			tooMany.CompareAndSwap(nil, fmt.Errorf("%d of billing's acknowledgements passed on %v after the flood began, want at most %d", n, since, int64(allowed)))
		}
	})
	c := connectAs(t, b.url, "billing", seed)
	const flood = 40000
	for i := range flood {
		if err := c.nc.Publish(fmt.Sprintf("$JS.ACK.%s.billing.1.%d.%d.0.0", events.StreamName, i+1, i+1), []byte("+ACK")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nc.FlushTimeout(time.Minute); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := passed.Load(); n < 2*perSecond {
			return fmt.Errorf("%d of billing's acknowledgements passed on, want two seconds' worth", n)
		}
		if !strings.Contains(logs.String(), "requests were dropped") {
			return errors.New("the relay did not say that it dropped billing's acknowledgements")
		}
		return nil
	})
	if err, _ := tooMany.Load().(error); err != nil {
		t.Fatal(err)
	}
}

// TestOneSubscriberAPIRequestAtATime: of all subscribers' JetStream API
// requests, one at a time is in JetStream's API queue, so that the relay's
// own requests keep a worker there. Two subscribers ask for their
// consumers' info at once; the relay's account is watched on one
// subscription (whose messages arrive in the order the server sent them)
// for each request the relay asks for them and its answer. (The server
// may hand JetStream a request, and the watch its answer, before it hands
// the watch the request: such an answer is matched when its request
// comes.)
func TestOneSubscriberAPIRequestAtATime(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, billing, audit)
	var mu sync.Mutex
	asked := map[string]bool{} // the replies of requests whose answer has not come
	early := map[string]bool{} // answers that came before their request
	most, answered := 0, 0
	infos := "$JS.API.CONSUMER.INFO." + events.StreamName + "."
	watchRelay(t, b, ">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(m.Subject, infos) && m.Reply != "":
			if early[m.Reply] {
				delete(early, m.Reply)
				answered++
				return
			}
			asked[m.Reply] = true
			most = max(most, len(asked))
		case asked[m.Subject]:
			delete(asked, m.Subject)
			answered++
		case strings.HasPrefix(m.Subject, "_INBOX."):
			early[m.Subject] = true
		}
	})
	const each = 200
	var wg sync.WaitGroup
	for _, s := range []struct{ name, seed string }{{"billing", billingSeed}, {"audit", auditSeed}} {
		c := connectAs(t, b.url, s.name, s.seed)
		wg.Go(func() {
			for i := range each {
				if err := c.nc.PublishRequest(infos+s.name, fmt.Sprintf("%s.info.%d", natsbus.InboxPrefix(s.name), i), nil); err != nil {
					t.Error(err)
					return
				}
			}
			if err := c.nc.Flush(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if answered < 2*each {
			return fmt.Errorf("%d of %d requests answered; waiting: %v", answered, 2*each, asked)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Fatalf("%d subscriber requests were in JetStream's API queue at once, want one at a time", most)
	}
}

// TestLongRequestLineCutsOnlyItsSender: a subscriber's request whose
// protocol line is as long as the server allows, and which the relay
// passes on with a longer one (its body re-encoded one digit longer),
// cuts at most that subscriber's own passing, not another subscriber's
// requests.
func TestLongRequestLineCutsOnlyItsSender(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "scimrelay.acme.>")
	b := startBus(t, billing, audit)
	attacker := connectAs(t, b.url, "billing", billingSeed)
	ac := connectAs(t, b.url, "audit", auditSeed)
	cons := ac.consumer(t, "audit")
	if _, err := cons.Info(t.Context()); err != nil {
		t.Fatalf("audit's consumer info before: %v", err)
	}

	// 33 bytes; encoding/json writes each & as \u0026: 103 bytes.
	body := []byte(`{"last_by_subj":"` + strings.Repeat("&", 14) + `"}`)
	reply := natsbus.InboxPrefix("billing") + ".x"
	prefix := "$JS.API.DIRECT.GET." + events.StreamName + ".scimrelay."
	// The PUB line's arguments: subject, reply, size; 4096 at most.
	tail := 4096 - len(prefix) - len(" "+reply+" 33")
	subject := prefix + strings.Repeat("a", tail)
	if n := len(subject + " " + reply + " 33"); n != 4096 {
		t.Fatalf("line %d", n)
	}

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			if attacker.nc.PublishRequest(subject, reply, body) != nil {
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
		}
	})
	for i := range 10 {
		cctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := cons.Info(cctx)
		cancel()
		if err != nil {
			t.Fatalf("audit's consumer info %d while billing sends long lines: %v", i, err)
		}
	}
	if !attacker.nc.IsConnected() {
		t.Log("the attacker's own connection was cut")
	}
}

// TestDirectGetFloodDelaysOnlyItsSender: a subscriber's direct gets of
// a thousand events each, as many as it is allowed, do not hold up
// another subscriber's requests.
func TestDirectGetFloodDelaysOnlyItsSender(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "scimrelay.acme.>")
	b := startBus(t, billing, audit)
	publishUsers(t, b, 3000)
	flooders := []*client{connectAs(t, b.url, "billing", billingSeed), connectAs(t, b.url, "billing", billingSeed)}
	ac := connectAs(t, b.url, "audit", auditSeed)
	cons := ac.consumer(t, "audit")
	quiet := time.Duration(0)
	for range 5 {
		start := time.Now()
		if _, err := cons.Info(t.Context()); err != nil {
			t.Fatal(err)
		}
		quiet = max(quiet, time.Since(start))
	}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	body := []byte(`{"seq":1,"batch":1000}`)
	reply := natsbus.InboxPrefix("billing") + ".x"
	for _, f := range flooders {
		wg.Go(func() {
			for ctx.Err() == nil {
				for range 100 {
					if f.nc.PublishRequest("$JS.API.DIRECT.GET.SCIMRELAY", reply, body) != nil {
						return
					}
				}
				_ = f.nc.Flush()
			}
		})
	}
	worst := time.Duration(0)
	for i := range 20 {
		start := time.Now()
		cctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := cons.Info(cctx)
		cancel()
		if err != nil {
			t.Fatalf("audit's consumer info %d during billing's direct gets: %v", i, err)
		}
		worst = max(worst, time.Since(start))
	}
	// And its events: a pull, and the acknowledgement of what it gives.
	for i := range 5 {
		start := time.Now()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, ok := <-batch.Messages()
		if !ok {
			t.Fatalf("audit's pull %d during billing's direct gets: no event in %v (%v)", i, time.Since(start), batch.Error())
		}
		if err := m.DoubleAck(t.Context()); err != nil {
			t.Fatalf("audit's acknowledgement %d during billing's direct gets: %v", i, err)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("audit's consumer info at most %v quiet; its requests at most %v during billing's direct gets", quiet, worst)
}

// TestLargeEventMessageGetIsAnswered: README lets events up to NATS's
// max_payload be stored, and a subscriber without --subjects read them
// with message gets, which the relay asks JetStream for and passes the
// answer on: JetStream's answer holds the event in base64 in JSON, 4/3 of
// its size, and past about 6 MiB it did not fit a NATS message; the
// publish failed unseen and the client waited for its timeout. It is now
// answered with an error that says to use a direct get.
func TestLargeEventMessageGetIsAnswered(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	ack, err := b.js.Publish(t.Context(), events.Subject("acme", events.UserCreated, "big"), make([]byte, 6<<20))
	if err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, b.url, "billing", seed)
	res, err := c.nc.Request("$JS.API.STREAM.MSG.GET.SCIMRELAY", fmt.Appendf(nil, `{"seq":%d}`, ack.Sequence), 10*time.Second)
	if err != nil {
		t.Fatalf("message get of a 6 MiB event: %v", err)
	}
	if !strings.Contains(string(res.Data), `"code":413`) || !strings.Contains(string(res.Data), "direct get") {
		t.Fatalf("message get of a 6 MiB event answered %.300s, want a 413 saying to use a direct get", res.Data)
	}
	// A direct get reads it.
	msg, err := c.js.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := msg.GetMsg(t.Context(), ack.Sequence); err != nil || len(got.Data) != 6<<20 {
		t.Fatalf("a direct get of the 6 MiB event: %v", err)
	}
}
