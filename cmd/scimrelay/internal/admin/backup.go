// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"io"
	"net/http"
)

// Backup writes a consistent copy of the data file while the relay serves.
type Backup interface {
	Backup(w io.Writer) (int64, error)
}

// GET /admin/v1/backup
func (h *Handler) backup(w http.ResponseWriter, _ *http.Request) error {
	if h.o.Backup == nil {
		return unavailable("backup")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="scimrelay.db"`)
	// Once bytes are on the wire an error can only cut the response short
	// (writeError logs it); the CLI checks the copy it received (bbolt
	// refuses a torn file).
	if _, err := h.o.Backup.Backup(w); err != nil {
		return fmt.Errorf("writing a backup: %w", err)
	}
	return nil
}
