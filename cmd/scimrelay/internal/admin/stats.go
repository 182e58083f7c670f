// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"net/http"
	"time"

	"github.com/scimrelay/scimrelay/relay"
)

// Outbox is the store's outbox, as far as the admin API reads it.
type Outbox interface {
	OutboxDepth() (int, error)
}

var _ Outbox = (*relay.Store)(nil)

// Stats are the counts of the console's overview. A role without the data
// file has neither the provisioning log nor the outbox: those fields are
// then null.
type Stats struct {
	Since time.Time `json:"since"`
	// Requests counts the SCIM requests since Since per tenant and status
	// class.
	Requests []relay.LogCount `json:"requests"`
	// OutboxDepth is how many committed events are in the outbox: waiting
	// to be published, or published and kept until NATS has written them
	// to disk.
	OutboxDepth *int `json:"outbox_depth"`
	// DataFile is the data file's size and its free pages'; nil in a role
	// without the data file.
	DataFile *DataFileSpace `json:"data_file,omitempty"`
}

// DataFileSpace is what the data file takes on disk, and how much of it
// is free pages: what the relay reuses before the file grows, and what
// scimrelay compact gives back.
type DataFileSpace struct {
	Bytes     int64 `json:"bytes"`
	FreeBytes int64 `json:"free_bytes"`
}

// GET /admin/v1/stats?since=1h
func (h *Handler) stats(w http.ResponseWriter, r *http.Request) error {
	since, err := sinceParam(r.URL.Query().Get("since"), time.Hour)
	if err != nil {
		return err
	}
	st := Stats{Since: since}
	if h.o.Log != nil {
		if st.Requests, err = h.o.Log.Count(r.Context(), since); err != nil {
			return fmt.Errorf("counting requests: %w", err)
		}
	}
	if h.o.Outbox != nil {
		n, err := h.o.Outbox.OutboxDepth()
		if err != nil {
			return fmt.Errorf("reading the outbox depth: %w", err)
		}
		st.OutboxDepth = &n
	}
	if h.o.Storage != nil {
		file, free, err := h.o.Storage.FileSpace()
		if err != nil {
			return fmt.Errorf("reading the data file's size: %w", err)
		}
		st.DataFile = &DataFileSpace{Bytes: file, FreeBytes: free}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// Storage reports the space the data file takes: by bucket (every page
// read), and its size and free pages (cheap).
type Storage interface {
	StorageStats() (relay.StorageStats, error)
	FileSpace() (file, free int64, err error)
}

var _ Storage = (*relay.Store)(nil)

// GET /admin/v1/storage: the data file's size and each bucket's share of it.
func (h *Handler) storage(w http.ResponseWriter, _ *http.Request) error {
	if h.o.Storage == nil {
		return unavailable("storage statistics")
	}
	st, err := h.o.Storage.StorageStats()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
