// SPDX-License-Identifier: Apache-2.0

package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// task is one unit of a phase: requests that must go in order, such as a
// filter GET and the POST it decides. reqs is how many it sends when all
// goes well; the open loop reserves that many slots of its schedule.
type task struct {
	reqs int
	run  func(ctx context.Context, s *sender)
}

// sender paces the requests of one task.
type sender struct {
	due     []time.Time // open loop: when each request is due; nil in closed loop
	next    int
	prevEnd time.Time
}

// start waits until the task's next request is due and returns the time its
// latency counts from. In closed loop that is now. In open loop it is when
// the request was due, even if the bench could only send it later (because
// the in-flight bound was reached): that wait is the server's queue. But a
// request cannot be due before the one it depends on has been answered, so
// the previous request's end moves the origin forward.
func (s *sender) start(ctx context.Context) (time.Time, error) {
	if s.due == nil || s.next >= len(s.due) {
		return time.Now(), ctx.Err()
	}
	origin := s.due[s.next]
	s.next++
	if s.prevEnd.After(origin) {
		origin = s.prevEnd
	}
	if err := waitUntil(ctx, origin); err != nil {
		return time.Time{}, err
	}
	return origin, nil
}

func (s *sender) done(end time.Time) { s.prevEnd = end }

// pacer runs phases of tasks, closed or open loop.
type pacer struct {
	concurrency int
	interval    time.Duration // open loop: time between two requests; 0 = closed loop
	maxInFlight int
	cursor      time.Time // open loop: when the next request is due
}

func newPacer(o Options) *pacer {
	p := &pacer{concurrency: o.Concurrency}
	if o.Rate > 0 {
		p.interval = time.Duration(float64(time.Second) / o.Rate)
		p.maxInFlight = max(o.Concurrency, openLoopMaxInFlight)
	}
	return p
}

// phase runs tasks and returns when all have finished.
func (p *pacer) phase(ctx context.Context, tasks []task) error {
	if len(tasks) == 0 {
		return ctx.Err()
	}
	if p.interval > 0 {
		return p.openLoop(ctx, tasks)
	}
	return p.closedLoop(ctx, tasks)
}

// closedLoop runs tasks on a fixed number of workers: each sends its next
// request when its last was answered.
func (p *pacer) closedLoop(ctx context.Context, tasks []task) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(p.concurrency, len(tasks)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(tasks) {
					return
				}
				tasks[i].run(ctx, &sender{})
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// openLoop starts tasks on a fixed schedule, one request every interval,
// with as many goroutines as the requests in flight need, up to maxInFlight.
// A phase waits for the previous one (it needs its ids), so the schedule
// resumes from now if the last phase ran late.
func (p *pacer) openLoop(ctx context.Context, tasks []task) error {
	if now := time.Now(); p.cursor.Before(now) {
		p.cursor = now
	}
	sem := make(chan struct{}, p.maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, t := range tasks {
		s := &sender{due: make([]time.Time, max(t.reqs, 1))}
		for k := range s.due {
			s.due[k] = p.cursor
			p.cursor = p.cursor.Add(p.interval)
		}
		if err := waitUntil(ctx, s.due[0]); err != nil {
			return err
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			t.run(ctx, s)
		})
	}
	wg.Wait()
	return ctx.Err()
}

// waitUntil returns at t, or at once if t has passed, or when ctx is done.
func waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
