// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestScaleOut runs the production shape in one process: a 3-node NATS
// cluster with R3 streams, a relay in role scim and two in role sinks, a
// receiver taking 2 ms per request. Every event reaches the webhook, no
// event of a resource arrives before the previous one was answered, and the
// two workers share the work; then the NATS node leading the stream and one
// worker stop mid-run, and still nothing is lost and order holds.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster and three relays")
	}
	nodes := eventstest.RunCluster(t, 3)
	h := newHook(t)
	h.latency = 2 * time.Millisecond
	configure := func() *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.ClusterURLs(nodes)
		cfg.NATS.Stream.Replicas = 3
		withSink(cfg, "crm", h.URL, func(s *config.Sink) { s.Concurrency = 8 })
		return cfg
	}
	front := startRelay(t, configure(), roleSCIM)
	worker1 := startRelay(t, configure(), roleSinks)
	worker2 := startRelay(t, configure(), roleSinks)
	// Both workers have taken their share of the partitions.
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		p1, p2 := metric(t, worker1, "scimrelay_sink_partitions"), metric(t, worker2, "scimrelay_sink_partitions")
		if p1 == 0 || p2 == 0 || p1+p2 != float64(events.DefaultPartitions) {
			return fmt.Errorf("the workers own %v and %v partitions", p1, p2)
		}
		for _, w := range []*relayProc{worker1, worker2} {
			if err := w.srv.sinks.Ready(context.Background()); err != nil {
				return err
			}
		}
		return nil
	})

	// An initial Entra cycle: users, a group, its members, some changes.
	writes := 0
	provision := func(prefix string, users int) {
		var ids []string
		for i := 0; i < users; i++ {
			ids = append(ids, front.scim("acme", acmeToken, "POST", "/Users",
				fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s%d@x.com","active":true}`, prefix, i)).want(t, 201).str("id"))
		}
		gid := front.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"`+prefix+`"}`).want(t, 201).str("id")
		for _, id := range ids {
			front.scim("acme", acmeToken, "PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"value":"`+id+`"}]}]}`).want(t, 204)
			front.scim("acme", acmeToken, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"title","value":"Guide"}]}`).want(t, 200)
		}
		// A group created with its members commits group.created and one
		// member_added per member together: a burst on one resource.
		members := make([]string, len(ids))
		for i, id := range ids {
			members[i] = `{"value":"` + id + `"}`
		}
		front.scim("acme", acmeToken, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"`+prefix+`-all","members":[`+strings.Join(members, ",")+`]}`).want(t, 201)
		writes += 3*users + 1 + 1 + users
	}
	provision("first", 60)
	waitDelivered(t, h, writes)
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	// A worker counts a delivery once it has the receiver's answer, a moment
	// after the receiver counted the event.
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		d1, d2 := delivered(t, worker1), delivered(t, worker2)
		if d1 == 0 || d2 == 0 || d1+d2 < float64(writes) {
			return fmt.Errorf("worker 1 delivered %v, worker 2 %v, of %d events; both should share the work", d1, d2, writes)
		}
		return nil
	})

	// Stop the node leading the stream and one worker, and keep provisioning.
	leader := streamLeader(t, front)
	for _, n := range nodes {
		if n.Name() == leader {
			n.Shutdown()
			n.WaitForShutdown()
		}
	}
	worker1.stop()
	provision("second", 40)
	waitDelivered(t, h, writes)
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	t.Logf("%d events delivered; the leader %s and worker 1 stopped half way", writes, leader)
}

func waitDelivered(t *testing.T, h *hook, n int) {
	t.Helper()
	eventstest.CheckFor(t, 90*time.Second, 20*time.Millisecond, func() error {
		if got := h.distinct(); got < n {
			return fmt.Errorf("%d of %d events delivered", got, n)
		}
		return nil
	})
}

// delivered reads a relay's count of delivered events from its metrics.
func delivered(t *testing.T, p *relayProc) float64 {
	t.Helper()
	return metric(t, p, "scimrelay_sink_events_total", "outcome", "delivered")
}

func streamLeader(t *testing.T, p *relayProc) string {
	t.Helper()
	st, err := p.srv.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream leader: %+v %v", info, err)
	}
	return info.Cluster.Leader
}
