// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// unsigned is the trust of a reader of NATS embedded in the relay, where
// nothing is signed: Published's header check alone.
var unsigned *events.Trust

// TestPublishedRefusesWhatTheRelayDidNotPublish: an event the stream stored
// reads as published only with the stream expectation the relay's
// publisher sets, once, and on the subject the event names (with its
// partition); a message with the expectation that is no event is
// FromMsg's error, not a forgery.
func TestPublishedRefusesWhatTheRelayDidNotPublish(t *testing.T) {
	e := eventstest.Event(t, "acme", events.UserCreated, "u1", 1, 1)
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	stored := msg.Subject + ".7" // the stream appends the partition
	published := func() nats.Header {
		h := nats.Header{}
		for k, v := range msg.Header {
			h[k] = append([]string(nil), v...)
		}
		h.Set(jetstream.ExpectedStreamHeader, events.StreamName)
		return h
	}
	if got, err := unsigned.Published(1, stored, published(), msg.Data); err != nil || got.ID() != e.ID() {
		t.Fatalf("the relay's event: %v, %v", got.ID(), err)
	}
	noHeader := published()
	noHeader.Del(jetstream.ExpectedStreamHeader)
	twice := published()
	twice.Add(jetstream.ExpectedStreamHeader, events.StreamName)
	other := published()
	other.Set(jetstream.ExpectedStreamHeader, "KV_scimrelay-parked-crm")
	for name, c := range map[string]struct {
		subject string
		h       nats.Header
	}{
		"no stream expectation":         {stored, noHeader},
		"the expectation twice":         {stored, twice},
		"another stream's expectation":  {stored, other},
		"another resource's subject":    {"scimrelay.acme.user.created.u2.7", published()},
		"another tenant's subject":      {"scimrelay.globex.user.created.u1.7", published()},
		"another action's subject":      {"scimrelay.acme.user.deleted.u1.7", published()},
		"a subject without a partition": {msg.Subject, published()},
	} {
		if _, err := unsigned.Published(1, c.subject, c.h, msg.Data); !errors.Is(err, events.ErrNotPublished) {
			t.Errorf("%s: %v, want ErrNotPublished", name, err)
		}
	}
	junk := published()
	junk.Del("ce-specversion")
	if _, err := unsigned.Published(1, stored, junk, msg.Data); err == nil || errors.Is(err, events.ErrNotPublished) {
		t.Errorf("a published message that is no event: %v, want FromMsg's error", err)
	}
}
