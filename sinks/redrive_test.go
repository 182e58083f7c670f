// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// deadLetterAll publishes n events, one per user, to a sink whose receiver
// refuses them for good, and waits until all n are dead letters.
func deadLetterAll(t *testing.T, m *Manager, js jetstream.JetStream, n int) map[string]bool {
	t.Helper()
	p := newPublisher(t, js)
	ids := map[string]bool{}
	for i := range n {
		ids[p.publish("acme", events.UserCreated, fmt.Sprintf("u%d", i))] = true
	}
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got, err := m.dlq.count(ctx, "crm"); err != nil || got != uint64(n) {
			return fmt.Errorf("%d dead letters, want %d (%v)", got, n, err)
		}
		return nil
	})
	return ids
}

// TestDeadLetterPages: a listing comes in pages of at most the limit, each
// dead letter once, oldest first, and a cursor that is not one is refused.
func TestDeadLetterPages(t *testing.T) {
	js := natsStream(t)
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusGone })
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	ids := deadLetterAll(t, m, js, 120)
	stop()

	seen := map[string]bool{}
	var pages []int
	var last uint64
	after := ""
	for {
		page, err := m.DeadLetters(ctx, "crm", after, 50)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, len(page.DeadLetters))
		for _, dl := range page.DeadLetters {
			if !ids[dl.ID] || seen[dl.ID] || dl.seq <= last || dl.Status != http.StatusGone {
				t.Fatalf("dead letter %+v: unknown, repeated or out of order", dl)
			}
			seen[dl.ID], last = true, dl.seq
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if fmt.Sprint(pages) != "[50 50 20]" || len(seen) != 120 {
		t.Fatalf("pages %v, %d dead letters", pages, len(seen))
	}
	if page, err := m.DeadLetters(ctx, "crm", "", 5000); err != nil || len(page.DeadLetters) != 120 || page.Next != "" {
		t.Fatalf("a limit above the maximum: %d, %q, %v", len(page.DeadLetters), page.Next, err)
	}
	if page, err := m.DeadLetters(ctx, "crm", "", 0); err != nil || len(page.DeadLetters) != DefaultPageSize || page.Next == "" {
		t.Fatalf("the default page: %d, %v", len(page.DeadLetters), err)
	}
	if _, err := m.DeadLetters(ctx, "crm", "next-please", 10); !errors.Is(err, ErrInvalidCursor) {
		t.Fatalf("a bad cursor: %v", err)
	}
	if _, err := m.DeadLetters(ctx, "nope", "", 10); !errors.Is(err, ErrUnknownSink) {
		t.Fatalf("an unknown sink: %v", err)
	}
}

// TestRedriveAll: redriving every dead letter reads them a batch at a time,
// ends even though the failing ones go back to the queue, counts failures
// beyond the ones it lists, reports progress, and empties the queue once the
// receiver takes them.
func TestRedriveAll(t *testing.T) {
	js := natsStream(t)
	var fixed atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) int {
		if fixed.Load() {
			return http.StatusNoContent
		}
		return http.StatusGone
	})
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	deadLetterAll(t, m, js, 120)
	stop()

	var progress []int
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, func(r RedriveResult) { progress = append(progress, r.Done) })
	if err != nil || res.Total != 120 || res.Done != 120 || res.Failed != 120 || res.Delivered != 0 || len(res.Failures) != maxFailures {
		t.Fatalf("redrive to a receiver that still refuses: total %d done %d failed %d delivered %d listed %d: %v",
			res.Total, res.Done, res.Failed, res.Delivered, len(res.Failures), err)
	}
	if len(progress) != 120 || progress[0] != 1 || progress[119] != 120 {
		t.Fatalf("progress reported %d times: %v", len(progress), progress)
	}
	if f := res.Failures[0]; f.Attempts != 2 || f.Status != http.StatusGone {
		t.Fatalf("a failure: %+v", f)
	}
	if n, _ := m.dlq.count(ctx, "crm"); n != 120 {
		t.Fatalf("%d dead letters after a failed redrive, want 120", n)
	}

	fixed.Store(true)
	before := len(rc.requests())
	res, err = m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Delivered != 120 || res.Failed != 0 {
		t.Fatalf("redrive: %+v %v", res, err)
	}
	if n, _ := m.dlq.count(ctx, "crm"); n != 0 || len(rc.requests())-before != 120 {
		t.Fatalf("%d dead letters left, %d deliveries", n, len(rc.requests())-before)
	}
}

// TestRedriveKeepsAResourcesLaterDeadLettersBehindOneThatFails: in a
// redrive of every dead letter, once one of a resource's fails again, its
// later ones are not delivered before it but moved behind it, in order;
// other resources' are delivered. The next redrive delivers the resource's
// in their order.
func TestRedriveKeepsAResourcesLaterDeadLettersBehindOneThatFails(t *testing.T) {
	var refuse sync.Map // event ids the receiver refuses; all while it is "down"
	d := goneReceiverSink(t, &refuse)
	m, rc, p, down, stop := d.m, d.rc, d.p, &d.down, d.stop
	annCreated := p.publish("acme", events.UserCreated, "ann")
	annUpdated := p.publish("acme", events.UserUpdated, "ann")
	bob := p.publish("acme", events.UserCreated, "bob")
	annDeactivated := p.publish("acme", events.UserDeactivated, "ann")
	awaitDeadLetters(t, m, "crm", 4)
	stop()
	queue := func() []string {
		t.Helper()
		page, err := m.DeadLetters(ctx, "crm", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, dl := range page.DeadLetters {
			out = append(out, dl.ID)
		}
		return out
	}

	// The receiver is back, but still refuses ann's first event.
	down.Store(false)
	refuse.Store(annCreated, true)
	before := len(rc.requests())
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Delivered != 1 || res.Failed != 1 || res.Held != 2 {
		t.Fatalf("redrive: %+v, %v; want bob's delivered, ann's first failed and her two later ones held", res, err)
	}
	if got := ids(rc)[before:]; len(got) != 2 || !slices.Contains(got, annCreated) || !slices.Contains(got, bob) {
		t.Errorf("the redrive sent %v, want ann's first (refused again) and bob's", got)
	}
	if got, want := queue(), []string{annCreated, annUpdated, annDeactivated}; !slices.Equal(got, want) {
		t.Fatalf("the queue after the redrive holds %v, want ann's three in order %v", got, want)
	}

	refuse.Delete(annCreated)
	before = len(rc.requests())
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != 3 || res.Held != 0 {
		t.Fatalf("second redrive: %+v, %v", res, err)
	}
	if got, want := ids(rc)[before:], []string{annCreated, annUpdated, annDeactivated}; !slices.Equal(got, want) {
		t.Errorf("the second redrive sent %v, want ann's in order %v", got, want)
	}
	if got := queue(); len(got) != 0 {
		t.Errorf("dead letters left: %v", got)
	}
}

// TestReplayDeadLettersWhatFails: an event a replay cannot deliver is in
// the queue afterwards, and counted, even when the queue just had a dead
// letter of it with the same attempt count (a worker's, redriven since).
func TestReplayDeadLettersWhatFails(t *testing.T) {
	js := natsStream(t)
	var status atomic.Int32
	status.Store(http.StatusGone)
	rc := newReceiver(t, func(int, *http.Request) int { return int(status.Load()) })
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	deadLetterAll(t, m, js, 2) // each refused on its first try
	stop()
	status.Store(http.StatusNoContent)
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != 2 {
		t.Fatalf("redrive: %+v, %v", res, err)
	}
	status.Store(http.StatusGone)
	counted := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", "dead_lettered"))
	res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil)
	if err != nil || res.DeadLettered != 2 {
		t.Fatalf("replay: %+v, %v; want both dead-lettered", res, err)
	}
	if n, err := m.dlq.count(ctx, "crm"); n != 2 || err != nil {
		t.Errorf("%d dead letters (%v) after a replay that dead-lettered 2", n, err)
	}
	if got := testutil.ToFloat64(m.metrics.outcomes.WithLabelValues("crm", "dead_lettered")) - counted; got != 2 {
		t.Errorf("the replay's dead letters were counted %v times, want 2", got)
	}
}

// TestReplayFailsWhenJetStreamGoes: a replay that cannot read the rest of
// the stream fails; it does not end as if it had sent everything.
func TestReplayFailsWhenJetStreamGoes(t *testing.T) {
	srv := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(srv))
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) int {
		if first.CompareAndSwap(false, true) {
			close(arrived)
			<-release
		}
		return http.StatusNoContent
	})
	m, err := NewManager(Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	const n = 3 * replayBatch
	for i := range n {
		p.publish("acme", events.UserCreated, fmt.Sprintf("u%d", i))
	}
	type outcome struct {
		res ReplayResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil)
		done <- outcome{res, err}
	}()
	<-arrived
	srv.Shutdown()
	close(release)
	select {
	case o := <-done:
		if o.err == nil || o.res.Delivered >= n {
			t.Fatalf("replay after JetStream went away: %+v, %v", o.res, o.err)
		}
		if o.res.Total != n {
			t.Errorf("total %d, want %d", o.res.Total, n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the replay did not end within 60s")
	}
}

// BenchmarkDeadLetterPage lists one page of 100 dead letters from queues
// of 1,000 and 10,000: what a page costs must not grow with the queue.
func BenchmarkDeadLetterPage(b *testing.B) {
	for _, size := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("queue=%d", size), func(b *testing.B) {
			js := natsStream(b)
			m, err := NewManager(Options{Sinks: []Config{sinkConfig("crm", "http://127.0.0.1:1/h", nil)}, JS: js})
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Setup(ctx); err != nil {
				b.Fatal(err)
			}
			for i := range size {
				id := fmt.Sprintf("u%d", i)
				e, err := events.New(events.Meta{Tenant: "acme", Action: events.UserCreated, ResourceID: id, Sequence: uint64(i + 1), SubjectSeq: 1, Time: time.Now()},
					events.Data{Tenant: "acme", ResourceType: "User", ID: id, Resource: json.RawMessage(`{"userName":"` + id + `"}`)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.dlq.put(ctx, "crm", &e, origin{}, Result{Status: http.StatusGone}, 1); err != nil {
					b.Fatal(err)
				}
			}
			// The last page of the queue: a listing that read what comes
			// before it would cost more the longer the queue.
			page, err := m.DeadLetters(ctx, "crm", strconv.Itoa(size-100), 100)
			if err != nil || len(page.DeadLetters) != 100 || page.Next != "" {
				b.Fatalf("the last page: %d, %q, %v", len(page.DeadLetters), page.Next, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.DeadLetters(ctx, "crm", strconv.Itoa(size-100), 100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRenamedSinksDeadLettersGoToTheSinkThatTookItsPlace: the dead letters
// a removed or renamed sink left are listed under its old name, and a
// redrive delivers them to a configured sink, in order, but only those
// whose tenant and type that sink takes: another tenant's stay where they
// are, in the sink's own queue too. One that fails again joins the new
// sink's queue.
func TestRenamedSinksDeadLettersGoToTheSinkThatTookItsPlace(t *testing.T) {
	js := natsStream(t)
	var fixed atomic.Bool
	crm2 := newReceiver(t, func(int, *http.Request) int {
		if fixed.Load() {
			return http.StatusNoContent
		}
		return http.StatusGone
	})
	other := newReceiver(t, nil)
	tenants := func(ts ...string) func(*Config) { return func(c *Config) { c.Tenants = ts } }
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", crm2.URL, nil)}, JS: js})
	put := func(tenant string, action events.Action, id string, seq uint64) string {
		e := eventstest.Event(t, tenant, action, id, seq, seq)
		if _, err := m.dlq.put(ctx, "crm", &e, origin{}, Result{Status: http.StatusGone}, 1); err != nil {
			t.Fatal(err)
		}
		return e.ID()
	}
	acme := []string{put("acme", events.UserCreated, "u1", 1), put("acme", events.UserUpdated, "u1", 2)}
	globex := put("globex", events.UserCreated, "g1", 1)

	// crm is renamed crm2 and keeps acme; globex goes to a sink of its own.
	if _, err := m.Apply(ctx, []Config{sinkConfig("crm2", crm2.URL, tenants("acme")), sinkConfig("other", other.URL, tenants("initech"))}); err != nil {
		t.Fatal(err)
	}
	queues, err := m.DeadLetterQueues(ctx)
	want := []DeadLetterQueue{{Sink: "crm2", Configured: true}, {Sink: "other", Configured: true}, {Sink: "crm", DeadLetters: 3}}
	if err != nil || !slices.Equal(queues, want) {
		t.Fatalf("queues %+v (%v), want %+v", queues, err, want)
	}
	if page, err := m.DeadLetters(ctx, "crm", "", 0); err != nil || len(page.DeadLetters) != 3 {
		t.Fatalf("the removed sink's dead letters: %+v, %v", page, err)
	}
	if _, err := m.DeadLetters(ctx, "nosuch", "", 0); !errors.Is(err, ErrUnknownSink) {
		t.Fatalf("listing a name with neither sink nor dead letters: %v", err)
	}
	if _, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("a redrive to the removed sink itself: %v", err)
	}
	if _, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", To: "nosuch"}, nil); !errors.Is(err, ErrUnknownSink) {
		t.Fatalf("a redrive to no sink: %v", err)
	}

	// A sink that takes none of them gets none: they are another tenant's.
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", To: "other"}, nil)
	if err != nil || res.Skipped != 3 || res.Delivered+res.Failed != 0 || len(other.requests()) != 0 {
		t.Fatalf("redrive to a sink of other tenants: %+v, %v; it received %d", res, err, len(other.requests()))
	}

	// The receiver still refuses: the first of u1's fails again and joins
	// crm2's queue, the second is kept behind it, globex's stays.
	res, err = m.Redrive(ctx, RedriveQuery{Sink: "crm", To: "crm2"}, nil)
	if err != nil || res.Failed != 1 || res.Held != 1 || res.Skipped != 1 {
		t.Fatalf("redrive to crm2 while it refuses: %+v, %v", res, err)
	}
	fixed.Store(true)
	res, err = m.Redrive(ctx, RedriveQuery{Sink: "crm2"}, nil)
	if err != nil || res.Delivered != 2 {
		t.Fatalf("redrive of crm2's queue: %+v, %v", res, err)
	}
	var got []string
	for _, r := range crm2.requests() {
		if r.header.Get("ce-subject") == "Users/u1" && r.header.Get("ce-id") != "" {
			got = append(got, r.header.Get("ce-id"))
		}
	}
	if len(got) < 2 || !slices.Equal(got[len(got)-2:], acme) {
		t.Fatalf("crm2 received u1's events %v, want them to end with %v in that order", got, acme)
	}
	page, err := m.DeadLetters(ctx, "crm", "", 0)
	if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != globex {
		t.Fatalf("left under crm: %+v, %v; want only globex's %s", page, err, globex)
	}

	// Another tenant's dead letter in crm2's own queue (the workers' NATS
	// user writes the queue; or crm2 was narrowed since) stays there.
	g2 := eventstest.Event(t, "globex", events.UserCreated, "g2", 2, 1)
	if _, err := m.dlq.put(ctx, "crm2", &g2, origin{}, Result{Status: http.StatusGone}, 1); err != nil {
		t.Fatal(err)
	}
	res, err = m.Redrive(ctx, RedriveQuery{Sink: "crm2"}, nil)
	if err != nil || res.Skipped != 1 || res.Delivered != 0 {
		t.Fatalf("redrive of another tenant's dead letter in crm2's queue: %+v, %v; want it skipped", res, err)
	}
	for _, r := range crm2.requests() {
		if r.header.Get("ce-tenant") == "globex" {
			t.Fatalf("crm2, which takes acme alone, received globex's event %s", r.header.Get("ce-id"))
		}
	}
}

// TestReplayAfterUpgradeFromTheLayoutBeforePartitions: a release before
// partitions stored events on scimrelay.<tenant>.<kind>.<action>, and its
// single consumer per sink, removed at the upgrade with events it had not
// delivered, is said to be made good by scimrelay sinks replay. The
// replay delivers them; before, it read them as not the relay's and
// skipped them without a word.
func TestReplayAfterUpgradeFromTheLayoutBeforePartitions(t *testing.T) {
	ns := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(ns))
	opts := events.StreamOptions{MaxAge: time.Hour, Duplicates: 10 * time.Minute}
	old := events.StreamConfig(opts)
	old.SubjectTransform = nil // the stream as that release made it
	old.Subjects = []string{"scimrelay.>"}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "scimrelay-sink-crm", Description: "scimrelay sink crm", DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 20_000,
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		msg, err := events.ToMsg(eventstest.Event(t, "acme", events.UserCreated, fmt.Sprintf("u%d", i), uint64(i+1), 1))
		if err != nil {
			t.Fatal(err)
		}
		msg.Subject = "scimrelay.acme." + string(events.UserCreated) // that release's subject
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
	}

	// The upgrade: this release's front end makes the stream its own and
	// sets the sinks up.
	if _, err := events.EnsureStream(ctx, js, opts, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, nil)
	var logs eventstest.Log
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "`scimrelay sinks replay` sends them again") || !strings.Contains(logs.String(), "pending=3") {
		t.Fatalf("no warning that the old consumer's events are sent by a replay:\n%s", logs.String())
	}
	res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil)
	if err != nil || res.Delivered != 3 {
		t.Fatalf("replay after the upgrade: %+v, %v; want the 3 events the removed consumer had not delivered", res, err)
	}
}

// TestRedriveOfOneThatFailsKeepsItsResourceInOrder: a dead letter
// redriven alone (--id) that fails again goes to the end of the queue,
// and its resource's later dead letters go behind it, so that the next
// redrive of all sends them in order; before, they stayed ahead of it,
// and a receiver dropping what is below the subjectseq it applied dropped
// the user's creation.
func TestRedriveOfOneThatFailsKeepsItsResourceInOrder(t *testing.T) {
	d := goneReceiverSink(t, &sync.Map{})
	m, rc, p, down, stop := d.m, d.rc, d.p, &d.down, d.stop
	annCreated := p.publish("acme", events.UserCreated, "ann")
	annUpdated := p.publish("acme", events.UserUpdated, "ann")
	awaitDeadLetters(t, m, "crm", 2)
	stop()
	// The operator tries ann's first dead letter alone; still refused.
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", ID: annCreated}, nil); err != nil || res.Failed != 1 {
		t.Fatalf("redrive --id: %+v, %v", res, err)
	}
	down.Store(false)
	before := len(rc.requests())
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != 2 {
		t.Fatalf("redrive --all: %+v, %v", res, err)
	}
	if got, want := ids(rc)[before:], []string{annCreated, annUpdated}; !slices.Equal(got, want) {
		t.Errorf("redrive --all sent ann's dead letters as %v, want in her order %v", got, want)
	}
}

// goneSink is sink crm delivering to a receiver that answers 410 (so
// that events are dead-lettered at once) while down, and to the event ids
// in refused.
type goneSink struct {
	m    *Manager
	rc   *receiver
	p    *publisher
	down atomic.Bool
	stop func()
}

func goneReceiverSink(t *testing.T, refused *sync.Map) *goneSink {
	t.Helper()
	js := natsStream(t)
	d := &goneSink{}
	d.down.Store(true)
	d.rc = newReceiver(t, func(_ int, r *http.Request) int {
		if _, ok := refused.Load(r.Header.Get("ce-id")); ok || d.down.Load() {
			return http.StatusGone
		}
		return http.StatusNoContent
	})
	d.m, d.stop = runSinks(t, js, 5*time.Second, sinkConfig("crm", d.rc.URL, nil))
	d.p = newPublisher(t, js)
	return d
}

// TestRedriveThatFailsAgainKeepsTheDeadLetterAfterAnEarlierRedrive: an
// event dead-lettered, redriven while the receiver still refused (back in
// the queue with 2 attempts), redriven and delivered, then dead-lettered
// again by a replay (1 attempt): a redrive failing within ten minutes of
// the first put it back under the first's message id, which the queue
// dropped as a copy, and removed the dead letter: README says "one that
// fails again goes back to the queue with its new error", and the queue
// was empty.
func TestRedriveThatFailsAgainKeepsTheDeadLetterAfterAnEarlierRedrive(t *testing.T) {
	js := natsStream(t)
	var status atomic.Int32
	status.Store(http.StatusGone)
	rc := newReceiver(t, func(int, *http.Request) int { return int(status.Load()) })
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	deadLetterAll(t, m, js, 1) // attempts 1
	stop()

	// The receiver still refuses: the redrive puts it back with attempts 2.
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Failed != 1 {
		t.Fatalf("first redrive: %+v, %v", res, err)
	}
	// The receiver is back: delivered, out of the queue.
	status.Store(http.StatusNoContent)
	if res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil); err != nil || res.Delivered != 1 {
		t.Fatalf("second redrive: %+v, %v", res, err)
	}
	// The receiver lost its data and is refusing again: a replay
	// dead-letters the event (attempts 1).
	status.Store(http.StatusGone)
	if res, err := m.Replay(ctx, "crm", time.Now().Add(-time.Hour), nil); err != nil || res.DeadLettered != 1 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// A redrive that fails again: README, "one that fails again goes back
	// to the queue with its new error".
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil)
	if err != nil || res.Failed != 1 {
		t.Fatalf("third redrive: %+v, %v", res, err)
	}
	if n, err := m.dlq.count(ctx, "crm"); err != nil || n != 1 {
		t.Fatalf("the redrive reported the event failed again, and the queue holds %d dead letters (%v), want 1", n, err)
	}
}

// TestInterruptedRedriveKeepsAResourceInOrder: the queue holds ann's
// creation, bob's, ann's update; a redrive --all tries ann's creation,
// which fails again and goes to the end, and the relay stops before the
// redrive reaches ann's update (which it would have moved behind). The
// next redrive must send ann's creation before her update (README, Dead
// letters: a resource's later dead letters stay behind one that failed
// again); it sent the update first, the queue being [bob, update,
// creation].
func TestInterruptedRedriveKeepsAResourceInOrder(t *testing.T) {
	var refuse sync.Map
	d := goneReceiverSink(t, &refuse)
	m, rc, p, down, stop := d.m, d.rc, d.p, &d.down, d.stop
	annCreated := p.publish("acme", events.UserCreated, "ann")
	bob := p.publish("acme", events.UserCreated, "bob")
	annUpdated := p.publish("acme", events.UserUpdated, "ann")
	awaitDeadLetters(t, m, "crm", 3)
	stop()
	// The receiver is back but still refuses ann's creation; the relay
	// stops right after the redrive tried it.
	down.Store(false)
	refuse.Store(annCreated, true)
	jobCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := m.Redrive(jobCtx, RedriveQuery{Sink: "crm"}, func(r RedriveResult) {
		if r.Failed == 1 { // ann's creation, refused again and put at the end
			cancel()
		}
	})
	if err == nil {
		t.Fatal("the interrupted redrive ended without an error")
	}
	refuse.Delete(annCreated)
	before := len(rc.requests())
	// The next redrives, until the queue is empty.
	redriveUntilEmpty(t, m, "crm")
	var ann []string
	for _, id := range ids(rc)[before:] {
		if id != bob {
			ann = append(ann, id)
		}
	}
	if want := []string{annCreated, annUpdated}; !slices.Equal(ann, want) {
		t.Errorf("the redrive after an interrupted one sent ann's dead letters as %v, want in her order %v", ann, want)
	}
}

// TestRedriveOfAllHoldsALaterDeadLetterBehindAnyEarlierOne: ann's
// creation, update and deactivation are dead letters; a redrive of her
// update alone fails again and puts it at the end, and the relay stops
// before it moved her deactivation behind it: the queue is [creation,
// deactivation, update]. The next redrive of all must send them in her
// order; it held only what came before her earliest dead letter, and sent
// the deactivation before the update (a review of the fix above).
func TestRedriveOfAllHoldsALaterDeadLetterBehindAnyEarlierOne(t *testing.T) {
	var refuse sync.Map
	d := goneReceiverSink(t, &refuse)
	m, rc, p, down, stop := d.m, d.rc, d.p, &d.down, d.stop
	annCreated := p.publish("acme", events.UserCreated, "ann")
	annUpdated := p.publish("acme", events.UserUpdated, "ann")
	annDeactivated := p.publish("acme", events.UserDeactivated, "ann")
	awaitDeadLetters(t, m, "crm", 3)
	stop()
	down.Store(false)
	refuse.Store(annUpdated, true)
	jobCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := m.Redrive(jobCtx, RedriveQuery{Sink: "crm", ID: annUpdated}, func(r RedriveResult) {
		if r.Failed == 1 { // ann's update, refused again and put at the end
			cancel()
		}
	})
	if err == nil {
		t.Fatal("the interrupted redrive ended without an error")
	}
	awaitDeadLetters(t, m, "crm", 3)
	page, err := m.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var queue []string
	for _, dl := range page.DeadLetters {
		queue = append(queue, dl.ID)
	}
	if want := []string{annCreated, annDeactivated, annUpdated}; !slices.Equal(queue, want) {
		t.Fatalf("queue after the interrupted redrive %v, want %v", queue, want)
	}
	refuse.Delete(annUpdated)
	before := len(rc.requests())
	redriveUntilEmpty(t, m, "crm")
	if got, want := ids(rc)[before:], []string{annCreated, annUpdated, annDeactivated}; !slices.Equal(got, want) {
		t.Errorf("the redrives sent ann's dead letters as %v, want in her order %v", got, want)
	}
}

// redriveUntilEmpty redrives all of sink's dead letters, up to three
// times (each redrive holding back what it must), until its queue is
// empty.
func redriveUntilEmpty(t *testing.T, m *Manager, sink string) {
	t.Helper()
	for range 3 {
		if n, err := m.dlq.count(ctx, sink); err != nil || n == 0 {
			break
		}
		if _, err := m.Redrive(ctx, RedriveQuery{Sink: sink}, nil); err != nil {
			t.Fatalf("redrive: %v", err)
		}
	}
	if n, err := m.dlq.count(ctx, sink); err != nil || n != 0 {
		t.Fatalf("%d dead letters left (%v)", n, err)
	}
}

// awaitDeadLetters waits until sink's queue holds n dead letters.
func awaitDeadLetters(t *testing.T, m *Manager, sink string, n uint64) {
	t.Helper()
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if got, err := m.dlq.count(ctx, sink); err != nil || got != n {
			return fmt.Errorf("%d dead letters in %s (%v), want %d", got, sink, err, n)
		}
		return nil
	})
}

// TestRedriveAfterARestoreKeepsTheQueuesOrder: ann's third event is
// dead-lettered; the data file is restored from a backup taken at her
// first, so her next change is numbered 2 again, with a later id, and is
// dead-lettered too. A redrive of all sends them in the order they were
// made (README, Backup and restore: an event numbered again has a later
// id), the old 3 first: holding by subjectseq, it sent the new 2 first.
func TestRedriveAfterARestoreKeepsTheQueuesOrder(t *testing.T) {
	d := goneReceiverSink(t, &sync.Map{})
	m, rc, p, down, stop := d.m, d.rc, d.p, &d.down, d.stop
	down.Store(false)
	p.publish("acme", events.UserCreated, "ann") // subjectseq 1
	p.publish("acme", events.UserUpdated, "ann") // 2
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if n := len(rc.requests()); n != 2 {
			return fmt.Errorf("%d requests, want 2", n)
		}
		return nil
	})
	down.Store(true)
	old := p.publish("acme", events.UserUpdated, "ann") // 3, dead-lettered
	awaitDeadLetters(t, m, "crm", 1)
	// The relay's data file is restored from a backup taken when ann was
	// at 1: her next change is numbered 2 again.
	p.mu.Lock()
	p.seq["acme"+"ann"] = 1
	p.mu.Unlock()
	newer := p.publish("acme", events.UserDeactivated, "ann") // 2 again, a later id
	awaitDeadLetters(t, m, "crm", 2)
	stop()

	down.Store(false)
	before := len(rc.requests())
	redriveUntilEmpty(t, m, "crm")
	if got, want := ids(rc)[before:], []string{old, newer}; !slices.Equal(got, want) {
		t.Errorf("the redrives sent ann's dead letters as %v, want in the queue's (commit) order %v", got, want)
	}
}

// TestRedriveOfADeadLetterDeletedMeanwhileInTheMiddleOfTheQueue: a
// redrive through one process while another process's tenant purge
// deletes the tenant's dead letters (DeleteTenantDeadLetters, which does
// not wait for another process's redrives): the dead letter being sent is
// not put back, and the redrive counts it as deleted meanwhile (README: "a
// dead letter it was sending as the purge deleted it is not put back (the
// command says so: `deleted meanwhile`"). Here another tenant's dead
// letter is before it in the queue, as in any queue but one holding the
// purged tenant's alone: deleting it a second time then answers
// "sequence N not found" (err_code 10043), not "no message found".
func TestRedriveOfADeadLetterDeletedMeanwhileInTheMiddleOfTheQueue(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	var purging atomic.Bool
	var other *Manager // the process that purges
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if purging.CompareAndSwap(true, false) {
			// The purge elsewhere deletes globex's dead letters while
			// this redrive sends globex's.
			if _, err := other.DeleteTenantDeadLetters(ctx, "globex"); err != nil {
				t.Errorf("the purge's deletion of globex's dead letters: %v", err)
			}
		}
		return http.StatusGone
	})
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	awaitDeadLetters(t, m, "crm", 1)
	globex := p.publish("globex", events.UserCreated, "dee")
	awaitDeadLetters(t, m, "crm", 2)
	p.publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, m, "crm", 3)
	stop()
	other = otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))

	purging.Store(true)
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", ID: globex}, nil)
	if err != nil {
		t.Errorf("redrive of a dead letter deleted meanwhile: %v", err)
	}
	if res.Purged != 1 {
		t.Errorf("redrive result %+v, want Purged 1", res)
	}
	after, err := m.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range after.DeadLetters {
		if dl.Tenant == "globex" {
			t.Errorf("after globex's purge the queue holds a dead letter of globex, put back by the redrive: %+v", dl)
		}
	}
	if len(after.DeadLetters) != 2 {
		t.Errorf("%d dead letters left, want acme's 2", len(after.DeadLetters))
	}
}

// TestRedriveCountsAHeldDeadLetterDeletedMeanwhileAsDeleted: dead
// letters the redrive would keep behind their resource's earlier one that
// failed again, deleted meanwhile by a purge of their tenant through
// another process (DeleteTenantDeadLetters), are not in the queue after
// the redrive: the redrive counts them with those deleted meanwhile (the
// command's "took N out of the queue, undelivered: deleted meanwhile"),
// not as "kept N in the queue behind an earlier one".
func TestRedriveCountsAHeldDeadLetterDeletedMeanwhileAsDeleted(t *testing.T) {
	var (
		down  atomic.Bool
		other *Manager // the process that purges
	)
	down.Store(true)
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if down.Load() || strings.Contains(r.Header.Get("ce-subject"), "dee") {
			return http.StatusGone
		}
		return http.StatusNoContent
	})
	s, js := natsStreamAt(t, t.TempDir(), -1)
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	awaitDeadLetters(t, m, "crm", 1)
	p.publish("globex", events.UserCreated, "dee")
	p.publish("globex", events.UserUpdated, "dee")
	p.publish("globex", events.UserDeactivated, "dee")
	awaitDeadLetters(t, m, "crm", 4)
	stop()
	other = otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))

	// The receiver is back but refuses dee's events: dee's first fails
	// again, and her later two are to be kept behind it; then (once the
	// redrive has done ann's and dee's first) a purge elsewhere deletes
	// globex's dead letters.
	down.Store(false)
	var n atomic.Int32
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, func(r RedriveResult) {
		if n.Add(1) == 2 {
			if _, err := other.DeleteTenantDeadLetters(ctx, "globex"); err != nil {
				t.Errorf("the purge's deletion of globex's dead letters: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	after, err := m.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.DeadLetters) != 0 {
		t.Fatalf("queue after the redrive and the purge: %+v, want empty", after.DeadLetters)
	}
	if res.Delivered != 1 || res.Failed != 1 || res.Held != 0 || res.Purged != 2 {
		t.Errorf("redrive %+v: Delivered %d Failed %d Held %d Purged %d; want ann's delivered, dee's first failed, her later 2 deleted meanwhile, none kept in the queue", res, res.Delivered, res.Failed, res.Held, res.Purged)
	}
}

// TestRedriveGoesOnPastADeliveredDeadLetterDeletedMeanwhile: a dead
// letter that a purge elsewhere deletes while this redrive delivers it
// is gone, as the redrive would leave it: the redrive goes on with the
// rest of the queue rather than failing.
func TestRedriveGoesOnPastADeliveredDeadLetterDeletedMeanwhile(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	var up, purging atomic.Bool
	var other *Manager
	rc := newReceiver(t, func(int, *http.Request) int {
		if !up.Load() {
			return http.StatusGone
		}
		if purging.CompareAndSwap(true, false) {
			if _, err := other.DeleteTenantDeadLetters(ctx, "globex"); err != nil {
				t.Errorf("the purge's deletion of globex's dead letters: %v", err)
			}
		}
		return http.StatusNoContent
	})
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	p.publish("globex", events.UserCreated, "dee")
	awaitDeadLetters(t, m, "crm", 1)
	p.publish("acme", events.UserCreated, "ann")
	p.publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, m, "crm", 3)
	stop()
	other = otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))

	up.Store(true)
	purging.Store(true) // as dee's, the first, is delivered
	res, err := m.Redrive(ctx, RedriveQuery{Sink: "crm"}, nil)
	if err != nil {
		t.Errorf("redrive: %v", err)
	}
	if res.Done != 3 || res.Delivered != 3 {
		t.Errorf("redrive %+v: want all three done and delivered", res)
	}
	if n, err := m.dlq.count(ctx, "crm"); err != nil || n != 0 {
		t.Errorf("%d dead letters left (%v), want 0", n, err)
	}
}

// TestTwoRedrivesOfOneDeadLetterKeepIt: two processes redrive the same
// dead letter at once (README: a redrive through a worker's admin API and
// another through the front end's), and the receiver refuses it both
// times: the queue keeps the dead letter, with its new error. The second
// redrive puts the same message id as the first (redriven-from the same
// sequence), which the queue drops as a copy, acknowledging the first's;
// finding the old one gone (the first removed it), it took back what the
// acknowledgement named: the first redrive's dead letter.
func TestTwoRedrivesOfOneDeadLetterKeepIt(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	var (
		mu      sync.Mutex
		calls   int
		second  = make(chan struct{}) // the second redrive's request has arrived
		firstOK = make(chan struct{}) // the first redrive has ended
		active  atomic.Bool
	)
	rc := newReceiver(t, func(int, *http.Request) int {
		if !active.Load() {
			return http.StatusGone
		}
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch n {
		case 1:
			<-second // both redrives have read the dead letter
		case 2:
			close(second)
			<-firstOK
		}
		return http.StatusGone
	})
	m1, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	id := p.publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, m1, "crm", 2)
	stop()
	m2 := otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))

	active.Store(true)
	type out struct {
		res RedriveResult
		err error
	}
	done1, done2 := make(chan out, 1), make(chan out, 1)
	go func() {
		res, err := m1.Redrive(ctx, RedriveQuery{Sink: "crm", ID: id}, nil)
		close(firstOK)
		done1 <- out{res, err}
	}()
	eventstest.CheckFor(t, 30*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if calls < 1 {
			return fmt.Errorf("the first redrive's request is not at the receiver yet")
		}
		return nil
	})
	go func() {
		res, err := m2.Redrive(ctx, RedriveQuery{Sink: "crm", ID: id}, nil)
		done2 <- out{res, err}
	}()
	r1, r2 := <-done1, <-done2
	res1, err1 := r1.res, r1.err
	t.Logf("first redrive %+v %v; second %+v %v", res1, err1, r2.res, r2.err)

	page, err := m1.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dl := range page.DeadLetters {
		if dl.ID == id {
			found = true
		}
	}
	if !found {
		t.Errorf("after two redrives that both failed, the queue has no dead letter of event %s (%d dead letters): it was lost", id, len(page.DeadLetters))
	}
}

// TestPurgeThatFindsADeadLetterRedrivenMeanwhileLeavesNoneOfItsTenant: a
// redrive through one process (a worker's admin API) of globex's dead
// letter dee, whose delivery is under way when another process's purge of
// globex (DeleteTenantDeadLetters, which does not wait for it) reads the
// queue. The redrive's delivery fails again after the purge has read the
// queue, before it reaches dee: the redrive puts dee's new dead letter and
// removes the old one; the purge, finding the old one gone, skips it. The
// new one is left: a dead letter of the purged tenant.
func TestPurgeThatFindsADeadLetterRedrivenMeanwhileLeavesNoneOfItsTenant(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	var active atomic.Bool
	arrived, release := make(chan struct{}), make(chan struct{})
	rc := newReceiver(t, func(_ int, r *http.Request) int {
		if active.Load() && strings.Contains(r.Header.Get("ce-subject"), "dee") {
			close(arrived)
			<-release
		}
		return http.StatusGone
	})
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	const before = 5 // globex's dead letters before dee's in the queue
	for i := range before {
		p.publish("globex", events.UserCreated, "u"+strconv.Itoa(i))
		awaitDeadLetters(t, m, "crm", uint64(i+1))
	}
	dee := p.publish("globex", events.UserCreated, "dee")
	awaitDeadLetters(t, m, "crm", before+1)
	stop()
	slow := eventstest.NewSlowProxy(t, s.Addr().String())
	other := otherProcess(t, "nats://"+slow.Addr, sinkConfig("crm", rc.URL, nil)) // the purging relay, answered a little late

	active.Store(true)
	redrove := make(chan error, 1)
	go func() {
		_, err := m.Redrive(ctx, RedriveQuery{Sink: "crm", ID: dee}, nil)
		redrove <- err
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the redrive of dee's dead letter did not reach the receiver")
	}
	slow.SetDelay(300 * time.Millisecond)
	purged := make(chan error, 1)
	go func() {
		_, err := other.DeleteTenantDeadLetters(ctx, "globex")
		purged <- err
	}()
	// The purge has read the queue and deleted the first of globex's.
	awaitDeadLetters(t, m, "crm", before)
	close(release) // dee's delivery fails again
	if err := <-redrove; err != nil {
		t.Errorf("redrive: %v", err)
	}
	if err := <-purged; err != nil {
		t.Errorf("purge: %v", err)
	}
	page, err := m.DeadLetters(ctx, "crm", "", 20)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, dl := range page.DeadLetters {
		if dl.Tenant == "globex" {
			left = append(left, fmt.Sprintf("%s (%s, %d attempts)", dl.ID, dl.Subject, dl.Attempts))
		}
	}
	if len(left) > 0 {
		t.Errorf("after globex's purge sink crm's queue holds globex's dead letters %v", left)
	}
}

// TestTwoFailingRedrivesInterleavedKeepTheDeadLetter: as
// TestTwoRedrivesOfOneDeadLetterKeepIt, two processes redrive bob's dead
// letter at once and the receiver refuses it both times, but here the
// first's new dead letter is in the queue, and the second puts its copy
// (dropped, the acknowledgement naming the first's) and removes the old
// one before the first removes it (the first's NATS answers a little
// late). The first, finding the old one gone and its own put not a copy,
// takes back what it put: the one the second counts on. The queue is left
// without bob's dead letter.
func TestTwoFailingRedrivesInterleavedKeepTheDeadLetter(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	var (
		active     atomic.Bool
		calls      atomic.Int32
		arrivedA   = make(chan struct{})
		arrivedB   = make(chan struct{})
		relA, relB = make(chan struct{}), make(chan struct{})
	)
	rc := newReceiver(t, func(int, *http.Request) int {
		if !active.Load() {
			return http.StatusGone
		}
		switch calls.Add(1) {
		case 1:
			close(arrivedA)
			<-relA
		case 2:
			close(arrivedB)
			<-relB
		}
		return http.StatusGone
	})
	b, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	p := newPublisher(t, js)
	p.publish("acme", events.UserCreated, "ann")
	awaitDeadLetters(t, b, "crm", 1)
	id := p.publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, b, "crm", 2)
	stop()
	slow := eventstest.NewSlowProxy(t, s.Addr().String())
	a := otherProcess(t, "nats://"+slow.Addr, sinkConfig("crm", rc.URL, nil))

	active.Store(true)
	type out struct {
		res RedriveResult
		err error
	}
	doneA, doneB := make(chan out, 1), make(chan out, 1)
	go func() {
		res, err := a.Redrive(ctx, RedriveQuery{Sink: "crm", ID: id}, nil)
		doneA <- out{res, err}
	}()
	wait := func(c chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not reach the receiver", what)
		}
	}
	wait(arrivedA, "the first redrive")
	go func() {
		res, err := b.Redrive(ctx, RedriveQuery{Sink: "crm", ID: id}, nil)
		doneB <- out{res, err}
	}()
	wait(arrivedB, "the second redrive")
	slow.SetDelay(time.Second) // the first's answers from now on
	close(relA)
	awaitDeadLetters(t, b, "crm", 3) // the first's new dead letter is in
	close(relB)
	rb := <-doneB
	ra := <-doneA
	t.Logf("first %+v %v; second %+v %v", ra.res, ra.err, rb.res, rb.err)
	page, err := b.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var bobs int
	for _, dl := range page.DeadLetters {
		if dl.ID == id {
			bobs++
		}
	}
	if bobs != 1 {
		t.Errorf("after two redrives of bob's dead letter that both failed, the queue holds %d of his (%+v), want 1", bobs, page.DeadLetters)
	}
}

// gateProxy passes one process's NATS connection through, and can hold
// the first client message a predicate picks (until release is closed),
// or lose the server's answer to the first request another picks: a
// process stalled between two steps, and an answer lost on the way back
// after the server did what was asked.
type gateProxy struct {
	addr    string
	mu      sync.Mutex
	hold    func(f []string, payload []byte) bool
	held    chan struct{} // closed once a message is held
	release chan struct{}
	loseFor func(f []string, payload []byte) bool
	lose    map[string]bool // reply subjects whose answer is lost
	lost    chan struct{}   // closed once an answer is lost
}

func newGateProxy(t *testing.T, target string) *gateProxy {
	t.Helper()
	g := &gateProxy{held: make(chan struct{}), release: make(chan struct{}), lose: map[string]bool{}, lost: make(chan struct{})}
	t.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	g.addr = eventstest.Proxy(t, target, func(c, up net.Conn) {
		go func() { eventstest.PassProtocol(up, c, g.fromClient); up.Close() }()
		go func() { eventstest.PassProtocol(c, up, g.fromServer); c.Close() }()
	})
	return g
}

func (g *gateProxy) fromClient(f []string, payload []byte) bool {
	g.mu.Lock()
	hold := g.hold != nil && g.hold(f, payload)
	if hold {
		g.hold = nil
	}
	if g.loseFor != nil && len(f) >= 4 && g.loseFor(f, payload) {
		g.loseFor = nil
		g.lose[f[2]] = true // PUB <subject> <reply> <size>
	}
	g.mu.Unlock()
	if hold {
		close(g.held)
		<-g.release
	}
	return false
}

func (g *gateProxy) fromServer(f []string, _ []byte) bool {
	if len(f) < 2 || !strings.EqualFold(f[0], "MSG") && !strings.EqualFold(f[0], "HMSG") {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lose[f[1]] {
		delete(g.lose, f[1])
		close(g.lost)
		return true
	}
	return false
}

func (g *gateProxy) setHold(p func(f []string, payload []byte) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = p
}

func (g *gateProxy) setLoseAnswer(p func(f []string, payload []byte) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.loseFor = p
}

func (g *gateProxy) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.release)
}

// bobDeadLettered dead-letters acme's user bob in sink crm, whose
// receiver answers as respond does (nil: refuses every delivery, 410;
// respond must refuse the first), and stops the manager that did. It
// returns the server, its JetStream, the receiver, the stopped manager
// (to read the queue with), bob's event id and his dead letter's
// sequence.
func bobDeadLettered(t *testing.T, respond func(int, *http.Request) int) (*server.Server, jetstream.JetStream, *receiver, *Manager, string, uint64) {
	t.Helper()
	s, js := natsStreamAt(t, t.TempDir(), -1)
	if respond == nil {
		respond = func(int, *http.Request) int { return http.StatusGone }
	}
	rc := newReceiver(t, respond)
	m, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, nil))
	id := newPublisher(t, js).publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, m, "crm", 1)
	stop()
	page, err := m.DeadLetters(ctx, "crm", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	return s, js, rc, m, id, page.DeadLetters[0].seq
}

// redriveOut is what a redrive run in the background returned.
type redriveOut struct {
	res RedriveResult
	err error
}

// redriveInBackground runs m's redrive of q, and sends what it returned.
func redriveInBackground(m *Manager, q RedriveQuery) <-chan redriveOut {
	done := make(chan redriveOut, 1)
	go func() {
		res, err := m.Redrive(ctx, q, nil)
		done <- redriveOut{res, err}
	}()
	return done
}

// deleteOf picks the request deleting the dead letter at seq.
func deleteOf(seq uint64) func(f []string, payload []byte) bool {
	return func(f []string, payload []byte) bool {
		return len(f) >= 2 && f[1] == "$JS.API.STREAM.MSG.DELETE."+dlqStream &&
			(strings.Contains(string(payload), fmt.Sprintf(`"seq":%d,`, seq)) || strings.Contains(string(payload), fmt.Sprintf(`"seq":%d}`, seq)))
	}
}

// keptPut picks a redrive's put of its dead letter again under an id of its
// own (deadLetters.replaced, when its first put was dropped as a copy).
func keptPut(f []string, payload []byte) bool {
	return len(f) >= 2 && strings.EqualFold(f[0], "HPUB") && strings.HasPrefix(f[1], dlqSubjectRoot) &&
		strings.Contains(string(payload), ".kept.")
}

// awaitClosed waits for c to close, what saying what its closing means.
func awaitClosed(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

// deadLettersOf lists the dead letters of sink crm that pick picks.
func deadLettersOf(t *testing.T, m *Manager, pick func(DeadLetter) bool) []string {
	t.Helper()
	page, err := m.DeadLetters(ctx, "crm", "", 50)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, dl := range page.DeadLetters {
		if pick(dl) {
			out = append(out, fmt.Sprintf("%s (%s, %d attempts, seq %d)", dl.ID, dl.Subject, dl.Attempts, dl.seq))
		}
	}
	return out
}

// awaitGone waits until the queue no longer holds the message at seq.
func awaitGone(t *testing.T, js jetstream.JetStream, seq uint64) {
	t.Helper()
	st, err := js.Stream(ctx, dlqStream)
	if err != nil {
		t.Fatal(err)
	}
	eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if _, err := st.GetMsg(ctx, seq); err == nil {
			return fmt.Errorf("dead letter at %d still there", seq)
		}
		return nil
	})
}

// TestTwoRedrivesKeepTheDeadLetterWhenARemovalsAnswerIsLost: two
// processes redrive bob's dead letter and the receiver refuses it both
// times. A's new dead letter is in the queue, held before A removes the
// old one; B's put is dropped as a copy of A's; B removes the old one and
// the server's answer to B is lost (the removal happened). Then A finds
// the old one gone and takes back its new one. The queue keeps bob's dead
// letter once (README: "when both fail the queue keeps it once"): B puts
// its own before its removal (deadLetters.replaced). Before, B put its own
// only after a removal it knew had succeeded, and bob's dead letter was
// neither delivered nor kept.
func TestTwoRedrivesKeepTheDeadLetterWhenARemovalsAnswerIsLost(t *testing.T) {
	s, js, rc, m, id, old := bobDeadLettered(t, nil)
	ga := newGateProxy(t, s.Addr().String())
	gb := newGateProxy(t, s.Addr().String())
	a := otherProcess(t, "nats://"+ga.addr, sinkConfig("crm", rc.URL, nil))
	b := otherProcess(t, "nats://"+gb.addr, sinkConfig("crm", rc.URL, nil))
	ga.setHold(deleteOf(old))       // A stalls between its put and its removal
	gb.setLoseAnswer(deleteOf(old)) // B's removal happens, its answer is lost

	doneA := redriveInBackground(a, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, ga.held, "A's removal of the old dead letter")
	doneB := redriveInBackground(b, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, gb.lost, "the answer to B's removal")
	awaitGone(t, js, old)
	ga.open()
	ra := <-doneA
	rb := <-doneB
	resB, errB := rb.res, rb.err
	t.Logf("A: %+v %v; B: %+v %v", ra.res, ra.err, resB, errB)

	if bobs := deadLettersOf(t, m, func(dl DeadLetter) bool { return dl.ID == id }); len(bobs) != 1 {
		t.Errorf("after two redrives of bob's dead letter that both failed (B's removal answered late), the queue holds %d of his %v, want 1: delivered %d+%d times",
			len(bobs), bobs, ra.res.Delivered, resB.Delivered)
	}
}

// TestPurgeBetweenARedrivesRemovalAndItsPutAgainLeavesNoneOfItsTenant:
// two processes redrive acme's dead letter and both fail again; A's put
// is in the queue (A held before its removal), B's dropped as a copy of
// it, and B is held at its put again under an id of its own (".kept")
// while a third process purges acme. After all three, the queue holds
// none of acme's. Before, B put ".kept" after removing the old one: the
// purge, reading the queue between, deleted A's and ended, and B's put
// came after it, surviving the purge.
func TestPurgeBetweenARedrivesRemovalAndItsPutAgainLeavesNoneOfItsTenant(t *testing.T) {
	s, _, rc, m, id, old := bobDeadLettered(t, nil)
	ga := newGateProxy(t, s.Addr().String())
	gb := newGateProxy(t, s.Addr().String())
	a := otherProcess(t, "nats://"+ga.addr, sinkConfig("crm", rc.URL, nil))
	b := otherProcess(t, "nats://"+gb.addr, sinkConfig("crm", rc.URL, nil))
	purger := otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))
	ga.setHold(deleteOf(old)) // A stalls between its put and its removal
	gb.setHold(keptPut)       // B stalls between its removal and its put again

	doneA := redriveInBackground(a, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, ga.held, "A's removal of the old dead letter")
	doneB := redriveInBackground(b, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, gb.held, "B's put again")
	deleted, err := purger.DeleteTenantDeadLetters(ctx, "acme")
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	gb.open()
	rb := <-doneB
	ga.open()
	ra := <-doneA
	t.Logf("purge deleted %v; A: %+v %v; B: %+v %v", deleted, ra.res, ra.err, rb.res, rb.err)

	if left := deadLettersOf(t, m, func(dl DeadLetter) bool { return dl.Tenant == "acme" }); len(left) > 0 {
		t.Errorf("after acme's purge sink crm's queue holds acme's dead letters %v", left)
	}
}

// TestPurgeDuringARedriveToAnotherSinkLeavesNoneOfItsTenant: sink crm-old
// was renamed crm, leaving acme's dead letter under crm-old. A redrive
// through one process (--to crm) and acme's purge through another run at
// once: the purge is held at its read of the queues while the redrive's
// delivery fails again, its new dead letter joining crm's queue and the
// old one leaving crm-old's. After both, no queue holds acme's. Before,
// the purge read queue by queue: it had read crm's when the redrive moved
// the dead letter there, found nothing in crm-old's, and ended.
func TestPurgeDuringARedriveToAnotherSinkLeavesNoneOfItsTenant(t *testing.T) {
	s, js := natsStreamAt(t, t.TempDir(), -1)
	rc := newReceiver(t, func(int, *http.Request) int { return http.StatusGone })
	m0, stop := runSinks(t, js, 5*time.Second, sinkConfig("crm-old", rc.URL, nil))
	p := newPublisher(t, js)
	id := p.publish("acme", events.UserCreated, "bob")
	awaitDeadLetters(t, m0, "crm-old", 1)
	stop()

	r := otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))
	g := newGateProxy(t, s.Addr().String())
	purger := otherProcess(t, "nats://"+g.addr, sinkConfig("crm", rc.URL, nil))
	g.setHold(func(f []string, payload []byte) bool { // the purge's read of crm-old's queue (or of every queue at once)
		return len(f) >= 2 && strings.HasPrefix(f[1], "$JS.API.CONSUMER.") &&
			(strings.Contains(f[1]+string(payload), dlqSubjectRoot+"crm-old") || strings.HasSuffix(f[1], "."+dlqSubjectRoot+">"))
	})
	type out struct {
		deleted map[string]int
		err     error
	}
	purged := make(chan out, 1)
	go func() {
		d, err := purger.DeleteTenantDeadLetters(ctx, "acme")
		purged <- out{d, err}
	}()
	awaitClosed(t, g.held, "the purge's read of crm-old's queue")
	res, err := r.Redrive(ctx, RedriveQuery{Sink: "crm-old", To: "crm", ID: id}, nil)
	t.Logf("redrive --to crm: %+v %v", res, err)
	g.open()
	o := <-purged
	t.Logf("purge: %v %v", o.deleted, o.err)
	for _, sink := range []string{"crm", "crm-old"} {
		page, err := r.DeadLetters(ctx, sink, "", 50)
		if err != nil && !strings.Contains(err.Error(), "nor dead letters") {
			t.Fatal(err)
		}
		for _, dl := range page.DeadLetters {
			if dl.Tenant == "acme" {
				t.Errorf("after acme's purge sink %s's queue holds acme's dead letter %s (%s, %d attempts)", sink, dl.ID, dl.Subject, dl.Attempts)
			}
		}
	}
}

// TestThreeRedrivesKeepTheDeadLetter (review 3): three processes redrive
// bob's dead letter at once and the receiver refuses it each time. A's
// put is in the queue (A held before its removal); B's is dropped as a
// copy of A's, B puts its own (".kept") and is held before its removal;
// C's put is dropped as a copy of A's, and C's ".kept" as a copy of B's:
// C takes B's for its own. C removes the old one and takes back A's; B,
// finding the old one gone, takes back its own, the one C counts on; A
// takes back its own. README: "when both fail the queue keeps it once,
// whichever order their steps interleave in".
func TestThreeRedrivesKeepTheDeadLetter(t *testing.T) {
	var (
		active  atomic.Bool
		calls   atomic.Int32
		arrived = [4]chan struct{}{nil, make(chan struct{}), make(chan struct{}), make(chan struct{})}
		rel     = [4]chan struct{}{nil, make(chan struct{}), make(chan struct{}), make(chan struct{})}
	)
	s, _, rc, m, id, old := bobDeadLettered(t, func(int, *http.Request) int {
		if !active.Load() {
			return http.StatusGone
		}
		if n := calls.Add(1); n <= 3 {
			close(arrived[n])
			<-rel[n]
		}
		return http.StatusGone
	})

	ga := newGateProxy(t, s.Addr().String())
	gb := newGateProxy(t, s.Addr().String())
	a := otherProcess(t, "nats://"+ga.addr, sinkConfig("crm", rc.URL, nil))
	b := otherProcess(t, "nats://"+gb.addr, sinkConfig("crm", rc.URL, nil))
	c := otherProcess(t, eventstest.URL(s), sinkConfig("crm", rc.URL, nil))
	ga.setHold(deleteOf(old)) // A stalls between its put and its removal
	gb.setHold(deleteOf(old)) // B stalls between its ".kept" put and its removal
	active.Store(true)

	// Each reads the queue (the old dead letter alone) and sends it.
	doneC := redriveInBackground(c, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, arrived[1], "C's delivery")
	doneB := redriveInBackground(b, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, arrived[2], "B's delivery")
	doneA := redriveInBackground(a, RedriveQuery{Sink: "crm", ID: id})
	awaitClosed(t, arrived[3], "A's delivery")
	close(rel[3])
	awaitClosed(t, ga.held, "A's removal of the old dead letter")
	close(rel[2])
	awaitClosed(t, gb.held, "B's removal of the old dead letter")
	close(rel[1])
	rc3 := <-doneC
	gb.open()
	rb := <-doneB
	ga.open()
	ra := <-doneA
	t.Logf("A: %+v %v; B: %+v %v; C: %+v %v", ra.res, ra.err, rb.res, rb.err, rc3.res, rc3.err)

	if bobs := deadLettersOf(t, m, func(dl DeadLetter) bool { return dl.ID == id }); len(bobs) != 1 {
		t.Errorf("after three redrives of bob's dead letter that all failed, the queue holds %d of his %v, want 1: delivered %d+%d+%d times",
			len(bobs), bobs, ra.res.Delivered, rb.res.Delivered, rc3.res.Delivered)
	}
}
