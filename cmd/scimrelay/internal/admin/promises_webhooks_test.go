// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// readers counts the consumers created to read a stream (a replay reads
// the event stream, a redrive the dead letters), leaving out the sinks'
// partition consumers.
type readers struct {
	mu      sync.Mutex
	created map[string]int // stream → consumers created
}

// watchReaders counts, from JetStream's advisories, the reading consumers
// created from now on.
func watchReaders(t *testing.T, nc *nats.Conn) *readers {
	t.Helper()
	r := &readers{created: map[string]int{}}
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED.>", func(m *nats.Msg) {
		tokens := strings.Split(m.Subject, ".")
		stream, consumer := tokens[len(tokens)-2], tokens[len(tokens)-1]
		if strings.HasPrefix(consumer, "scimrelay-sink-") {
			return
		}
		r.mu.Lock()
		r.created[stream]++
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *readers) of(stream string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.created[stream]
}

// TestRefusedRedriveAndReplayDoNothing: a redrive or replay the admin API
// refuses (no or a wrong admin token, an unknown sink, neither or both of
// id and all, a since that is not a positive duration, a body it cannot
// read, a second one of a sink while one runs) answers its error and does
// nothing: the receiver gets no request, the dead letters and their stream
// stay as they were, and no consumer is created to read the events or the
// dead letters. The jobs started after the refusals, one of each kind, do
// exactly their own work, which they could not if a refused request had
// started one.
func TestRefusedRedriveAndReplayDoNothing(t *testing.T) {
	f := newFixture(t)
	ids := f.deadLetters(3)              // the receiver answers 410: three dead letters of acme
	f.status.Store(http.StatusNoContent) // any redelivery from now on would be taken, and counted
	received := f.got.Load()
	dlqStream, err := f.js.Stream(context.Background(), "SCIMRELAY_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	dlqState := func() jetstream.StreamState {
		t.Helper()
		info, err := dlqStream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	before := dlqState()
	deadLetters := func() []string {
		t.Helper()
		page, err := f.sinks.DeadLetters(context.Background(), "crm", "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, dl := range page.DeadLetters {
			out = append(out, dl.ID)
		}
		slices.Sort(out)
		return out
	}
	readers := watchReaders(t, f.js.Conn())

	const redrive, replay = "/admin/v1/sinks/crm/dlq/redrive", "/admin/v1/sinks/crm/replay"
	for _, r := range []struct {
		token, method, path, body string
		status                    int
		says                      string
	}{
		{"", "POST", redrive, `{"all":true}`, http.StatusUnauthorized, "admin token"},
		{"wrong-token-0123456789abcdef", "POST", redrive, `{"all":true}`, http.StatusUnauthorized, "admin token"},
		{adminToken, "POST", "/admin/v1/sinks/erp/dlq/redrive", `{"all":true}`, http.StatusNotFound, `no such sink "erp"`},
		{adminToken, "POST", redrive, `{}`, http.StatusBadRequest, "either an id or all"},
		{adminToken, "POST", redrive, `{"id":"` + ids[0] + `","all":true}`, http.StatusBadRequest, "either an id or all"},
		{adminToken, "POST", redrive, `{"all":"yes"}`, http.StatusBadRequest, "request body"},
		{adminToken, "POST", redrive, `{"all":true,"force":true}`, http.StatusBadRequest, "request body"},
		{adminToken, "POST", redrive, `{"all":true,"note":"` + strings.Repeat("x", 1<<20) + `"}`, http.StatusRequestEntityTooLarge, "request body"},
		{adminToken, "GET", redrive, ``, http.StatusMethodNotAllowed, "the endpoint takes POST"},
		{"", "POST", replay, `{"since":"1h"}`, http.StatusUnauthorized, "admin token"},
		{"wrong-token-0123456789abcdef", "POST", replay, `{"since":"1h"}`, http.StatusUnauthorized, "admin token"},
		{adminToken, "POST", "/admin/v1/sinks/erp/replay", `{"since":"1h"}`, http.StatusNotFound, `no such sink "erp"`},
		{adminToken, "POST", replay, `{}`, http.StatusBadRequest, "since:"},
		{adminToken, "POST", replay, `{"since":"0"}`, http.StatusBadRequest, "since:"},
		{adminToken, "POST", replay, `{"since":"-1h"}`, http.StatusBadRequest, "since:"},
		{adminToken, "POST", replay, `{"since":"last week"}`, http.StatusBadRequest, "since:"},
		{adminToken, "POST", replay, `{"since":"1h","tenant":"acme"}`, http.StatusBadRequest, "request body"},
		{adminToken, "POST", replay, `["1h"]`, http.StatusBadRequest, "request body"},
		{adminToken, "GET", replay, ``, http.StatusMethodNotAllowed, "the endpoint takes POST"},
	} {
		a := f.requestAs(r.token, r.method, r.path, r.body)
		if a.status == http.StatusAccepted {
			t.Fatalf("%s %s %.60s: started a job: %s", r.method, r.path, r.body, a.body)
		}
		a.wantError(t, r.status, r.says)
	}
	// A body its sender says is not JSON, whatever it holds.
	for _, path := range []string{redrive, replay} {
		body := `{"all":true}`
		if path == replay {
			body = `{"since":"1h"}`
		}
		f.request("POST", path, body, "Content-Type", "text/plain").wantError(t, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	if n := f.got.Load(); n != received {
		t.Errorf("the receiver got %d requests from refused redrives and replays", n-received)
	}
	if after := dlqState(); after.Msgs != before.Msgs || after.LastSeq != before.LastSeq {
		t.Errorf("refused redrives and replays changed the dead-letter stream: %d messages (last %d), were %d (last %d)",
			after.Msgs, after.LastSeq, before.Msgs, before.LastSeq)
	}

	// A second job of a kind while one runs is refused too. The receiver
	// holds the first ones' deliveries meanwhile.
	block := make(chan struct{})
	f.block.Store(&block)
	var replaying, redriving jobs.Job
	f.request("POST", replay, `{"since":"1h"}`).want(t, http.StatusAccepted, &replaying)
	f.request("POST", redrive, `{"id":"`+ids[0]+`"}`).want(t, http.StatusAccepted, &redriving)
	if e := f.request("POST", replay, `{"since":"1h"}`).wantError(t, http.StatusConflict, "already running"); e.JobID != replaying.ID {
		t.Errorf("the second replay's 409 names job %q, want %q", e.JobID, replaying.ID)
	}
	if e := f.request("POST", redrive, `{"all":true}`).wantError(t, http.StatusConflict, "already running"); e.JobID != redriving.ID {
		t.Errorf("the second redrive's 409 names job %q, want %q", e.JobID, redriving.ID)
	}
	f.block.Store(nil)
	close(block)
	for _, j := range []jobs.Job{replaying, redriving} {
		var got jobs.Job
		eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
			f.request("GET", "/admin/v1/jobs/"+j.ID, "").want(t, http.StatusOK, &got)
			if got.State == jobs.Running {
				return fmt.Errorf("job %s (%s) still running", j.ID, j.Kind)
			}
			return nil
		})
		if got.State != jobs.Done {
			t.Errorf("job %s (%s) ended %s: %s", j.ID, j.Kind, got.State, got.Error)
		}
	}

	// The replay sent the three events and the redrive the one dead
	// letter: nothing else reached the receiver.
	if n := f.got.Load() - received; n != 3+1 {
		t.Errorf("the receiver got %d requests, want 4: 3 replayed and 1 redriven", n)
	}
	if got, want := deadLetters(), sortedCopy(ids[1:]); !slices.Equal(got, want) {
		t.Errorf("the dead letters are %v, want %v (the one redriven gone, the others untouched)", got, want)
	}
	// No dead letter was written again (a failed redrive or replay puts
	// one at the end of the stream); one was deleted, by the redrive.
	if after := dlqState(); after.LastSeq != before.LastSeq || after.Msgs != before.Msgs-1 {
		t.Errorf("the dead-letter stream went from %d messages (last %d) to %d (last %d), want one deleted and none added",
			before.Msgs, before.LastSeq, after.Msgs, after.LastSeq)
	}
	// The streams were read by the two jobs alone (and the dead letters
	// by the listing above).
	eventstest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n, m := readers.of(events.StreamName), readers.of("SCIMRELAY_DLQ"); n != 1 || m != 2 {
			return fmt.Errorf("consumers created: %d on the event stream, want the replay's alone; %d on the dead letters', want the redrive's and the listing's", n, m)
		}
		return nil
	})
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
