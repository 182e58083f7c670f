// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// TestReloadAnswers: what POST /admin/v1/reload answers when the reload
// applied everything, was refused, or failed part-way; and that the
// reload runs on a context its client cannot end.
func TestReloadAnswers(t *testing.T) {
	var (
		res         ReloadResult
		err         error
		cancellable bool
		reload      = func(ctx context.Context) (ReloadResult, error) {
			cancellable = ctx.Done() != nil
			return res, err
		}
	)
	srv := httptest.NewServer(NewHandler(Options{Token: adminToken, Reload: reload}))
	defer srv.Close()
	f := &fixture{t: t, url: srv.URL}

	res, err = ReloadResult{Config: "relay.yaml", Applied: []string{"sink crm added"}}, nil
	var got ReloadResult
	f.request("POST", "/admin/v1/reload", "").want(t, http.StatusOK, &got)
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
	f.request("POST", "/admin/v1/reload", "").wantError(t, http.StatusUnprocessableEntity, "relay.yaml refused")

	// Failed after applying part of the file: the operator learns what
	// took effect, and why the rest did not.
	res, err = ReloadResult{Applied: []string{"tenant initech added", "limits.rate: 0 → 1"}}, errors.New("setting up the sinks: sink crm: no consumer")
	e := f.request("POST", "/admin/v1/reload", "").wantError(t, http.StatusInternalServerError,
		"relay.yaml applied in part (tenant initech added; limits.rate: 0 → 1), then setting up the sinks: sink crm: no consumer")
	if !slices.Equal(e.Applied, res.Applied) {
		t.Errorf("the failed reload's answer lists %v as applied, want %v", e.Applied, res.Applied)
	}
	// Failed before applying anything: it says so.
	res, err = ReloadResult{}, errors.New("applying the tenants: disk full")
	f.request("POST", "/admin/v1/reload", "").wantError(t, http.StatusInternalServerError, "relay.yaml not applied: applying the tenants: disk full")
}
