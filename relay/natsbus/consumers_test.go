// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// wantRelaySettings fails unless cfg is the consumer the relay keeps for a
// subscriber filtered on filter.
func wantRelaySettings(t *testing.T, cfg jetstream.ConsumerConfig, filter string) {
	t.Helper()
	if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.FilterSubject != filter || len(cfg.FilterSubjects) != 0 ||
		cfg.AckWait != 30*time.Second || cfg.MaxDeliver != -1 || cfg.MaxAckPending != 1000 ||
		cfg.MaxWaiting != 512 || cfg.MaxRequestBatch != 10000 || cfg.MaxRequestMaxBytes != 64<<20 ||
		cfg.MaxRequestExpires != 110*time.Second || cfg.ReplayPolicy != jetstream.ReplayInstantPolicy ||
		cfg.InactiveThreshold != 0 || cfg.DeliverSubject != "" || len(cfg.BackOff) != 0 || cfg.Durable == "" || cfg.PauseUntil != nil ||
		cfg.Metadata[resetMarker] != "" {
		t.Fatalf("the consumer is not the relay's (filter %q): %+v", filter, cfg)
	}
}

// resetMarker is the metadata key of a consumer whose reset to its
// acknowledgement floor is owed.
const resetMarker = "scimrelay_reset"

// TestManagedConsumer: adding a subscriber makes its consumer, with the
// relay's settings, starting from every event the stream holds (--from
// all, the default) or from the events stored after the add (--from new).
func TestManagedConsumer(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	all, allSeed := newSubscriber(t, "audit", "scimrelay.acme.>")
	fresh, freshSeed := newSubscriber(t, "billing", "")
	fresh.From = natsbus.FromNew
	if err := b.e.SetSubscribers([]natsbus.Subscriber{all, fresh}); err != nil {
		t.Fatal(err)
	}
	for name, filter := range map[string]string{"audit": "scimrelay.acme.>", "billing": ""} {
		cons, err := b.js.Consumer(ctx, events.StreamName, name)
		if err != nil {
			t.Fatalf("%s's consumer: %v", name, err)
		}
		wantRelaySettings(t, cons.CachedInfo().Config, filter)
	}
	later := events.Subject("acme", events.UserCreated, "u9")
	if _, err := b.js.Publish(ctx, later, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, connectAs(t, b.url, "audit", allSeed).consumer(t, "audit"), 3); len(got) != 3 {
		t.Fatalf("--from all read %v, want acme's two earlier events and the later one", got)
	}
	if got := fetchAll(t, connectAs(t, b.url, "billing", freshSeed).consumer(t, "billing"), 1); len(got) != 1 || !strings.HasPrefix(got[0], later+".") {
		t.Fatalf("--from new read %v, want only the event stored after the add", got)
	}
}

// TestNarrowedSubscriberKeepsItsPosition: a subscriber added again with
// other subjects (and a new key) keeps its consumer: the filter is
// updated in place, and what it acknowledged before is not delivered
// again.
func TestNarrowedSubscriberKeepsItsPosition(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	ctx := t.Context()
	if got := fetchAll(t, connectAs(t, b.url, "billing", seed).consumer(t, "billing"), 3); len(got) != 3 {
		t.Fatalf("read %v", got)
	}
	narrowed, narrowedSeed := newSubscriber(t, "billing", "scimrelay.acme.>")
	if err := b.e.SetSubscribers([]natsbus.Subscriber{narrowed}); err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{events.Subject("globex", events.UserCreated, "u8"), events.Subject("acme", events.UserCreated, "u9")} {
		if _, err := b.js.Publish(ctx, subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	cons := connectAs(t, b.url, "billing", narrowedSeed).consumer(t, "billing")
	wantRelaySettings(t, cons.CachedInfo().Config, "scimrelay.acme.>")
	if got := fetchAll(t, cons, 1); len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.UserCreated, "u9")+".") {
		t.Fatalf("after the narrowing read %v, want acme's new event only", got)
	}
}

// TestNarrowingForgetsWhatWasUnacknowledged: what the subscriber's old key
// was delivered under a wider filter and did not acknowledge does not
// come to its new key. JetStream keeps it pending across the update of
// the filter and redelivers it after ack_wait without looking at the new
// one (an attack round's new key, limited to acme's users, read globex's
// events 30 s after the narrowing); the relay resets the consumer to its
// acknowledgement floor, so that nothing is pending, and delivers again
// from there what the new filter matches.
func TestNarrowingForgetsWhatWasUnacknowledged(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	deliverUnacknowledged(t, b, seed)
	narrowForgets(t, b)
}

// TestOwedResetDone: a reset to the acknowledgement floor owed since a
// filter changed is done at the next change of subscribers, although the
// filter is by then the wanted one. The relay marks it owed in the update
// that changes the filter; here the update was done and the reset after
// it failed (they shared one 5 s deadline), which once left what the
// wide key was delivered pending for good, redelivered to the narrowed
// key after ack_wait.
func TestOwedResetDone(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "")
	b := startBus(t, billing)
	ctx := t.Context()
	deliverUnacknowledged(t, b, seed)
	// The relay's update of the filter, made as the relay, and no reset.
	cons, err := b.js.Consumer(ctx, events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.FilterSubject, cfg.Metadata = "scimrelay.acme.user.>", map[string]string{resetMarker: "pending"}
	if _, err := b.js.UpdateConsumer(ctx, events.StreamName, cfg); err != nil {
		t.Fatal(err)
	}
	narrowForgets(t, b)
}

// deliverUnacknowledged has billing, reading every event with the key of
// seed, read the stream's three without acknowledging them.
func deliverUnacknowledged(t *testing.T, b *bus, seed string) {
	t.Helper()
	batch, err := connectAs(t, b.url, "billing", seed).consumer(t, "billing").Fetch(3, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range batch.Messages() {
		n++ // and not acknowledged
	}
	if n != 3 {
		t.Fatalf("the wide key read %d events, want 3", n)
	}
}

// narrowForgets narrows billing to acme's users with a new key, and fails
// unless its consumer then has nothing pending, carries no mark of a
// reset owed, and delivers acme's user event, which was not acknowledged.
func narrowForgets(t *testing.T, b *bus) {
	t.Helper()
	narrowed, narrowedSeed := newSubscriber(t, "billing", "scimrelay.acme.user.>")
	if err := b.e.SetSubscribers([]natsbus.Subscriber{narrowed}); err != nil {
		t.Fatal(err)
	}
	cons, err := b.js.Consumer(t.Context(), events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if info := cons.CachedInfo(); info.NumAckPending != 0 || info.NumRedelivered != 0 || info.Delivered.Stream != info.AckFloor.Stream {
		t.Fatalf("after the narrowing %d delivered events are pending (%d redelivered), delivered to stream sequence %d, acknowledged to %d: want nothing pending",
			info.NumAckPending, info.NumRedelivered, info.Delivered.Stream, info.AckFloor.Stream)
	}
	wantRelaySettings(t, cons.CachedInfo().Config, "scimrelay.acme.user.>") // the reset done, its mark cleared
	got := fetchAll(t, connectAs(t, b.url, "billing", narrowedSeed).consumer(t, "billing"), 1)
	if len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.UserCreated, "u1")+".") {
		t.Fatalf("after the narrowing read %v, want acme's user event, which the old key did not acknowledge", got)
	}
}

// TestFailedUpdateKeepsTheConsumer: an update JetStream refuses for a
// reason other than a setting it cannot update (here a limit of the
// relay's account; as well JetStream unavailable, out of resources, a
// store failing) leaves the consumer and its position as they are: the
// subscriber is not admitted, and the change says so. Once the update
// goes through, the subscriber reads on from where it was. The relay
// used to delete the consumer on any error JetStream answered, and make
// it anew from where --from says, losing the position.
func TestFailedUpdateKeepsTheConsumer(t *testing.T) {
	billing, seed := newSubscriber(t, "billing", "scimrelay.acme.>")
	b := startBus(t, billing)
	ctx := t.Context()
	m, err := connectAs(t, b.url, "billing", seed).consumer(t, "billing").Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil || !strings.HasPrefix(m.Subject(), events.Subject("acme", events.UserCreated, "u1")+".") {
		t.Fatalf("read %s: %v", m.Subject(), err)
	}
	// The relay's account allowing at most 100 unacknowledged messages a
	// consumer, below the relay's 1,000: err_code 10121. (A stream's
	// consumer limits cannot be lowered below its consumers'.)
	relayAccount := b.e.Server().GlobalAccount()
	if err := relayAccount.UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1, MaxAckPending: 100},
	}); err != nil {
		t.Fatal(err)
	}
	again, againSeed := newSubscriber(t, "billing", "scimrelay.acme.>")
	err = b.e.SetSubscribers([]natsbus.Subscriber{again})
	if err == nil || !strings.Contains(err.Error(), "subscriber billing not admitted") || !strings.Contains(err.Error(), "err_code=10121") {
		t.Fatalf("a change whose update JetStream refused: %v", err)
	}
	cons, err := b.js.Consumer(ctx, events.StreamName, "billing")
	if err != nil {
		t.Fatalf("its consumer after the refused update: %v", err)
	}
	if info := cons.CachedInfo(); info.AckFloor.Stream != 1 {
		t.Fatalf("its consumer is acknowledged to stream sequence %d, want 1", info.AckFloor.Stream)
	}
	if err := relayAccount.UpdateJetStreamLimits(nil); err != nil { // unlimited
		t.Fatal(err)
	}
	if err := b.e.SetSubscribers([]natsbus.Subscriber{again}); err != nil {
		t.Fatal(err)
	}
	got := fetchAll(t, connectAs(t, b.url, "billing", againSeed).consumer(t, "billing"), 2)
	if len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.GroupCreated, "g1")+".") {
		t.Fatalf("once admitted read %v, want acme's event after the one acknowledged before", got)
	}
}

// TestOldConsumerAdopted: a consumer of a subscriber's name already there
// when it is added (made by the subscriber under an earlier release, with
// its own settings) is adopted: its position is kept and its settings
// become the relay's, and a paused one is resumed (an update leaves its
// pause). One JetStream will not update to them (a push consumer, another
// ack or replay policy) is deleted and made anew, and the relay says so;
// so is an ephemeral one, which the update would leave deleting itself
// once idle, and one started at the last event of each subject, which
// delivered those of every subject after its filter was narrowed.
func TestOldConsumerAdopted(t *testing.T) {
	logs := &eventstest.Log{}
	b := startBusLogging(t, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx := t.Context()
	for _, tt := range []struct {
		name    string
		cfg     jetstream.ConsumerConfig
		adopted bool
	}{
		{"wider, keeping 50,000 unacknowledged", jetstream.ConsumerConfig{Durable: "billing", FilterSubject: "scimrelay.>", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 50000}, true},
		{"redelivering every nanosecond", jetstream.ConsumerConfig{Durable: "billing", FilterSubject: "scimrelay.acme.>", AckPolicy: jetstream.AckExplicitPolicy, BackOff: []time.Duration{1}, MaxDeliver: -1, MaxRequestExpires: time.Hour}, true},
		{"paused for an hour", jetstream.ConsumerConfig{Durable: "billing", FilterSubject: "scimrelay.acme.>", AckPolicy: jetstream.AckExplicitPolicy, PauseUntil: new(time.Now().Add(time.Hour))}, true},
		{"ephemeral", jetstream.ConsumerConfig{Name: "billing", AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Hour}, false},
		{"from the last event of each subject", jetstream.ConsumerConfig{Durable: "billing", DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, FilterSubject: "scimrelay.>", AckPolicy: jetstream.AckExplicitPolicy}, false},
		{"push", jetstream.ConsumerConfig{Durable: "billing", DeliverSubject: "scimrelay-push.billing", AckPolicy: jetstream.AckExplicitPolicy}, false},
		{"acknowledging nothing", jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckNonePolicy}, false},
		{"replaying at the original pace", jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy, ReplayPolicy: jetstream.ReplayOriginalPolicy}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := b.e.SetSubscribers(nil); err != nil {
				t.Fatal(err)
			}
			if err := b.js.DeleteConsumer(ctx, events.StreamName, "billing"); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatal(err)
			}
			// Made as the relay, as a subscriber of an earlier release made
			// it; paused once it has read.
			cfg := tt.cfg
			cfg.PauseUntil = nil
			old, err := b.js.CreateOrUpdateConsumer(ctx, events.StreamName, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.adopted { // read and acknowledge acme's first event
				m, err := old.Next()
				if err != nil {
					t.Fatal(err)
				}
				if err := m.DoubleAck(ctx); err != nil || !strings.HasPrefix(m.Subject(), events.Subject("acme", events.UserCreated, "u1")+".") {
					t.Fatalf("read %s: %v", m.Subject(), err)
				}
			}
			if tt.cfg.PauseUntil != nil {
				if _, err := b.js.PauseConsumer(ctx, events.StreamName, "billing", *tt.cfg.PauseUntil); err != nil {
					t.Fatal(err)
				}
			}
			warned := strings.Count(logs.String(), "cannot take the relay's settings")
			billing, seed := newSubscriber(t, "billing", "scimrelay.acme.>")
			if err := b.e.SetSubscribers([]natsbus.Subscriber{billing}); err != nil {
				t.Fatal(err)
			}
			cons := connectAs(t, b.url, "billing", seed).consumer(t, "billing")
			wantRelaySettings(t, cons.CachedInfo().Config, "scimrelay.acme.>")
			got := fetchAll(t, cons, 2)
			if tt.adopted {
				if len(got) != 1 || !strings.HasPrefix(got[0], events.Subject("acme", events.GroupCreated, "g1")+".") {
					t.Fatalf("the adopted consumer read %v, want acme's event after the one acknowledged before", got)
				}
				return
			}
			if len(got) != 2 {
				t.Fatalf("the consumer made anew read %v, want acme's two events", got)
			}
			if !strings.Contains(logs.String(), "subscriber=billing") || strings.Count(logs.String(), "cannot take the relay's settings") != warned+1 {
				t.Fatalf("the relay did not say why it made billing's consumer anew:\n%s", logs)
			}
		})
	}
}

// TestCreateAnsweredByTheRelay: code written for earlier releases, which
// created the subscriber's consumer, keeps working when it asks for its
// own filter: the relay answers with the consumer it keeps, and ignores
// every other setting asked for. Another filter is refused with a
// description saying how it is changed; deleting the consumer is not
// permitted.
func TestCreateAnsweredByTheRelay(t *testing.T) {
	sub, seed := newSubscriber(t, "acme-users", "scimrelay.acme.user.>")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, sub, audit)
	ctx := t.Context()
	c := connectAs(t, b.url, "acme-users", seed)
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "acme-users", FilterSubject: "scimrelay.acme.user.>",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, AckWait: time.Second})
	if err != nil {
		t.Fatalf("a creation asking for its own filter: %v", err)
	}
	wantRelaySettings(t, cons.CachedInfo().Config, "scimrelay.acme.user.>")
	if got := fetchAll(t, cons, 1); len(got) != 1 {
		t.Fatalf("read %v", got)
	}
	_, err = c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "acme-users", FilterSubject: "scimrelay.acme.user.created.>"})
	if err == nil || !strings.Contains(err.Error(), "the relay manages this consumer: its filter is scimrelay.acme.user.>; change it with scimrelay subscriber add acme-users --replace --subjects ... (which gives it a new key)") {
		t.Fatalf("a creation asking for another filter: %v", err)
	}
	// The same through the older nats.go API, without a filter for the
	// subscriber that reads every event. (It compares what it asks for
	// with the consumer there before it asks, and fails on a difference.)
	ac := connectAs(t, b.url, "audit", auditSeed)
	legacy, err := ac.nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	info, err := legacy.AddConsumer(events.StreamName, &nats.ConsumerConfig{Durable: "audit", AckPolicy: nats.AckExplicitPolicy})
	if err != nil || info.Config.MaxAckPending != 1000 {
		t.Fatalf("the older API's creation: %+v, %v", info, err)
	}
	if _, err := ac.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", MaxAckPending: 1}); err != nil {
		t.Fatalf("a creation without a filter: %v", err)
	}
	// Nothing asked for was applied.
	for name, filter := range map[string]string{"acme-users": "scimrelay.acme.user.>", "audit": ""} {
		got, err := b.js.Consumer(ctx, events.StreamName, name)
		if err != nil {
			t.Fatal(err)
		}
		wantRelaySettings(t, got.CachedInfo().Config, filter)
	}
	c.wantRefused(t, "$JS.API.CONSUMER.DELETE.SCIMRELAY.acme-users", func(ctx context.Context) error {
		return c.js.DeleteConsumer(ctx, events.StreamName, "acme-users")
	})
	if _, err := b.js.Consumer(ctx, events.StreamName, "acme-users"); err != nil {
		t.Fatalf("its consumer after its delete: %v", err)
	}
}

// breakConsumerStore makes JetStream unable to write the settings of the
// consumer name (a directory where its meta.inf goes), as a storage fault
// of that one consumer would.
func breakConsumerStore(t *testing.T, b *bus, name string) {
	t.Helper()
	metas, err := filepath.Glob(filepath.Join(b.e.Server().JetStreamConfig().StoreDir, "*", "streams", events.StreamName, "obs", name, "meta.inf"))
	if err != nil || len(metas) != 1 {
		t.Fatalf("the consumer %s's meta.inf: %v %v", name, metas, err)
	}
	if err := os.Rename(metas[0], metas[0]+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(metas[0], "x"), 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestOneFailingSubscriberRefusesOnlyItself: a subscriber whose consumer
// cannot be updated is refused alone. SetSubscribers says so with its
// NotAdmitted, which does not fail a change of another subscriber; the
// other subscriber reads on; and EnsureConsumers, at a start, refuses it
// and closes its connections rather than stopping the relay.
func TestOneFailingSubscriberRefusesOnlyItself(t *testing.T) {
	good, goodSeed := newSubscriber(t, "good", "")
	bad, badSeed := newSubscriber(t, "bad", "")
	b := startBus(t, good, bad)
	badConn := connectAs(t, b.url, "bad", badSeed)
	closed := make(chan struct{})
	badConn.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	breakConsumerStore(t, b, "bad")

	// At a start: the consumers are made again; bad's cannot be.
	err := b.e.EnsureConsumers()
	var na *natsbus.NotAdmitted
	if !errors.As(err, &na) || na.Name != "bad" || !natsbus.OnlyOthersNotAdmitted(err, "") {
		t.Fatalf("EnsureConsumers with bad's consumer broken: %v; want bad not admitted, and nothing else", err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("bad, not admitted, is still connected")
	}

	// A change of subscribers: bad is refused again, alone.
	narrowed := bad
	narrowed.Subjects = "scimrelay.acme.>"
	err = b.e.SetSubscribers([]natsbus.Subscriber{good, narrowed})
	if !errors.As(err, &na) || na.Name != "bad" || !natsbus.OnlyOthersNotAdmitted(err, "good") || natsbus.OnlyOthersNotAdmitted(err, "bad") {
		t.Fatalf("SetSubscribers with bad's consumer broken: %v; want bad alone not admitted", err)
	}
	publishUsers(t, b, 1)
	gc := connectAs(t, b.url, "good", goodSeed)
	msgs, err := gc.consumer(t, "good").Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range msgs.Messages() {
		n++
	}
	if n != 1 {
		t.Fatalf("good read %d events while bad was refused, want 1", n)
	}
}
