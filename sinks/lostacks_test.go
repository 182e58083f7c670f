// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestFailedAcknowledgementsAreSentAgain: the receiver takes events while
// the worker's NATS server is away, so that their acknowledgements fail
// (the worker's connection, like the relay's, buffers nothing while it
// reconnects). Once the server is back the worker sends them again: the
// consumers hold no event unacknowledged long before their AckWait (a
// minute), which would otherwise hold each consumer's ack floor back and
// have a next owner of the partition send those events again.
func TestFailedAcknowledgementsAreSentAgain(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns, js := natsStreamAt(t, dir, port)
	release := make(chan struct{})
	rc := newReceiver(t, func(int, *http.Request) int {
		<-release
		return http.StatusNoContent
	})
	nc, err := natsbus.Connect(natsbus.Options{URL: eventstest.URL(ns), ConnectTimeout: time.Second}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wjs, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := runManager(t, Options{JS: wjs, AckWait: time.Minute,
		Sinks: []Config{sinkConfig("crm", rc.URL, func(c *Config) { c.Timeout = time.Minute })}})
	p := newPublisher(t, js)
	const n = 3
	for i := range n {
		p.publish("acme", events.UserCreated, fmt.Sprint("u", i))
	}
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := len(rc.requests()); got != n {
			return fmt.Errorf("the receiver holds %d requests, want %d", got, n)
		}
		return nil
	})
	ns.Shutdown()
	ns.WaitForShutdown()
	// Released once the worker's connection knows: an acknowledgement it
	// takes before that is lost with the connection, which this does not
	// cover (README).
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("the worker's connection has not seen the server go")
		}
		return nil
	})
	close(release)
	w := m.sinks["crm"].worker
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		w.lostAcks.mu.Lock()
		defer w.lostAcks.mu.Unlock()
		// Those whose partition stopped first are not acknowledged at all.
		if len(w.lostAcks.msgs) == 0 {
			return fmt.Errorf("no acknowledgement kept; want those that failed with NATS away")
		}
		return nil
	})

	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		names, err := consumerNames(js)
		if err != nil {
			return err
		}
		for _, name := range names {
			c, err := js.Consumer(ctx, events.StreamName, name)
			if err != nil {
				return err
			}
			if ci := c.CachedInfo(); ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
				return fmt.Errorf("consumer %s: %d unacknowledged, %d redelivered", name, ci.NumAckPending, ci.NumRedelivered)
			}
		}
		return nil
	})
	if got := len(rc.requests()); got != n {
		t.Errorf("the receiver had %d requests, want %d: none sent again", got, n)
	}
}

// consumerNames lists the event stream's consumers.
func consumerNames(js jetstream.JetStream) ([]string, error) {
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	var names []string
	l := st.ConsumerNames(ctx)
	for name := range l.Name() {
		names = append(names, name)
	}
	return names, l.Err()
}
