// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus/natsbustest"
	"github.com/scimrelay/scimrelay/scim"
)

// TestSilentNodeOfTheClusterIsLeft: in the deployment's shape (deploy/: a
// 3-node cluster, the stream of 3 replicas, the front end given the three
// nodes' URLs), the node the front end is connected to, which holds the
// stream's leader, falls silent for its clients: connections open and
// nothing passing either way, new ones too (its machine lost to them, a
// partition; its routes stay). The front end gives it up
// (natsbus.Connect's pings, within 30 s) and publishes through another
// node: the events committed after the silence are stored, each once and in
// order, the one kept from before sent again and dropped as a duplicate
// (README, Operating). The sink worker's side is the test of the same name
// in sinks.
func TestSilentNodeOfTheClusterIsLeft(t *testing.T) {
	silentNodeIsLeft(t)
}

// TestNodeLostWholeIsLeft is TestSilentNodeOfTheClusterIsLeft with the
// node lost whole: its routes fall silent too (eventstest.RoutesToo), so
// that the other two nodes elect a leader of their own and the old one,
// cut off, stores nothing more. The routes are cut first, and the first
// event after is one the old leader took into its log and could not
// replicate when its clients lost it: the front end's copy, kept,
// published again on the new leader, is stored once, in order with the
// rest (README, Operating). The worker's side is the test of the same
// name in sinks.
func TestNodeLostWholeIsLeft(t *testing.T) {
	silentNodeIsLeft(t, eventstest.RoutesToo)
}

func silentNodeIsLeft(t *testing.T, opts ...eventstest.SilenceOption) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, front, fjs := natsbustest.SilentLeader(t, log, opts...)
	s, _, _ := openStore(t)
	// As serve runs it on an external NATS: kept for three times the
	// sync_interval assumed of one (2 minutes), published again after a reconnect.
	p := newPublisher(t, s, fjs, log, PublisherOptions{KeepFor: 6 * time.Minute})
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { _ = p.Run(runCtx) })
	// Stopped before the proxies close their connections (t.Cleanup runs
	// the proxies' last, made after these were, first).
	stopAll := func() { stop(); running.Wait() }
	t.Cleanup(stopAll)
	defer stopAll()
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	// The test's own, to the other nodes directly.
	_, ojs := eventstest.Connect(t, eventstest.ClusterURLs(c.Others()))
	streamContents(t, ojs, 1)

	const after = 4
	patch := func(i int) {
		mustPatch(t, s, "acme", scim.UserResourceType, ann.ID(), fmt.Sprintf(`{"op":"replace","path":"title","value":"T%d"}`, i))
	}
	first := 0
	var cutCommitted uint64
	if c.RouteProxies != nil {
		// Lost whole: the routes first, then an event the leader takes
		// and cannot replicate, then the clients.
		// Read once the routes are cut: CutRoutes may have moved the
		// leader back to the node first, which adds to its log.
		c.CutRoutes(t, ojs)
		before, _ := c.LeaderLog(t)
		patch(0)
		first = 1
		var last, committed uint64
		eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if last, committed = c.LeaderLog(t); last <= before {
				return fmt.Errorf("the leader's log ends at %d, as before the event", last)
			}
			return nil
		})
		if committed >= last {
			t.Fatalf("the leader committed its log up to %d, cut off from its peers", committed)
		}
		t.Logf("the cut-off leader took the event: log at %d, committed %d", last, committed)
		cutCommitted = committed
	}
	silenced := c.Lose(t, ojs)
	for i := first; i < after; i++ {
		patch(i)
	}
	eventstest.CheckFor(t, 45*time.Second, 100*time.Millisecond, func() error {
		if err := c.Left("front end", front, silenced); err != nil {
			return err
		}
		st, err := ojs.Stream(ctx, events.StreamName)
		if err != nil {
			return err
		}
		if n := st.CachedInfo().State.Msgs; n < 1+after {
			return fmt.Errorf("%d of %d events stored %s after the silence", n, 1+after, time.Since(silenced).Round(time.Second))
		}
		return nil
	})
	t.Logf("moved on and stored in %s", time.Since(silenced).Round(100*time.Millisecond))
	checkOrder(t, streamContents(t, ojs, 1+after)) // each once, in order
	if c.RouteProxies != nil {
		// Cut off all along: it never heard of the new leader's entries.
		if last, committed := c.LeaderLog(t); committed != cutCommitted {
			t.Fatalf("the lost node's log is at %d, committed %d (%d when it was lost): it heard from its peers", last, committed, cutCommitted)
		}
	}
}
