// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestReloadAnswers: what POST /admin/v1/reload answers when the reload
// applied everything, was refused, or failed part-way; that the reload
// runs on a context its client cannot end; and that each reload, whatever
// its outcome, is one Info line "admin action" with the outcome and the
// number of changes applied, via api, with the client and request id.
func TestReloadAnswers(t *testing.T) {
	var (
		res         ReloadResult
		err         error
		cancellable bool
		reloads     int
		reload      = func(ctx context.Context) (ReloadResult, error) {
			cancellable = ctx.Done() != nil
			reloads++
			return res, err
		}
	)
	log := &eventstest.Log{}
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken, Reload: reload, Logger: slog.New(slog.NewTextHandler(log, nil))}))
	defer srv.Close()
	f := &fixture{t: t, url: srv.URL}
	var audited []string // what each reload's line holds
	reloaded := func(a answer, outcome string, changes int) {
		audited = append(audited, fmt.Sprintf(`level=INFO msg="admin action" action=reload outcome=%s changes=%d via=api client=127.0.0.1 request_id=%s`,
			outcome, changes, a.header.Get("X-Request-Id")))
	}

	res, err = ReloadResult{Config: "relay.yaml", Applied: []string{"sink crm added"}}, nil
	var got ReloadResult
	reloaded(f.request("POST", "/admin/v1/reload", "").want(t, http.StatusOK, &got), "applied", 1)
	if !slices.Equal(got.Applied, res.Applied) {
		t.Errorf("applied %v, want %v", got.Applied, res.Applied)
	}
	// A client that gives up (the CLI's timeout, ^C) must not stop a
	// reload half-way: a changed sink's old worker stopped, its new one
	// never started.
	if cancellable {
		t.Error("the reload runs on the request's context: a client that leaves ends it half-way")
	}

	res, err = ReloadResult{}, fmt.Errorf("%w: listen: not an address", ErrReloadRefused)
	a := f.request("POST", "/admin/v1/reload", "")
	a.wantError(t, http.StatusUnprocessableEntity, "relay.yaml refused")
	reloaded(a, "refused", 0)

	// Failed after applying part of the file: the operator learns what
	// took effect, and why the rest did not.
	res, err = ReloadResult{Applied: []string{"tenant initech added", "limits.rate: 0 → 1"}}, errors.New("setting up the sinks: sink crm: no consumer")
	a = f.request("POST", "/admin/v1/reload", "")
	e := a.wantError(t, http.StatusInternalServerError,
		"relay.yaml applied in part (tenant initech added; limits.rate: 0 → 1), then setting up the sinks: sink crm: no consumer")
	reloaded(a, "failed", 2)
	if !slices.Equal(e.Applied, res.Applied) {
		t.Errorf("the failed reload's answer lists %v as applied, want %v", e.Applied, res.Applied)
	}
	// Failed before applying anything: it says so.
	res, err = ReloadResult{}, errors.New("applying the tenants: disk full")
	a = f.request("POST", "/admin/v1/reload", "")
	a.wantError(t, http.StatusInternalServerError, "relay.yaml not applied: applying the tenants: disk full")
	reloaded(a, "failed", 0)

	wantAuditLines(t, log.String(), audited...)

	// A reload takes no body: a field given is refused, as /tokens
	// refuses one it does not know, before anything is reloaded; none,
	// white space and {} are nothing.
	res, err = ReloadResult{Config: "relay.yaml"}, nil
	before := reloads
	for body, want := range map[string]string{
		`{"x":1}`:          `request body: unknown field "x" (it takes no fields)`,
		`{"dry_run":true}`: `unknown field "dry_run"`,
		`[]`:               "request body: the body must be a JSON object (it takes no fields)",
		`"now"`:            "request body",
		`{} {}`:            "data after the JSON value",
	} {
		f.request("POST", "/admin/v1/reload", body).wantError(t, http.StatusBadRequest, want)
	}
	if reloads != before {
		t.Fatalf("refused bodies reloaded %d times", reloads-before)
	}
	for _, body := range []string{"", " \n", "{}", " { } "} {
		f.request("POST", "/admin/v1/reload", body).want(t, http.StatusOK, nil)
	}
}
