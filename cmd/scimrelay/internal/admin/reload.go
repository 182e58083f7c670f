// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/scimrelay/scimrelay/config"
)

// ReloadResult is what a reload of relay.yaml did.
type ReloadResult struct {
	// Config is the file that was read.
	Config string `json:"config"`
	// Applied lists each change made, e.g. "sink crm added",
	// "limits.rate: 200 → 50", with what it does beyond itself ("tenant
	// globex removed: its NATS subscribers … are cut off …", "tenant
	// globex added: the name is not fresh: …"); empty when the file
	// changed nothing that can change while running.
	Applied []string `json:"applied"`
	// RestartNeeded names the settings that changed but only take effect
	// when the relay restarts (listen, data_dir, nats.url …); the running
	// values stay.
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

// Reloader re-reads relay.yaml and applies it. An error wrapping
// ErrReloadRefused means the file was refused (it does not pass check) and
// the running configuration stays.
type Reloader func(ctx context.Context) (ReloadResult, error)

// ErrReloadRefused marks a configuration that a reload refused.
var ErrReloadRefused = errors.New("relay.yaml refused; the running configuration stays")

// reloadIncomplete is a reload that failed after it had applied part of
// relay.yaml. It is answered 500 with its cause and what was applied, for
// the operator who asked: the relay runs with those changes, and a reload
// once the cause is mended applies the rest.
type reloadIncomplete struct {
	applied []string
	err     error
}

func (e *reloadIncomplete) Error() string {
	if len(e.applied) == 0 {
		return fmt.Sprintf("relay.yaml not applied: %v", e.err)
	}
	return fmt.Sprintf("relay.yaml applied in part (%s), then %v; reload again once that is mended", strings.Join(e.applied, "; "), e.err)
}

func (e *reloadIncomplete) Unwrap() error { return e.err }

// POST /admin/v1/reload
func (h *Handler) reload(w http.ResponseWriter, r *http.Request) error {
	if h.o.Reload == nil {
		return unavailable("reloading")
	}
	// A reload, once begun, runs to its end: a client that gives up (the
	// CLI's timeout, ^C) must not leave a changed sink's old worker
	// stopped and its new one unstarted.
	res, err := h.o.Reload(context.WithoutCancel(r.Context()))
	outcome := "applied"
	switch {
	case errors.Is(err, ErrReloadRefused):
		outcome = "refused"
	case err != nil:
		outcome = "failed"
	}
	// What changed is in the reload's own line.
	h.audit(r, actionReload, "outcome", outcome, "changes", len(res.Applied))
	if err != nil && !errors.Is(err, ErrReloadRefused) {
		return &reloadIncomplete{applied: res.Applied, err: err}
	}
	if err != nil {
		return err
	}
	if res.Applied == nil {
		res.Applied = []string{}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// problemsOf lists a refused configuration's problems, one line each.
func problemsOf(err error) []string {
	var ps config.Problems
	if !errors.As(err, &ps) {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
