// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// BenchmarkPublished measures what reading a stored event for delivery
// costs with the checks of events.Published, against events.FromMsg alone.
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
			if _, err := events.Published(stored, msg.Header, msg.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
