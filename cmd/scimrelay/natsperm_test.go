// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// workerPublish is what README's "Who can reach what" gives a sink worker
// on an external NATS: the subjects it may publish on (JetStream's API
// included). Subscribing it needs only on its inbox.
var workerPublish = []string{
	"$JS.API.INFO",
	// The event stream, as the front end made it (a worker creates and
	// updates no stream or bucket), read by parked resources.
	"$JS.API.STREAM.INFO.SCIMRELAY",
	"$JS.API.STREAM.MSG.GET.SCIMRELAY", "$JS.API.DIRECT.GET.SCIMRELAY", "$JS.API.DIRECT.GET.SCIMRELAY.>",
	// The sinks' partition consumers, their hand-over and acknowledgements.
	"$JS.API.CONSUMER.CREATE.SCIMRELAY.*", "$JS.API.CONSUMER.CREATE.SCIMRELAY.*.>", "$JS.API.CONSUMER.INFO.SCIMRELAY.*",
	"$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY.*", "$JS.API.CONSUMER.DELETE.SCIMRELAY.*",
	"$JS.API.CONSUMER.RESET.SCIMRELAY.*", "$JS.API.CONSUMER.UNPIN.SCIMRELAY.*", "$JS.ACK.SCIMRELAY.>",
	// The workers' announcements.
	"scimrelay-workers.>", "$JS.API.STREAM.INFO.SCIMRELAY_WORKERS", "$JS.API.STREAM.PURGE.SCIMRELAY_WORKERS",
	// Dead letters and delivery attempts.
	"scimrelay-dlq.>", "scimrelay-deliveries.>",
	"$JS.API.STREAM.INFO.SCIMRELAY_DLQ",
	"$JS.API.STREAM.MSG.DELETE.SCIMRELAY_DLQ", // a redrive takes a delivered dead letter out of the queue
	"$JS.API.STREAM.INFO.SCIMRELAY_DELIVERIES",
	"$JS.API.DIRECT.GET.SCIMRELAY_DELIVERIES.>", // a sink's last attempt, for its status
	"$JS.API.CONSUMER.CREATE.SCIMRELAY_DLQ.>", "$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY_DLQ.>", "$JS.API.CONSUMER.INFO.SCIMRELAY_DLQ.>", "$JS.API.CONSUMER.DELETE.SCIMRELAY_DLQ.>",
	"$JS.API.CONSUMER.CREATE.SCIMRELAY_DELIVERIES.>", "$JS.API.CONSUMER.MSG.NEXT.SCIMRELAY_DELIVERIES.>", "$JS.API.CONSUMER.INFO.SCIMRELAY_DELIVERIES.>", "$JS.API.CONSUMER.DELETE.SCIMRELAY_DELIVERIES.>",
	// The parked-resource buckets (here of the sink crm).
	"$KV.scimrelay-parked-crm.>", "$JS.API.STREAM.INFO.KV_scimrelay-parked-crm", "$JS.API.DIRECT.GET.KV_scimrelay-parked-crm.>",
	"$JS.API.CONSUMER.CREATE.KV_scimrelay-parked-crm.>", "$JS.API.CONSUMER.DELETE.KV_scimrelay-parked-crm.>",
	"$JS.API.STREAM.PURGE.KV_scimrelay-parked-crm", // the markers of records taken out, once old
	"$JS.FC.KV_scimrelay-parked-crm.>",             // flow control of a watch listing a partition's records
}

// TestComposeGivesTheWorkersTheirPermissions: deploy/compose/nats.conf
// gives its user sinks exactly workerPublish (for its one sink, demo), so
// that a permission a worker comes to need reaches the Compose shape too.
func TestComposeGivesTheWorkersTheirPermissions(t *testing.T) {
	t.Setenv("NATS_SCIM_PASSWORD", "scim-secret")
	t.Setenv("NATS_SINKS_PASSWORD", "sinks-secret")
	opts, err := natsserver.ProcessConfigFile("../../deploy/compose/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, s := range workerPublish {
		want = append(want, strings.ReplaceAll(s, "-crm", "-demo"))
	}
	slices.Sort(want)
	for _, u := range opts.Users {
		if u.Username != "sinks" {
			continue
		}
		if u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
			t.Fatalf("nats.conf's user sinks has no permissions: %+v", u.Permissions)
		}
		got := slices.Sorted(slices.Values(u.Permissions.Publish.Allow))
		if !slices.Equal(got, want) {
			t.Errorf("nats.conf lets user sinks publish on\n%v\nwant README's row:\n%v", got, want)
		}
		if sub := u.Permissions.Subscribe.Allow; !slices.Equal(sub, []string{"_INBOX.>"}) {
			t.Errorf("nats.conf lets user sinks subscribe on %v, want _INBOX.> only", sub)
		}
		return
	}
	t.Fatal("deploy/compose/nats.conf has no user sinks")
}

// TestSinkWorkerPermissions runs a sink worker on an external NATS as a
// user holding only README's permissions (workerPublish): it takes its
// partitions, parks a resource whose first delivery fails and reads it back
// from the stream (one event a request, or a batch's worth), and delivers
// everything, in order. The SCIM front end runs as a user of its own.
func TestSinkWorkerPermissions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	for _, batch := range []*config.SinkBatch{nil, {MaxEvents: 10, MaxWait: config.Duration(20 * time.Millisecond)}} {
		t.Run(fmt.Sprintf("batch=%v", batch != nil), func(t *testing.T) { sinkWorkerPermissions(t, batch) })
	}
}

func sinkWorkerPermissions(t *testing.T, batch *config.SinkBatch) {
	ns := natsWithWorkerUser(t)

	h := newHook(t)
	// ann's first event fails, quick retries included: her resource is
	// parked, and its events are read back from the stream.
	var refused atomic.Int32
	var gone atomic.Bool
	gone.Store(true)
	receiver := h.Config.Handler
	h.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		created := r.Header.Get("ce-type") == "io.scimrelay.user.created" || bytes.Contains(body, []byte(`"type":"io.scimrelay.user.created"`))
		if created && bytes.Contains(body, []byte(`"userName":"ann"`)) && refused.Add(1) <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if created && bytes.Contains(body, []byte(`"userName":"dee"`)) && gone.Load() {
			w.WriteHeader(http.StatusGone) // permanent: dead-lettered at once
			return
		}
		receiver.ServeHTTP(w, r)
	})
	configure := func(user, password string) *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = ns.ClientURL(), user, password
		withSink(cfg, "crm", h.URL, func(s *config.Sink) {
			s.Retry = []config.Duration{config.Duration(200 * time.Millisecond)}
			if s.Batch = batch; batch != nil {
				s.Format = "" // batches have a format of their own
			}
		})
		return cfg
	}
	front := startRelay(t, configure("front", "front-secret"), roleSCIM)
	// Two workers, as deployed; a request the account refuses shows in
	// their log as a permissions violation.
	var workerLog eventstest.Log
	log := slog.New(slog.NewTextHandler(&workerLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the workers' log:\n%s", workerLog.String())
		}
	})
	// Markers of parked records taken out are removed at once (an hour
	// old, as shipped), so that the test sees it done.
	worker1 := startRelayWith(t, configure("worker", "worker-secret"), roleSinks, log, io.Discard, withMarkerAge(time.Millisecond))
	worker2 := startRelayWith(t, configure("worker", "worker-secret"), roleSinks, log, io.Discard, withMarkerAge(time.Millisecond))
	uid := front.createUser(t, "ann")
	front.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"title","value":"Guide"}]}`).want(t, 200)
	front.createUser(t, "bob")
	waitDelivered(t, h, 3)
	if refused.Load() < 4 {
		t.Errorf("ann's first event was refused %d times; it was not parked", refused.Load())
	}
	// Her record, taken out once she caught up, left a marker, which the
	// partition's owner removes with the stream purge API.
	eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		return onlyClaims(context.Background(), front.srv.js, "crm")
	})
	// One worker leaves (a rolling update): it hands its partitions over
	// (unpinning them), and the other delivers what comes next.
	worker1.stop()
	for i := range 5 {
		front.createUser(t, fmt.Sprintf("later%d", i))
	}
	waitDelivered(t, h, 8)
	// A dead letter redriven through the worker that is left (the admin
	// API of a --role sinks process): its account reads the queue, and
	// takes the delivered dead letter out of it.
	front.createUser(t, "dee")
	deadLetters := func() (int, error) {
		page, err := worker2.srv.sinks.DeadLetters(context.Background(), "crm", "", 10)
		return len(page.DeadLetters), err
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n, err := deadLetters(); n != 1 || err != nil {
			return fmt.Errorf("%d dead letters (%v), want dee's", n, err)
		}
		return nil
	})
	gone.Store(false)
	if res, err := worker2.srv.sinks.Redrive(context.Background(), sinks.RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != 1 || res.Failed != 0 {
		t.Fatalf("redrive through a worker: %+v, %v", res, err)
	}
	waitDelivered(t, h, 9)
	if n, err := deadLetters(); n != 0 || err != nil {
		t.Errorf("%d dead letters (%v) after the redrive delivered the one there was", n, err)
	}
	// Forgetting a removed sink is the front end's: a worker's user may not
	// delete a bucket or dead letters, and its admin API says so.
	var refused503 *adminclient.Error
	wc := &adminclient.Client{BaseURL: worker2.adminURL, Token: adminSecret}
	if _, err := wc.ForgetSink(context.Background(), "gone"); !errors.As(err, &refused503) || refused503.Status != http.StatusServiceUnavailable {
		t.Errorf("sinks forget through a worker's admin API: %v; want 503", err)
	}
	worker2.stop()
	if v := h.orderViolation(); v != "" {
		t.Error(v)
	}
	if strings.Contains(workerLog.String(), "ermissions") { // a violation is logged at Warn
		t.Errorf("the worker's account refused a request:\n%s", workerLog.String())
	}
}

// TestSinkWorkerStreamGauges: a sink worker on an external NATS as a user
// holding only README's permissions (workerPublish) shows on its /metrics
// the relay's streams, as the front end does, reading each by name: it may
// not list the account's streams, and a list refused had every scrape log
// a permissions violation and show no stream. And `sinks list` and `sinks
// status` answer through it as through the front end (docker compose exec
// relay-sinks-1 scimrelay sinks list): they read a sink's last attempt by
// a direct get the row did not allow, and answered "NATS is away".
func TestSinkWorkerStreamGauges(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM)
	var workerLog eventstest.Log
	log := slog.New(slog.NewTextHandler(&workerLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	worker := startRelayWith(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks, log, io.Discard)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)
	for name, p := range map[string]*relayProc{"the front end": front, "the worker": worker} {
		c := &adminclient.Client{BaseURL: p.adminURL, Token: adminSecret, Timeout: 10 * time.Second}
		// A scrape reads the streams within 2 s, and shows the values last
		// read when it cannot: on a loaded machine the first can miss.
		eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			families, err := c.Metrics(t.Context())
			if err != nil {
				return err
			}
			shown := map[string]float64{}
			if f := families["scimrelay_stream_messages"]; f != nil {
				for _, m := range f.GetMetric() {
					shown[labelValue(m, "stream")] = m.GetGauge().GetValue()
				}
			}
			for _, stream := range append([]string{events.StreamName}, sinks.Streams()...) {
				if _, ok := shown[stream]; !ok {
					return fmt.Errorf("%s's /metrics shows no scimrelay_stream_messages of %s: %v", name, stream, shown)
				}
			}
			if shown[events.StreamName] < 1 {
				return fmt.Errorf("%s's /metrics shows %v messages in %s, want ann's event", name, shown[events.StreamName], events.StreamName)
			}
			if families["scimrelay_stream_read_timestamp_seconds"] == nil {
				return fmt.Errorf("%s's /metrics says the streams were never read in full", name)
			}
			return nil
		})
		if _, err := c.Sinks(t.Context()); err != nil {
			t.Errorf("sinks list through %s's admin API: %v", name, err)
		}
		if _, err := c.Sink(t.Context(), "crm"); err != nil {
			t.Errorf("sinks status crm through %s's admin API: %v", name, err)
		}
	}
	if strings.Contains(workerLog.String(), "ermissions") { // a violation is logged at Warn
		t.Errorf("the worker's account refused a request:\n%s", workerLog.String())
	}
}

// natsWithWorkerUser runs a NATS server with two users: front, with every
// permission, and worker, with README's row for a sink worker
// (workerPublish).
func natsWithWorkerUser(t *testing.T) *natsserver.Server {
	return eventstest.RunServerWith(t, t.TempDir(), -1, withWorkerUser)
}

// withWorkerUser gives a NATS server the front end's user and the workers'
// (README's row, workerPublish).
func withWorkerUser(o *natsserver.Options) {
	o.Users = []*natsserver.User{
		{Username: "front", Password: "front-secret"},
		{Username: "worker", Password: "worker-secret", Permissions: &natsserver.Permissions{
			Publish:   &natsserver.SubjectPermission{Allow: workerPublish},
			Subscribe: &natsserver.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
	}
}

// TestSinkWorkersRecoverALostStreamWithTheirPermissions: an external NATS
// restarts on a damaged store, its stream's events lost, and stores more
// new ones than the sink had reached. Workers with exactly README's row
// find it, running through it or starting after it (two at once), and
// make the consumers again from the stream's first event: the recovery
// key, the marks (reached.<n>), the consumers' deletion and creation are
// all requests of that row, and every new event is delivered in order.
// Until 2026-12-07 nothing ran a recovery under the row.
func TestSinkWorkersRecoverALostStreamWithTheirPermissions(t *testing.T) {
	for _, running := range []bool{true, false} {
		t.Run(map[bool]string{true: "ran through", false: "set up after"}[running], func(t *testing.T) {
			dir, port := t.TempDir(), eventstest.FreePort(t)
			ns := eventstest.RunServerWith(t, dir, port, withWorkerUser)
			h := newHook(t)
			var workerLog eventstest.Log
			log := slog.New(slog.NewTextHandler(&workerLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the workers' warnings:\n%s", eventstest.GrepLines(workerLog.String(), "level=WARN", "level=ERROR"))
				}
			})
			front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM)
			worker := startRelayWith(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks, log, io.Discard)
			writes := front.createUsers(t, "old", 20)
			waitDelivered(t, h, writes)
			// Every partition that took events has its mark.
			kv, err := front.srv.js.KeyValue(t.Context(), "scimrelay-parked-crm")
			if err != nil {
				t.Fatal(err)
			}
			eventstest.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
				for i, info := range partitionConsumers(t, front, "crm") {
					if _, err := kv.Get(t.Context(), fmt.Sprint("reached.", i)); info.AckFloor.Stream > 0 && err != nil {
						return fmt.Errorf("partition %d: no mark (%v)", i, err)
					}
				}
				return nil
			})
			if !running {
				worker.stop()
			}
			ns.Shutdown()
			ns.WaitForShutdown()
			eventstest.DamageFirstBlock(t, dir)
			eventstest.RunServerWith(t, dir, port, withWorkerUser)
			writes += front.createUsers(t, "new", 40)
			if !running {
				for range 2 {
					startRelayWith(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks, log, io.Discard)
				}
			}
			waitDelivered(t, h, writes)
			if v := h.orderViolation(); v != "" {
				t.Error(v)
			}
			if !strings.Contains(workerLog.String(), "lost its events") {
				t.Error("no worker said the stream lost its events")
			}
			if strings.Contains(workerLog.String(), "ermissions") { // a violation is logged at Warn
				t.Errorf("the workers' account refused a request:\n%s", eventstest.GrepLines(workerLog.String(), "ermissions"))
			}
		})
	}
}

// externalNATSWithWorkerUser runs natsWithWorkerUser's two users on a
// nats-server of its own process, and returns its client URL and a
// function that gives the worker user other publish permissions while it
// is connected: the configuration file rewritten and reloaded (SIGHUP),
// which nats-server applies to the connections open. In a process of its
// own because nats-server's reload races with its own direct gets, which
// the race detector reports in the test's process.
func externalNATSWithWorkerUser(t *testing.T) (string, func(publish []string)) {
	t.Helper()
	bin := natsServerBin(t)
	conf, store, addr := filepath.Join(t.TempDir(), "nats.conf"), t.TempDir(), freeAddr(t)
	write := func(publish []string) {
		t.Helper()
		quoted := make([]string, len(publish))
		for i, s := range publish {
			quoted[i] = strconv.Quote(s)
		}
		allow := "[" + strings.Join(quoted, ", ") + "]"
		text := fmt.Sprintf(`listen: %q
jetstream {store_dir: %q}
authorization {users: [
  {user: front, password: front-secret}
  {user: worker, password: worker-secret, permissions: {publish: {allow: %s}, subscribe: {allow: ["_INBOX.>"]}}}
]}
`, addr, store, allow)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(workerPublish)
	p := runProcess(t, bin, []string{"-c", conf})
	url := "nats://" + addr
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-p.exited:
			t.Fatalf("nats-server exited: %v\n%s", p.err, p.stderr)
		default:
		}
		nc, err := nats.Connect(url, nats.UserInfo("front", "front-secret"))
		if err == nil {
			nc.Close()
		}
		return err
	})
	reloads := 0
	return url, func(publish []string) {
		t.Helper()
		write(publish)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			if strings.Contains(p.stderr.String(), "Failed to reload") {
				t.Fatalf("nats-server did not reload its configuration:\n%s", p.stderr)
			}
			if n := strings.Count(p.stderr.String(), "Reloaded server configuration"); n < reloads {
				return fmt.Errorf("nats-server has reloaded its configuration %d times, want %d:\n%s", n, reloads, p.stderr)
			}
			return nil
		})
	}
}

// writeDeadLetter writes a dead letter of e to sink crm's queue as js's
// user, with the headers given as name, value pairs.
func writeDeadLetter(t *testing.T, js jetstream.JetStream, e event.Event, header ...string) {
	t.Helper()
	msg, err := events.ToMsg(e)
	if err != nil {
		t.Fatal(err)
	}
	msg.Header.Set("Scimrelay-Dlq-Subject", msg.Subject)
	for i := 0; i+1 < len(header); i += 2 {
		msg.Header.Set(header[i], header[i+1])
	}
	msg.Subject = "scimrelay-dlq.crm"
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatalf("the worker's user could not write a dead letter: %v", err)
	}
}

// onNATSAs is a relay's configuration on ns as user, with one sink, crm,
// delivering to h.
func onNATSAs(t *testing.T, ns *natsserver.Server, user, password string, h *hook) *config.Config {
	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL, cfg.NATS.User, cfg.NATS.Password = ns.ClientURL(), user, password
	withSink(cfg, "crm", h.URL, nil)
	return cfg
}

// onlyClaims fails unless sink's parking bucket holds nothing but the
// partitions' claims and marks (claim.<n>, reached.<n>): no record, no
// marker.
func onlyClaims(ctx context.Context, js jetstream.JetStream, sink string) error {
	bucket := "scimrelay-parked-" + sink
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$KV."+bucket+".>"))
	if err != nil {
		return err
	}
	if info.State.LastSeq == 0 {
		return errors.New("the parking bucket took no write")
	}
	for subject := range info.State.Subjects {
		if !strings.HasPrefix(subject, "$KV."+bucket+".claim.") && !strings.HasPrefix(subject, "$KV."+bucket+".reached.") {
			return fmt.Errorf("the parking bucket still holds %s", subject)
		}
	}
	return nil
}

// TestSinkWorkerCannotForgeEvents: a sink worker's NATS user (README's
// row, workerPublish) cannot have a sink deliver an event the relay did
// not publish. It may not publish on scimrelay.>, nor create or update a
// stream or bucket, one of which could republish onto it. What it can
// still do is aim the reply of a JetStream API request at scimrelay.>
// (NATS checks a request's subject, not its reply subject), and the
// stream stores the answer: a direct get of a forged event it wrote to its
// bucket, or the API's own JSON. The front end signs its events, and the
// workers read such messages as not published by the relay
// (events.Published) and drop them, delivering and dead-lettering
// nothing: one whose headers say, to nats.go alone, that it was published
// to the event stream (a line ending in a bare LF) too. Nor does a
// redrive deliver a dead letter the worker's user wrote.
func TestSinkWorkerCannotForgeEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	configure := func(user, password string) *config.Config { return onNATSAs(t, ns, user, password, h) }
	front := startRelay(t, configure("front", "front-secret"), roleSCIM)
	var workerLog eventstest.Log
	worker := startRelayWith(t, configure("worker", "worker-secret"), roleSinks,
		slog.New(slog.NewTextHandler(&workerLog, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)
	ctx := context.Background()
	nc, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://worker:worker-secret@", 1))
	stored := func() uint64 {
		st, err := front.srv.js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.LastSeq
	}
	// Replies aimed at the event stream: a forged event, written to the
	// bucket and answered by a direct get of it, and the API's answer to
	// $JS.API.INFO. Both reach the stream.
	forged, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, "mallory", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	forged.Subject = "$KV.scimrelay-parked-crm.forged"
	if _, err := js.PublishMsg(ctx, forged); err != nil { // stored in the bucket
		t.Fatal(err)
	}
	// nats-server reads a header only after a CRLF, nats.go splits lines
	// on a bare LF (and writes none: it sends a line break in a value as
	// a space, so the message goes out in NATS's own protocol): to the
	// bucket's stream this message has no expectation of the event stream
	// (it stores it), to a worker reading the copy answered onto the event
	// stream it has.
	smuggled, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, "trudy", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	header := "NATS/1.0\r\nX-A: a\n" + jetstream.ExpectedStreamHeader + ": " + events.StreamName + "\r\n"
	for k, v := range smuggled.Header {
		header += k + ": " + v[0] + "\r\n"
	}
	eventstest.RawPublish(t, ns.Addr().String(), "worker", "worker-secret", "$KV.scimrelay-parked-crm.smuggled", header+"\r\n", smuggled.Data)
	// The server has it; the bucket's stream stores it on its own time.
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		bucket, err := front.srv.js.Stream(ctx, "KV_scimrelay-parked-crm")
		if err != nil {
			return err
		}
		_, err = bucket.GetLastMsgForSubject(ctx, "$KV.scimrelay-parked-crm.smuggled")
		return err
	})
	was := stored()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_scimrelay-parked-crm.$KV.scimrelay-parked-crm.forged", "scimrelay.acme.user.created.mallory", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_scimrelay-parked-crm.$KV.scimrelay-parked-crm.smuggled", "scimrelay.acme.user.created.trudy", nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$JS.API.INFO", "scimrelay.acme.user.created.info", nil); err != nil {
		t.Fatal(err)
	}
	// A push consumer on its bucket, delivering to a subject of the event
	// stream (a consumer's configuration is not a subject NATS checks
	// either), may: nats-server 2.15 delivers a push consumer's messages
	// only while a client subscribes to that very subject, which this user
	// cannot (it subscribes on _INBOX.> alone). Checked at the end.
	if _, err := js.CreateOrUpdatePushConsumer(ctx, "KV_scimrelay-parked-crm", jetstream.ConsumerConfig{
		Durable: "forward", DeliverSubject: "scimrelay.acme.user.created.pushed",
		FilterSubject: "$KV.scimrelay-parked-crm.forged", AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatalf("the worker's user could not make a push consumer on its bucket: %v", err)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := stored() - was; n != 3 {
			return fmt.Errorf("%d of the 3 answers aimed at the event stream are there", n)
		}
		return nil
	})
	answer, err := front.srv.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := answer.GetLastMsgForSubject(ctx, "scimrelay.acme.user.created.mallory.>"); err != nil || m.Header.Get("ce-id") == "" {
		t.Fatalf("the direct get's answer in the event stream: %v, %v; want the forged event", m, err)
	}
	if m, err := answer.GetLastMsgForSubject(ctx, "scimrelay.acme.user.created.trudy.>"); err != nil || m.Header.Get(jetstream.ExpectedStreamHeader) != events.StreamName {
		t.Fatalf("the smuggled event in the event stream: %v, %v; want it with %s as nats.go reads it", m, err, jetstream.ExpectedStreamHeader)
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := strings.Count(workerLog.String(), "not published by the relay"); n < 3 {
			return fmt.Errorf("the worker dropped %d of the 3 messages the relay did not publish", n)
		}
		// Counted after it is logged.
		if n := metric(t, worker, "scimrelay_sink_events_total", "outcome", "not_published"); n < 3 {
			return fmt.Errorf("the worker counted %v of the 3 messages it dropped", n)
		}
		return nil
	})
	if n := metric(t, worker, "scimrelay_sink_events_total", "outcome", "not_published"); n != 3 {
		t.Errorf("scimrelay_sink_events_total{outcome=\"not_published\"} is %v, want 3", n)
	}
	front.createUser(t, "bob")
	waitDelivered(t, h, 2)
	if n := h.distinct(); n != 2 {
		t.Errorf("the sink received %d events; want ann's and bob's, and nothing the relay did not publish", n)
	}
	if page, err := front.srv.sinks.DeadLetters(ctx, "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Errorf("dead letters %+v (%v); want none: a redrive would deliver them", page.DeadLetters, err)
	}
	// A dead letter the worker's user writes (it writes the queue, as
	// delivery needs): listed, and not delivered by a redrive.
	writeDeadLetter(t, js, eventstest.Event(t, "acme", events.UserDeleted, "victim", 1, 1), "Scimrelay-Dlq-Attempts", "1")
	res, err := front.srv.sinks.Redrive(ctx, sinks.RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Delivered != 0 || res.Failed != 1 || len(res.Failures) != 1 || !strings.Contains(res.Failures[0].Error, "not published by the relay") {
		t.Errorf("redriving the worker's dead letter: %+v, %v; want it failed, as not published by the relay", res, err)
	}
	// bob's event came after the push consumer was made, which would have
	// delivered at once.
	if info, err := front.srv.js.PushConsumer(ctx, "KV_scimrelay-parked-crm", "forward"); err != nil || info.CachedInfo().Delivered.Stream != 0 || stored() != was+4 {
		t.Errorf("the worker's push consumer onto scimrelay.>: %+v, %v; the stream went from %d to %d for 3 answers and bob's event", info, err, was, stored())
	}
	worker.stop()

	before := stored()
	// Every stream and bucket a worker reaches, as the front end made it,
	// with a republish of all it stores onto the event stream's subjects
	// added: updated, and made again once gone (as after sinks forget).
	for _, name := range []string{"SCIMRELAY_DLQ", sinks.DeliveriesStream, sinks.WorkersStream, "KV_scimrelay-parked-crm"} {
		st, err := front.srv.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := st.CachedInfo().Config
		c.RePublish = &jetstream.RePublish{Source: c.Subjects[0], Destination: "scimrelay.acme.user.created.>"}
		// A refused request has no answer: it waits out its timeout. The
		// count of events at the end is what shows that nothing got in.
		try := func(request func(context.Context) error) error {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return request(ctx)
		}
		if err := try(func(ctx context.Context) error { _, err := js.UpdateStream(ctx, c); return err }); err == nil {
			t.Errorf("the worker's user updated %s to republish onto the event stream", name)
		}
		if err := front.srv.js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := try(func(ctx context.Context) error { _, err := js.CreateStream(ctx, c); return err }); err == nil {
			t.Errorf("the worker's user made %s again, republishing onto the event stream", name)
		}
		// Then it publishes on the stream's subjects.
		_ = nc.Publish(strings.TrimSuffix(c.Subjects[0], ">")+"forged", []byte(`{"specversion":"1.0"}`))
	}
	_ = nc.Publish("scimrelay.acme.user.created.forged", []byte(`{"specversion":"1.0"}`))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	front.createUser(t, "carol") // after the forgeries, in the same stream
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if stored() == before {
			return errors.New("carol's event is not in the stream")
		}
		return nil
	})
	if after := stored(); after != before+1 {
		t.Errorf("the event stream went from %d to %d messages for one user created: a worker's user put an event on it", before, after)
	}
}

// TestFrontEndWritesItsKeyBack: a running front end whose signing key
// another front end's write left out of the event stream (one stalled past
// the re-read at its start) writes it back, so that what it signs from
// then on is delivered, not dead-lettered as signed by an unknown key.
func TestFrontEndWritesItsKeyBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM, withKeyCheck(50*time.Millisecond))
	startRelay(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)

	ctx := context.Background()
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	named := func() []string {
		t.Helper()
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(st.CachedInfo().Config.Metadata["scimrelay_signing_keys"])
	}
	if mine := named(); !slices.Equal(mine, []string{front.srv.signer.PublicKey()}) {
		t.Fatalf("the stream names %v, want the front end's key %s", mine, front.srv.signer.PublicKey())
	}
	seed := make([]byte, 32)
	seed[0] = 9
	other, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Metadata["scimrelay_signing_keys"] = other.PublicKey()
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if keys := named(); !slices.Contains(keys, front.srv.signer.PublicKey()) || !slices.Contains(keys, other.PublicKey()) {
			return fmt.Errorf("the stream names %v, want the front end's key written back beside the other's", keys)
		}
		return nil
	})
	front.createUser(t, "bob")
	waitDelivered(t, h, 2)
	page, err := front.srv.sinks.DeadLetters(ctx, "crm", "", 10)
	if err != nil || len(page.DeadLetters) != 0 {
		t.Errorf("dead letters %+v, %v; want none", page, err)
	}
}

// TestEventsWaitForTheirKeyToBeWrittenBack: events a front end signs
// while the event stream does not name its key (another front end's write
// left it out, and the worker has read the stream's keys since) wait in
// the worker, the resource's later events behind them, until the key is
// written back; they are then delivered in order and none is
// dead-lettered. They used to be dead-lettered at once, and a redrive
// delivered them after the resource's later events.
func TestEventsWaitForTheirKeyToBeWrittenBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	// The front end's own check would write its key back by itself within
	// 5 s; here the test does, once it has seen the worker wait.
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM, withKeyCheck(time.Hour))
	workerLog := &eventstest.Log{}
	startRelayWith(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks, slog.New(slog.NewTextHandler(workerLog, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)

	ctx := context.Background()
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	setKeys := func(keys ...string) {
		t.Helper()
		st, err := js.Stream(ctx, events.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.Metadata["scimrelay_signing_keys"] = strings.Join(keys, " ")
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	seed := make([]byte, 32)
	seed[0] = 11
	other, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	// Another front end writes the stream's keys without this one's, and
	// publishes: the worker reads the keys again for its event.
	setKeys(other.PublicKey())
	msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, "carl", 5, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Sign(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, h, 2)

	// The worker says it waits once it has read the keys again and not
	// found the front end's.
	id := front.createUser(t, "bob")
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(workerLog.String(), "its resource waits for its front end to write the key back") {
			return fmt.Errorf("the worker does not say it waits for the key:\n%s", workerLog.String())
		}
		return nil
	})
	if st, err := front.srv.sinks.Status(ctx, "crm"); err != nil || st.InFlight != 1 || st.DeadLetters != 0 {
		t.Fatalf("sink state %+v, %v; want bob's event held by the worker", st, err)
	}
	front.scim("acme", acmeToken, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`).want(t, 200)
	setKeys(other.PublicKey(), front.srv.signer.PublicKey())
	waitDelivered(t, h, 4)
	if v := h.orderViolation(); v != "" {
		t.Fatal(v)
	}
	if page, err := front.srv.sinks.DeadLetters(ctx, "crm", "", 10); err != nil || len(page.DeadLetters) != 0 {
		t.Fatalf("dead letters %+v, %v; want none", page, err)
	}
}

// TestUpgradeToSignedEvents: the first start of a front end that signs, on
// a stream a release that did not sign made. A worker that starts first
// waits for it; the events stored before it are delivered unsigned as
// before (and redriven when they failed for good since), and an unsigned
// one stored after is not, nor a dead letter that claims to be of one
// stored before.
func TestUpgradeToSignedEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h, gone := goneHook(t)
	gone.Store(false)
	configure := func(user, password string) *config.Config { return onNATSAs(t, ns, user, password, h) }
	frontCfg, workerCfg := configure("front", "front-secret"), configure("worker", "worker-secret")
	front := startRelay(t, frontCfg, roleSCIM)
	worker := startRelay(t, workerCfg, roleSinks)
	front.createUser(t, "ann")
	waitDelivered(t, h, 1)
	worker.stop()
	front.stop()

	// As an older release leaves it: the stream names no signing key, and
	// holds an event its publisher sent, not yet delivered.
	ctx := context.Background()
	_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://front:front-secret@", 1))
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Metadata = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	publish := func(user string, seq uint64) {
		t.Helper()
		msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, user, seq, 1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
	}
	publish("before", 2)
	gone.Store(true) // it fails for good once the worker is back

	var workerLog eventstest.Log
	made := make(chan *server, 1)
	go func() {
		srv, err := newServer(ctx, workerCfg, roleSinks, slog.New(slog.NewTextHandler(&workerLog, nil)), io.Discard, withKeyWait(time.Second))
		if err != nil {
			workerLog.Write([]byte("newServer: " + err.Error() + "\n"))
		}
		made <- srv
	}()
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(workerLog.String(), "with the keys its events are signed with") {
			return errors.New("the worker does not say it waits for the front end's signing keys")
		}
		return nil
	})
	front = startRelay(t, frontCfg, roleSCIM)
	var srv *server
	select {
	case srv = <-made:
	case <-time.After(60 * time.Second):
		t.Fatal("the worker did not start within 60s of the front end")
	}
	if srv == nil {
		t.Fatalf("the worker did not start:\n%s", workerLog.String())
	}
	worker = runServer(t, srv)
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := front.srv.sinks.DeadLetters(ctx, "crm", "", 10)
		if err != nil || len(page.DeadLetters) != 1 {
			return fmt.Errorf("dead letters %+v, %v; want the event stored before signing", page, err)
		}
		return nil
	})
	// A dead letter the worker's user writes, claiming to be of that
	// event (its sequence) with other content, is not redriven.
	_, wjs := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://worker:worker-secret@", 1))
	writeDeadLetter(t, wjs, eventstest.Event(t, "acme", events.UserDeleted, "before", 3, 2), "Scimrelay-Dlq-Stream-Seq", "2")
	gone.Store(false)
	res, err := front.srv.sinks.Redrive(ctx, sinks.RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Delivered != 1 || res.Failed != 1 {
		t.Fatalf("redriving the dead letter of the event stored before signing, and the claim: %+v, %v; want the first delivered and the claim not", res, err)
	}
	waitDelivered(t, h, 2) // ann, and the event stored unsigned before
	publish("after", 3)    // unsigned, by the front end's user: not the relay's
	front.createUser(t, "carol")
	waitDelivered(t, h, 3)
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := metric(t, worker, "scimrelay_sink_events_total", "outcome", "not_published"); n != 1 {
			return fmt.Errorf("the worker dropped %v messages as not the relay's; want the unsigned one after signing began", n)
		}
		return nil
	})
	if n := h.distinct(); n != 3 {
		t.Errorf("the sink received %d events; want ann's, the one stored before signing and carol's", n)
	}

	// An event signed by a key the stream does not name (another front
	// end's, say, whose key an update wrote over): dead-lettered, not
	// dropped, and redriven once the stream names the key.
	seed := make([]byte, 32)
	seed[0] = 7
	second, err := events.NewSigner(seed)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, "dave", 5, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Sign(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		page, err := front.srv.sinks.DeadLetters(ctx, "crm", "", 10)
		if err != nil || len(page.DeadLetters) != 2 || page.DeadLetters[1].ID != msg.Header.Get("ce-id") {
			return fmt.Errorf("dead letters %+v, %v; want the claim's and the event of the unknown key", page, err)
		}
		return nil
	})
	o := streamOptions(frontCfg)
	o.Replicas, o.SigningKey = 1, second.PublicKey()
	if _, err := events.EnsureStream(ctx, js, o, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	// The front end reads the stream's keys again at most once a second.
	eventstest.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		res, err := front.srv.sinks.Redrive(ctx, sinks.RedriveQuery{Sink: "crm"}, nil)
		if err != nil || res.Delivered != 1 {
			return fmt.Errorf("redriving the event of the key the stream now names: %+v, %v", res, err)
		}
		return nil
	})
	waitDelivered(t, h, 4)
}

// TestSinkWorkerListsABigPartitionWithItsPermissions: a worker holding
// exactly README's row takes over a partition whose parking bucket holds
// many entries (here 10,000 markers of records taken out within the
// hour). It lists them through a KV watch, a push consumer with flow
// control, whose flow-control replies ($JS.FC.KV_scimrelay-parked-crm.>)
// the row does not allow.
func TestSinkWorkerListsABigPartitionWithItsPermissions(t *testing.T) {
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	front := startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM)
	worker := startRelay(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks)
	ctx := t.Context()
	uid := front.createUser(t, "ann")
	waitDelivered(t, h, 1)
	worker.stop()
	// ann's partition.
	st, err := front.srv.js.Stream(ctx, "SCIMRELAY")
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetMsg(ctx, st.CachedInfo().State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.ParseStoredSubject(last.Subject)
	if err != nil {
		t.Fatal(err)
	}
	// 10,000 resources of the partition parked and taken out in the last
	// hour: a marker each, as the workers leave them.
	const n = 10000
	bucket := "$KV.scimrelay-parked-crm."
	for i := range n {
		key := fmt.Sprintf("%d.acme.user.%08x-0000-4000-8000-%012x", s.Partition, i, i)
		if _, err := front.srv.js.PublishAsync(bucket+key, []byte(`{"from":1}`)); err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(bucket + key)
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set("Nats-Rollup", "sub")
		if _, err := front.srv.js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			<-front.srv.js.PublishAsyncComplete()
		}
	}
	<-front.srv.js.PublishAsyncComplete()
	var workerLog eventstest.Log
	log := slog.New(slog.NewTextHandler(&workerLog, &slog.HandlerOptions{Level: slog.LevelWarn}))
	startRelayWith(t, onNATSAs(t, ns, "worker", "worker-secret", h), roleSinks, log, io.Discard)
	patched := time.Now()
	front.scim("acme", acmeToken, "PATCH", "/Users/"+uid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"title","value":"Guide"}]}`).want(t, 200)
	waitDelivered(t, h, 2)
	t.Logf("ann's update delivered %v after it was made", time.Since(patched).Round(100*time.Millisecond))
	if strings.Contains(workerLog.String(), "ermissions") {
		t.Errorf("the worker's account refused a request:\n%s", workerLog.String())
	}
}

// TestSinkWorkerCannotListConsumers: no path of a sink worker lists the
// event stream's consumers (the removal of an earlier layout's consumers,
// which did, is the front end's alone, and so is sinks forget), so README's
// row does not let the workers' user learn their names: a subscriber's
// consumer that the operator made under a name of its own (README: your
// own subscribers) stays unknown to it. Named, it is open to the
// consumer requests the row gives on SCIMRELAY.* (pull its events away and
// acknowledge them, reset it, update its filter, delete it).
func TestSinkWorkerCannotListConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS server with users")
	}
	ns := natsWithWorkerUser(t)
	h := newHook(t)
	startRelay(t, onNATSAs(t, ns, "front", "front-secret", h), roleSCIM)
	connect := func(user, password string) jetstream.JetStream {
		_, js := eventstest.Connect(t, strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+":"+password+"@", 1))
		return js
	}
	const subscriber = "audit-k3v9q" // the operator's, for a subscriber of its own
	operator := connect("front", "front-secret")
	if _, err := operator.CreateConsumer(t.Context(), events.StreamName, jetstream.ConsumerConfig{Durable: subscriber, FilterSubject: "scimrelay.acme.>", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	worker := connect("worker", "worker-secret")
	st, err := worker.Stream(t.Context(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	lister := st.ConsumerNames(ctx)
	var listed []string
	for name := range lister.Name() {
		listed = append(listed, name)
	}
	if !slices.Contains(listed, subscriber) {
		if lister.Err() == nil {
			t.Errorf("the workers' NATS user listed the event stream's consumers without error (%v), %s not among them", listed, subscriber)
		}
		return
	}
	// What the name opens: the subscriber's consumer deleted by the
	// workers' user.
	deleted := worker.DeleteConsumer(t.Context(), events.StreamName, subscriber)
	t.Errorf("the workers' NATS user lists the event stream's consumers (%d, %s among them), which no worker path needs ($JS.API.CONSUMER.NAMES.SCIMRELAY); with the name it deleted the subscriber's consumer: %v (nil: deleted)", len(listed), subscriber, deleted)
}
