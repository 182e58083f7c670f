// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"errors"
	"net/http"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
)

// startJob starts f as a job on sink target and answers 202 with the job
// and where to ask after it; the start is audited as the action kind,
// with attrs saying what it was asked to do.
func (h *Handler) startJob(w http.ResponseWriter, r *http.Request, kind, target string, f jobs.Func, attrs ...any) error {
	j, err := h.newJob(kind, target, f)
	if err != nil {
		return err
	}
	h.audit(r, kind, append([]any{"sink", target, "job", j.ID}, attrs...)...)
	acceptJob(w, j)
	return nil
}

// newJob starts f as a job of kind on target: 409 naming the job when one
// of the same kind and target runs.
func (h *Handler) newJob(kind, target string, f jobs.Func) (jobs.Job, error) {
	if h.o.Jobs == nil {
		return jobs.Job{}, unavailable("background jobs")
	}
	j, err := h.o.Jobs.Start(kind, target, f)
	var running *jobs.RunningError
	switch {
	case errors.As(err, &running):
		return jobs.Job{}, &statusError{status: http.StatusConflict, err: err} // the answer names the running job
	case err != nil:
		return jobs.Job{}, errorf(http.StatusServiceUnavailable, "%v", err)
	}
	return j, nil
}

// acceptJob answers 202 with a job started and where to ask after it.
func acceptJob(w http.ResponseWriter, j jobs.Job) {
	w.Header().Set("Location", "/admin/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, j)
}

// GET /admin/v1/jobs/{id}
func (h *Handler) job(w http.ResponseWriter, r *http.Request) error {
	if h.o.Jobs == nil {
		return unavailable("background jobs")
	}
	j, err := h.o.Jobs.Get(r.PathValue("id"))
	if errors.Is(err, jobs.ErrNotFound) {
		return errorf(http.StatusNotFound, "%v", err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, j)
	return nil
}
