// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestSubscriberRepliesStayInItsAccount: the server checks a client's
// publish subject against its permissions, not the reply subject it
// names, and JetStream sends its answers and pulled messages there. A
// subscriber naming as reply a subject where one of the relay's streams
// listens (a bucket key, the dead letters, the sinks' workers, another
// tenant's events) or another consumer's pull subject must change none of
// them: its replies are delivered in its own account, where nothing listens.
func TestSubscriberRepliesStayInItsAccount(t *testing.T) {
	sub, seed := newSubscriber(t, "acme-users", "scimrelay.acme.user.>")
	audit, _ := newSubscriber(t, "audit", "")
	b := startBus(t, sub, audit)
	ctx := t.Context()
	kv, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "scimrelay-parked-crm"})
	if err != nil {
		t.Fatal(err)
	}
	claim, err := kv.Put(ctx, "claim.0", []byte(`{"worker":"w1","run":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCIMRELAY_WORKERS", Subjects: []string{"scimrelay-workers.>"}}); err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, b.url, "acme-users", seed)
	// A new consumer of acme-users, made by the relay.
	renew := func(t *testing.T) {
		t.Helper()
		if err := b.js.DeleteConsumer(ctx, events.StreamName, "acme-users"); err != nil {
			t.Fatal(err)
		}
		if err := b.e.EnsureConsumers(); err != nil {
			t.Fatal(err)
		}
	}

	const next = "$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY."
	for _, reply := range []string{
		"$KV.scimrelay-parked-crm.claim.0",
		"scimrelay-dlq.crm",
		"scimrelay-workers.crm.evil",
		"scimrelay-workers._purged.acme.99", // a purge notice: the workers would drop acme's events
		"scimrelay.globex.user.deactivated.u7",
		next + "audit",
	} {
		for _, req := range []struct{ subject, body string }{
			{"$JS.API.INFO", ""},
			{next + "acme-users", `{"batch":5,"no_wait":true}`},
		} {
			t.Run(req.subject+" replying to "+reply, func(t *testing.T) {
				// A new consumer each time, so that a pull has acme's
				// event to deliver.
				renew(t)
				if err := c.nc.PublishRequest(req.subject, reply, []byte(req.body)); err != nil {
					t.Fatal(err)
				}
				// The same request answered on its own inbox: the server
				// handles the two in order, so the first is done once this
				// is answered.
				if _, err := c.nc.Request(req.subject, []byte(req.body), 5*time.Second); err != nil {
					t.Fatalf("the same request on its own inbox: %v", err)
				}
			})
		}
	}

	// Streams store in order: once a later write of the relay's is there,
	// anything the replies would have stored is too.
	for stream, sentinel := range map[string]string{
		"KV_scimrelay-parked-crm": "$KV.scimrelay-parked-crm.sentinel",
		"SCIMRELAY_DLQ":           "scimrelay-dlq.sentinel",
		"SCIMRELAY_WORKERS":       "scimrelay-workers.sentinel",
		events.StreamName:         events.Subject("acme", events.UserCreated, "sentinel"),
	} {
		if _, err := b.js.Publish(ctx, sentinel, []byte("x")); err != nil {
			t.Fatal(err)
		}
		st, err := b.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(1) // the sentinel
		switch stream {
		case events.StreamName:
			want = 4 // the three events of startBus
		case "KV_scimrelay-parked-crm":
			want = 2 // the claim
		}
		if n := st.CachedInfo().State.Msgs; n != want {
			t.Errorf("%s holds %d messages, want %d", stream, n, want)
		}
	}
	got, err := kv.Get(ctx, "claim.0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision() != claim || !bytes.Equal(got.Value(), []byte(`{"worker":"w1","run":1}`)) {
		t.Errorf("the claim is now revision %d %q", got.Revision(), got.Value())
	}
	cons, err := b.js.Consumer(ctx, events.StreamName, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if i := cons.CachedInfo(); i.Delivered.Consumer != 0 || i.NumWaiting != 0 || i.NumAckPending != 0 {
		t.Errorf("the audit consumer was pulled: delivered %d, waiting %d, pending acks %d", i.Delivered.Consumer, i.NumWaiting, i.NumAckPending)
	}
	// And the subscriber still reads its own events.
	renew(t)
	if got := fetchAll(t, c.consumer(t, "acme-users"), 2); len(got) != 2 {
		t.Fatalf("read %v, want acme's user event and the sentinel", got)
	}
}

// TestPushConsumerRefused: a subscriber's creation of a push consumer,
// however its body is written, makes none. Its deliveries would go, in
// the relay's account, to whatever subject the body names, whatever the
// subscriber's permissions: named as another consumer's pull subject,
// each delivery pulled a message from that consumer. The relay answers
// creations itself, and its answer is the consumer it keeps, a pull one.
func TestPushConsumerRefused(t *testing.T) {
	sub, seed := newSubscriber(t, "billing", "")
	b := startBus(t, sub)
	ctx := t.Context()
	if _, err := b.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	c := connectAs(t, b.url, "billing", seed)
	for _, target := range []string{
		"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.audit",
		"$KV.scimrelay-parked-crm.cursor",
		"$JS.API.STREAM.PURGE.SCIMRELAY",
		"scimrelay-dlq.crm.forged",
		natsbus.InboxPrefix("billing") + ".push",
	} {
		for _, filter := range []string{"", "scimrelay.acme.>"} {
			cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing", DeliverSubject: target, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy})
			if err == nil && cons.CachedInfo().Config.DeliverSubject != "" {
				t.Errorf("a push consumer to %s (filter %q) was made", target, filter)
			}
		}
		if _, err := c.nc.Request("$JS.API.CONSUMER.DURABLE.CREATE.SCIMRELAY.billing",
			[]byte(`{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","deliver_subject":"`+target+`","ack_policy":"explicit"}}`), 5*time.Second); err != nil {
			t.Errorf("a legacy push consumer to %s: %v, want an answer", target, err)
		}
	}
	// JetStream decodes every JSON value of a body in turn, the last
	// winning, and falls back to a lenient decoding: none of this reaches it.
	const push = `"deliver_subject":"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.audit"`
	for name, body := range map[string]string{
		"two JSON values":         `{} {"stream_name":"SCIMRELAY","config":{"durable_name":"billing",` + push + `,"ack_policy":"explicit"}}`,
		"a pull, then a push":     `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"}} {"stream_name":"SCIMRELAY","config":{"durable_name":"billing",` + push + `}}`,
		"a key in capitals":       `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing","DELIVER_SUBJECT":"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.audit"}}`,
		"a duplicate config":      `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing"},"config":{"durable_name":"billing",` + push + `}}`,
		"a deliver group":         `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing",` + push + `,"deliver_group":"g"}}`,
		"flow control":            `{"stream_name":"SCIMRELAY","config":{"durable_name":"billing",` + push + `,"flow_control":true,"idle_heartbeat":1000000}}`,
		"another consumer's name": `{"stream_name":"SCIMRELAY","config":{"durable_name":"audit",` + push + `}}`,
	} {
		if _, err := c.nc.Request("$JS.API.CONSUMER.CREATE.SCIMRELAY.billing", []byte(body), 5*time.Second); err != nil {
			t.Errorf("%s: %v, want an answer", name, err)
		}
	}
	cons, err := b.js.Consumer(ctx, events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := cons.CachedInfo().Config; cfg.DeliverSubject != "" || cfg.DeliverGroup != "" || cfg.FlowControl || cfg.IdleHeartbeat != 0 {
		t.Fatalf("billing's consumer pushes: %+v", cfg)
	}
	audit, err := b.js.Consumer(ctx, events.StreamName, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if i := audit.CachedInfo(); i.Delivered.Consumer != 0 || i.NumAckPending != 0 {
		t.Errorf("the audit consumer was pulled: %+v", i.Delivered)
	}
	if got := fetchAll(t, c.consumer(t, "billing"), 3); len(got) != 3 {
		t.Fatalf("read %v", got)
	}
}

// TestSubscriberAccountInfoShowsNothing: $JS.API.INFO tells a subscriber
// that JetStream is there and nothing of the relay's account. JetStream's
// own answer gave the account's totals: a subscriber limited to one
// tenant saw the storage grow with each event of another.
func TestSubscriberAccountInfoShowsNothing(t *testing.T) {
	sub, seed := newSubscriber(t, "acme-users", "scimrelay.acme.user.>")
	b := startBus(t, sub)
	c := connectAs(t, b.url, "acme-users", seed)
	ctx := t.Context()
	before, err := c.js.AccountInfo(ctx)
	if err != nil {
		t.Fatalf("account info: %v", err)
	}
	if _, err := b.js.Publish(ctx, events.Subject("globex", events.UserCreated, "u9"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	after, err := c.js.AccountInfo(ctx)
	if err != nil {
		t.Fatalf("account info: %v", err)
	}
	for _, i := range []*jetstream.AccountInfo{before, after} {
		if i.Store != 0 || i.Memory != 0 || i.Streams != 0 || i.Consumers != 0 || i.API.Total != 0 {
			t.Fatalf("account info shows the relay's account: %+v", i)
		}
	}
}
