// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// A receiver that comes back after an outage has the resources parked
// while it was down tried at once, not on their schedule. Each parked
// resource keeps its own schedule, counted from its first failure (5 s,
// 1 m, 5 m, 30 m, 2 h, ...): after an hour's outage most of them would
// next be tried an hour or more after the receiver is back, their later
// events waiting behind them, while resources that changed since are
// delivered at once.
//
// Two things tell a worker that its sink's receiver is back:
//   - One of the sink's requests succeeds, any resource's (tried). The
//     worker then tries now the parked resources whose last failure was
//     the receiver being down: no answer, or a 5xx without Retry-After
//     (parkRecord.Down). It keeps at most wakeAhead of them out at once,
//     topping up at most every wakeEvery while requests succeed, so that
//     a receiver that fails again is not sent the whole backlog first.
//   - While the sink makes no request at all for probeEvery (a minute),
//     one such resource is tried before its time: the probe. A receiver
//     that comes back while nothing changes is found within a minute,
//     at the cost of a request a minute while it stays down.
//
// A resource with a Retry-After, or refused with a 4xx, keeps its
// schedule: the receiver asked for it.
//
// A try before its time does not count against the schedule. If it
// fails, the resource's record is left as the schedule set it (its tries,
// its due time; a longer Retry-After wins), so a resource the receiver
// fails on its own (a 500 for it alone) is dead-lettered no sooner than
// before. Such a resource, woken because another request succeeded, is
// not woken again before its scheduled try: its early tries are at most
// one per try of the schedule (a failed probe does not count here: it
// was expected to fail while the receiver is down).
//
// The wake is this worker's, in memory: it tries the resources of the
// partitions it owns. The records in the bucket keep their scheduled due
// times, and a next owner goes by them.

const (
	// wakeEvery is the least time between two looks for parked resources
	// to wake, in one worker.
	wakeEvery = 200 * time.Millisecond
	// wakeMargin: a resource due within it is left to its own timer.
	wakeMargin = 2 * time.Second
)

// wakeAhead is how many woken resources a worker keeps out at once: twice
// its requests in flight, so that its request slots stay busy.
func (w *worker) wakeAhead() int { return 2 * cap(w.sem) }

// downs reports whether a failure is one a receiver that is down gives:
// no answer, or a 5xx without Retry-After.
func downs(res Result) bool {
	return !res.Permanent && res.RetryAfter <= 0 && (res.Status == 0 || res.Status >= 500)
}

// wakes is when a worker last made a request, looked for parked
// resources to wake, woke some and probed (unix nanoseconds; zero: never).
type wakes struct {
	tried, looked, woke, probed atomic.Int64
}

// early is a try of a parked resource before its record's due time: the
// record as the schedule left it, and whether the try is a probe.
type early struct {
	rec   parkRecord
	probe bool
}

// tried notes a request of the sink, and wakes parked resources when it
// succeeded.
func (w *worker) tried(res Result) {
	now := time.Now()
	w.wakes.tried.Store(now.UnixNano())
	if res.Err != nil {
		return
	}
	last := w.wakes.looked.Load()
	if now.UnixNano()-last < int64(wakeEvery) || !w.wakes.looked.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	n := w.wake(now, w.wakeAhead(), false)
	if n == 0 {
		return
	}
	// Said at Info when a recovery begins (nothing woken for a minute),
	// at Debug while it goes on.
	level := slog.LevelDebug
	if now.UnixNano()-w.wakes.woke.Swap(now.UnixNano()) >= int64(time.Minute) {
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, "the receiver answers again: resources parked while it was down are tried now, not on their schedule", "resources", n)
}

// probe tries one parked resource before its time when the sink has made
// no request for probeEvery, and none is out already.
func (w *worker) probe(now time.Time) {
	quiet := func(at *atomic.Int64) bool { return now.UnixNano()-at.Load() >= int64(w.t.probeEvery) }
	if !quiet(&w.wakes.tried) || !quiet(&w.wakes.probed) {
		return
	}
	w.wakes.probed.Store(now.UnixNano())
	if n := w.wake(now, 1, true); n > 0 {
		w.log.Debug("no request for a while: a parked resource is tried before its time, in case the receiver is back", "quiet_for", w.t.probeEvery)
	}
}

// wake starts up to want parked resources of the worker's partitions
// before their time, fewer by the woken ones still out, and returns how
// many it started.
func (w *worker) wake(now time.Time, want int, probe bool) int {
	ps := w.ownedPartitions()
	for _, p := range ps {
		want -= p.wokenOut()
	}
	started := 0
	for _, p := range ps {
		if want <= 0 {
			break
		}
		n := p.wake(now, want, probe)
		want -= n
		started += n
	}
	return started
}

// wokenOut counts the partition's resources being tried before their time.
func (p *partition) wokenOut() int {
	return p.countLanes(func(l *lane) bool { return l.early != nil })
}

// wake starts up to n of the partition's parked resources that a receiver
// being down failed, before their time, and returns how many it started.
func (p *partition) wake(now time.Time, n int, probe bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isStopping() {
		return 0
	}
	started := 0
	for _, l := range p.lanes {
		if started == n {
			break
		}
		if !wakeable(l, now) {
			continue
		}
		l.early = &early{rec: *l.park, probe: probe}
		rec := *l.park
		rec.Due = now
		l.park = &rec
		p.startLocked(l)
		started++
	}
	return started
}

// wakeable reports whether a lane is parked, idle, after a failure of a
// receiver that was down, and not due for a while; and, if it was woken
// before and failed, due for another scheduled try since.
func wakeable(l *lane, now time.Time) bool {
	return l.park != nil && l.park.Down && l.hold == nil && !l.busy && l.parking == 0 &&
		l.catchUp == 0 && l.early == nil &&
		l.park.Due.After(now.Add(wakeMargin)) && !l.park.Due.Equal(l.wokeInVain)
}

// earlyFor is the schedule's record of a try before its time, when the
// try of failed (tries, this one included) is the woken one: the head of
// the resource, not an event after it that the read-back reached.
func (r *reader) earlyFor(head item, tries int) *parkRecord {
	if r.early == nil || head.sseq != r.early.rec.From || tries != r.early.rec.Attempts+1 {
		return nil
	}
	return &r.early.rec
}
