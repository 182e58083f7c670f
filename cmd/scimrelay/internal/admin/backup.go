// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Backup writes a consistent copy of the data file while the relay serves,
// telling size its length before the first byte.
type Backup interface {
	Backup(w io.Writer, size func(int64)) (int64, error)
}

// GET /admin/v1/backup
func (h *Handler) backup(w http.ResponseWriter, _ *http.Request) error {
	if h.o.Backup == nil {
		return unavailable("backup")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="scimrelay.db"`)
	// Once bytes are on the wire an error can only cut the response short
	// (writeError logs it). The length is announced first, so that a copy
	// cut short ends in an unexpected EOF at the client, not a clean one.
	contentLength := func(n int64) { w.Header().Set("Content-Length", strconv.FormatInt(n, 10)) }
	if _, err := h.o.Backup.Backup(w, contentLength); err != nil {
		return fmt.Errorf("writing a backup: %w", err)
	}
	return nil
}
