// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestPurgeNoticesAreRead: a heartbeat's listing of the workers' stream
// reads the purge notices with the sink's workers, and they are taken into
// each tenant's last sequence, the highest when a tenant was purged twice,
// what was read before kept (a notice ages out of the stream); subjects
// that are not notices, and sinks' announcements, are not; another sink's
// workers are not the sink's; an event is covered when its tenant's notice
// reaches its sequence and where the stream stored it (an earlier
// release's notice, without the latter, reaches the whole stream).
func TestPurgeNoticesAreRead(t *testing.T) {
	ctx := t.Context()
	js, workers := workersStream(t)
	for _, subject := range []string{
		purgedSubjectRoot + "globex.41.900",
		purgedSubjectRoot + "globex.7.100", // an earlier purge of the name
		purgedSubjectRoot + "initech.0.50", // purged before it made an event
		purgedSubjectRoot + "hooli.5",      // an earlier release's: no stream sequence
		purgedSubjectRoot + "Bad.3.9",      // not a tenant name
		purgedSubjectRoot + "acme.x.9",     // not a sequence
		purgedSubjectRoot + "acme.9.x",     // not a stream sequence
		purgedSubjectRoot + "acme",         // no sequence
		workersSubjectRoot + "crm.w1",      // a worker's announcement
		workersSubjectRoot + "erp.w2",      // another sink's worker
	} {
		if _, err := js.Publish(ctx, subject, nil); err != nil {
			t.Fatal(err)
		}
	}
	m := &membership{js: js, stream: workers, sink: "crm", id: "w3", t: timingFor(0)}
	live, notices, err := m.beat(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(live, ",") != "w1,w3" {
		t.Fatalf("sink crm's workers: %v, want w1 and w3", live)
	}
	had := purgedTenants{"umbrella": {3, 30}}
	got := withNotices(had, notices)
	if want := (purgedTenants{"globex": {41, 900}, "initech": {0, 50}, "hooli": {5, math.MaxUint64}, "umbrella": {3, 30}}); !maps.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	if len(had) != 1 {
		t.Fatalf("what was read before was changed: %v", had)
	}
	if again := withNotices(got, notices); !maps.Equal(again, got) {
		t.Fatalf("read again: %v", again)
	}
	w := &worker{}
	w.takePurged(notices)
	w.takePurged(nil) // the notices aged out of the stream
	for _, tc := range []struct {
		tenant    string
		seq, sseq uint64
		covers    bool
	}{
		{"globex", 41, 900, true}, {"globex", 1, 5, true}, {"globex", 42, 901, false},
		// A tenant of the name on another front end sharing the stream,
		// numbered from 1 by its own data file, stored after the purge.
		{"globex", 1, 901, false},
		{"acme", 1, 1, false}, {"initech", 1, 51, false},
		{"hooli", 5, 1 << 40, true}, {"hooli", 6, 1, false},
		{"globex", 41, 0, true}, // stored where the worker could not tell
	} {
		e := eventstest.Event(t, tc.tenant, events.UserCreated, "u1", tc.seq, 1)
		if c := got.covers(e, tc.sseq); c != tc.covers {
			t.Errorf("an event of %s numbered %d, stored at %d: covered %v, want %v", tc.tenant, tc.seq, tc.sseq, c, tc.covers)
		}
		if c := w.purgedCovers(e, tc.sseq); c != tc.covers {
			t.Errorf("a worker whose notices aged out: an event of %s numbered %d, stored at %d: covered %v, want %v", tc.tenant, tc.seq, tc.sseq, c, tc.covers)
		}
	}
}

// TestPurgeNoticeOutlivesTheWait: AnnouncePurge returns a worker's lease
// after it wrote the notice, and writes it again as it returns, so that
// the notice lives its whole member age from then on: the stream's purge,
// which follows, has that long before a worker that starts meanwhile could
// miss both the notice and the purge.
func TestPurgeNoticeOutlivesTheWait(t *testing.T) {
	_, _, js := natsServer(t)
	m, _ := runManager(t, Options{JS: js, Heartbeat: fastHeartbeat})
	began := time.Now()
	if err := m.AnnouncePurge(t.Context(), "globex", 41); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	if waited, lease := ended.Sub(began), timingFor(fastHeartbeat).lease; waited < lease {
		t.Fatalf("AnnouncePurge returned after %v, before a worker's lease (%v)", waited, lease)
	}
	workers, err := js.Stream(t.Context(), WorkersStream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := workers.GetLastMsgForSubject(t.Context(), purgedSubjectRoot+"globex.41.*")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatal("the notice aged out of the workers' stream during the wait: it was not written again as the wait ended")
	}
	if err != nil {
		t.Fatal(err)
	}
	if stored := last.Time; stored.Before(began.Add(timingFor(fastHeartbeat).lease)) {
		t.Fatalf("the notice was last written %v after the purge began; want at the end of the wait, %v after", stored.Sub(began), ended.Sub(began))
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
