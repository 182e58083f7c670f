// SPDX-License-Identifier: Apache-2.0

package relay

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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

// TestSilentNodeOfTheClusterIsLeft: in the deployment's shape (deploy/: a
// 3-node cluster, the stream of 3 replicas, the front end and a sink worker
// each given the three nodes' URLs), the node both are connected to falls
// silent, its connections open and nothing passing either way, new ones
// too (its machine lost, a partition). Both give it up (natsbus.Connect's
// pings, within 30 s) and go on through another node, where the stream
// keeps storing: the events committed after the silence are stored, and
// delivered, each once and in order, within 45 s of it (README,
// Operating: "then reconnects").
func TestSilentNodeOfTheClusterIsLeft(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and waits out the pings")
	}
	t.Parallel() // it waits out the pings, 20 to 30 s
	nodes, proxies := eventstest.RunClusterBehindProxies(t, 3)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	connect := func() *nats.Conn {
		nc, err := natsbus.Connect(natsbus.Options{URL: eventstest.ProxyURLs(proxies)}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// The stream first, made through any node; then the front end and the
	// worker on its leader's node (nats.go picks a URL at random), so
	// that the node that falls silent holds the leader and both clients.
	setup := connect()
	sjs, err := jetstream.New(setup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.EnsureStream(ctx, sjs, events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute, Replicas: 3, Partitions: 1}, log); err != nil {
		t.Fatal(err)
	}
	onNode := func(name string) int {
		return slices.IndexFunc(nodes, func(s *server.Server) bool { return s.Name() == name })
	}
	eventstest.AwaitStreamLeader(t, sjs, nodes[onNode(setup.ConnectedServerName())])
	st, err := sjs.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	on := onNode(st.CachedInfo().Cluster.Leader)
	if on < 0 {
		t.Fatalf("the stream's leader is %q, no node of the cluster", st.CachedInfo().Cluster.Leader)
	}
	setup.Close()
	connectTo := func(who string) *nats.Conn {
		for tries := 1; ; tries++ {
			nc := connect()
			if nc.ConnectedServerName() == nodes[on].Name() {
				return nc
			}
			nc.Close()
			if tries == 100 {
				t.Fatalf("the %s's connection never reached %s", who, nodes[on].Name())
			}
		}
	}
	front, worker := connectTo("front end"), connectTo("worker")
	fjs, err := jetstream.New(front)
	if err != nil {
		t.Fatal(err)
	}
	eventstest.AwaitStreamLeader(t, fjs, nodes[on])

	var mu sync.Mutex
	var delivered []string // ce-id, as they come
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		delivered = append(delivered, r.Header.Get("ce-id"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	wjs, err := jetstream.New(worker)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sinks.NewManager(sinks.Options{JS: wjs, Replicas: 3, Logger: log, Sinks: []sinks.Config{
		{Name: "crm", URL: receiver.URL, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", AllowPrivate: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	s, _, _ := openStore(t)
	// As serve runs it on an external NATS: kept for three times the
	// sync_interval assumed of one (2 minutes), published again after a reconnect.
	p := newPublisher(t, s, fjs, log, PublisherOptions{KeepFor: 6 * time.Minute})
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { _ = m.Run(runCtx) })
	running.Go(func() { _ = p.Run(runCtx) })
	// Stopped before the proxies close their connections (t.Cleanup runs
	// the proxies' last, made after these were, first).
	stopAll := func() { stop(); running.Wait() }
	t.Cleanup(stopAll)
	defer stopAll()
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	// Delivered and acknowledged before the silence, so that no
	// acknowledgement is lost in it.
	_, ojs := eventstest.Connect(t, eventstest.ClusterURLs(nodes)) // the test's own, to the nodes directly
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		st, err := ojs.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("the stream has %d replicas, want 3", r)
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

	if st, err := ojs.Stream(ctx, events.StreamName); err != nil || st.CachedInfo().Cluster.Leader != nodes[on].Name() {
		// An election under a loaded machine; the clients' move, which
		// the test is for, is the same.
		t.Logf("the stream's leader moved off %s before the silence (%v)", nodes[on].Name(), err)
	}
	proxies[on].Lose()
	silenced := time.Now()
	const after = 4
	for i := range after {
		mustPatch(t, s, "acme", scim.UserResourceType, ann.ID(), fmt.Sprintf(`{"op":"replace","path":"title","value":"T%d"}`, i))
	}
	eventstest.CheckFor(t, 45*time.Second, 100*time.Millisecond, func() error {
		for name, nc := range map[string]*nats.Conn{"front end": front, "worker": worker} {
			if !nc.IsConnected() || nc.ConnectedServerName() == nodes[on].Name() {
				return fmt.Errorf("the %s is not on another node %s after %s fell silent", name, time.Since(silenced).Round(time.Second), nodes[on].Name())
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(delivered) < 1+after {
			return fmt.Errorf("%d of %d events delivered %s after the silence", len(delivered), 1+after, time.Since(silenced).Round(time.Second))
		}
		return nil
	})
	t.Logf("moved on and delivered in %s", time.Since(silenced).Round(100*time.Millisecond))
	checkOrder(t, streamContents(t, ojs, 1+after)) // each once, in order
	ids := streamIDs(t, ojs, 1+after)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(delivered, ids) {
		t.Fatalf("delivered %v; want the stream's events %v, once each and in order", delivered, ids)
	}
}
