// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// The README's "Deploying and scaling out" section, the promises a relay
// process keeps in each role; the deployment files themselves are checked
// in deploy/.

// TestRolesRunWhatTheREADMESays holds "--role scim runs the SCIM endpoint
// and the outbox publisher and holds the data file; --role sinks runs
// delivery workers only and needs no data file": a worker given a SCIM
// port and a data directory opens neither the port nor a data file, and
// the front end, although relay.yaml names a sink, takes no partition of
// it.
func TestRolesRunWhatTheREADMESays(t *testing.T) {
	ns := eventstest.RunServer(t)
	h := newHook(t)
	configure := func(dataDir string) *config.Config {
		cfg := testConfig(t, dataDir)
		cfg.NATS.URL = eventstest.URL(ns)
		withSink(cfg, "crm", h.URL, nil)
		return cfg
	}
	front := startRelay(t, configure(t.TempDir()), roleSCIM)

	workerDir := t.TempDir()
	wcfg := configure(workerDir)
	scimPort := eventstest.FreePort(t)
	wcfg.Listen = fmt.Sprintf("127.0.0.1:%d", scimPort)
	worker := startRelay(t, wcfg, roleSinks)
	worker.wantStatus("/readyz", 200, 20*time.Second)

	front.createUser(t, "ann")
	waitDelivered(t, h, 1)
	// A worker counts a delivery once it has the receiver's answer, a moment
	// after the receiver counted the event.
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := delivered(t, worker); d != 1 {
			return fmt.Errorf("the worker delivered %v events, want the one", d)
		}
		return nil
	})
	if p := metric(t, front, "scimrelay_sink_partitions"); p != 0 {
		t.Errorf("role scim owns %v partitions of sink crm; it runs no delivery", p)
	}
	if d := delivered(t, front); d != 0 {
		t.Errorf("role scim delivered %v events; it runs no delivery", d)
	}
	if c, err := net.DialTimeout("tcp", wcfg.Listen, time.Second); err == nil {
		c.Close()
		t.Errorf("role sinks listens on the SCIM port %s", wcfg.Listen)
	}
	entries, err := os.ReadDir(workerDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "scimrelay.db" || strings.HasSuffix(e.Name(), ".db") {
			t.Errorf("role sinks created a data file %s", e.Name())
		}
	}
}

// TestClusterStreamsGetThreeReplicas holds "Point both at a NATS cluster
// (...; streams then get 3 replicas)" with nats.stream.replicas left at its
// default (automatic): every stream and bucket the two roles create on a
// 3-node cluster keeps 3 copies.
func TestClusterStreamsGetThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster")
	}
	nodes := eventstest.RunCluster(t, 3)
	configure := func() *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.ClusterURLs(nodes)
		if cfg.NATS.Stream.Replicas != 0 {
			t.Fatalf("nats.stream.replicas defaults to %d, not automatic", cfg.NATS.Stream.Replicas)
		}
		withSink(cfg, "crm", "http://127.0.0.1:1/hook", nil)
		return cfg
	}
	front := startRelay(t, configure(), roleSCIM)
	worker := startRelay(t, configure(), roleSinks)
	worker.wantStatus("/readyz", 200, 30*time.Second)

	ctx := context.Background()
	var names []string
	list := front.srv.js.ListStreams(ctx)
	for info := range list.Info() {
		names = append(names, info.Config.Name)
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas on a 3-node cluster, want 3", info.Config.Name, info.Config.Replicas)
		}
	}
	if err := list.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{events.StreamName, sinks.WorkersStream, "KV_scimrelay-parked-crm"} {
		if !slices.Contains(names, want) {
			t.Errorf("no stream %s on the cluster (streams: %v)", want, names)
		}
	}
}

// TestWorkersReadPartitionsFromTheStream holds "nats.stream.partitions (16)
// is a property of the stream: the relay that creates the stream sets it
// and every worker reads it from there": a worker whose relay.yaml says
// otherwise takes the stream's count, and leaves the stream as it is.
func TestWorkersReadPartitionsFromTheStream(t *testing.T) {
	ns := eventstest.RunServer(t)
	configure := func(partitions int) *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.URL(ns)
		cfg.NATS.Stream.Partitions = partitions
		withSink(cfg, "crm", "http://127.0.0.1:1/hook", nil)
		return cfg
	}
	front := startRelay(t, configure(4), roleSCIM)
	logs := &eventstest.Log{}
	// The worker's relay.yaml says other partitions, replicas and max_age.
	wcfg := configure(16)
	wcfg.NATS.Stream.Replicas, wcfg.NATS.Stream.MaxAge = 3, config.Duration(48*time.Hour)
	worker := startRelayWith(t, wcfg, roleSinks, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard)
	for _, want := range []string{"nats.stream.partitions: the stream has 4, relay.yaml says 16", "nats.stream.replicas: the stream has 1, relay.yaml says 3", "nats.stream.max_age: the stream has 168h0m0s, relay.yaml says 48h0m0s"} {
		if out := logs.String(); !strings.Contains(out, want) {
			t.Errorf("the worker did not say %q:\n%s", want, out)
		}
	}
	worker.wantStatus("/readyz", 200, 20*time.Second)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if p := metric(t, worker, "scimrelay_sink_partitions"); p != 4 {
			return fmt.Errorf("the worker owns %v partitions; the stream has 4", p)
		}
		return nil
	})
	if n, err := events.Partitions(context.Background(), front.srv.js); err != nil || n != 4 {
		t.Errorf("after the worker started the stream has %d partitions (%v); the relay that created it set 4", n, err)
	}
}

// TestWorkersTakeUpChangedPartitions: the shape compose and the chart
// deploy (a front end, two delivery workers), nats.stream.partitions
// raised from 4 to 16 and then lowered to 8 on the front end, the backlog
// drained each time, as README asks: each worker stops, saying why, and
// started again (as its supervisor does) delivers every event made after
// the change, once and in order, and no sink has a consumer beyond the
// stream's partitions. Before, a worker went on dividing the 4 partitions
// it read at start (10 of 20 events delivered); and when lowered, the
// workers brought back the consumers of the partitions the front end had
// removed, one taking a partition over reading its whole history again
// (16 events delivered twice; TestLoweredPartitionsWhileAWorkerJoinsRepeatNothing
// in sinks shows it every time).
func TestWorkersTakeUpChangedPartitions(t *testing.T) {
	ns := eventstest.RunServer(t)
	h := newHook(t)
	fcfg := testConfig(t, t.TempDir())
	fcfg.NATS.URL = eventstest.URL(ns)
	fcfg.NATS.Stream.Partitions = 4
	withSink(fcfg, "crm", h.URL, nil)
	w1cfg, w2cfg := *fcfg, *fcfg
	w1cfg.DataDir, w2cfg.DataDir = t.TempDir(), t.TempDir()
	startWorkers := func() []*relayProc {
		ws := []*relayProc{startRelay(t, &w1cfg, roleSinks), startRelay(t, &w2cfg, roleSinks)}
		for _, w := range ws {
			w.wantStatus("/readyz", 200, 30*time.Second)
		}
		return ws
	}
	front := startRelay(t, fcfg, roleSCIM)
	workers := startWorkers()
	var ids []string
	for i := range 10 {
		ids = append(ids, front.createUser(t, fmt.Sprintf("a%d", i)))
	}
	n := len(ids)
	waitDelivered(t, h, n) // the backlog drained
	for round, parts := range []int{16, 8} {
		front.stop()
		fcfg.NATS.Stream.Partitions = parts
		front = startRelay(t, fcfg, roleSCIM)
		for i := range 20 {
			ids = append(ids, front.createUser(t, fmt.Sprintf("r%d-u%d", round, i)))
		}
		for _, id := range ids {
			front.scim("acme", acmeToken, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"r`+fmt.Sprint(round)+`"}]}`).want(t, 200)
		}
		n += 20 + len(ids)
		for i, w := range workers {
			select {
			case err := <-w.done:
				w.cancel()
				w.cancel = nil // stopped already
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("the event stream has %d partitions", parts)) {
					t.Fatalf("worker %d stopped with %v, want it to say the partitions changed", i, err)
				}
			case <-time.After(30 * time.Second): // a deadline: it reads them every 10 s
				t.Fatalf("worker %d still runs %v partitions of the stream's %d", i, metric(t, w, "scimrelay_sink_partitions"), parts)
			}
		}
		workers = startWorkers()
		waitDelivered(t, h, n)
		if v := h.orderViolation(); v != "" {
			t.Fatalf("out of order: %s", v)
		}
		if r := h.repeated(); r > 0 {
			t.Errorf("%d events delivered twice", r)
		}
	}
	st, err := front.srv.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var beyond []string
	for name := range st.ConsumerNames(context.Background()).Name() {
		if i, err := strconv.Atoi(strings.TrimPrefix(name, "scimrelay-sink-crm-P")); err == nil && i >= 8 {
			beyond = append(beyond, name)
		}
	}
	if len(beyond) > 0 {
		t.Errorf("the stream has 8 partitions, and crm has consumers %v", beyond)
	}
}

// TestHandOverTimings holds the numbers the README gives for a worker's
// presence and hand-over, as the relay sets them up on NATS: each worker
// announces itself on stream SCIMRELAY_WORKERS about every second; an
// announcement lives 11 s there (the 8 s a worker goes on without contact,
// plus 3 s), and a partition's pin, unless renewed, expires 14 s after its
// worker went silent, which is when the others resume it.
func TestHandOverTimings(t *testing.T) {
	ns := eventstest.RunServer(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = eventstest.URL(ns)
	withSink(cfg, "crm", "http://127.0.0.1:1/hook", nil)

	nc, js := eventstest.Connect(t, eventstest.URL(ns))
	var mu sync.Mutex
	var at []time.Time
	sub, err := nc.Subscribe("scimrelay-workers.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	startFrontEndFor(t, cfg)
	worker := startRelay(t, cfg, roleSinks)
	worker.wantStatus("/readyz", 200, 20*time.Second)
	ctx := context.Background()

	st, err := js.Stream(ctx, sinks.WorkersStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != 11*time.Second {
		t.Errorf("a worker's announcement lives %s in %s, want 11s (8 s without contact + 3 s)", got, sinks.WorkersStream)
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	pinned := 0
	consumers := stream.ListConsumers(ctx)
	for info := range consumers.Info() {
		if info.Config.PriorityPolicy != jetstream.PriorityPolicyPinned {
			continue
		}
		pinned++
		if info.Config.PinnedTTL != 14*time.Second {
			t.Errorf("consumer %s: a pin expires %s after its worker went silent, want 14s", info.Name, info.Config.PinnedTTL)
		}
	}
	if err := consumers.Err(); err != nil {
		t.Fatal(err)
	}
	if pinned != events.DefaultPartitions {
		t.Errorf("%d pinned partition consumers, want %d", pinned, events.DefaultPartitions)
	}

	// Five announcements in a row: about a second apart (the median, so
	// that one late on a busy machine does not decide).
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(at) < 6 {
			return fmt.Errorf("%d announcements so far", len(at))
		}
		return nil
	})
	mu.Lock()
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	mu.Unlock()
	slices.Sort(gaps)
	if median := gaps[len(gaps)/2]; median < 500*time.Millisecond || median > 1500*time.Millisecond {
		t.Errorf("announcements come %s apart (median of %v), want about every second", median, gaps)
	}
}

// TestPublishedEventsOutliveTheFrontEnd holds "While it [the SCIM front
// end] is down Entra's requests fail and Entra retries them later; events
// already published keep being delivered": the front end publishes and
// stops; its SCIM port refuses connections, and a worker started while it
// is down delivers every event.
func TestPublishedEventsOutliveTheFrontEnd(t *testing.T) {
	ns := eventstest.RunServer(t)
	h := newHook(t)
	configure := func() *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.URL(ns)
		withSink(cfg, "crm", h.URL, nil)
		return cfg
	}
	front := startRelay(t, configure(), roleSCIM)
	n := front.createUsers(t, "u", 5)
	readStream(t, front.srv.js, n) // published
	scimAddr := strings.TrimPrefix(front.scimURL, "http://")
	front.stop()
	if c, err := net.DialTimeout("tcp", scimAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the stopped front end still accepts connections on %s", scimAddr)
	}
	startRelay(t, configure(), roleSinks)
	waitDelivered(t, h, n)
}
