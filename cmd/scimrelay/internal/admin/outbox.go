// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"net/http"
	"strconv"

	"github.com/scimrelay/scimrelay/relay"
)

// Quarantine is the store's list of outbox rows that could not be published.
type Quarantine interface {
	QuarantinedRows(after uint64, limit int) ([]relay.Quarantined, error)
}

var _ Quarantine = (*relay.Store)(nil)

// QuarantinePage is one page of quarantined outbox rows; NextAfter, when
// set, continues the list.
type QuarantinePage struct {
	Rows      []relay.Quarantined `json:"rows"`
	NextAfter uint64              `json:"next_after,omitempty"`
}

// listQuarantine lists quarantined outbox rows, oldest first.
//
// GET /admin/v1/outbox/quarantine?after=<key>&limit=100
func (h *Handler) listQuarantine(w http.ResponseWriter, r *http.Request) error {
	if h.o.Quarantine == nil {
		return unavailable("the outbox quarantine")
	}
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return badRequest("after: want a row key, got %q", v)
		}
	}
	limit, err := limitParam(q.Get("limit"), 100, 1000)
	if err != nil {
		return err
	}
	rows, err := h.o.Quarantine.QuarantinedRows(after, limit)
	if err != nil {
		return err
	}
	page := QuarantinePage{Rows: rows}
	if rows == nil {
		page.Rows = []relay.Quarantined{} // an empty listing is [], never null
	}
	if len(rows) == limit {
		page.NextAfter = rows[len(rows)-1].Key
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}
