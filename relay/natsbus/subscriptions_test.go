// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestSubscriberSubscriptionsBounded: a subscriber that subscribes more
// than MaxSubscriberSubscriptions times across its connections (each one
// a copy of every message JetStream sends it, made by the goroutine that
// also stores the relay's events) has its connections closed within
// seconds and its key refused for a while, with a warning; another
// subscriber, and the same one with a consumer's handful, go on.
func TestSubscriberSubscriptionsBounded(t *testing.T) {
	greedy, greedySeed := newSubscriber(t, "greedy", "scimrelay.acme.>")
	modest, modestSeed := newSubscriber(t, "modest", "scimrelay.acme.>")
	logs := &eventstest.Log{}
	b := startBusLogging(t, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})), greedy, modest)
	other := connectAs(t, b.url, "modest", modestSeed)
	other.consumer(t, "modest")

	// Two connections, each under the bound, together over it.
	var conns []*client
	for range 2 {
		c := connectAs(t, b.url, "greedy", greedySeed)
		c.consumer(t, "greedy")
		for range natsbus.MaxSubscriberSubscriptions/2 + 10 {
			if _, err := c.nc.Subscribe(natsbus.InboxPrefix("greedy")+".fanout", func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for i, c := range conns {
			if !c.nc.IsClosed() {
				return fmt.Errorf("greedy's connection %d is still open", i)
			}
		}
		return nil
	})
	if !strings.Contains(logs.String(), "a subscriber held more subscriptions than it may") || !strings.Contains(logs.String(), "subscriber=greedy") {
		t.Fatalf("no warning names greedy:\n%s", logs.String())
	}
	// Refused for a while: it cannot start again at once.
	opt, err := nats.NkeyOptionFromSeed(greedySeed)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(b.url, opt, nats.CustomInboxPrefix(natsbus.InboxPrefix("greedy")), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("greedy connected again at once")
	}
	// The other subscriber was not touched.
	if other.nc.IsClosed() {
		t.Fatal("modest's connection was closed too")
	}
	if _, err := other.js.Consumer(t.Context(), "SCIMRELAY", "modest"); err != nil {
		t.Fatalf("modest after greedy was cut off: %v", err)
	}
}
