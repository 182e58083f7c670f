// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/scimrelay/scimrelay/config"
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
	q := relay.LogQuery{Tenant: v.Get("tenant"), After: v.Get("after"), Status: v.Get("status"), User: v.Get("user"), Limit: 1000}
	if s := v.Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil {
			return Errorf(http.StatusBadRequest, "since: %v", err)
		}
		q.Since = time.Now().Add(-d)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return Errorf(http.StatusBadRequest, "limit must be a positive number")
		}
		q.Limit = min(n, 100_000)
	}
	if s := q.Status; s != "" && !validStatusFilter(s) {
		return Errorf(http.StatusBadRequest, "status: want 2xx, 4xx, 5xx or a code such as 409, got %q", s)
	}
	list, err := h.o.Log.Query(r.Context(), q)
	if err != nil {
		return Errorf(http.StatusBadRequest, "%v", err)
	}
	WriteJSON(w, http.StatusOK, list)
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
