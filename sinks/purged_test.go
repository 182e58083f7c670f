// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"testing"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestPurgeNoticesAreRead: the purge notices in the workers' stream are
// read into each tenant's last sequence, the highest when a tenant was
// purged twice, what was read before kept (a notice ages out of the
// stream); subjects that are not notices, and sinks' announcements, are
// not; an event is covered when its tenant's notice reaches its sequence.
func TestPurgeNoticesAreRead(t *testing.T) {
	_, _, js := natsServer(t)
	ctx := t.Context()
	workers, err := ensureWorkersStream(ctx, js, timingFor(0), 1)
	if err != nil {
		t.Fatal(err)
	}
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
