// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/scimrelay/scimrelay/relay"
)

// Backup writes a consistent copy of the data file while the relay serves,
// telling size its length before the first byte.
type Backup interface {
	Backup(w io.Writer, size func(int64)) (int64, error)
}

var _ Backup = (*relay.Store)(nil)

// backupStall is how long a backup waits for its client to take more of
// the copy before it gives up. The copy is one read transaction, and bbolt
// remaps a growing data file only once every read transaction has ended,
// with every other transaction waiting behind the remap: a client that
// stopped reading must not hold the relay's writes for longer.
const backupStall = 30 * time.Second

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
	// The copy takes as long as its client (progressDeadline bounds each write).
	NoReadDeadline(w)
	out := &progressDeadline{w: w, rc: http.NewResponseController(w), stall: h.backupStall}
	if _, err := h.o.Backup.Backup(out, contentLength); err != nil {
		return fmt.Errorf("writing a backup: %w", err)
	}
	return nil
}

// progressDeadline writes to an HTTP response, each write due within stall:
// a client that takes nothing for that long fails the write.
type progressDeadline struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
}

func (p *progressDeadline) Write(b []byte) (int, error) {
	if err := p.rc.SetWriteDeadline(time.Now().Add(p.stall)); err != nil {
		return 0, fmt.Errorf("bounding the backup's wait for its client: %w", err)
	}
	return p.w.Write(b)
}
