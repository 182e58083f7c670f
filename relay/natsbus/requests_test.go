// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
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
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
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
		_ = c.js.DeleteConsumer(b.Context(), events.StreamName, "billing")
		cons, err := c.js.CreateOrUpdateConsumer(b.Context(), events.StreamName, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		info, err := cons.Info(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		el := consumeAll(b, cons, int(info.NumPending))
		b.ReportMetric(float64(info.NumPending)/el.Seconds(), "events/s")
	}
}
