// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
)

// How the CLI follows a job: it asks for its state every pollMin at first,
// backing off to every pollMax, and shows its progress at most every
// showEvery.
const (
	pollMin   = 100 * time.Millisecond
	pollMax   = time.Second
	showEvery = 2 * time.Second
)

// jobStatus is a job as the admin API shows it, its progress kept as JSON
// for the command that knows its shape.
type jobStatus struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	Target   string          `json:"target"`
	State    string          `json:"state"`
	Progress json.RawMessage `json:"progress"`
	Error    string          `json:"error"`
}

// runJob starts a job with a POST to path and follows it until it ends,
// showing its progress (as describe puts it) on stderr. It decodes the
// job's last progress, its result, into result; a failed job is an error.
// started says whether the relay took the job.
func (c *adminClient) runJob(ctx context.Context, path string, body any, stderr io.Writer, result any, describe func() string) (started bool, err error) {
	var j jobStatus
	if err := c.do(ctx, "POST", path, body, &j); err != nil {
		return false, err
	}
	wait, shown := pollMin, time.Now()
	for j.State == jobs.Running {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("stopped waiting; job %s keeps running on the relay (GET /admin/v1/jobs/%s shows it)", j.ID, j.ID)
		case <-time.After(wait):
		}
		wait = min(2*wait, pollMax)
		if err := c.do(ctx, "GET", "/admin/v1/jobs/"+url.PathEscape(j.ID), nil, &j); err != nil {
			if ctx.Err() != nil {
				continue // reported above
			}
			return true, fmt.Errorf("following job %s: %w", j.ID, err)
		}
		if len(j.Progress) > 0 && time.Since(shown) >= showEvery {
			if err := json.Unmarshal(j.Progress, result); err == nil {
				fmt.Fprintf(stderr, "%s: %s\n", j.ID, describe())
				shown = time.Now()
			}
		}
	}
	if len(j.Progress) > 0 {
		if err := json.Unmarshal(j.Progress, result); err != nil {
			return true, fmt.Errorf("reading the result of job %s: %w", j.ID, err)
		}
	}
	if j.State == jobs.Failed {
		return true, fmt.Errorf("job %s (%s of %s) failed: %s", j.ID, j.Kind, j.Target, j.Error)
	}
	return true, nil
}
