// SPDX-License-Identifier: Apache-2.0

// Package natsbustest starts the relay's embedded NATS server for tests of
// several packages (relay/natsbus, the admin API), as the relay starts it,
// and connects the relay's own client to eventstest's silent-node shape
// (relay, sinks).
// It is a normal package so that they can share it; nothing outside tests
// imports it.
package natsbustest

import (
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// Start starts the embedded server of o with subscribers, as the relay
// does: connected in process, the event stream made and, once it is
// there, the subscribers' consumers. The test's end stops it.
func Start(t testing.TB, o natsbus.Options, log *slog.Logger, subscribers ...natsbus.Subscriber) (*natsbus.Embedded, jetstream.JetStream) {
	t.Helper()
	e, err := natsbus.StartEmbedded(o, subscribers, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := natsbus.Connect(natsbus.Options{}, e, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(t.Context(), js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, log); err != nil {
		t.Fatal(err)
	}
	// As the relay does once the stream is there (cmd/scimrelay).
	if err := e.EnsureConsumers(); err != nil {
		t.Fatal(err)
	}
	return e, js
}

// SilentLeader sets up eventstest's shape for a node falling silent
// (RunSilentLeader, opts) with the relay's own client, natsbus.Connect and
// its pings, logging to log, and returns it with a client of the relay's on
// the stream leader's node, as a front end or a sink worker is connected,
// and that client's JetStream.
func SilentLeader(t *testing.T, log *slog.Logger, opts ...eventstest.SilenceOption) (*eventstest.SilentLeader, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	c := eventstest.RunSilentLeader(t, func(url string) (*nats.Conn, error) {
		return natsbus.Connect(natsbus.Options{URL: url}, nil, log)
	}, log, opts...)
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return c, nc, js
}
