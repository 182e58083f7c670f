// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// BenchmarkPublished measures what reading a stored event for delivery
// costs with the checks of events.Published, against events.FromMsg alone,
// and with the signature of an external NATS's events: its making, and
// its check.
func BenchmarkPublished(b *testing.B) {
	msg, err := events.ToMsg(eventstest.Event(b, "acme", events.UserCreated, "0198f3c2-0000-7000-8000-0000000000aa", 1, 1))
	if err != nil {
		b.Fatal(err)
	}
	msg.Header.Set(jetstream.ExpectedStreamHeader, events.StreamName)
	stored := msg.Subject + ".7"
	b.Run("FromMsg", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := events.FromMsg(stored, msg.Header, msg.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Published", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := unsigned.Published(1, stored, msg.Header, msg.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
	// On an external NATS: the publisher's signature, and the reading of
	// a signed event (Trust.Published). The stream is a real one, whose
	// configuration names the key.
	seed := make([]byte, 32)
	signer, err := events.NewSigner(seed)
	if err != nil {
		b.Fatal(err)
	}
	nc, js := eventstest.Connect(b, eventstest.RunServer(b).ClientURL())
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{SigningKey: signer.PublicKey()}, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	trust, err := events.NewTrust(context.Background(), nc)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := signer.Sign(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PublishedSigned", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := trust.Published(1, stored, msg.Header, msg.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
