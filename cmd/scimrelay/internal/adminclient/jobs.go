// SPDX-License-Identifier: Apache-2.0

package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
)

// How Follow asks after a job: every pollMin at first, backing off to
// every pollMax.
const (
	pollMin = 100 * time.Millisecond
	pollMax = time.Second
)

// Job is a background job as the admin API shows it, its progress kept as
// JSON for the caller that knows its shape.
type Job struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	Target   string          `json:"target"`
	State    string          `json:"state"` // jobs.Running, jobs.Done or jobs.Failed
	Progress json.RawMessage `json:"progress,omitempty"`
	Error    string          `json:"error,omitempty"`
	Started  time.Time       `json:"started"`
	Finished *time.Time      `json:"finished,omitempty"`
}

// Running reports whether the job has not ended yet.
func (j Job) Running() bool { return j.State == jobs.Running }

// StartJob starts a job with a POST of body to path.
func (c *Client) StartJob(ctx context.Context, path string, body any) (Job, error) {
	var j Job
	err := c.Do(ctx, http.MethodPost, path, body, &j)
	return j, err
}

// Job reads a job's state and progress.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := c.Do(ctx, http.MethodGet, "/admin/v1/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

// Follow asks after job j until it ends, calling seen (when not nil) with
// each state read, and returns its last state. A failed job is returned
// without an error: its Error says why.
func (c *Client) Follow(ctx context.Context, j Job, seen func(Job)) (Job, error) {
	wait := pollMin
	for j.Running() {
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("stopped waiting; job %s keeps running on the relay (GET /admin/v1/jobs/%s shows it)", j.ID, j.ID)
		case <-time.After(wait):
		}
		wait = min(2*wait, pollMax)
		next, err := c.Job(ctx, j.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported above
			}
			return j, fmt.Errorf("following job %s: %w", j.ID, err)
		}
		j = next
		if seen != nil {
			seen(j)
		}
	}
	return j, nil
}
