// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/disk/disktest"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// get answers a GET on the admin listener: status and body.
func (p *relayProc) get(path string) (int, string) {
	p.t.Helper()
	res, err := http.Get(p.adminURL + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// wantStatus polls an admin path until it answers status.
func (p *relayProc) wantStatus(path string, status int, within time.Duration) string {
	p.t.Helper()
	var body string
	eventstest.CheckFor(p.t, within, 20*time.Millisecond, func() error {
		var got int
		if got, body = p.get(path); got != status {
			return fmt.Errorf("GET %s: %d %q, want %d", path, got, body, status)
		}
		return nil
	})
	return body
}

// metric reads a gauge or counter from the relay's registry, summed over
// the series whose labels match the name-value pairs given.
func metric(t *testing.T, p *relayProc, name string, labels ...string) float64 {
	t.Helper()
	families, err := p.srv.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return sumSeries(f, labels...)
		}
	}
	return 0
}

// sumSeries sums a gauge's or counter's series that carry the labels
// (name, value, name, value …).
func sumSeries(f *dto.MetricFamily, labels ...string) float64 {
	total := 0.0
series:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if labelValue(m, labels[i]) != labels[i+1] {
				continue series
			}
		}
		total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return total
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// createUsers creates n users named prefix0, prefix1 … and returns n.
func (p *relayProc) createUsers(t *testing.T, prefix string, n int) int {
	t.Helper()
	for i := range n {
		p.createUser(t, fmt.Sprintf("%s%d", prefix, i))
	}
	return n
}

func (p *relayProc) createUser(t *testing.T, name string) string {
	t.Helper()
	return p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`"}`).want(t, 201).str("id")
}

// TestNATSOutageOverHTTP stops the external NATS the relay publishes to for
// 20 seconds while Entra keeps writing: every request is answered 201, the
// relay stays ready (it can take writes) while saying NATS is away, and
// when NATS is back the publisher resumes at the reconnection, not when its
// backoff (by then 12.8 s) runs out; every event reaches the stream in
// sequence order and the webhook once, in order per resource. How long
// after the reconnection it published is logged, not bounded: a figure of
// this machine's, not a property.
func TestNATSOutageOverHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps NATS away for 20 s")
	}
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns := eventstest.RunServerAt(t, dir, port)
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	withSink(cfg, "crm", h.URL, nil)
	logs := &eventstest.Log{}
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelInfo})), io.Discard)
	writes := p.createUsers(t, "before", 10)
	waitDelivered(t, h, writes)

	reconnected := p.srv.nc.StatusChanged(nats.CONNECTED)
	defer p.srv.nc.RemoveStatusListener(reconnected)
	ns.Shutdown()
	ns.WaitForShutdown()
	// Entra keeps writing for 20 s, a request every 20 ms or so.
	tick := time.NewTicker(20 * time.Millisecond)
	for start := time.Now(); time.Since(start) < 20*time.Second; <-tick.C {
		p.createUser(t, fmt.Sprintf("during%d", writes))
		writes++
	}
	tick.Stop()
	if status, body := p.get("/readyz"); status != 200 {
		t.Fatalf("/readyz answered %d during the outage, want 200 (SCIM writes are taken): %s", status, body)
	}
	if status, _ := p.get("/readyz/nats"); status != 503 {
		t.Fatalf("/readyz/nats answered %d during the outage, want 503", status)
	}
	if _, body := p.get("/readyz?verbose"); !strings.Contains(body, "[-]nats failed") || !strings.Contains(body, "[+]store ok") || !strings.Contains(body, "[-]publisher failed") {
		t.Fatalf("/readyz?verbose during the outage:\n%s", body)
	}

	eventstest.RunServerAt(t, dir, port)
	var back time.Time
	select {
	case <-reconnected:
		back = time.Now()
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not reconnect")
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if last := metric(t, p, "scimrelay_outbox_last_published_timestamp_seconds"); last < float64(back.UnixNano())/1e9 {
			return errors.New("nothing published since the reconnection")
		}
		return nil
	})
	lag := time.Duration(metric(t, p, "scimrelay_outbox_last_published_timestamp_seconds")*1e9) - time.Duration(back.UnixNano())
	// The publisher says so when the reconnection, not its timer, ended
	// its wait (Publisher.Run).
	if !strings.Contains(logs.String(), "NATS connection is back; publishing again") {
		t.Fatalf("the publisher did not resume at the reconnection (it published %s after it, when its backoff ran out)", lag)
	}
	got := readStream(t, p.srv.js, writes)
	for i, e := range got {
		if e.seq != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, e.seq)
		}
	}
	waitDelivered(t, h, writes)
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	if n := h.repeated(); n > 0 {
		t.Fatalf("%d events reached the webhook more than once", n)
	}
	t.Logf("%d writes; publishing resumed %s after the reconnection", writes, lag.Round(time.Millisecond))
}

// TestReadinessByRole: /readyz is the role's job. A SCIM front end stays
// ready while NATS is away; a delivery worker does not. Each check answers
// alone at /readyz/<check>.
func TestReadinessByRole(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns := eventstest.RunServerAt(t, dir, port)
	h := newHook(t)
	configure := func() *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = ns.ClientURL()
		withSink(cfg, "crm", h.URL, nil)
		return cfg
	}
	front := startRelay(t, configure(), roleSCIM)
	worker := startRelay(t, configure(), roleSinks)
	if body := front.wantStatus("/readyz", 200, 10*time.Second); body != "ok\n" {
		t.Fatalf("/readyz: %q", body)
	}
	body := front.wantStatus("/readyz?verbose", 200, time.Second)
	for _, want := range []string{"[+]shutdown ok\n", "[+]store ok\n", "[+]nats ok (does not gate readiness)\n", "[+]publisher ok (does not gate readiness)\n", "readyz check passed\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("the SCIM front end's /readyz?verbose lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "sinks") {
		t.Errorf("role scim runs no sinks but lists them:\n%s", body)
	}
	worker.wantStatus("/readyz", 200, 20*time.Second)
	worker.wantStatus("/readyz/sinks", 200, time.Second)
	if status, body := worker.get("/readyz/store"); status != 404 || !strings.Contains(body, "sinks") {
		t.Errorf("role sinks has no store, yet /readyz/store answered %d %q", status, body)
	}

	// The README's Metrics: a delivery worker's gating checks, each a
	// series of scimrelay_ready.
	workerReady := func(want map[string]float64) {
		t.Helper()
		for check, want := range want {
			if v := metric(t, worker, "scimrelay_ready", "check", check); v != want {
				t.Errorf("the worker's scimrelay_ready{check=%s} = %v, want %v", check, v, want)
			}
		}
	}
	ready := map[string]float64{"shutdown": 1, "nats": 1, "sinks": 1}
	workerReady(ready)

	ns.Shutdown()
	ns.WaitForShutdown()
	worker.wantStatus("/readyz", 503, 10*time.Second)
	workerReady(map[string]float64{"shutdown": 1, "nats": 0})
	front.wantStatus("/readyz/nats", 503, 10*time.Second)
	front.wantStatus("/readyz", 200, time.Second)
	front.createUser(t, "while-away") // and it does take writes
	front.wantStatus("/readyz/publisher", 503, 20*time.Second)
	front.wantStatus("/readyz", 200, time.Second)

	eventstest.RunServerAt(t, dir, port)
	worker.wantStatus("/readyz", 200, 30*time.Second)
	workerReady(ready)
	front.wantStatus("/readyz/publisher", 200, 30*time.Second)
	waitDelivered(t, h, 1)
}

// startOnSmallDisk starts a relay whose data directory is a tmpfs of 24
// MiB to fill (NATS a server of its own, off that disk), logging at Info
// (room again is said there, nothing being wrong any more), with a user
// created; it returns the relay, the directory and the log.
func startOnSmallDisk(t *testing.T) (*relayProc, string, *eventstest.Log) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	disktest.MountTmpfs(t, dataDir, "24m")
	ns := eventstest.RunServer(t)
	cfg := testConfig(t, dataDir)
	cfg.NATS.URL = ns.ClientURL()
	logs := &eventstest.Log{}
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), io.Discard)
	p.createUser(t, "before")
	return p, dataDir, logs
}

// TestDiskFullDataFile fills the data file's disk: SCIM writes are answered
// 507 with a SCIM error saying why, /readyz turns 503, and the log says so
// once, not for each write refused; when room comes back, both recover
// without a restart, and the log says that too.
func TestDiskFullDataFile(t *testing.T) {
	p, dataDir, logs := startOnSmallDisk(t)
	filler := disktest.Fill(t, dataDir)
	var refused reply
	for i := 0; ; i++ {
		// bbolt reuses pages it freed before, so a few writes may still fit.
		r := p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"full%d"}`, i))
		if r.status == 507 {
			refused = r
			break
		}
		if r.status != 201 || i == 500 {
			t.Fatalf("write %d on a full disk: %d %s", i, r.status, r.raw)
		}
	}
	if refused.body["status"] != "507" || !strings.Contains(refused.str("detail"), "data disk is full") || !strings.Contains(refused.header.Get("Content-Type"), "scim+json") {
		t.Fatalf("the refusal: %s %s", refused.header, refused.raw)
	}
	for i := range 5 {
		p.scim("acme", acmeToken, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"more%d"}`, i)).want(t, 507)
	}
	// ScimrelaySCIMErrors, time() - scimrelay_scim_error_timestamp_seconds
	// < 3600, fires for acme: the gauge holds the time of the last 507.
	if at := metric(t, p, "scimrelay_scim_error_timestamp_seconds", "tenant", "acme"); time.Since(time.Unix(int64(at), 0)) > time.Minute {
		t.Errorf("scimrelay_scim_error_timestamp_seconds{tenant=acme} = %v after six 507s, want the time of the last", at)
	}
	if n := strings.Count(logs.String(), "the data disk is full;"); n != 1 {
		t.Errorf("six writes refused for a full disk logged it %d times, want once:\n%s", n, logs)
	}
	body := p.wantStatus("/readyz", 503, 5*time.Second)
	if !strings.Contains(body, "[-]store failed: the data disk is full") {
		t.Fatalf("/readyz on a full disk: %s", body)
	}
	// ScimrelayNotReady, scimrelay_ready == 0, sees it: on Kubernetes
	// nothing else does (the Service sends the pod no request).
	if v := metric(t, p, "scimrelay_ready", "check", "store"); v != 0 {
		t.Errorf("scimrelay_ready{check=store} = %v on a full disk, want 0", v)
	}
	// 2 MiB free is not room yet: it takes 4 MiB (README).
	fi, err := os.Stat(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filler, fi.Size()-2<<20); err != nil {
		t.Fatal(err)
	}
	if status, body := p.get("/readyz"); status != 503 || !strings.Contains(body, "the data disk is full") {
		t.Fatalf("/readyz with 2 MiB free: %d %s, want 503 until 4 MiB are", status, body)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p.wantStatus("/readyz", 200, 10*time.Second)
	for _, check := range []string{"shutdown", "store"} {
		if v := metric(t, p, "scimrelay_ready", "check", check); v != 1 {
			t.Errorf("scimrelay_ready{check=%s} = %v with room again, want 1", check, v)
		}
	}
	p.createUser(t, "after")
	if !strings.Contains(logs.String(), "the data disk has room again") {
		t.Errorf("room came back, unsaid:\n%s", logs)
	}
}

// TestEmbeddedNATSStoreFull fills the disk of the embedded NATS server's
// store while SCIM writes continue: they are all answered, and once room
// comes back the relay heals JetStream by itself and every event reaches
// the stream and the webhook, none lost, none twice in the stream.
//
// It does not run under -race: nats-server (2.15.2) restarting all of
// JetStream in a running server wrote the server's JetStream API queue
// (setJetStreamExportSubs, jetstream_api.go:1110) without synchronising
// with a request the old JetStream dispatched (apiDispatch, :1023), and
// the race detector failed the test about one run in seven. The heal now
// reopens the relay's account instead (natsbus.StoreHealer), which does
// not take that path, and passed 5 runs of 5 under -race (2026-12-03);
// until it has run under -race for longer, .ci/run runs it without -race
// after the suite.
func TestEmbeddedNATSStoreFull(t *testing.T) {
	dataDir := t.TempDir()
	natsDir := filepath.Join(dataDir, "nats")
	disktest.MountTmpfs(t, natsDir, "64m")
	h := newHook(t)
	cfg := testConfig(t, dataDir)
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	writes := p.createUsers(t, "before", 10)
	waitDelivered(t, h, writes)

	filler := disktest.Fill(t, natsDir)
	writes += p.createUsers(t, "full", 30)
	p.wantStatus("/readyz/publisher", 503, 30*time.Second)
	p.wantStatus("/readyz", 200, time.Second) // SCIM still takes writes
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	writes += p.createUsers(t, "after", 10)
	waitDelivered(t, h, writes)
	got := readStream(t, p.srv.js, writes)
	for i, e := range got {
		if e.seq != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, e.seq)
		}
	}
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	p.wantStatus("/readyz/nats", 200, 10*time.Second)
}

// TestDataFileWriteFailureStopsTheRelay: when a commit to the data file
// fails (its flush fails, as on a failing disk), the SCIM request is
// answered 503 with a SCIM error saying why, and the relay stops with an
// error (systemd and Kubernetes start it again), so that it reads the
// file from disk again: started again, it holds what was committed before
// and not the failed write.
func TestDataFileWriteFailureStopsTheRelay(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir)
	cfg.Limits.ShutdownDelay = config.Duration(10 * time.Second) // for a stop asked for, not a failure
	p := startRelay(t, cfg, roleAll)
	before := p.createUser(t, "before")
	// Nothing else writes while the disk fails: the create's provisioning
	// log entry and the outbox rows it kept are written first. A
	// background write that hit the failure stopped the relay before the
	// POST below, which found it gone (CI, once, under load).
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		entries, err := p.srv.reqLog.Query(t.Context(), relay.LogQuery{Tenant: "acme", Limit: 10})
		if err != nil || len(entries) == 0 {
			return fmt.Errorf("%d log entries (%v), want the create's", len(entries), err)
		}
		if n, err := p.srv.store.OutboxDepth(); err != nil || n != 0 {
			return fmt.Errorf("%d rows in the outbox (%v)", n, err)
		}
		return nil
	})
	// The relay's stop closes the data file once the read transaction
	// held here ends, after the disk is back: closed before, the
	// descriptor FailWrites put back held the file's lock, and the
	// relay started again below found its data file in use (CI, once).
	release := holdReadTransaction(t, p.srv.store)
	restore := disktest.FailWrites(t, cfg.DBPath())
	r := p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"during"}`)
	restore() // the disk is back: the relay stops all the same
	release()
	if r.status != 503 || !strings.Contains(r.str("detail"), "could not write its data file") {
		t.Fatalf("a write whose commit failed: %d %s", r.status, r.raw)
	}
	select {
	case err := <-p.done:
		p.cancel = nil // stopped already
		if err == nil || !strings.Contains(err.Error(), "stopped writing its data file (a commit failed") {
			t.Fatalf("the relay stopped with %v, want the failed commit", err)
		}
	case <-time.After(8 * time.Second): // the shutdown delay alone is 10 s
		t.Fatal("the relay went on after a commit to its data file failed")
	}
	cfg.Limits.ShutdownDelay = 0
	p = startRelay(t, cfg, roleAll)
	p.scim("acme", acmeToken, "GET", "/Users/"+before, "").want(t, 200)
	if got := p.scim("acme", acmeToken, "GET", "/Users?filter=userName%20eq%20%22during%22", "").want(t, 200); got.body["totalResults"] != float64(0) {
		t.Fatalf("the failed write is in the data file: %s", got.raw)
	}
	p.createUser(t, "after")
}

// holdReadTransaction keeps a read transaction of s's data file open,
// a backup into a writer that waits, until release is called (the test's
// end does too): the store's close waits for it.
func holdReadTransaction(t *testing.T, s *relay.Store) (release func()) {
	t.Helper()
	w := &waitingWriter{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = s.Backup(w, nil)
	}()
	select {
	case <-w.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the backup holding a read transaction did not begin")
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(w.release)
			<-done
		})
	}
	t.Cleanup(release)
	return release
}

// waitingWriter is a writer whose first write waits for release, and fails.
type waitingWriter struct {
	started, release chan struct{}
	once             sync.Once
}

func (w *waitingWriter) Write([]byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	return 0, errors.New("released")
}

// TestLostStreamIsSaid: a relay that finds its event stream missing,
// although its data file has made events (the NATS store deleted), makes
// it anew and says at Error that the undelivered events are gone, and
// scimrelay_stream_lost is 1; a first start, and a restart with the store
// kept, say nothing and keep the gauge at 0.
func TestLostStreamIsSaid(t *testing.T) {
	dir := t.TempDir()
	start := func() (*relayProc, *eventstest.Log) {
		logs := &eventstest.Log{}
		return startRelayWith(t, testConfig(t, dir), roleAll, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError})), io.Discard), logs
	}
	lost := func(p *relayProc) float64 {
		return scrapeGauge(t, strings.TrimPrefix(p.adminURL, "http://"), "scimrelay_stream_lost")
	}
	const said = "the event stream was missing at start"
	p, logs := start()
	if v := lost(p); v != 0 || strings.Contains(logs.String(), said) {
		t.Fatalf("a first start: scimrelay_stream_lost %v, log:\n%s", v, logs)
	}
	p.createUser(t, "ann")
	p.stop()
	p, logs = start()
	if v := lost(p); v != 0 || strings.Contains(logs.String(), said) {
		t.Fatalf("a restart with the store kept: scimrelay_stream_lost %v, log:\n%s", v, logs)
	}
	p.stop()
	if err := os.RemoveAll(testConfig(t, dir).NATSDir()); err != nil {
		t.Fatal(err)
	}
	p, logs = start()
	if v := lost(p); v != 1 || !strings.Contains(logs.String(), said) {
		t.Fatalf("a start after the NATS store was deleted: scimrelay_stream_lost %v, log:\n%s", v, logs)
	}
}

// TestStreamThatLostItsMessagesKeepsDelivering: the embedded NATS store's
// first message block is damaged while the relay is stopped (a damaged
// disk): nats-server opens the stream empty, its sequence back at 0, and
// keeps the sink's consumers at the positions they had reached. The
// events made after the restart are numbered from 1 again; the relay
// says so at Error and recreates the consumers from the stream's first
// event, so they reach the webhook. Before, every consumer passed over
// the new events up to its old position, /readyz all ok, nothing said.
func TestStreamThatLostItsMessagesKeepsDelivering(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	h := newHook(t)
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	writes := p.createUsers(t, "before", 20)
	waitDelivered(t, h, writes)
	p.stop()
	eventstest.DamageFirstBlock(t, cfg.NATSDir())
	logs := &eventstest.Log{}
	p = startRelayWith(t, cfg, roleAll, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError})), io.Discard)
	writes += p.createUsers(t, "after", 10)
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if got := h.distinct(); got < writes {
			return fmt.Errorf("%d of the %d events delivered (the 20 before the damage, the 10 after)", got, writes)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "the stream lost its events") {
		t.Errorf("nothing said at Error of a stream that lost its events:\n%s", logs)
	}
}

// TestAnEventTheStreamRefusesIsQuarantined: an event the stream refuses
// for good (an external stream whose max_msg_size an operator lowered) is
// set aside in the quarantine, counted (scimrelay_outbox_quarantined_total,
// scimrelay_outbox_quarantine), and the events behind it are published.
func TestAnEventTheStreamRefusesIsQuarantined(t *testing.T) {
	ns := eventstest.RunServer(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	p.createUser(t, "ann")
	readStream(t, p.srv.js, 1)
	ctx := context.Background()
	stream, err := p.srv.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	sc := stream.CachedInfo().Config
	sc.MaxMsgSize = 4 << 10
	if _, err := p.srv.js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	p.scim("acme", acmeToken, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bob","title":"`+strings.Repeat("x", 8<<10)+`"}`).want(t, 201)
	carol := p.createUser(t, "carol")
	if got := readStream(t, p.srv.js, 2); got[1].subject != "Users/"+carol {
		t.Fatalf("the stream's second event is of %s, want carol's (Users/%s)", got[1].subject, carol)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n, rows := metric(t, p, "scimrelay_outbox_quarantined_total"), metric(t, p, "scimrelay_outbox_quarantine"); n != 1 || rows != 1 {
			return fmt.Errorf("scimrelay_outbox_quarantined_total %v, scimrelay_outbox_quarantine %v; want 1 and 1", n, rows)
		}
		return nil
	})
}

// TestAnUnansweredEventIsSentAgainAndCounted: an event NATS never answers
// (lost on its way to the stream, as when its leader stops with it in
// hand) is sent again after a second, published, and counted in
// scimrelay_outbox_resent_total.
func TestAnUnansweredEventIsSentAgainAndCounted(t *testing.T) {
	ns := eventstest.RunServer(t)
	proxy := eventstest.NewEventLosingProxy(t, ns.Addr().String(), 0, 1)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = "nats://" + proxy.Addr
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	p.createUser(t, "ann")
	readStream(t, p.srv.js, 1)
	if proxy.Lost() != 1 {
		t.Fatalf("the proxy lost %d copies of the event, want 1", proxy.Lost())
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := metric(t, p, "scimrelay_outbox_resent_total"); n < 1 {
			return fmt.Errorf("scimrelay_outbox_resent_total %v, want at least 1", n)
		}
		return nil
	})
}

// TestShutdownDelayKeepsAnswering: with limits.shutdown_delay, a relay
// asked to stop fails /readyz at once and goes on answering SCIM requests
// for the delay, each answer closing its connection, so that a load
// balancer still sending to it while it sees the relay leave has them
// answered, and keep-alive clients move to new connections. Then it stops.
// In role all (the systemd unit) and in role scim on an external NATS (the
// chart's scim pod, which sets the delay).
func TestShutdownDelayKeepsAnswering(t *testing.T) {
	t.Run(roleAll, func(t *testing.T) {
		cfg := testConfig(t, t.TempDir())
		cfg.Limits.ShutdownDelay = config.Duration(3 * time.Second)
		keepsAnswering(t, startRelay(t, cfg, roleAll))
	})
	t.Run(roleSCIM, func(t *testing.T) {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL = eventstest.URL(eventstest.RunServer(t))
		cfg.Limits.ShutdownDelay = config.Duration(3 * time.Second)
		keepsAnswering(t, startRelay(t, cfg, roleSCIM))
	})
}

// keepsAnswering stops p, whose shutdown delay is a few seconds, and
// checks it answers meanwhile, each answer closing its connection.
func keepsAnswering(t *testing.T, p *relayProc) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	send := func() (*http.Response, error) {
		req, err := http.NewRequest("GET", p.scimURL+"/scim/v2/acme/Users?count=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+acmeToken)
		res, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
		return res, err
	}
	if res, err := send(); err != nil || res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("before the stop: %v %v, want 200 on a kept-alive connection", res, err)
	}

	p.cancel()
	p.cancel = nil
	p.wantStatus("/readyz", http.StatusServiceUnavailable, 10*time.Second)
	res, err := send()
	if err != nil || res.StatusCode != http.StatusOK || !res.Close {
		t.Fatalf("a SCIM request once the stop began: %v %v, want 200 closing its connection", res, err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("the relay stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not stop within 30 s")
	}
	if _, err := send(); err == nil {
		t.Fatal("a SCIM request was answered after the relay stopped")
	}
}

// TestDataFileFailureDuringShutdownDelay: a commit to the data file that
// fails while a stopping relay answers for limits.shutdown_delay ends the
// delay and is the stop's error, as it is while serving: the process
// exits non-zero and its supervisor sees why.
func TestDataFileFailureDuringShutdownDelay(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Limits.ShutdownDelay = config.Duration(10 * time.Second)
	p := startRelay(t, cfg, roleAll)
	p.cancel()
	p.cancel = nil
	p.wantStatus("/readyz", http.StatusServiceUnavailable, 10*time.Second)
	restore := disktest.FailWrites(t, cfg.DBPath())
	// On a connection of its own: one pooled from an earlier relay that
	// had this port would be closed under it.
	req, err := http.NewRequest("POST", p.scimURL+"/scim/v2/acme/Users", strings.NewReader(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"during"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	req.Header.Set("Content-Type", "application/scim+json")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Do(req)
	restore()
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a write whose commit failed during the delay: %d, want 503", res.StatusCode)
	}
	select {
	case err := <-p.done:
		if err == nil || !strings.Contains(err.Error(), "stopped writing its data file (a commit failed") {
			t.Fatalf("the relay stopped with %v, want the failed commit", err)
		}
	case <-time.After(8 * time.Second): // the delay alone is 10 s
		t.Fatal("the relay waited out its shutdown delay after its data file failed")
	}
}

// TestExternalServerCrashLosesNoEventItAcknowledged: the external NATS
// server crashes (its machine loses power) and comes back with its store
// as it last wrote it to disk: the events it acknowledged since its last
// sync are gone. The relay keeps each published event in its outbox for
// three times nats.sync_interval for exactly this ("an event stays in the
// outbox until the server has written it to disk", README, Events), so
// once the server is back every acknowledged write's event must be in the
// stream again, in order per resource, and reach the webhook, whether the
// server is back at once or after longer than the keep. They were
// published again only at the relay's next start, and deleted once their
// time was up; then, for a server down longer than the keep, deleted
// while it was away (reviews of an external NATS under restarts and of
// the fix).
//
// The crash is simulated by restoring a copy of the server's store taken
// before the last writes (what its disk held), on the same port.
func TestExternalServerCrashLosesNoEventItAcknowledged(t *testing.T) {
	for _, c := range []struct {
		name string
		sync time.Duration // nats.sync_interval: the relay keeps events 3 times that
		down time.Duration // how long the server stays away
	}{
		{"back at once", time.Minute, 0},
		// A keep of 6 s: the three writes below must still be kept when
		// counted, which a keep of 3 s did not promise on a loaded machine.
		{"away longer than the keep", 2 * time.Second, 8 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir, port := t.TempDir(), eventstest.FreePort(t)
			ns := eventstest.RunServerAt(t, dir, port)
			h, down := refusingHook(t, http.StatusServiceUnavailable) // down while the server crashes
			cfg := testConfig(t, t.TempDir())
			cfg.NATS.URL = ns.ClientURL()
			cfg.NATS.SyncInterval = config.Duration(c.sync)
			withSink(cfg, "crm", h.URL, nil)
			p := startRelay(t, cfg, roleAll)
			writes := p.createUsers(t, "synced", 3)
			readStream(t, p.srv.js, writes)
			waitDelivered(t, h, writes)

			// What the server's disk holds: its store as of now.
			ns.Shutdown()
			ns.WaitForShutdown()
			disk := filepath.Join(t.TempDir(), "disk")
			if err := os.CopyFS(disk, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			ns = eventstest.RunServerAt(t, dir, port)
			p.wantStatus("/readyz/nats", 200, 30*time.Second)
			p.wantStatus("/readyz/publisher", 200, 30*time.Second)

			// Writes JetStream acknowledges but has not yet written to disk.
			down.Store(true)
			var ids []string
			for i := range 3 {
				ids = append(ids, p.createUser(t, fmt.Sprintf("unsynced%d", i)))
				writes++
			}
			readStream(t, p.srv.js, writes)
			if n, err := p.srv.store.OutboxDepth(); err != nil || n < 3 {
				t.Fatalf("the outbox keeps %d events (%v), want the 3 the server has not written to disk", n, err)
			}

			// The server's machine loses power: it comes back with what its
			// disk held, after c.down.
			ns.Shutdown()
			ns.WaitForShutdown()
			away := time.Now()
			eventstest.CheckFor(t, c.down+10*time.Second, 100*time.Millisecond, func() error {
				if time.Since(away) < c.down {
					return fmt.Errorf("the server is still away")
				}
				return nil
			})
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.CopyFS(dir, os.DirFS(disk)); err != nil {
				t.Fatal(err)
			}
			eventstest.RunServerAt(t, dir, port)
			down.Store(false)
			p.wantStatus("/readyz/nats", 200, 30*time.Second)
			// Entra goes on: it changes a user whose creation the server lost.
			p.scim("acme", acmeToken, "PATCH", "/Users/"+ids[0], `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"Ann"}]}`).want(t, 200)
			writes++

			eventstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
				info, err := p.srv.js.Stream(context.Background(), events.StreamName)
				if err != nil {
					return err
				}
				n, _ := p.srv.store.OutboxDepth()
				if got := info.CachedInfo().State.Msgs; got != uint64(writes) {
					return fmt.Errorf("the stream holds %d events of the %d writes answered 2xx (the relay's outbox still keeps %d)", got, writes, n)
				}
				return nil
			})
			last := map[string]uint64{}
			for _, e := range readStream(t, p.srv.js, writes) {
				if e.subjectSeq != last[e.subject]+1 {
					t.Errorf("the stream holds %s's event %d after its event %d", e.subject, e.subjectSeq, last[e.subject])
				}
				last[e.subject] = e.subjectSeq
			}
			waitDelivered(t, h, writes)
			if v := h.orderViolation(); v != "" {
				t.Fatal(v)
			}
		})
	}
}

// TestStreamMadeAgainWhileRunningSkipsNothing: an operator deletes SCIMRELAY on the
// external NATS and makes it again as the relay makes it (same settings:
// say, to start afresh), while the relay runs. Every write answered 2xx
// after that reaches the webhook: the workers made their consumers again
// from the last sequence the old stream had reached, and the new stream's
// events up to there were skipped, readyz all ok (a review of an external
// NATS under restarts).
func TestStreamMadeAgainWhileRunningSkipsNothing(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	ns := eventstest.RunServerAt(t, dir, port)
	h := newHook(t)
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = ns.ClientURL()
	withSink(cfg, "crm", h.URL, nil)
	p := startRelay(t, cfg, roleAll)
	before := p.createUsers(t, "before", 20)
	waitDelivered(t, h, before)

	_, js := eventstest.Connect(t, ns.ClientURL()) // as the operator does
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	if err := js.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	after := p.createUsers(t, "after", 5)
	eventstest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		if got := h.distinct(); got < before+after {
			st, body := p.get("/readyz?verbose")
			return fmt.Errorf("%d of the %d events after the recreation delivered; readyz %d %s", got-before, after, st, body)
		}
		return nil
	})
}
