// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"net/http"

	"github.com/scimrelay/scimrelay/config"
)

// ReloadResult is what a reload of relay.yaml did.
type ReloadResult struct {
	// Config is the file that was read.
	Config string `json:"config"`
	// Applied lists each change made, e.g. "sink crm added",
	// "limits.rate: 200 → 50"; empty when the file changed nothing that
	// can change while running.
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

// POST /admin/v1/reload
func (h *Handler) reload(w http.ResponseWriter, r *http.Request) error {
	if h.o.Reload == nil {
		return unavailable("reloading")
	}
	res, err := h.o.Reload(r.Context())
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
