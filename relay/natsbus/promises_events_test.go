// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// The README's "Subscribing on NATS", where the tests beside this file
// leave a promise unchecked: what one subscriber can do to another, and the
// reads of the relay's buckets and dead letters.

// TestSubscriberCannotTouchAnotherSubscriber: a subscriber may read and
// acknowledge with its own consumer; every attempt on another
// subscriber's consumer or inbox, on the relay's buckets and dead letters,
// on a stream of its own making or an ephemeral consumer, is refused, and
// the other subscriber still reads all its events afterwards.
func TestSubscriberCannotTouchAnotherSubscriber(t *testing.T) {
	billing, billingSeed := newSubscriber(t, "billing", "")
	audit, auditSeed := newSubscriber(t, "audit", "")
	b := startBus(t, billing, audit)
	c := connectAs(t, b.url, "billing", billingSeed)
	victim := connectAs(t, b.url, "audit", auditSeed)
	ctx := t.Context()

	// Its own consumer: read and acknowledge.
	if got := fetchAll(t, c.consumer(t, "billing"), 3); len(got) != 3 {
		t.Fatalf("billing read %v", got)
	}

	const api = "$JS.API."
	subscribe := func(subject string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			if _, err := c.nc.SubscribeSync(subject); err != nil {
				return err
			}
			_ = c.nc.FlushWithContext(ctx)
			return errors.New("subscribed (the refusal comes asynchronously)")
		}
	}
	tests := []struct {
		name, subject string
		what          func(ctx context.Context) error
	}{
		{"pull another subscriber's events", api + "CONSUMER.MSG.NEXT.SCIMRELAY.audit", c.request(api+"CONSUMER.MSG.NEXT.SCIMRELAY.audit", `{"batch":3}`)},
		{"acknowledge another subscriber's event", "$JS.ACK.SCIMRELAY.audit", c.publish("$JS.ACK.SCIMRELAY.audit.1.1.1.0.0")},
		{"delete another subscriber's consumer", api + "CONSUMER.DELETE.SCIMRELAY.audit", func(ctx context.Context) error { return c.js.DeleteConsumer(ctx, events.StreamName, "audit") }},
		{"take over another subscriber's consumer", api + "CONSUMER.CREATE.SCIMRELAY.audit", func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "audit", AckPolicy: jetstream.AckNonePolicy})
			return err
		}},
		{"read another subscriber's consumer", api + "CONSUMER.INFO.SCIMRELAY.audit", c.request(api+"CONSUMER.INFO.SCIMRELAY.audit", ``)},
		{"read a sink's consumer", api + "CONSUMER.INFO.SCIMRELAY.scimrelay-sink-crm-P0", c.request(api+"CONSUMER.INFO.SCIMRELAY.scimrelay-sink-crm-P0", ``)},
		{"create an ephemeral consumer", api + "CONSUMER.CREATE.SCIMRELAY", c.request(api+"CONSUMER.CREATE.SCIMRELAY", `{"stream_name":"SCIMRELAY","config":{"ack_policy":"none"}}`)},
		{"create a stream", api + "STREAM.CREATE.MINE", func(ctx context.Context) error {
			_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"_INBOX_billing.mine.>"}})
			return err
		}},
		{"read a sink's bucket", api + "DIRECT.GET.KV_scimrelay-parked-crm", c.request(api+"DIRECT.GET.KV_scimrelay-parked-crm.$KV.scimrelay-parked-crm.cursor", ``)},
		{"read a sink's bucket as a stream", api + "STREAM.MSG.GET.KV_scimrelay-parked-crm", c.request(api+"STREAM.MSG.GET.KV_scimrelay-parked-crm", `{"last_by_subj":"$KV.scimrelay-parked-crm.cursor"}`)},
		{"watch a sink's bucket", api + "CONSUMER.CREATE.KV_scimrelay-parked-crm", func(ctx context.Context) error {
			_, err := c.js.OrderedConsumer(ctx, "KV_scimrelay-parked-crm", jetstream.OrderedConsumerConfig{})
			return err
		}},
		{"read the dead letters", api + "CONSUMER.CREATE.SCIMRELAY_DLQ", func(ctx context.Context) error {
			_, err := c.js.CreateOrUpdateConsumer(ctx, "SCIMRELAY_DLQ", jetstream.ConsumerConfig{Durable: "billing"})
			return err
		}},
		{"listen on another subscriber's inbox", `Subscription to "_INBOX_audit.>"`, subscribe("_INBOX_audit.>")},
		{"listen on everything", `Subscription to ">"`, subscribe(">")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { c.wantRefused(t, tt.subject, tt.what) })
	}

	// The other subscriber's consumer is as it was: nothing delivered,
	// nothing acknowledged, and it reads every event.
	vc, err := victim.js.Consumer(ctx, events.StreamName, "audit")
	if err != nil {
		t.Fatalf("audit's consumer: %v", err)
	}
	if i := vc.CachedInfo(); i.Delivered.Consumer != 0 || i.AckFloor.Consumer != 0 || i.Config.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("audit's consumer changed: delivered %+v, ack floor %+v, ack policy %v", i.Delivered, i.AckFloor, i.Config.AckPolicy)
	}
	if got := fetchAll(t, vc, 3); len(got) != 3 {
		t.Fatalf("audit read %v, want the 3 events", got)
	}
}
