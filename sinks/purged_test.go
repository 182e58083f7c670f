// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestPurgeNoticesAreRead: the purge notices in the workers' stream are
// read into each tenant's last sequence, the highest when a tenant was
// purged twice, what was read before kept (a notice ages out of the
// stream); subjects that are not notices, and sinks' announcements, are
// not; an event is covered when its tenant's notice reaches its sequence.
func TestPurgeNoticesAreRead(t *testing.T) {
	ctx := t.Context()
	js, workers := workersStream(t)
	for _, subject := range []string{
		purgedSubjectRoot + "globex.41",
		purgedSubjectRoot + "globex.7",  // an earlier purge of the name
		purgedSubjectRoot + "initech.0", // purged before it made an event
		purgedSubjectRoot + "Bad.3",     // not a tenant name
		purgedSubjectRoot + "acme.x",    // not a sequence
		purgedSubjectRoot + "acme",      // no sequence
		workersSubjectRoot + "crm.w1",   // a worker's announcement
	} {
		if _, err := js.Publish(ctx, subject, nil); err != nil {
			t.Fatal(err)
		}
	}
	had := purgedTenants{"umbrella": 3}
	got, err := readPurged(ctx, workers, had)
	if err != nil {
		t.Fatal(err)
	}
	if want := (purgedTenants{"globex": 41, "initech": 0, "umbrella": 3}); len(got) != len(want) || got["globex"] != 41 || got["initech"] != 0 || got["umbrella"] != 3 {
		t.Fatalf("read %v, want %v", got, want)
	}
	if len(had) != 1 {
		t.Fatalf("what was read before was changed: %v", had)
	}
	if again, err := readPurged(ctx, workers, got); err != nil || len(again) != len(got) {
		t.Fatalf("read again: %v (%v)", again, err)
	}
	for _, tc := range []struct {
		tenant string
		seq    uint64
		covers bool
	}{
		{"globex", 41, true}, {"globex", 1, true}, {"globex", 42, false},
		{"acme", 1, false}, {"initech", 1, false},
	} {
		e := eventstest.Event(t, tc.tenant, events.UserCreated, "u1", tc.seq, 1)
		if c := got.covers(e); c != tc.covers {
			t.Errorf("an event of %s numbered %d: covered %v, want %v", tc.tenant, tc.seq, c, tc.covers)
		}
	}
}

// TestPurgeNoticeReadFailureIsSaid: a worker whose read of the purge
// notices fails (here the workers' stream is gone) says so at Warn, once
// while it lasts, keeps what it read before, and says at Info when a read
// succeeds again, taking the notices then.
func TestPurgeNoticeReadFailureIsSaid(t *testing.T) {
	ctx := t.Context()
	js, workers := workersStream(t)
	if _, err := js.Publish(ctx, purgedSubjectRoot+"globex.41", nil); err != nil {
		t.Fatal(err)
	}
	logs := &eventstest.Log{}
	w := &worker{name: "crm", members: &membership{stream: workers}, t: timingFor(0), log: slog.New(slog.NewTextHandler(logs, nil))}
	w.readPurged(ctx)
	globex := eventstest.Event(t, "globex", events.UserCreated, "u1", 41, 1)
	if !w.purgedCovers(globex) {
		t.Fatal("the notice was not read")
	}
	if err := js.DeleteStream(ctx, WorkersStream); err != nil {
		t.Fatal(err)
	}
	w.readPurged(ctx)
	w.readPurged(ctx)
	if n := strings.Count(logs.String(), "level=WARN msg=\"the worker cannot read which tenants were purged"); n != 1 {
		t.Fatalf("%d Warns for two failed reads, want 1:\n%s", n, logs)
	}
	if !w.purgedCovers(globex) {
		t.Fatal("what was read before a failed read was forgotten")
	}
	again, err := ensureWorkersStream(ctx, js, timingFor(0), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, purgedSubjectRoot+"initech.7", nil); err != nil {
		t.Fatal(err)
	}
	w.members.stream = again
	w.readPurged(ctx)
	if !strings.Contains(logs.String(), "level=INFO msg=\"the worker reads which tenants were purged again\"") {
		t.Fatalf("reading again was not said:\n%s", logs)
	}
	if !w.purgedCovers(eventstest.Event(t, "initech", events.UserCreated, "u2", 7, 1)) || !w.purgedCovers(globex) {
		t.Fatal("the notices read after the failure are not all there")
	}
}

// workersStream starts a NATS server holding the workers' stream.
func workersStream(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	_, _, js := natsServer(t)
	workers, err := ensureWorkersStream(t.Context(), js, timingFor(0), 1)
	if err != nil {
		t.Fatal(err)
	}
	return js, workers
}
