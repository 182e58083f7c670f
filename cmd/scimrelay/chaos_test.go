// SPDX-License-Identifier: Apache-2.0

package main

// The chaos harness (README, Chaos runs): the deployed shape (a 3-node
// NATS cluster, the streams with three replicas, one front end, two sink
// workers, one webhook) under node stops and restarts and worker kills
// while the front end keeps provisioning. After each phase it checks that
// every event in the stream reached the webhook, once at least and in
// its resource's order, and reports what it measured (a RESULT line per
// phase): events sent twice, the longest pause in deliveries and in the
// stream's store times, the longest lag from store to delivery. It is not
// part of the README's test command: it takes about five minutes and
// reports figures rather than asserting timings.
//
//	CHAOS=1 go test -count 1 -run TestChaos -v -timeout 40m ./cmd/scimrelay
//	CHAOS_PHASES=leader,workernode  only these phases (default: all)
//	CHAOS_LOGDIR=/tmp/chaos         each relay's log written there (Info;
//	                                the front end's at Debug)

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// chaosCluster is a cluster whose nodes can be stopped and started again
// on the same store and ports.
type chaosCluster struct {
	t     *testing.T
	mu    sync.Mutex
	opts  []natsserver.Options
	nodes []*natsserver.Server // nil: stopped
}

func startChaosCluster(t *testing.T, n int) *chaosCluster {
	ports := eventstest.FreePorts(t, 2*n)
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i])
	}
	c := &chaosCluster{t: t, nodes: make([]*natsserver.Server, n)}
	for i := range n {
		c.opts = append(c.opts, natsserver.Options{
			ServerName: fmt.Sprintf("node-%d", i),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    natsserver.ClusterOpts{Name: "scimrelay-chaos", Host: "127.0.0.1", Port: ports[n+i]},
			Routes:     natsserver.RoutesFromStr(strings.Join(routes, ",")),
		})
	}
	for i := range n {
		c.launch(i)
	}
	for i := range n {
		if !c.nodes[i].ReadyForConnections(20 * time.Second) {
			t.Fatalf("node %d not ready", i)
		}
	}
	t.Cleanup(func() {
		for i := range n {
			c.stop(i)
		}
	})
	eventstest.AwaitMetaLeader(t, c.running())
	return c
}

func (c *chaosCluster) launch(i int) {
	o := c.opts[i] // a copy: NewServer changes its options
	s, err := natsserver.NewServer(&o)
	if err != nil {
		c.t.Fatalf("node %d: %v", i, err)
	}
	go s.Start()
	c.mu.Lock()
	c.nodes[i] = s
	c.mu.Unlock()
}

func (c *chaosCluster) start(i int) {
	c.launch(i)
	if !c.nodes[i].ReadyForConnections(20 * time.Second) {
		c.t.Errorf("node %d not ready after restart", i)
	}
}

func (c *chaosCluster) stop(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

func (c *chaosCluster) running() []*natsserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*natsserver.Server
	for _, s := range c.nodes {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

func (c *chaosCluster) urls() string {
	var u []string
	for _, o := range c.opts {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(u, ",")
}

func (c *chaosCluster) index(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// logSink is a relay's log (Warn; the front end's at Debug), for the report.
type logSink struct {
	name string
	log  *eventstest.Log
}

// provisioner keeps the front end busy: users created, PATCHed, group
// memberships added and removed.
type provisioner struct {
	url     string
	paused  atomic.Bool
	stopped chan struct{}
	done    chan struct{}
	ok, bad atomic.Int64
	mu      sync.Mutex
	errs    map[string]int
}

func (p *provisioner) req(method, path, body string) (int, map[string]any) {
	req, _ := http.NewRequest(method, p.url+"/scim/v2/acme"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		p.bad.Add(1)
		p.note(err.Error())
		return 0, nil
	}
	defer res.Body.Close()
	var m map[string]any
	if res.StatusCode >= 300 {
		p.bad.Add(1)
		b := make([]byte, 300)
		n, _ := res.Body.Read(b)
		p.note(fmt.Sprintf("%s %d %s", method, res.StatusCode, b[:n]))
		return res.StatusCode, nil
	}
	p.ok.Add(1)
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func (p *provisioner) note(s string) {
	p.mu.Lock()
	if len(p.errs) < 50 {
		p.errs[s]++
	}
	p.mu.Unlock()
}

func (p *provisioner) run(workers int) {
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, gm := p.req("POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"chaos-%d-%d"}`, g, time.Now().UnixNano()))
			gid, _ := gm["id"].(string)
			var members []string
			for i := 0; ; i++ {
				select {
				case <-p.stopped:
					return
				default:
				}
				if p.paused.Load() {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				_, um := p.req("POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"c%d-%d-%d@x.com","active":true}`, g, i, time.Now().UnixNano()))
				id, _ := um["id"].(string)
				if id == "" {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				p.req("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"title","value":"T`+fmt.Sprint(i)+`"}]}`)
				if gid != "" {
					p.req("PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"value":"`+id+`"}]}]}`)
					members = append(members, id)
				}
				p.req("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"displayName","value":"D`+fmt.Sprint(i)+`"}]}`)
				if i%4 == 3 && gid != "" && len(members) > 2 {
					old := members[0]
					members = members[1:]
					p.req("PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members[value eq \"`+old+`\"]"}]}`)
					p.req("PATCH", "/Users/"+old, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}`)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(p.done)
}

type streamMsg struct {
	seq        uint64
	subject    string
	subjectSeq string
	at         time.Time
}

// readStream returns the stream's events by id.
func chaosReadStream(t *testing.T, urls string) (map[string]streamMsg, uint64) {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var st jetstream.Stream
	var info *jetstream.StreamInfo
	eventstest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() (err error) {
		if st, err = js.Stream(ctx, events.StreamName); err == nil {
			info, err = st.Info(ctx)
		}
		return err // the stream may have no leader for a moment
	})
	last := info.State.LastSeq
	out := map[string]streamMsg{}
	var oc jetstream.Consumer
	eventstest.CheckFor(t, 60*time.Second, 200*time.Millisecond, func() (err error) {
		oc, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		return err // JetStream may answer 503 for a moment after a quorum loss
	})
	var seen uint64
	for empty := 0; seen < last && empty < 10; {
		b, err := oc.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			empty++
			time.Sleep(200 * time.Millisecond)
			continue
		}
		n := 0
		for m := range b.Messages() {
			n++
			md, _ := m.Metadata()
			h := m.Headers()
			sseq := h.Get("ce-subjectseq")
			out[h.Get(nats.MsgIdHdr)] = streamMsg{seq: md.Sequence.Stream, subject: m.Subject(), subjectSeq: sseq, at: md.Timestamp}
			seen = max(seen, md.Sequence.Stream)
		}
		if n == 0 {
			empty++
		}
	}
	if seen < last {
		t.Errorf("read the stream to %d of %d", seen, last)
	}
	return out, last
}

// withEventStream opens the event stream on a connection of its own and
// calls do with it, within 10 s.
func withEventStream(urls string, do func(ctx context.Context, st jetstream.Stream) error) error {
	nc, err := nats.Connect(urls)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	return do(ctx, st)
}

// sinkConsumers returns the partition consumers of the event stream.
func sinkConsumers(urls string) ([]*jetstream.ConsumerInfo, error) {
	var out []*jetstream.ConsumerInfo
	err := withEventStream(urls, func(ctx context.Context, st jetstream.Stream) error {
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			if strings.HasPrefix(ci.Name, "scimrelay-sink-") {
				out = append(out, ci)
			}
		}
		return l.Err()
	})
	return out, err
}

// pendingConsumers describes the partition consumers with messages
// pending acknowledgement ("" when none).
func pendingConsumers(urls string) string {
	list, err := sinkConsumers(urls)
	var out []string
	for _, ci := range list {
		if ci.NumAckPending > 0 || ci.NumPending > 0 {
			out = append(out, fmt.Sprintf("%s pending=%d unacked=%d floor=%d delivered=%d redelivered=%d", ci.Name[len("scimrelay-sink-"):], ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.Delivered.Stream, ci.NumRedelivered))
		}
	}
	if err != nil {
		out = append(out, err.Error())
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func TestChaos(t *testing.T) {
	if os.Getenv("CHAOS") == "" {
		t.Skip("CHAOS=1 runs the chaos harness")
	}
	c := startChaosCluster(t, 3)
	h := newHook(t)
	h.latency = 2 * time.Millisecond
	// Arrival times, for stalls; each event's arrivals, by its ce-id.
	var arrMu sync.Mutex
	var arrivals []time.Time
	got := map[string][]time.Time{}
	inner := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		arrMu.Lock()
		arrivals = append(arrivals, now)
		if id := r.Header.Get("ce-id"); id != "" {
			got[id] = append(got[id], now)
		}
		arrMu.Unlock()
		inner.ServeHTTP(w, r)
	})
	testStart := time.Now()
	ts := func() string { return fmt.Sprintf("+%.1fs", time.Since(testStart).Seconds()) }
	configure := func(dir string) *config.Config {
		cfg := testConfig(t, dir)
		cfg.NATS.URL = c.urls()
		cfg.NATS.Stream.Replicas = 3
		withSink(cfg, "crm", h.URL, func(s *config.Sink) { s.Concurrency = 8 })
		return cfg
	}
	var logs []*logSink
	start := func(name, dir, role string) *relayProc {
		l := &logSink{name: name, log: &eventstest.Log{}}
		logs = append(logs, l)
		lvl := slog.LevelInfo // the workers' hand-overs and lease
		if name == "front" {
			lvl = slog.LevelDebug // the publisher's resends
		}
		log := slog.New(slog.NewTextHandler(l.log, &slog.HandlerOptions{Level: lvl}))
		return startRelayWith(t, configure(dir), role, log, nil)
	}
	front := start("front", t.TempDir(), roleSCIM)
	w1dir, w2dir := t.TempDir(), t.TempDir()
	workers := []*relayProc{start("worker1", w1dir, roleSinks), start("worker2", w2dir, roleSinks)}
	wdirs := []string{w1dir, w2dir}
	restarts := []int{0, 0}
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		p1, p2 := metric(t, workers[0], "scimrelay_sink_partitions"), metric(t, workers[1], "scimrelay_sink_partitions")
		if p1 == 0 || p2 == 0 || p1+p2 != float64(events.DefaultPartitions) {
			return fmt.Errorf("the workers own %v and %v partitions", p1, p2)
		}
		return nil
	})

	prov := &provisioner{url: front.scimURL, stopped: make(chan struct{}), done: make(chan struct{}), errs: map[string]int{}}
	prov.paused.Store(true)
	go prov.run(2)
	defer func() {
		close(prov.stopped)
		<-prov.done
	}()

	stopWorker := func(i int, hard bool) {
		p := workers[i]
		if hard {
			// A crash as NATS sees it: the connection drops, nothing is
			// acknowledged, parked or unpinned.
			p.srv.nc.Close()
		}
		if p.cancel != nil {
			p.cancel()
			p.cancel = nil
			select {
			case <-p.done:
			case <-time.After(40 * time.Second):
				t.Errorf("worker %d did not stop within 40s", i+1)
			}
		}
	}
	startWorker := func(i int) {
		restarts[i]++
		workers[i] = start(fmt.Sprintf("worker%d.%d", i+1, restarts[i]), wdirs[i], roleSinks)
	}
	connectedTo := func(p *relayProc) int { return c.index(p.srv.nc.ConnectedServerName()) }
	leaderOf := func() int {
		leader := -1
		_ = withEventStream(c.urls(), func(ctx context.Context, st jetstream.Stream) error {
			info, err := st.Info(ctx)
			if err == nil && info.Cluster != nil {
				leader = c.index(info.Cluster.Leader)
			}
			return err
		})
		if leader < 0 {
			return rand.IntN(3)
		}
		return leader
	}
	consumerLeaders := func() map[int]int {
		out := map[int]int{}
		list, _ := sinkConsumers(c.urls())
		for _, ci := range list {
			if ci.Cluster != nil {
				out[c.index(ci.Cluster.Leader)]++
			}
		}
		return out
	}
	bounce := func(i int, down time.Duration) {
		t.Logf("%s  stop node-%d for %v", ts(), i, down)
		c.stop(i)
		time.Sleep(down)
		c.start(i)
		t.Logf("%s  node-%d back", ts(), i)
	}

	type result struct {
		name             string
		drain, maxStall  time.Duration
		storePause       time.Duration
		published, got   int
		missing, repeats int
		violation        string
		maxLag           time.Duration
	}
	var results []result
	phase := func(name string, action func()) {
		if sel := os.Getenv("CHAOS_PHASES"); sel != "" && !slices.Contains(strings.Split(sel, ","), name) {
			return
		}
		t.Logf("phase %s: %s", name, time.Now().UTC().Format("15:04:05"))
		arrMu.Lock()
		arrivals = nil
		arrMu.Unlock()
		begin := time.Now()
		prov.paused.Store(false)
		time.Sleep(2 * time.Second)
		action()
		time.Sleep(2 * time.Second)
		prov.paused.Store(true)
		quiet := time.Now()
		// The front end has published everything.
		eventstest.CheckFor(t, 120*time.Second, 100*time.Millisecond, func() error {
			d, err := front.srv.store.OutboxDepth()
			if err != nil || d > 0 {
				return fmt.Errorf("outbox depth %d %v", d, err)
			}
			return nil
		})
		stream, last := chaosReadStream(t, c.urls())
		// Every event in the stream reaches the webhook.
		deadline := time.Now().Add(150 * time.Second)
		var missing []string
		for {
			arrMu.Lock()
			missing = missing[:0]
			for id := range stream {
				if len(got[id]) == 0 {
					missing = append(missing, id)
				}
			}
			arrMu.Unlock()
			if len(missing) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		arrMu.Lock()
		var maxStall time.Duration
		var stallAt time.Time
		prev := begin
		for _, a := range arrivals {
			if a.Sub(prev) > maxStall {
				maxStall, stallAt = a.Sub(prev), prev
			}
			prev = a
		}
		// End-to-end lag of the events stored in this phase, and repeats.
		var lastArrival time.Time
		var maxLag time.Duration
		var maxLagMsg streamMsg
		type rep struct {
			m     streamMsg
			n     int
			first time.Time
			again time.Time
		}
		var reps []rep
		for id, m := range stream {
			arr := got[id]
			if len(arr) == 0 {
				continue
			}
			if !m.at.Before(begin) {
				if lag := arr[0].Sub(m.at); lag > maxLag {
					maxLag, maxLagMsg = lag, m
				}
			}
			if arr[0].After(lastArrival) {
				lastArrival = arr[0]
			}
			if len(arr) > 1 && arr[len(arr)-1].After(begin) {
				reps = append(reps, rep{m, len(arr), arr[0], arr[len(arr)-1]})
			}
		}
		arrMu.Unlock()
		// The longest pause in what the stream stored: the front end's
		// publishing, where the deliveries' pause may be the workers'.
		var stored []time.Time
		for _, m := range stream {
			if !m.at.Before(begin) {
				stored = append(stored, m.at)
			}
		}
		slices.SortFunc(stored, func(a, b time.Time) int { return a.Compare(b) })
		var storePause time.Duration
		for i := 1; i < len(stored); i++ {
			storePause = max(storePause, stored[i].Sub(stored[i-1]))
		}
		drain := lastArrival.Sub(quiet)
		r := result{name: name, drain: drain, maxStall: maxStall, storePause: storePause, published: len(stream), got: h.distinct(), missing: len(missing), repeats: len(reps), violation: h.orderViolation(), maxLag: maxLag}
		results = append(results, r)
		t.Logf("%s phase %s: stream %d events (last seq %d), webhook %d distinct, missing %d, repeated in phase %d, last first-delivery %v after quiet, longest delivery pause %v at %s, max lag %v (seq %d %s), order: %q",
			ts(), name, len(stream), last, r.got, r.missing, r.repeats, drain.Round(time.Millisecond), maxStall.Round(time.Millisecond), fmt.Sprintf("+%.1fs", stallAt.Sub(testStart).Seconds()), maxLag.Round(time.Millisecond), maxLagMsg.seq, maxLagMsg.subject, r.violation)
		if len(reps) > 0 {
			sort.Slice(reps, func(i, j int) bool { return reps[i].m.seq < reps[j].m.seq })
			byPart := map[string]int{}
			for _, x := range reps {
				byPart[x.m.subject[strings.LastIndex(x.m.subject, ".")+1:]]++
			}
			for i, x := range reps {
				if i == 3 || i == len(reps)-1 {
					t.Logf("    repeat: seq %d %s subjectseq %s x%d, first +%.1fs, again +%.1fs", x.m.seq, x.m.subject, x.m.subjectSeq, x.n, x.first.Sub(testStart).Seconds(), x.again.Sub(testStart).Seconds())
				} else if i < 3 {
					t.Logf("    repeat: seq %d %s subjectseq %s x%d, first +%.1fs, again +%.1fs", x.m.seq, x.m.subject, x.m.subjectSeq, x.n, x.first.Sub(testStart).Seconds(), x.again.Sub(testStart).Seconds())
				}
			}
			t.Logf("    repeats by subject suffix: %v", byPart)
		}
		if len(missing) > 0 {
			sort.Slice(missing, func(i, j int) bool { return stream[missing[i]].seq < stream[missing[j]].seq })
			for i, id := range missing {
				if i == 10 {
					break
				}
				m := stream[id]
				t.Errorf("phase %s: MISSING stream seq %d subject %s subjectseq %s id %s stored +%.1fs", name, m.seq, m.subject, m.subjectSeq, id, m.at.Sub(testStart).Seconds())
			}
		}
		if r.violation != "" {
			t.Errorf("phase %s: ORDER %s", name, r.violation)
		}
		// The consumers settle: nothing left pending (a lost ack would be
		// redelivered after the ack wait).
		settleStart := time.Now()
		var pend string
		for first := true; time.Since(settleStart) < 75*time.Second; first = false {
			pend = pendingConsumers(c.urls())
			if first && pend != "" {
				t.Logf("    pending once delivered: %s", pend)
			}
			if pend == "" {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if pend != "" {
			t.Logf("    consumers still pending after %v: %s", time.Since(settleStart).Round(time.Second), pend)
		} else {
			t.Logf("    consumers settled %v after delivery", time.Since(settleStart).Round(100*time.Millisecond))
		}
	}

	phase("leader", func() {
		for range 2 {
			bounce(leaderOf(), 4*time.Second)
			time.Sleep(3 * time.Second)
		}
	})
	phase("workernode", func() {
		for _, w := range []int{0, 1} {
			bounce(connectedTo(workers[w]), 4*time.Second)
			time.Sleep(3 * time.Second)
		}
	})
	phase("consumerleaders", func() {
		cl := consumerLeaders()
		best, n := 0, -1
		for i, k := range cl {
			if k > n {
				best, n = i, k
			}
		}
		t.Logf("%s  consumer leaders by node: %v", ts(), cl)
		bounce(best, 4*time.Second)
	})
	phase("tworow", func() {
		a := leaderOf()
		t.Logf("%s  stop node-%d then, as it comes back, another", ts(), a)
		c.stop(a)
		time.Sleep(3 * time.Second)
		c.start(a)
		b := connectedTo(workers[0])
		if b == a || b < 0 {
			b = (a + 1) % 3
		}
		c.stop(b)
		time.Sleep(3 * time.Second)
		c.start(b)
	})
	// Two nodes of three stopped together: no quorum for down.
	twoDown := func(down time.Duration, why string) {
		a := leaderOf()
		b := (a + 1) % 3
		t.Logf("%s  stop node-%d and node-%d together for %v (no quorum%s)", ts(), a, b, down, why)
		c.stop(a)
		c.stop(b)
		time.Sleep(down)
		c.start(a)
		c.start(b)
		t.Logf("%s  both back", ts())
	}
	phase("twodown", func() { twoDown(3*time.Second, "") })
	// Longer than the workers' lease (8 s): every worker stops delivering,
	// and takes its partitions again once NATS is back.
	phase("quorumlost", func() { twoDown(11*time.Second, ", longer than the workers' lease") })
	phase("workerkill", func() {
		t.Logf("%s  kill worker1", ts())
		stopWorker(0, true)
		time.Sleep(3 * time.Second)
		startWorker(0)
	})
	phase("nodeduringworkerrestart", func() {
		n := connectedTo(workers[1])
		t.Logf("%s  stop worker2 (graceful), stop its node-%d, start worker2", ts(), n)
		stopWorker(1, false)
		c.stop(n)
		startWorker(1)
		time.Sleep(3 * time.Second)
		c.start(n)
	})
	phase("killduringnode", func() {
		n := connectedTo(workers[0])
		t.Logf("%s  stop node-%d (worker1's), kill worker1 meanwhile, restart both", ts(), n)
		c.stop(n)
		time.Sleep(time.Second)
		stopWorker(0, true)
		time.Sleep(time.Second)
		startWorker(0)
		time.Sleep(2 * time.Second)
		c.start(n)
	})
	// The node goes as the last events flow: a lost message nothing follows.
	for _, tail := range []string{"tailworkernode", "tailconsumerleader"} {
		phase(tail, func() {
			for round := range 2 {
				prov.paused.Store(false)
				time.Sleep(2 * time.Second)
				n := connectedTo(workers[round%2])
				if tail == "tailconsumerleader" {
					cl := consumerLeaders()
					k := -1
					for i, v := range cl {
						if v > k {
							n, k = i, v
						}
					}
				}
				prov.paused.Store(true)
				time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
				t.Logf("%s  provisioning paused; stop node-%d", ts(), n)
				c.stop(n)
				time.Sleep(4 * time.Second)
				c.start(n)
				t.Logf("%s  node-%d back", ts(), n)
			}
		})
	}
	// A graceful restart (SIGTERM) of a worker shortly after its node
	// came back: acknowledgements lost with the node are still pending.
	phase("gracefulafterloss", func() {
		n := connectedTo(workers[0])
		bounce(n, 3*time.Second)
		time.Sleep(2 * time.Second)
		t.Logf("%s  SIGTERM worker1", ts())
		t.Logf("    pending before the stop: %s", pendingConsumers(c.urls()))
		stopWorker(0, false)
		time.Sleep(2 * time.Second)
		startWorker(0)
		t.Logf("%s  worker1 started again", ts())
	})
	phase("longdown", func() {
		n := connectedTo(workers[0])
		t.Logf("%s  stop node-%d (worker1's) for 20s", ts(), n)
		bounce(n, 20*time.Second)
	})
	phase("repeated", func() {
		for i := range 4 {
			bounce(rand.IntN(3), time.Duration(1+i%2)*time.Second)
			time.Sleep(time.Second)
		}
	})

	if dir := os.Getenv("CHAOS_LOGDIR"); dir != "" {
		for _, l := range logs {
			_ = os.WriteFile(dir+"/"+l.name+".log", []byte(l.log.String()), 0o644)
		}
	}
	// Warn/Error lines, counted by message.
	re := regexp.MustCompile(`level=(WARN|ERROR) msg="?((?:[^"\\]|\\.)*)"?`)
	for _, l := range logs {
		counts := map[string]int{}
		sample := map[string]string{}
		for _, line := range strings.Split(l.log.String(), "\n") {
			if m := re.FindStringSubmatch(line); m != nil {
				k := m[1] + " " + m[2]
				if len(k) > 160 {
					k = k[:160]
				}
				counts[k]++
				if sample[k] == "" {
					sample[k] = line
				}
			}
		}
		for k, n := range counts {
			t.Logf("LOG %s x%d: %s", l.name, n, sample[k])
		}
	}
	t.Logf("provisioning: %d ok, %d failed %v", prov.ok.Load(), prov.bad.Load(), prov.errs)
	for _, r := range results {
		t.Logf("RESULT %-24s published=%d missing=%d repeats=%d drain=%v maxpause=%v storepause=%v maxlag=%v order=%q", r.name, r.published, r.missing, r.repeats, r.drain.Round(time.Millisecond), r.maxStall.Round(time.Millisecond), r.storePause.Round(time.Millisecond), r.maxLag.Round(time.Millisecond), r.violation)
	}
}
