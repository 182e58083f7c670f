// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/sinks"
)

// deadLetters makes the receiver refuse for good and waits until n events
// of acme are dead letters.
func (f *fixture) deadLetters(n int) []string {
	f.t.Helper()
	f.status.Store(http.StatusGone)
	ids := f.publish("acme", events.UserCreated, n)
	eventstest.CheckFor(f.t, 20*time.Second, 20*time.Millisecond, func() error {
		var page sinks.DeadLetterPage
		f.request("GET", "/admin/v1/sinks/crm/dlq?limit=1000", "").want(f.t, http.StatusOK, &page)
		if len(page.DeadLetters) != n {
			return fmt.Errorf("%d dead letters, want %d", len(page.DeadLetters), n)
		}
		return nil
	})
	return ids
}

// job follows a job until it ends and decodes its result into result.
func (f *fixture) job(a answer, result any) jobs.Job {
	f.t.Helper()
	var j jobs.Job
	a.want(f.t, http.StatusAccepted, &j)
	if j.State != jobs.Running || a.header.Get("Location") != "/admin/v1/jobs/"+j.ID {
		f.t.Fatalf("job as started: %+v, Location %q", j, a.header.Get("Location"))
	}
	var status struct {
		jobs.Job
		Progress json.RawMessage `json:"progress"`
	}
	eventstest.CheckFor(f.t, 30*time.Second, 10*time.Millisecond, func() error {
		f.request("GET", "/admin/v1/jobs/"+j.ID, "").want(f.t, http.StatusOK, &status)
		if status.State == jobs.Running {
			return fmt.Errorf("job %s still running", j.ID)
		}
		return nil
	})
	if result != nil {
		if err := json.Unmarshal(status.Progress, result); err != nil {
			f.t.Fatalf("job %s: %v: %s", j.ID, err, status.Progress)
		}
	}
	return status.Job
}

func TestDeadLetterPages(t *testing.T) {
	f := newFixture(t)
	ids := f.deadLetters(5)
	var seen []string
	after := ""
	for range 3 {
		var page sinks.DeadLetterPage
		f.request("GET", "/admin/v1/sinks/crm/dlq?limit=2&after="+after, "").want(t, http.StatusOK, &page)
		for _, dl := range page.DeadLetters {
			if dl.Status != http.StatusGone || dl.Tenant != "acme" || dl.Type != "io.scimrelay.user.created" {
				t.Fatalf("dead letter %+v", dl)
			}
			seen = append(seen, dl.ID)
		}
		after = page.Next
	}
	slices.Sort(seen)
	slices.Sort(ids)
	if !slices.Equal(seen, ids) || after != "" {
		t.Fatalf("pages of 2 gave %v (next %q), want %v", seen, after, ids)
	}
	// After the last sequence there can be, the page is empty and last.
	var past sinks.DeadLetterPage
	f.request("GET", "/admin/v1/sinks/crm/dlq?after=18446744073709551615", "").want(t, http.StatusOK, &past)
	if len(past.DeadLetters) != 0 || past.Next != "" {
		t.Fatalf("a page after the largest sequence: %+v, want it empty and last", past)
	}
	f.request("GET", "/admin/v1/sinks/crm/dlq?after=somewhere", "").wantError(t, http.StatusBadRequest, "not a cursor of this listing")
	f.request("GET", "/admin/v1/sinks/crm/dlq?limit=-1", "").wantError(t, http.StatusBadRequest, "limit:")
	f.request("GET", "/admin/v1/sinks/erp/dlq", "").wantError(t, http.StatusNotFound, `no such sink "erp"`)
}

func TestRedriveJobs(t *testing.T) {
	f := newFixture(t)
	ids := f.deadLetters(3)

	// The receiver still refuses: the job is done, and says so.
	var res sinks.RedriveResult
	j := f.job(f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`), &res)
	if j.State != jobs.Done || j.Kind != jobRedrive || j.Target != "crm" || res.Done != 3 || res.Failed != 3 || len(res.Failures) != 3 {
		t.Fatalf("redrive to a receiver that still refuses: %+v %+v", j, res)
	}
	if want := `msg="admin action" action=redrive sink=crm job=` + j.ID; !strings.Contains(f.log.String(), want) {
		t.Errorf("the redrive's start is not audited (%s):\n%s", want, f.log.String())
	}
	// One dead letter, by id, once the receiver takes it.
	f.status.Store(http.StatusNoContent)
	j = f.job(f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"id":"`+ids[1]+`"}`), &res)
	if j.State != jobs.Done || res.Delivered != 1 || res.Failed != 0 {
		t.Fatalf("redrive of one: %+v %+v", j, res)
	}
	// An id the queue does not have fails the job, saying why.
	j = f.job(f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"id":"`+ids[1]+`"}`), nil)
	if j.State != jobs.Failed || j.Error != "sink crm has no dead letter with event id "+ids[1] {
		t.Fatalf("redrive of a delivered one: %+v", j)
	}
	// A redrive of the same sink while one runs is refused, naming it.
	block := make(chan struct{})
	f.block.Store(&block)
	var first jobs.Job
	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`).want(t, http.StatusAccepted, &first)
	e := f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`).wantError(t, http.StatusConflict, "already running")
	if e.JobID != first.ID {
		t.Fatalf("409 names job %q, want %q", e.JobID, first.ID)
	}
	f.block.Store(nil)
	close(block)
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		var page sinks.DeadLetterPage
		f.request("GET", "/admin/v1/sinks/crm/dlq", "").want(t, http.StatusOK, &page)
		if len(page.DeadLetters) != 0 {
			return fmt.Errorf("%d dead letters left", len(page.DeadLetters))
		}
		return nil
	})

	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{}`).wantError(t, http.StatusBadRequest, "either an id or all")
	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"id":"x","all":true}`).wantError(t, http.StatusBadRequest, "either an id or all")
	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":"yes"}`).wantError(t, http.StatusBadRequest, "request body")
	f.request("POST", "/admin/v1/sinks/erp/dlq/redrive", `{"all":true}`).wantError(t, http.StatusNotFound, `no such sink "erp"`)
	f.request("GET", "/admin/v1/jobs/job_0123", "").wantError(t, http.StatusNotFound, "no such job")
}

// TestRenamedSinksDeadLetterQueue: GET /admin/v1/dlq lists a renamed
// sink's queue under its old name; its dead letters are listed there, and
// redriven only with to, a configured sink.
func TestRenamedSinksDeadLetterQueue(t *testing.T) {
	f := newFixture(t)
	ids := f.deadLetters(2)
	cfg := sinks.Config{Name: "crm2", URL: f.sinkURL, Secret: sinkSecret, AllowPrivate: true, Tenants: []string{"acme"}}
	if _, err := f.sinks.Apply(t.Context(), []sinks.Config{cfg}); err != nil {
		t.Fatal(err)
	}
	var queues []sinks.DeadLetterQueue
	f.request("GET", "/admin/v1/dlq", "").want(t, http.StatusOK, &queues)
	if want := []sinks.DeadLetterQueue{{Sink: "crm2", Configured: true}, {Sink: "crm", DeadLetters: 2}}; !slices.Equal(queues, want) {
		t.Fatalf("queues %+v, want %+v", queues, want)
	}
	var page sinks.DeadLetterPage
	f.request("GET", "/admin/v1/sinks/crm/dlq", "").want(t, http.StatusOK, &page)
	if len(page.DeadLetters) != 2 || !slices.ContainsFunc(page.DeadLetters, func(d sinks.DeadLetter) bool { return d.ID == ids[0] }) ||
		!slices.ContainsFunc(page.DeadLetters, func(d sinks.DeadLetter) bool { return d.ID == ids[1] }) {
		t.Fatalf("the old name's dead letters: %+v", page)
	}
	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true}`).wantError(t, http.StatusBadRequest, "sink crm is no longer configured")
	f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true,"to":"erp"}`).wantError(t, http.StatusBadRequest, `to: no such sink "erp"`)
	f.status.Store(http.StatusNoContent)
	var res sinks.RedriveResult
	if j := f.job(f.request("POST", "/admin/v1/sinks/crm/dlq/redrive", `{"all":true,"to":"crm2"}`), &res); j.State != jobs.Done || res.Delivered != 2 {
		t.Fatalf("redrive to crm2: %+v %+v", j, res)
	}
	f.request("GET", "/admin/v1/sinks/crm/dlq", "").wantError(t, http.StatusNotFound, `no such sink "crm", nor dead letters under that name`)
}

// TestReplayJobAndDeliveries: a replay job sends a sink the events since a
// time again, its start audited (one Info line "admin action" with the
// sink, the job and since, via api), a refused one not; the deliveries
// list the attempts, the replayed ones as such.
func TestReplayJobAndDeliveries(t *testing.T) {
	f := newFixture(t)
	f.publish("acme", events.UserCreated, 3)
	f.publish("globex", events.UserCreated, 2) // not the sink's tenant
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if n := f.got.Load(); n != 3 {
			return fmt.Errorf("%d deliveries", n)
		}
		return nil
	})
	var res sinks.ReplayResult
	a := f.request("POST", "/admin/v1/sinks/crm/replay", `{"since":"1h"}`)
	j := f.job(a, &res)
	if j.State != jobs.Done || j.Kind != jobReplay || res.Total != 3 || res.Matched != 3 || res.Delivered != 3 || f.got.Load() != 6 {
		t.Fatalf("replay: %+v %+v, %d deliveries", j, res, f.got.Load())
	}
	f.request("POST", "/admin/v1/sinks/crm/replay", `{"since":"0"}`).wantError(t, http.StatusBadRequest, "since:")
	f.request("POST", "/admin/v1/sinks/crm/replay", `{"since":"last week"}`).wantError(t, http.StatusBadRequest, "since:")
	f.request("POST", "/admin/v1/sinks/erp/replay", `{"since":"1h"}`).wantError(t, http.StatusNotFound, `no such sink "erp"`)
	// The start is audited; the refused ones are no action.
	wantAuditLines(t, f.log.String(),
		`level=INFO msg="admin action" action=replay sink=crm job=`+j.ID+` since=1h via=api client=127.0.0.1 request_id=`+a.header.Get("X-Request-Id"))

	var attempts []sinks.Attempt
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.request("GET", "/admin/v1/deliveries?sink=crm&since=1h", "").want(t, http.StatusOK, &attempts)
		replayed := 0
		for _, a := range attempts {
			if a.Outcome == "replayed" {
				replayed++
			}
		}
		if len(attempts) != 6 || replayed != 3 {
			return fmt.Errorf("%d attempts, %d replayed", len(attempts), replayed)
		}
		return nil
	})
	f.request("GET", "/admin/v1/deliveries?sink=crm&limit=2", "").want(t, http.StatusOK, &attempts)
	if len(attempts) != 2 {
		t.Fatalf("limit 2: %d", len(attempts))
	}
	f.request("GET", "/admin/v1/deliveries?sink=erp", "").wantError(t, http.StatusNotFound, `no such sink "erp"`)
	f.request("GET", "/admin/v1/deliveries?since=forever", "").wantError(t, http.StatusBadRequest, "since:")
	f.request("GET", "/admin/v1/deliveries?limit=many", "").wantError(t, http.StatusBadRequest, "limit:")
}

// TestSinkStatus: a sink's state says what it selects, how far behind it
// is (events held by a receiver that does not answer), its dead letters,
// its attempts and the last one's outcome.
func TestSinkStatus(t *testing.T) {
	f := newFixture(t)
	f.deadLetters(2)
	var list []sinks.Status
	f.request("GET", "/admin/v1/sinks", "").want(t, http.StatusOK, &list)
	if len(list) != 1 {
		t.Fatalf("sinks: %+v", list)
	}
	st := list[0]
	if st.Name != "crm" || st.Format != "binary" || !slices.Equal(st.Tenants, []string{"acme"}) || st.DeadLetters != 2 ||
		st.Attempts1h < 2 || st.Attempts5m < 2 || st.LastAttempt == nil || st.LastAttempt.Outcome != "dead_lettered" || st.LastAttempt.Status != http.StatusGone {
		t.Fatalf("state: %+v (last attempt %+v)", st, st.LastAttempt)
	}

	// A receiver that holds its requests: the events wait, in flight.
	block := make(chan struct{})
	f.block.Store(&block)
	defer func() { f.block.Store(nil); close(block) }()
	for i := range 3 { // users of their own: u0 and u1 are past their first event
		msg, _ := message(t, "acme", events.UserCreated, fmt.Sprintf("held%d", i), uint64(10+i))
		if _, err := f.js.PublishMsg(t.Context(), msg, jetstream.WithExpectStream(events.StreamName)); err != nil {
			t.Fatal(err)
		}
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		f.request("GET", "/admin/v1/sinks/crm", "").want(t, http.StatusOK, &st)
		if st.InFlight+int(st.Pending) < 3 {
			return fmt.Errorf("backlog %d pending, %d in flight; want 3", st.Pending, st.InFlight)
		}
		return nil
	})
	f.request("GET", "/admin/v1/sinks/nope", "").wantError(t, http.StatusNotFound, "no such sink")
}

// TestRemovedSinksAttemptsAreReadByItsName: a sink removed from relay.yaml
// keeps its delivery attempts until sinks forget (README, Operating), and
// deliveries?sink=<its name> lists them; before, the name was refused 404
// while the list without the filter held them. A name that never had an
// attempt is still 404.
func TestRemovedSinksAttemptsAreReadByItsName(t *testing.T) {
	f := newFixture(t)
	f.publish("acme", events.UserCreated, 2)
	eventstest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		var attempts []sinks.Attempt
		f.request("GET", "/admin/v1/deliveries?sink=crm&since=1h", "").want(t, http.StatusOK, &attempts)
		if len(attempts) != 2 {
			return fmt.Errorf("%d of crm's attempts stored, want 2", len(attempts))
		}
		return nil
	})
	renamed := sinks.Config{Name: "crm2", URL: f.sinkURL, Secret: sinkSecret, AllowPrivate: true, Tenants: []string{"acme"}}
	if _, err := f.sinks.Apply(t.Context(), []sinks.Config{renamed}); err != nil { // crm removed by a reload
		t.Fatal(err)
	}
	var attempts []sinks.Attempt
	f.request("GET", "/admin/v1/deliveries?sink=crm&since=1h", "").want(t, http.StatusOK, &attempts)
	if len(attempts) != 2 || attempts[0].Sink != "crm" {
		t.Fatalf("deliveries?sink=crm after crm was removed: %+v, want its 2 attempts", attempts)
	}
	f.request("GET", "/admin/v1/deliveries?sink=crn&since=1h", "").wantError(t, http.StatusNotFound, `no such sink "crn"`)
	f.request("GET", "/admin/v1/deliveries?sink=c.>&since=1h", "").wantError(t, http.StatusNotFound, `no such sink "c.>"`)
}

// TestDeadLetterPageLimits holds docs/decisions.md (Delivery): "Dead-letter
// pages take an opaque cursor ... and a limit of at most 1,000 (100 by
// default)". TestDeadLetterPages walks pages of 2; nothing held the
// default page or the ceiling.
func TestDeadLetterPageLimits(t *testing.T) {
	f := newFixture(t)
	f.status.Store(http.StatusGone)
	const n = 1001
	ids := f.publish("acme", events.UserCreated, n)
	count := func() (int, error) {
		total, after := 0, ""
		for range n {
			var page sinks.DeadLetterPage
			a := f.request("GET", "/admin/v1/sinks/crm/dlq?limit=1000&after="+after, "")
			if a.status != http.StatusOK {
				return 0, fmt.Errorf("GET dlq: %d", a.status)
			}
			a.want(t, http.StatusOK, &page)
			total += len(page.DeadLetters)
			if page.Next == "" || len(page.DeadLetters) == 0 {
				return total, nil
			}
			after = page.Next
		}
		return total, nil
	}
	eventstest.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if got, err := count(); err != nil || got != n {
			return fmt.Errorf("%d dead letters (%v), want %d", got, err, n)
		}
		return nil
	})

	var page sinks.DeadLetterPage
	f.request("GET", "/admin/v1/sinks/crm/dlq", "").want(t, http.StatusOK, &page)
	if len(page.DeadLetters) != 100 || page.Next == "" {
		t.Errorf("GET dlq without a limit: %d dead letters, next %q; want a page of 100 and a cursor", len(page.DeadLetters), page.Next)
	}
	page = sinks.DeadLetterPage{}
	f.request("GET", "/admin/v1/sinks/crm/dlq?limit=5000", "").want(t, http.StatusOK, &page)
	if len(page.DeadLetters) != 1000 || page.Next == "" {
		t.Errorf("GET dlq?limit=5000 of %d dead letters: %d, next %q; want at most 1,000 and a cursor", len(ids), len(page.DeadLetters), page.Next)
	}
}
