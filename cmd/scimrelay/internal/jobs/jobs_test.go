// SPDX-License-Identifier: Apache-2.0

package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// waitFor polls a job until it leaves the running state.
func waitFor(t *testing.T, r *Runner, id string) Job {
	t.Helper()
	var j Job
	eventstest.CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		var err error
		if j, err = r.Get(id); err != nil {
			return err
		}
		if j.State == Running {
			return errors.New("still running")
		}
		return nil
	})
	return j
}

func TestJobs(t *testing.T) {
	r := NewRunner(nil)
	defer r.Close()

	release := make(chan struct{})
	reported := make(chan struct{})
	j, err := r.Start("redrive", "crm", func(ctx context.Context, report func(any)) (any, error) {
		report(1)
		close(reported)
		<-release
		return 2, nil
	})
	if err != nil || j.State != Running || j.ID == "" {
		t.Fatalf("start: %+v %v", j, err)
	}
	<-reported
	if got, _ := r.Get(j.ID); got.Progress != 1 || got.State != Running {
		t.Fatalf("while running: %+v", got)
	}
	// One at a time per kind and target; others are free to start.
	var running *RunningError
	if _, err := r.Start("redrive", "crm", nil); !errors.As(err, &running) || running.Job.ID != j.ID {
		t.Fatalf("a second redrive of crm: %v", err)
	}
	other, err := r.Start("replay", "crm", func(context.Context, func(any)) (any, error) {
		return nil, fmt.Errorf("reading stream SCIMRELAY: %w", errors.New("nats: connection closed"))
	})
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if done := waitFor(t, r, j.ID); done.State != Done || done.Progress != 2 || done.Error != "" || done.Finished == nil {
		t.Fatalf("done: %+v", done)
	}
	if failed := waitFor(t, r, other.ID); failed.State != Failed || failed.Error != "reading stream SCIMRELAY: nats: connection closed" {
		t.Fatalf("failed: %+v", failed)
	}
	if _, err := r.Get("job_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
}

// TestForget: finished jobs are kept for a while, and only so many.
func TestForget(t *testing.T) {
	r := NewRunner(nil)
	defer r.Close()
	now := time.Now()
	r.now = func() time.Time { return now }
	var ids []string
	for i := range keepMost + 5 {
		j, err := r.Start("replay", fmt.Sprint(i), func(context.Context, func(any)) (any, error) { return nil, nil })
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, r, j.ID)
		ids = append(ids, j.ID)
		now = now.Add(time.Second)
	}
	if _, err := r.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the oldest of %d finished jobs is still kept: %v", keepMost+5, err)
	}
	if _, err := r.Get(ids[len(ids)-1]); err != nil {
		t.Fatalf("the newest job is gone: %v", err)
	}
	now = now.Add(keepFor + time.Minute)
	if _, err := r.Get(ids[len(ids)-1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a job finished over %s ago is still kept: %v", keepFor, err)
	}
}

// TestClose: closing the runner ends running jobs, which fail saying why,
// and refuses new ones.
func TestClose(t *testing.T) {
	r := NewRunner(nil)
	started := make(chan struct{})
	j, err := r.Start("redrive", "crm", func(ctx context.Context, _ func(any)) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.Close()
	if got, _ := r.Get(j.ID); got.State != Failed || got.Error != "the relay shut down while the job ran: context canceled" {
		t.Fatalf("after close: %+v", got)
	}
	if _, err := r.Start("redrive", "crm", nil); err == nil {
		t.Fatal("a closed runner started a job")
	}
}

// TestFinishedJobSurvivesAWallClockStepForward: a redrive ends; the wall
// clock then steps forward two hours. A second later (monotonic) the job
// ended a second ago: its caller (the CLI following it, the console's job
// page) must still read its result, where it got "no such job".
func TestFinishedJobSurvivesAWallClockStepForward(t *testing.T) {
	r := NewRunner(nil)
	defer r.Close()
	var step atomic.Int64
	r.now = func() time.Time { return eventstest.WallStepped(time.Now(), time.Duration(step.Load())) }
	j, err := r.Start("redrive", "crm", func(context.Context, func(any)) (any, error) { return "12 redelivered", nil })
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, j.ID)
	step.Store(int64(2 * time.Hour))
	got, err := r.Get(j.ID)
	if err != nil {
		t.Fatalf("a job that ended a moment ago (by the monotonic clock) is gone once the wall clock stepped forward 2h: %v", err)
	}
	if got.Progress != "12 redelivered" {
		t.Fatalf("result %v", got.Progress)
	}
}
