// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestOneTenantsSubscriberWithTheAdvisedPermissions: README, Who can reach
// what, the external NATS row "your own subscribers", advises a subscriber
// its own durable consumer and, to check signatures with events.NewTrust
// and Trust.Published, $JS.API.STREAM.INFO.SCIMRELAY alone. With that, a
// subscriber whose consumer the operator filters on one tenant
// (scimrelay.acme.>) checks its events' signatures and reads no event of
// another tenant (globex). (Until this release the README advised
// $JS.API.STREAM.MSG.GET.SCIMRELAY too, which read globex's events by
// their sequence or subject. Stream info still lists every tenant's
// subjects when asked: the README says so.)
func TestOneTenantsSubscriberWithTheAdvisedPermissions(t *testing.T) {
	ctx := context.Background()
	advised := &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.billing",
			"$JS.API.CONSUMER.INFO.SCIMRELAY.billing",
			"$JS.ACK.SCIMRELAY.billing.>",
			"$JS.API.STREAM.INFO." + events.StreamName,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_billing.>"}},
	}
	s, js, _, signer := runSigningStream(t, &server.User{Username: "billing", Password: "billing-password", Permissions: advised})
	// The operator's consumer for billing: acme's events only.
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "billing", FilterSubject: "scimrelay.acme.>", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	publish := func(tenant, id string) *jetstream.PubAck {
		msg, err := events.ToMsg(eventstest.Event(t, tenant, events.UserCreated, id, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := signer.Sign(msg); err != nil {
			t.Fatal(err)
		}
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName))
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	publish("acme", "acme-user")
	globex := publish("globex", "globex-secret-user")

	billing, err := nats.Connect(s.ClientURL(), nats.UserInfo("billing", "billing-password"), nats.CustomInboxPrefix("_INBOX_billing"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(billing.Close)
	read, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bjs, _ := jetstream.New(billing)
	cons, err := bjs.Consumer(read, events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := events.NewTrust(read, billing)
	if err != nil {
		t.Fatalf("NewTrust with the advised permissions: %v", err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		seq, _ := events.StoredAt(m)
		if _, err := trust.Published(seq, m.Subject(), m.Headers(), m.Data()); err != nil {
			t.Errorf("checking the signature of %s: %v", m.Subject(), err)
		}
		_ = m.Ack()
	}
	if n != 1 {
		t.Fatalf("its consumer gave %d events, want acme's one", n)
	}

	// What it must not reach: globex's event, by its sequence or by subject
	// (refused, so asked with a short wait).
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if m, err := trust.StoredMsg(short(), globex.Sequence, ""); err == nil {
		t.Errorf("billing (acme's events only) read globex's event by its sequence: %s %s", m.Subject, m.Data)
	}
	if m, err := trust.StoredMsg(short(), 1, "scimrelay.globex.>"); err == nil {
		t.Errorf("billing (acme's events only) read globex's event by subject: %s", m.Subject)
	}
}
