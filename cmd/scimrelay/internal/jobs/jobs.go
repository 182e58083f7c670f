// SPDX-License-Identifier: Apache-2.0

// Package jobs runs the admin API's long operations (a redrive of every
// dead letter, a replay of days of events) in the background, so that no
// HTTP request has to live as long as they do: starting one returns its id
// at once, and its state (running, done or failed with an error) and
// progress can be asked for until a while after it ends. Jobs live in the
// process that runs them and end with it.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// States of a job.
const (
	Running = "running"
	Done    = "done"
	Failed  = "failed"
)

// How long and how many finished jobs are kept for their callers to read.
const (
	keepFor  = time.Hour
	keepMost = 100
)

// Job is what a caller sees of a job.
type Job struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`   // e.g. "redrive"
	Target string `json:"target"` // what it works on, e.g. the sink
	State  string `json:"state"`  // running, done or failed
	// Progress is the job's latest report; once done, its result.
	Progress any        `json:"progress,omitempty"`
	Error    string     `json:"error,omitempty"` // why it failed
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	// ended is when it finished as r.now read it, with Go's monotonic
	// reading (Finished, in UTC, has none): how long ago it finished is
	// measured on the monotonic clock, which a step of the wall clock
	// (NTP, a VM resumed) does not move.
	ended time.Time
}

// ErrNotFound means no job has the id, or it ended too long ago.
var ErrNotFound = errors.New("no such job")

// RunningError refuses a job while one of the same kind and target runs:
// two redrives of one queue would deliver each dead letter twice.
type RunningError struct{ Job Job }

func (e *RunningError) Error() string {
	return fmt.Sprintf("a %s of %s is already running as job %s", e.Job.Kind, e.Job.Target, e.Job.ID)
}

// Func does a job's work until ctx ends, calling report with its progress.
type Func func(ctx context.Context, report func(progress any)) (result any, err error)

// Runner runs jobs and remembers them for a while after they end.
type Runner struct {
	ctx    context.Context // ends the jobs when the runner closes
	cancel context.CancelFunc
	log    *slog.Logger
	now    func() time.Time
	wg     sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*Job
}

// NewRunner returns a runner whose jobs log to log.
func NewRunner(log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{ctx: ctx, cancel: cancel, log: log, now: time.Now, jobs: map[string]*Job{}}
}

// Start runs f in the background as a job of kind on target and returns
// the job as it starts, or a *RunningError when one of the same kind and
// target is running.
func (r *Runner) Start(kind, target string, f Func) (Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return Job{}, errors.New("the relay is shutting down")
	}
	r.forget()
	for _, j := range r.jobs {
		if j.Kind == kind && j.Target == target && j.State == Running {
			return Job{}, &RunningError{Job: *j}
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	j := &Job{ID: "job_" + hex.EncodeToString(b[:]), Kind: kind, Target: target, State: Running, Started: r.now().UTC()}
	r.jobs[j.ID] = j
	r.wg.Add(1)
	go r.run(j, f)
	return *j, nil
}

func (r *Runner) run(j *Job, f Func) {
	defer r.wg.Done()
	log := r.log.With("job", j.ID, "kind", j.Kind, "target", j.Target)
	log.Info("job started")
	result, err := f(r.ctx, func(p any) {
		r.mu.Lock()
		j.Progress = p
		r.mu.Unlock()
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	j.ended = r.now()
	end := j.ended.UTC()
	j.Finished = &end
	if result != nil {
		j.Progress = result
	}
	if err != nil {
		if r.ctx.Err() != nil {
			err = fmt.Errorf("the relay shut down while the job ran: %w", err)
		}
		j.State, j.Error = Failed, err.Error()
		log.Error("job failed", "err", err)
		return
	}
	j.State = Done
	log.Info("job done")
}

// Get returns the job with id.
func (r *Runner) Get(id string) (Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forget()
	j, ok := r.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("%w %q", ErrNotFound, id)
	}
	return *j, nil
}

// forget drops finished jobs older than keepFor, and the oldest finished
// ones beyond keepMost. The caller holds mu.
func (r *Runner) forget() {
	var finished []*Job
	for id, j := range r.jobs {
		switch {
		case j.Finished == nil:
		case r.now().Sub(j.ended) > keepFor:
			delete(r.jobs, id)
		default:
			finished = append(finished, j)
		}
	}
	for len(finished) > keepMost {
		oldest := 0
		for i, j := range finished {
			if j.ended.Before(finished[oldest].ended) {
				oldest = i
			}
		}
		delete(r.jobs, finished[oldest].ID)
		finished = append(finished[:oldest], finished[oldest+1:]...)
	}
}

// Close ends the running jobs (they fail, saying the relay shut down) and
// waits for them.
func (r *Runner) Close() {
	r.cancel()
	r.wg.Wait()
}
