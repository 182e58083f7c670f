// SPDX-License-Identifier: Apache-2.0

package console

import (
	"encoding/json"
	"net/http"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/sinks"
)

// jobData is a redrive's, replay's or tenant purge's page: its state and
// progress, which app.js refreshes while it runs.
type jobData struct {
	Job     adminclient.Job
	Redrive *sinks.RedriveResult
	Replay  *sinks.ReplayResult
	Purge   *admin.PurgeResult
}

// LeftUndone reports whether a redrive or replay left dead letters: one
// that failed again, was held behind one, was not taken by the sink, or
// an event a replay dead-lettered. Its page says so beside "done".
func (d jobData) LeftUndone() bool {
	switch {
	case d.Redrive != nil:
		return d.Redrive.Failed+d.Redrive.Held+d.Redrive.Skipped > 0
	case d.Replay != nil:
		return d.Replay.DeadLettered > 0
	}
	return false
}

// GET /ui/jobs/{id}
func (c *Console) job(w http.ResponseWriter, r *http.Request, s *session) error {
	j, err := c.api(s).Job(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	d := jobData{Job: j}
	if len(j.Progress) > 0 {
		switch j.Kind {
		case "redrive":
			d.Redrive = &sinks.RedriveResult{}
			_ = json.Unmarshal(j.Progress, d.Redrive)
		case "replay":
			d.Replay = &sinks.ReplayResult{}
			_ = json.Unmarshal(j.Progress, d.Replay)
		case "purge":
			d.Purge = &admin.PurgeResult{}
			_ = json.Unmarshal(j.Progress, d.Purge)
		}
	}
	c.render(w, r, http.StatusOK, "job", page{Title: "Job " + j.ID, Nav: "sinks", CSRF: s.csrf, Data: d})
	return nil
}
