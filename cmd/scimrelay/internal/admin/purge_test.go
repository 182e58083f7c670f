// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// blockingPurger is a Purger whose purges run until released: the admin
// API's own seam, so that a purge is under way when the test asks again.
type blockingPurger struct {
	started chan string   // a purge's tenant, once it runs
	release chan struct{} // closed: the purges end
}

func (p *blockingPurger) Begin(context.Context, string) error { return nil }

func (p *blockingPurger) Purge(ctx context.Context, tenant string, _ func(PurgeResult)) (PurgeResult, error) {
	p.started <- tenant
	select {
	case <-p.release:
	case <-ctx.Done():
		return PurgeResult{Tenant: tenant}, ctx.Err()
	}
	return PurgeResult{Tenant: tenant}, nil
}

// TestSecondPurgeIsRefused: a second purge of a name while one runs is
// 409 naming the running job (job_id), and starts nothing; a purge of
// another name runs beside it, and the name can be purged again once its
// purge ended. A delivery worker (--role sinks: no Purger) answers 503.
func TestSecondPurgeIsRefused(t *testing.T) {
	purger := &blockingPurger{started: make(chan string, 4), release: make(chan struct{})}
	runner := jobs.NewRunner(nil)
	t.Cleanup(runner.Close)
	released := false
	release := func() {
		if !released {
			released = true
			close(purger.release)
		}
	}
	t.Cleanup(release) // before the runner closes: its Close waits for the jobs
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken, Purge: purger, Jobs: runner}))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, url: srv.URL}
	waitStarted := func(want string) {
		t.Helper()
		select {
		case got := <-purger.started:
			if got != want {
				t.Fatalf("purge of %s started, want %s", got, want)
			}
		case <-time.After(30 * time.Second): // a deadline, not a wait for something
			t.Fatalf("the purge of %s did not start", want)
		}
	}

	var first jobs.Job
	f.request("POST", "/admin/v1/tenants/initech/purge", "").want(t, http.StatusAccepted, &first)
	waitStarted("initech")
	e := f.request("POST", "/admin/v1/tenants/initech/purge", "").wantError(t, http.StatusConflict, "a purge of initech is already running as job "+first.ID)
	if e.JobID != first.ID {
		t.Fatalf("the 409 names job %q, want %q", e.JobID, first.ID)
	}
	select {
	case tenant := <-purger.started:
		t.Fatalf("the refused purge started a purge of %s", tenant)
	default:
	}
	var other jobs.Job
	f.request("POST", "/admin/v1/tenants/umbrella/purge", "").want(t, http.StatusAccepted, &other)
	waitStarted("umbrella")

	release()
	for _, j := range []jobs.Job{first, other} {
		eventstest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
			var got jobs.Job
			f.request("GET", "/admin/v1/jobs/"+j.ID, "").want(t, http.StatusOK, &got)
			if got.State != jobs.Done {
				return fmt.Errorf("job %s: %s", j.ID, got.State)
			}
			return nil
		})
	}
	var again jobs.Job
	f.request("POST", "/admin/v1/tenants/initech/purge", "").want(t, http.StatusAccepted, &again)
	waitStarted("initech")

	// A delivery worker has no data file, so no Purger.
	worker := httptest.NewServer(NewHandler(Options{Token: adminToken, Jobs: runner}))
	t.Cleanup(worker.Close)
	(&fixture{t: t, url: worker.URL}).request("POST", "/admin/v1/tenants/initech/purge", "").wantError(t, http.StatusServiceUnavailable, "purging a tenant is not available on this relay")
}
