// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
)

// bus is an embedded server as the relay runs it: the relay's connection,
// the SCIMRELAY stream with one event per tenant and kind, a sink's
// consumer and key-value bucket, and a dead-letter stream.
type bus struct {
	e   *natsbus.Embedded
	js  jetstream.JetStream
	url string
}

func startBus(t testing.TB, subscribers ...natsbus.Subscriber) *bus {
	t.Helper()
	return startBusLogging(t, slog.New(slog.DiscardHandler), subscribers...)
}

// startBusLogging is startBus with the relay's log going to log.
func startBusLogging(t testing.TB, log *slog.Logger, subscribers ...natsbus.Subscriber) *bus {
	t.Helper()
	e, js := natsbustest.Start(t, natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: t.TempDir()}, log, subscribers...)
	ctx := t.Context()
	for _, subject := range []string{events.Subject("acme", events.UserCreated, "u1"), events.Subject("acme", events.GroupCreated, "g1"), events.Subject("globex", events.UserCreated, "u2")} {
		if _, err := js.Publish(ctx, subject, []byte(`{"subject":"`+subject+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "scimrelay-sink-crm-P0", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "scimrelay-parked-crm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCIMRELAY_DLQ", Subjects: []string{"scimrelay-dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	return &bus{e: e, js: js, url: e.ClientURL()}
}

// newSubscriber returns a subscriber with a fresh key pair and its seed file.
func newSubscriber(t testing.TB, name, subjects string) (natsbus.Subscriber, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	path := filepath.Join(t.TempDir(), name+".nk")
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return natsbus.Subscriber{Name: name, PublicKey: pub, Subjects: subjects}, path
}

// client is a subscriber's connection that records the server's
// permission refusals.
type client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	refused chan error
}

func connectAs(t testing.TB, url, name, seedFile string) *client {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{refused: make(chan error, 100)}
	c.nc, err = nats.Connect(url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix(name)), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.refused <- err
			}
		}))
	if err != nil {
		t.Fatalf("connecting as %s: %v", name, err)
	}
	t.Cleanup(c.nc.Close)
	c.js, _ = jetstream.New(c.nc)
	return c
}

// consumer binds to the subscriber's consumer, which the relay made.
func (c *client) consumer(t testing.TB, name string) jetstream.Consumer {
	t.Helper()
	cons, err := c.js.Consumer(t.Context(), events.StreamName, name)
	if err != nil {
		t.Fatalf("binding to the consumer %s: %v", name, err)
	}
	return cons
}

// wantRefused runs what and checks that the server refused it with a
// permissions error naming subject.
func (c *client) wantRefused(t *testing.T, subject string, what func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := what(ctx); err == nil {
		t.Fatalf("%s was allowed", subject)
	}
	select {
	case err := <-c.refused:
		if !strings.Contains(err.Error(), subject) {
			t.Fatalf("refused %v, want a refusal of %s", err, subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no permissions violation for %s", subject)
	}
}

// TestEmbeddedRefusesUnauthenticated: a client without a credential the
// server knows is refused, and said at Warn, not Error: the client's
// mistake, as a SCIM 401 is (a subscriber cut off with its tenant retries
// every few seconds). Refusals after the first of their kind within a
// minute are said at Debug (TestNATSLoggerHoldsRepeatsAcrossConnections).
func TestEmbeddedRefusesUnauthenticated(t *testing.T) {
	var logs eventstest.Log
	b := startBusLogging(t, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	stranger, seed := newSubscriber(t, "stranger", "") // a valid nkey the server does not know
	for name, opts := range map[string][]nats.Option{
		"no credential": nil,
		"user/password": {nats.UserInfo("scimrelay", "scimrelay")},
		"token":         {nats.Token("scimrelay")},
		"unknown nkey":  {must(nats.NkeyOptionFromSeed(seed))},
	} {
		nc, err := nats.Connect(b.url, append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected", name)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("%s: %v, want an authorization violation", name, err)
		}
	}
	_ = stranger
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n, all := strings.Count(logs.String(), "level=WARN msg=\""), strings.Count(logs.String(), "authentication error"); n < 1 || all < 4 {
			return fmt.Errorf("%d refusals said at Warn, %d at all, want 4:\n%s", n, all, logs.String())
		}
		return nil
	})
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a refused client is said at Error:\n%s", logs.String())
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// request sends a raw JetStream API request, as a hand-written client would.
func (c *client) request(subject, body string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.nc.RequestWithContext(ctx, subject, []byte(body))
		return err
	}
}

func (c *client) publish(subject string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := c.nc.Publish(subject, []byte(`{"forged":true}`)); err != nil {
			return err
		}
		// A refused publish is reported asynchronously; a flush round trip
		// makes sure the server has seen it. The publish itself "succeeds".
		if err := c.nc.FlushWithContext(ctx); err != nil {
			return err
		}
		return errors.New("published (the refusal comes asynchronously)")
	}
}

// TestSubscriberCannotForgeOrTamper: a subscriber reads its events, and
// every attempt to publish an event, change a stream, a key-value bucket or
// another consumer, or listen on another client's inbox is refused with a
// permissions error, leaving the stream as it was.
func TestSubscriberCannotForgeOrTamper(t *testing.T) {
	sub, seed := newSubscriber(t, "billing", "")
	b := startBus(t, sub)
	c := connectAs(t, b.url, "billing", seed)
	ctx := t.Context()

	// What it may do: its own consumer, reading and acknowledging.
	got := fetchAll(t, c.consumer(t, "billing"), 3)
	if len(got) != 3 {
		t.Fatalf("read %v", got)
	}
	if _, err := c.js.Stream(ctx, events.StreamName); err != nil {
		t.Fatalf("stream info: %v", err)
	}

	const sinkConsumer = "scimrelay-sink-crm-P0"
	tests := []struct {
		name, subject string
		what          func(ctx context.Context) error
	}{
		{"publish an event", "scimrelay.acme.user.deleted", c.publish("scimrelay.acme.user.deleted")},
		{"publish an event through JetStream", "scimrelay.acme.user.deleted", func(ctx context.Context) error {
			_, err := c.js.Publish(ctx, "scimrelay.acme.user.deleted", []byte(`{}`))
			return err
		}},
		{"purge the stream", "$JS.API.STREAM.PURGE.SCIMRELAY", c.request("$JS.API.STREAM.PURGE.SCIMRELAY", `{}`)},
		{"delete the stream", "$JS.API.STREAM.DELETE.SCIMRELAY", func(ctx context.Context) error { return c.js.DeleteStream(ctx, events.StreamName) }},
		{"edit the stream", "$JS.API.STREAM.UPDATE.SCIMRELAY", func(ctx context.Context) error {
			_, err := c.js.UpdateStream(ctx, jetstream.StreamConfig{Name: events.StreamName, Subjects: []string{"scimrelay.>"}, MaxAge: time.Second})
			return err
		}},
		{"delete an event", "$JS.API.STREAM.MSG.DELETE.SCIMRELAY", c.request("$JS.API.STREAM.MSG.DELETE.SCIMRELAY", `{"seq":1}`)},
		{"delete the dead-letter stream", "$JS.API.STREAM.DELETE.SCIMRELAY_DLQ", func(ctx context.Context) error { return c.js.DeleteStream(ctx, "SCIMRELAY_DLQ") }},
		{"write a sink's bucket", "$KV.scimrelay-parked-crm.cursor", c.publish("$KV.scimrelay-parked-crm.cursor")},
		// What a tenant's purge tells the delivery workers: written, it
		// would have them drop another tenant's events.
		{"announce a purge", "scimrelay-workers._purged.acme.99", c.publish("scimrelay-workers._purged.acme.99")},
		{"delete a sink's bucket", "$JS.API.STREAM.DELETE.KV_scimrelay-parked-crm", func(ctx context.Context) error { return c.js.DeleteKeyValue(ctx, "scimrelay-parked-crm") }},
		{"edit a sink's consumer", "$JS.API.CONSUMER.CREATE.SCIMRELAY." + sinkConsumer, func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: sinkConsumer, FilterSubjects: []string{"x.>", "y.>"}, AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}},
		{"pull a sink's events", "$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY." + sinkConsumer, c.request("$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY."+sinkConsumer, `{"batch":1}`)},
		{"acknowledge a sink's event", "$JS.ACK.SCIMRELAY." + sinkConsumer, c.publish("$JS.ACK.SCIMRELAY." + sinkConsumer + ".1.1.1.0.0")},
		{"delete a sink's consumer", "$JS.API.CONSUMER.DELETE.SCIMRELAY." + sinkConsumer, func(ctx context.Context) error { return c.js.DeleteConsumer(ctx, events.StreamName, sinkConsumer) }},
		{"delete its own consumer", "$JS.API.CONSUMER.DELETE.SCIMRELAY.billing", func(ctx context.Context) error { return c.js.DeleteConsumer(ctx, events.StreamName, "billing") }},
		{"create a second consumer", "$JS.API.CONSUMER.CREATE.SCIMRELAY.billing-2", func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing-2"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { c.wantRefused(t, tt.subject, tt.what) })
	}
	t.Run("listen on other inboxes", func(t *testing.T) {
		c.wantRefused(t, `Subscription to "_INBOX.>"`, func(ctx context.Context) error {
			if _, err := c.nc.SubscribeSync("_INBOX.>"); err != nil {
				return err
			}
			_ = c.nc.FlushWithContext(ctx)
			return errors.New("subscribed (the refusal comes asynchronously)")
		})
	})

	// Nothing changed: the stream holds the three events, the sink's
	// consumer and bucket are as they were.
	info, err := b.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 3 {
		t.Fatalf("the stream holds %d events, want the 3 the relay wrote", n)
	}
	ci, err := b.js.Consumer(ctx, events.StreamName, sinkConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if i := ci.CachedInfo(); i.Delivered.Consumer != 0 || i.Config.FilterSubject != "" || len(i.Config.FilterSubjects) != 0 {
		t.Fatalf("the sink's consumer changed: %+v", i)
	}
	kv, err := b.js.KeyValue(ctx, "scimrelay-parked-crm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "cursor"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the sink's bucket has a cursor key: %v", err)
	}
}

// fetchAll reads up to want messages, acknowledging each, and returns their subjects.
func fetchAll(t *testing.T, cons jetstream.Consumer, want int) []string {
	t.Helper()
	batch, err := cons.Fetch(want+1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for m := range batch.Messages() {
		subjects = append(subjects, m.Subject())
		if err := m.DoubleAck(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		t.Fatal(err)
	}
	return subjects
}

// TestSubscriberLimitedToSubjects: a subscriber limited to one tenant's
// user events reads those, and every way to read others is refused.
func TestSubscriberLimitedToSubjects(t *testing.T) {
	sub, seed := newSubscriber(t, "acme-users", "scimrelay.acme.user.>")
	star, starSeed := newSubscriber(t, "acme-star", "scimrelay.acme.user.*.*.*")
	b := startBus(t, sub, star)
	c := connectAs(t, b.url, "acme-users", seed)
	ctx := t.Context()

	if got := fetchAll(t, c.consumer(t, "acme-users"), 1); len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.UserCreated, "u1")+".") {
		t.Fatalf("read %v, want acme's user event only", got)
	}
	// A creation asking for another filter than its consumer's is answered
	// with an error, and changes nothing.
	const create = "$JS.API.CONSUMER.CREATE.SCIMRELAY.acme-users"
	for name, cfg := range map[string]jetstream.ConsumerConfig{
		"a wider filter":    {Durable: "acme-users", FilterSubject: "scimrelay.acme.>"},
		"another tenant":    {Durable: "acme-users", FilterSubject: "scimrelay.globex.user.>"},
		"a wildcard tenant": {Durable: "acme-users", FilterSubject: "scimrelay.*.user.>"},
		"no filter":         {Durable: "acme-users"},
		"several filters":   {Durable: "acme-users", FilterSubjects: []string{"scimrelay.acme.user.>", "scimrelay.globex.>"}},
	} {
		if _, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, cfg); err == nil || !strings.Contains(err.Error(), "the relay manages this consumer") {
			t.Errorf("a creation with %s: %v, want it refused", name, err)
		}
	}
	res, err := c.nc.Request("$JS.API.CONSUMER.DURABLE.CREATE.SCIMRELAY.acme-users", []byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"acme-users","ack_policy":"explicit"}}`), 5*time.Second)
	if err != nil || !strings.Contains(string(res.Data), "the relay manages this consumer") {
		t.Errorf("the legacy durable create without a filter: %v", err)
	}
	tests := []struct {
		name, subject string
		what          func(ctx context.Context) error
	}{
		{"a direct get", "$JS.API.DIRECT.GET.SCIMRELAY", c.request("$JS.API.DIRECT.GET.SCIMRELAY", `{"seq":3}`)},
		{"a direct get by subject", "$JS.API.DIRECT.GET.SCIMRELAY.scimrelay.globex.user.created", c.request("$JS.API.DIRECT.GET.SCIMRELAY.scimrelay.globex.user.created", ``)},
		{"a stored message get", "$JS.API.STREAM.MSG.GET.SCIMRELAY", c.request("$JS.API.STREAM.MSG.GET.SCIMRELAY", `{"seq":3}`)},
		{"stream info with subjects", "$JS.API.STREAM.INFO.SCIMRELAY", c.request("$JS.API.STREAM.INFO.SCIMRELAY", `{"subjects_filter":">"}`)},
		{"a core subscription", `Subscription to "scimrelay.>"`, func(ctx context.Context) error {
			if _, err := c.nc.SubscribeSync("scimrelay.>"); err != nil {
				return err
			}
			_ = c.nc.FlushWithContext(ctx)
			return errors.New("subscribed (the refusal comes asynchronously)")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { c.wantRefused(t, tt.subject, tt.what) })
	}
	t.Run("a filter in the subject that the body contradicts", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		res, err := c.nc.RequestWithContext(ctx, create+".scimrelay.acme.user.>",
			[]byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"acme-users","filter_subject":"scimrelay.>","ack_policy":"explicit"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(res.Data), `"error"`) {
			t.Fatalf("the server accepted a filter other than the permitted one: %s", res.Data)
		}
	})
	// A pattern of wildcards is its consumer's filter as it is.
	sc := connectAs(t, b.url, "acme-star", starSeed)
	if got := fetchAll(t, sc.consumer(t, "acme-star"), 1); len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.UserCreated, "u1")+".") {
		t.Fatalf("read %v", got)
	}
}

// TestSubscribersChangeWithoutRestart: a subscriber added to the running
// server connects at once; removing it closes its live connection and
// refuses the next.
func TestSubscribersChangeWithoutRestart(t *testing.T) {
	b := startBus(t)
	sub, seed := newSubscriber(t, "billing", "")
	opt := must(nats.NkeyOptionFromSeed(seed))
	if nc, err := nats.Connect(b.url, opt, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected before being added")
	}
	if err := b.e.SetSubscribers([]natsbus.Subscriber{sub}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc, err := nats.Connect(b.url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix("billing")), nats.MaxReconnects(0), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatalf("connecting after being added: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Consumer(t.Context(), events.StreamName, "billing"); err != nil {
		t.Fatalf("its consumer, made as it was added: %v", err)
	}
	if err := b.e.SetSubscribers(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the removed subscriber's connection stayed open")
	}
	if nc, err := nats.Connect(b.url, opt, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected after being removed")
	}
	// The relay's own connection was not disturbed.
	if _, err := b.js.Stream(t.Context(), events.StreamName); err != nil {
		t.Fatalf("the relay lost its connection: %v", err)
	}
}

// TestSubscriberRemovedWhileConnecting: connections the subscriber opens
// while it is being removed do not survive the removal. The server admits
// a client in two steps (its key is looked up, then its connection is
// recorded for a later removal to close), and a removal between the two
// used to miss the new connection, which kept its permissions.
func TestSubscriberRemovedWhileConnecting(t *testing.T) {
	sub, seed := newSubscriber(t, "billing", "scimrelay.acme.user.>")
	b := startBus(t)
	opt := must(nats.NkeyOptionFromSeed(seed))
	for trial := 0; trial < 20; trial++ {
		if err := b.e.SetSubscribers([]natsbus.Subscriber{sub}); err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			conns []*nats.Conn
			stop  atomic.Bool
			wg    sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					nc, err := nats.Connect(b.url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix("billing")), nats.MaxReconnects(0))
					if err != nil {
						continue
					}
					mu.Lock()
					conns = append(conns, nc)
					mu.Unlock()
				}
			})
		}
		made := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
		eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
			if n := made(); n < 20 {
				return fmt.Errorf("%d connections so far", n)
			}
			return nil
		})
		if err := b.e.SetSubscribers(nil); err != nil {
			t.Fatal(err)
		}
		stop.Store(true)
		wg.Wait()
		eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			for _, nc := range conns {
				if !nc.IsClosed() {
					return fmt.Errorf("trial %d: a connection of the removed subscriber is still open (of %d made)", trial, len(conns))
				}
			}
			return nil
		})
	}
}

// TestSubscriberReadsStoreOfEarlierRun: events a relay stored before this
// run (before subscribers had accounts of their own, the relay's account is
// the same global one) are there for a subscriber after a restart.
func TestSubscriberReadsStoreOfEarlierRun(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	start := func(subscribers ...natsbus.Subscriber) (*natsbus.Embedded, jetstream.JetStream) {
		e, err := natsbus.StartEmbedded(natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: dir}, subscribers, log)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := natsbus.Connect(natsbus.Options{}, e, log)
		if err != nil {
			e.Shutdown()
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close(); e.Shutdown() })
		js, _ := jetstream.New(nc)
		return e, js
	}
	e, js := start()
	ctx := t.Context()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, log); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.Subject("acme", events.UserCreated, "u1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	js.Conn().Close()
	e.Shutdown()

	sub, seed := newSubscriber(t, "billing", "scimrelay.acme.user.>")
	e, _ = start(sub)
	c := connectAs(t, e.ClientURL(), "billing", seed)
	if got := fetchAll(t, c.consumer(t, "billing"), 1); len(got) != 1 {
		t.Fatalf("read %v, want the event of the earlier run", got)
	}
}

// TestSubscriberConnectionsLimited: a subscriber's key holds at most
// natsbus.MaxSubscriberConns connections; the next is refused, and
// another subscriber still connects. One key used to open connections
// until the relay's process ran out of file descriptors.
func TestSubscriberConnectionsLimited(t *testing.T) {
	if natsbus.MaxSubscriberConns != 64 {
		t.Fatalf("a subscriber's key holds %d connections; README (Events) says 64", natsbus.MaxSubscriberConns)
	}
	billing, billingSeed := newSubscriber(t, "billing", "scimrelay.acme.>")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, billing, audit)
	opt := must(nats.NkeyOptionFromSeed(billingSeed))
	connect := func() (*nats.Conn, error) {
		return nats.Connect(b.url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix("billing")), nats.NoReconnect())
	}
	conns := make([]*nats.Conn, 0, natsbus.MaxSubscriberConns)
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	for i := range natsbus.MaxSubscriberConns {
		nc, err := connect()
		if err != nil {
			t.Fatalf("billing's connection %d: %v", i+1, err)
		}
		conns = append(conns, nc)
	}
	if nc, err := connect(); err == nil {
		nc.Close()
		t.Fatalf("billing's connection %d was admitted", natsbus.MaxSubscriberConns+1)
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("billing's connection %d: %v, want an authorization violation", natsbus.MaxSubscriberConns+1, err)
	}
	connectAs(t, b.url, "audit", auditSeed)
	// A connection closed frees its place.
	conns[0].Close()
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		nc, err := connect()
		if err != nil {
			return err
		}
		conns[0] = nc
		return nil
	})
}

// TestEmbeddedListenOnPortZero: nats.listen with port 0 listens on a port
// of the system's choosing, as listen and admin_listen do, and as check
// takes it ("port 0 is always free"): not nats-server's default 4222, so
// two relays (or a relay beside anything on 4222) can both use it.
func TestEmbeddedListenOnPortZero(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0"} {
		if ln, err := net.Listen("tcp", listen); err != nil {
			t.Logf("%s: %v; not tried", listen, err) // a machine without IPv6
			continue
		} else {
			ln.Close()
		}
		var urls []string
		for i := range 2 {
			e, err := natsbus.StartEmbedded(natsbus.Options{Listen: listen, StoreDir: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Errorf("%s, server %d: %v (first at %v)", listen, i+1, err, urls)
				continue
			}
			t.Cleanup(e.Shutdown)
			urls = append(urls, e.ClientURL())
			if _, port, _ := net.SplitHostPort(strings.TrimPrefix(e.ClientURL(), "nats://")); port == "4222" {
				t.Errorf("%s: listening on %s, nats-server's default port", listen, e.ClientURL())
			}
		}
	}
}

// A subscriber connects to the URL the relay prints for it (ClientURL,
// which `scimrelay subscriber add` and the admin API give), whatever
// zone nats.listen's IPv6 address carries.
func TestClientURLWithAZone(t *testing.T) {
	var listens []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && n.IP.IsLinkLocalUnicast() {
				listens = append(listens, "["+n.IP.String()+"%"+i.Name+"]:0")
			}
		}
	}
	listens = append(listens, "[::1%lo]:0")
	for _, listen := range listens {
		if ln, err := net.Listen("tcp", listen); err != nil {
			t.Logf("%s: %v; not tried", listen, err)
			continue
		} else {
			ln.Close()
		}
		sub, seed := newSubscriber(t, "billing", "")
		e, err := natsbus.StartEmbedded(natsbus.Options{Listen: listen, StoreDir: t.TempDir()}, []natsbus.Subscriber{sub}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%s: %v", listen, err)
		}
		t.Cleanup(e.Shutdown)
		nkey, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(e.ClientURL(), nkey, nats.CustomInboxPrefix(natsbus.InboxPrefix("billing")), nats.MaxReconnects(0))
		if err != nil {
			t.Errorf("nats.listen %s: a subscriber cannot connect to the URL it is given, %s: %v", listen, e.ClientURL(), err)
			continue
		}
		nc.Close()
	}
}
