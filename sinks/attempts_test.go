// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestAttemptsRecordedPerResource: a batching sink records one attempt per
// resource slice it sent, on the resource's subject, so that the
// deliveries stream has a subject per resource (not per event) and fewer
// records than events; read back, every event has its own "delivered"
// attempt, found by AttemptsOf through its resource. A record written one
// per event, before this, is still read.
func TestAttemptsRecordedPerResource(t *testing.T) {
	_, _, js := natsServer(t)
	l := newLedger()
	rc := newReceiver(t, func(_ int, r *http.Request) int { return l.admitBatch(t, r, nil) })
	runManager(t, Options{Sinks: []Config{batchConfig(rc.URL, nil)}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
	since := time.Now().Add(-time.Second)

	p := newPublisher(t, js)
	var groupEvents []string
	groupEvents = append(groupEvents, p.publish("acme", events.GroupCreated, "big"))
	for range 200 {
		groupEvents = append(groupEvents, p.publish("acme", events.GroupMemberAdded, "big"))
	}
	users := []string{"u1", "u2", "u3"}
	var userEvents []string
	for _, u := range users {
		userEvents = append(userEvents, p.publish("acme", events.UserCreated, u))
	}
	want := expect{"Groups/big": 201, "Users/u1": 1, "Users/u2": 1, "Users/u3": 1}
	l.wantDelivered(t, want, 30*time.Second, false)
	total := len(groupEvents) + len(userEvents)

	// Records are written without waiting for their acknowledgement.
	var all []Attempt
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		var err error
		if all, err = Attempts(ctx, js, AttemptQuery{Sink: "crm", Since: since, Limit: 10_000}); err != nil {
			return err
		}
		if len(all) != total {
			return fmt.Errorf("%d attempts read, want %d", len(all), total)
		}
		return nil
	})
	seen := map[string]bool{}
	for _, a := range all {
		if a.Outcome != "delivered" || a.Sink != "crm" || a.EventID == "" || a.Type == "" || seen[a.EventID] {
			t.Fatalf("attempt %+v: want one delivered attempt per event, with its id and type", a)
		}
		seen[a.EventID] = true
	}

	// Read a page at a time, each after the last one's Seq, they are the
	// same attempts; a page never splits a record (a slice of the group's
	// events) with the next, which would lose its rest, and goes past its
	// limit only with a record that is its first.
	var paged []Attempt
	for after := uint64(0); ; {
		page, err := Attempts(ctx, js, AttemptQuery{Sink: "crm", Since: since, After: after, Limit: 30})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 30 && page[0].Seq != page[len(page)-1].Seq {
			t.Fatalf("a page of %d attempts, over its limit of 30, from records %d to %d", len(page), page[0].Seq, page[len(page)-1].Seq)
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Seq
	}
	if len(paged) != len(all) {
		t.Fatalf("%d attempts read a page at a time, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i].EventID != all[i].EventID || paged[i].Seq != all[i].Seq {
			t.Fatalf("attempt %d read a page at a time: %+v, want %+v", i, paged[i], all[i])
		}
	}

	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(deliveriesSubjectRoot+">"))
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for s := range info.State.Subjects {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	wantSubjects := []string{
		"scimrelay-deliveries.crm.acme.group.big",
		"scimrelay-deliveries.crm.acme.user.u1",
		"scimrelay-deliveries.crm.acme.user.u2",
		"scimrelay-deliveries.crm.acme.user.u3",
	}
	if !slices.Equal(subjects, wantSubjects) {
		t.Fatalf("subjects %v, want one per resource %v", subjects, wantSubjects)
	}
	// The group's 201 events went in slices of at most 50 (the batch size).
	if n := info.State.Subjects[wantSubjects[0]]; n < 5 || n >= 201 {
		t.Fatalf("%d records of the group's 201 events: want one per slice sent", n)
	}

	// A record as a worker wrote it before: one event, on its id's subject.
	old := Attempt{Time: time.Now().UTC(), Sink: "crm", EventID: "0198f3c2-0000-7000-8000-0000000000aa", Type: "io.scimrelay.user.updated", Subject: "Users/u1", Outcome: "delivered", Status: 204}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, deliveriesSubjectRoot+"crm."+old.EventID, b); err != nil {
		t.Fatal(err)
	}

	refs := []EventRef{
		{ID: groupEvents[0], Tenant: "acme", Kind: "group", ResourceID: "big"},
		{ID: groupEvents[150], Tenant: "acme", Kind: "group", ResourceID: "big"},
		{ID: userEvents[1], Tenant: "acme", Kind: "user", ResourceID: "u2"},
		{ID: old.EventID}, // its resource unknown: found by its id's subject
	}
	got, err := AttemptsOf(ctx, js, refs, since, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, a := range got {
		gotIDs = append(gotIDs, a.EventID)
	}
	wantIDs := []string{groupEvents[0], groupEvents[150], userEvents[1], old.EventID}
	slices.Sort(gotIDs)
	slices.Sort(wantIDs)
	if !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("AttemptsOf found %v, want exactly %v", gotIDs, wantIDs)
	}
	if all, err := Attempts(ctx, js, AttemptQuery{Sink: "crm", Since: since, Limit: 10_000}); err != nil || len(all) != total+1 || all[len(all)-1].EventID != old.EventID {
		t.Fatalf("Attempts after an old record: %d (%v), want %d ending with the old one", len(all), err, total+1)
	}
	if n, err := countAttempts(ctx, js, "crm", since); err != nil || n == 0 {
		t.Fatalf("countAttempts: %d, %v", n, err)
	}
	// Each reading deleted the consumer it made.
	if _, err := st.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("the attempts' stream has %d consumers after the readings; want none left", n)
	}
}

// TestAttemptSubject: an event is recorded on its resource's subject; what
// names no resource of the relay's on the sink's own.
func TestAttemptSubject(t *testing.T) {
	e := testEvent(t, events.GroupMemberAdded, "g1", 3)
	if got, want := attemptSubject("crm", e), "scimrelay-deliveries.crm.acme.group.g1"; got != want {
		t.Fatalf("attemptSubject = %q, want %q", got, want)
	}
	e.SetSubject("Users/g1") // a group event about a user: not the relay's
	if got, want := attemptSubject("crm", e), "scimrelay-deliveries.crm"; got != want {
		t.Fatalf("attemptSubject of a mismatched event = %q, want %q", got, want)
	}
	e.SetSubject("Groups/a.b")
	if got, want := attemptSubject("crm", e), "scimrelay-deliveries.crm"; got != want {
		t.Fatalf("attemptSubject of an id that is not a subject token = %q, want %q", got, want)
	}
}

// TestAttemptsBoundedBySizeWhereTheStoreHasRoom: the deliveries stream is
// bounded by provisioning_log.max_bytes, the oldest going first; a NATS
// store too small to set that much aside gets a stream bounded by age
// only and a warning naming what to change, not a relay that cannot start.
func TestAttemptsBoundedBySizeWhereTheStoreHasRoom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxStore int64
		want     int64
	}{
		{"room", 1 << 30, 8 << 20},
		{"no room", 4 << 20, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := eventstest.RunServerWith(t, t.TempDir(), -1, func(o *server.Options) { o.JetStreamMaxStore = tc.maxStore })
			_, js := eventstest.Connect(t, eventstest.URL(s))
			logs := &eventstest.Log{}
			if _, err := ensureDeliveries(ctx, js, time.Hour, 8<<20, 1, slog.New(slog.NewTextHandler(logs, nil))); err != nil {
				t.Fatal(err)
			}
			st, err := js.Stream(ctx, deliveriesStream)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if cfg.MaxBytes != tc.want || cfg.MaxAge != time.Hour || cfg.Discard != jetstream.DiscardOld {
				t.Fatalf("max_bytes %d, max_age %v, discard %v; want %d, 1h, old", cfg.MaxBytes, cfg.MaxAge, cfg.Discard, tc.want)
			}
			warned := strings.Contains(logs.String(), "give NATS more storage or lower provisioning_log.max_bytes")
			if warned != (tc.want < 0) {
				t.Fatalf("warned %t, want %t:\n%s", warned, tc.want < 0, logs)
			}
		})
	}
}

// TestAttemptsLeaveNoPublishPending: a delivery attempt's record asks for
// no acknowledgement, so records whose acknowledgements never come (the
// stream without a leader; here, a subscriber that takes the subject and
// answers nothing) cannot fill nats.go's pending limit and make every
// later record, and so every delivery, wait on it.
func TestAttemptsLeaveNoPublishPending(t *testing.T) {
	_, nc, js := natsServer(t)
	sub, err := nc.SubscribeSync(deliveriesSubjectRoot + ">")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	a := &attemptLog{js: js, log: slog.New(slog.DiscardHandler)}
	e := testEvent(t, events.UserCreated, "u1", 1)
	for range 100 {
		a.recordRetry("crm", []*event.Event{e}, Result{Status: 503}, 1, time.Now())
	}
	if n := js.PublishAsyncPending(); n != 0 {
		t.Fatalf("%d publishes wait for an acknowledgement", n)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n, _, _ := sub.Pending(); n != 100 {
			return fmt.Errorf("the subscriber has %d of the 100 records", n)
		}
		return nil
	})
}

// TestAttemptsNumberTheTryThatDelivered: a delivery that succeeds after a
// failed try is recorded as the attempt it was (2), as its failure was
// (1), not as attempt 0; one that succeeds at once is attempt 1. Alone,
// and in a batch.
func TestAttemptsNumberTheTryThatDelivered(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			_, _, js := natsServer(t)
			// The first try fails, its quick retries too (three requests).
			rc := newReceiver(t, func(n int, _ *http.Request) int {
				if n <= 3 {
					return 503
				}
				return 204
			})
			cfg := sinkConfig("crm", rc.URL, nil)
			if batch {
				cfg = batchConfig(rc.URL, nil)
			}
			runManager(t, Options{Sinks: []Config{cfg}, JS: js, AckWait: 5 * time.Second, Heartbeat: fastHeartbeat})
			since := time.Now().Add(-time.Second)
			p := newPublisher(t, js)
			retried := p.publish("acme", events.UserCreated, "u1")
			read := func(want int) []Attempt {
				var all []Attempt
				eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
					var err error
					if all, err = Attempts(ctx, js, AttemptQuery{Sink: "crm", Since: since, Limit: 100}); err != nil {
						return err
					}
					if len(all) < want {
						return fmt.Errorf("%d attempts recorded, want %d: %+v", len(all), want, all)
					}
					return nil
				})
				return all
			}
			read(2) // the failure, then the success
			first := p.publish("acme", events.UserCreated, "u2")
			type try struct {
				id      string
				outcome string
				attempt int
			}
			var got []try
			for _, a := range read(3) {
				got = append(got, try{a.EventID, a.Outcome, a.Attempt})
			}
			want := []try{{retried, "retry", 1}, {retried, "delivered", 2}, {first, "delivered", 1}}
			if !slices.Equal(got, want) {
				t.Fatalf("attempts recorded %+v, want %+v", got, want)
			}
		})
	}
}
