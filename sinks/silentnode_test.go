// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestSilentNodeOfTheClusterIsLeft: the sink worker's side of the test of
// the same name in relay. In the deployment's shape (three nodes, the
// stream's three replicas, the worker given the three nodes' URLs), the
// node the worker is connected to, which holds the stream's leader, falls
// silent for its clients (its routes stay). The worker gives it up
// (natsbus.Connect's pings, within 30 s), takes its partition again
// through another node, and delivers the events stored after the silence,
// each once and in order after the one delivered before it (README,
// Operating).
func TestSilentNodeOfTheClusterIsLeft(t *testing.T) {
	silentNodeIsLeft(t)
}

// TestNodeLostWholeIsLeft is TestSilentNodeOfTheClusterIsLeft with the
// node lost whole: its routes fall silent too (eventstest.RoutesToo), its
// peers not told either, so that the other two nodes elect leaders
// between them (the stream's, the consumers' it held). The worker moves and
// delivers the events stored after the silence (published through the
// other nodes once they take them), each once and in order (README,
// Operating). The front end's side is the test of the same name in relay.
func TestNodeLostWholeIsLeft(t *testing.T) {
	silentNodeIsLeft(t, eventstest.RoutesToo)
}

func silentNodeIsLeft(t *testing.T, opts ...eventstest.SilenceOption) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := eventstest.RunSilentLeader(t, func(url string) (*nats.Conn, error) {
		return natsbus.Connect(natsbus.Options{URL: url}, nil, log)
	}, log, opts...)
	worker := c.Connect(t)
	wjs, err := jetstream.New(worker)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var delivered []string // ce-id, as they come
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		delivered = append(delivered, r.Header.Get("ce-id"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	// Stopped before the proxies close their connections (t.Cleanup runs
	// the proxies' last, made after these were, first).
	_, stop := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: wjs, Replicas: 3, Logger: log})
	defer stop()
	// The test's own publisher, to the other nodes directly.
	_, ojs := eventstest.Connect(t, eventstest.ClusterURLs(c.Others()))
	pub := newPublisher(t, ojs)
	want := []string{pub.publish("acme", events.UserCreated, "ann")}
	// Delivered and acknowledged before the silence, so that no
	// acknowledgement is lost in it.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := ojs.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		for info := range st.ListConsumers(ctx).Info() {
			if info.AckFloor.Stream != 1 || info.NumAckPending != 0 || info.NumPending != 0 {
				return fmt.Errorf("consumer %s: acknowledged up to %d, %d acknowledgements and %d events pending", info.Name, info.AckFloor.Stream, info.NumAckPending, info.NumPending)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) != 1 {
			return fmt.Errorf("%d deliveries, want the first event's", len(delivered))
		}
		return nil
	})

	silenced := c.Lose(t, ojs)
	for range 4 {
		// Until the other nodes have a leader of the stream (a node lost
		// whole), a publish gets no answer: the same message again, which
		// JetStream stores once by its Nats-Msg-Id.
		msg, id := pub.next("acme", events.UserUpdated, "ann")
		eventstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := ojs.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName))
			return err
		})
		want = append(want, id)
	}
	t.Logf("published the events after the silence in %s", time.Since(silenced).Round(100*time.Millisecond))
	eventstest.CheckFor(t, 45*time.Second, 100*time.Millisecond, func() error {
		if err := c.Left("worker", worker, silenced); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) < len(want) {
			return fmt.Errorf("%d of %d events delivered %s after the silence", len(delivered), len(want), time.Since(silenced).Round(time.Second))
		}
		return nil
	})
	t.Logf("moved on and delivered in %s", time.Since(silenced).Round(100*time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(delivered, want) {
		t.Fatalf("delivered %v; want %v, once each and in order", delivered, want)
	}
}
