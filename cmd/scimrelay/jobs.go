// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/jobs"
)

// showEvery is how often, at most, the CLI shows a job's progress.
const showEvery = 2 * time.Second

// followJob follows job j until it ends, showing its progress (as describe
// puts it) on stderr. It decodes the job's last progress, its result, into
// result; a failed job is an error.
func followJob(ctx context.Context, c *adminclient.Client, j adminclient.Job, stderr io.Writer, result any, describe func() string) error {
	shown := time.Now()
	j, err := c.Follow(ctx, j, func(j adminclient.Job) {
		if len(j.Progress) > 0 && time.Since(shown) >= showEvery {
			if err := readProgress(j.Progress, result); err == nil {
				fmt.Fprintf(stderr, "%s: %s\n", j.ID, describe())
				shown = time.Now()
			}
		}
	})
	if len(j.Progress) > 0 {
		if uerr := readProgress(j.Progress, result); uerr != nil && err == nil {
			return fmt.Errorf("reading the result of job %s: %w", j.ID, uerr)
		}
	}
	var gone *adminclient.UnreachableError
	if errors.As(err, &gone) {
		// The relay went away while the job ran (a stop ends its jobs):
		// the command failed (exit 1), as README says; exit 3 is for a
		// relay never reached, and the job may have ended in any state.
		return jobLostError{fmt.Errorf("job %s (%s of %s) may not have finished: the relay stopped answering while it ran: %v", j.ID, j.Kind, j.Target, gone.Err)}
	}
	if err != nil {
		return err
	}
	if j.State == jobs.Failed {
		return fmt.Errorf("job %s (%s of %s) failed: %s", j.ID, j.Kind, j.Target, j.Error)
	}
	return nil
}

// jobLostError: the relay stopped answering while the command followed
// its job, which may have gone on after the last progress the command
// read, or ended in any state. Not an UnreachableError: exit 1, not 3.
type jobLostError struct{ error }

func (e jobLostError) Unwrap() error { return e.error }

// readProgress decodes a job's progress into result afresh: a field the
// progress leaves out (the step of a purge that has finished) does not
// keep what an earlier progress said.
func readProgress(progress json.RawMessage, result any) error {
	reflect.ValueOf(result).Elem().SetZero()
	return json.Unmarshal(progress, result)
}
