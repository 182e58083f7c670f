// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"net/http"
	"strconv"

	"github.com/scimrelay/scimrelay/relay"
)

// Log is the provisioning log the admin API reads.
type Log interface {
	Query(ctx context.Context, q relay.LogQuery) ([]relay.LogEntry, error)
}

var _ Log = (*relay.RequestLog)(nil)

// GET /admin/v1/log?tenant=&since=1h&after=&status=4xx&user=&limit=
func (h *Handler) queryLog(w http.ResponseWriter, r *http.Request) error {
	if h.o.Log == nil {
		return unavailable("the provisioning log")
	}
	v := r.URL.Query()
	q := relay.LogQuery{Tenant: v.Get("tenant"), After: v.Get("after"), Status: v.Get("status"), User: v.Get("user")}
	var err error
	if s := v.Get("since"); s != "" {
		if q.Since, err = sinceParam(s, 0); err != nil {
			return err
		}
	}
	if q.Limit, err = limitParam(v.Get("limit"), 1000, 100_000); err != nil {
		return err
	}
	if s := q.Status; s != "" && !validStatusFilter(s) {
		return badRequest("status: want 2xx, 4xx, 5xx or a code such as 409, got %q", s)
	}
	list, err := h.o.Log.Query(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func validStatusFilter(s string) bool {
	if len(s) != 3 {
		return false
	}
	if (s[1] == 'x' || s[1] == 'X') && (s[2] == 'x' || s[2] == 'X') {
		return s[0] >= '1' && s[0] <= '5'
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 100 && n <= 599
}
