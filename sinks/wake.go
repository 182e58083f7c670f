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
//   - A recovery: one of the sink's requests succeeds after the worker saw
//     the receiver down (no answer, a 5xx without Retry-After, or a 401
//     or 403: its secret is not the sink's, which the operator fixes) for at
//     least outageMin without a success: from the first such failure
//     since the last success to the latest (5 s: after a shorter outage
//     the parked resources are due within seconds anyway; a lone failure
//     between successes however far apart is none). Or it is the first
//     success the worker sees (it may hold resources a previous owner
//     parked). The failures of a recovery's own early tries do not count
//     (a resource the receiver fails alone would start the next one);
//     those of probes do (on a quiet sink they are what shows the
//     outage). Or it is a probe that delivered. The worker then tries
//     now the resources it parked after such a failure before the
//     recovery (parkRecord.Down), keeping at most wakeAhead of them out
//     at once: each woken resource that delivers hands its place to
//     another at once, and each success asks for a look for more (at
//     most every wakeEvery, 200 ms), until none is left. A receiver that
//     fails only some requests while others succeed is not down: its
//     failures keep their schedule, so an overloaded receiver is not
//     sent more.
//   - The probe: while the sink makes no request for probeEvery (a
//     minute), one resource parked after such a failure, and not since
//     answered by a success, is tried before its time, the one that
//     failed longest ago first. A receiver that comes back while nothing
//     changes is found so; each probe that finds it still down doubles
//     the wait before the next, up to ten times probeEvery.
//
// A resource with a Retry-After, or refused with another 4xx (408, 425,
// 429), keeps its schedule: the receiver asked for it.
//
// A try before its time does not count against the schedule. If it
// fails, the resource's record is left as the schedule set it (its tries,
// its due time; a longer Retry-After wins), so a resource the receiver
// fails on its own (a 500 for it alone) is dead-lettered no sooner than
// before. If a recovery woke it, it is tried early again (by a recovery or
// a probe) only after its next scheduled try, so that such a resource
// costs at most one request more per step of the schedule however often
// the receiver seems to come back.
//
// The wake is this worker's, in memory: it tries the resources of the
// partitions it owns. The records in the bucket keep their scheduled due
// times, and a next owner goes by them.

const (
	// wakeMargin: a resource due within it is left to its own timer.
	wakeMargin = 2 * time.Second
	// maxProbeGaps bounds the wait between probes, in probeEvery.
	maxProbeGaps = 10
)

// wakeAhead is how many woken resources a worker keeps out at once: twice
// its requests in flight, so that its request slots stay busy.
func (w *worker) wakeAhead() int { return 2 * cap(w.sem) }

// downs reports whether a failure is one a receiver that is down gives:
// no answer, a 5xx without Retry-After, or a refusal of the request's
// credentials (401, 403), which is the sink's, not the event's.
func downs(res Result) bool {
	return !res.Permanent && res.RetryAfter <= 0 && (res.Status == 0 || res.Status >= 500 || refusesCredentials(res.Status))
}

// wakes is where a worker's waking stands: when it last made a request,
// saw one succeed, saw the receiver down first and last since that
// success, looked for resources to wake, woke some and probed, when the
// recovery under way began and when the outage it ended did (clock
// readings; zero: never, none, not known); how many probes found no
// success since the last; whether a look is due or running, and whether
// another was asked for meanwhile.
type wakes struct {
	tried, answered, firstDown, down, looked, woke, probed, recovery, downSince atomic.Int64
	probes                                                                      atomic.Int32
	looking, again                                                              atomic.Bool
}

// clockStart is what clock counts from.
var clockStart = time.Now()

// clock reads t as the nanoseconds since the process started, plus one
// (never zero), on the monotonic clock: the wake's times are compared
// across goroutines as integers, and a step of the wall clock (NTP) must
// neither delay a probe nor make two close failures look like an outage.
func clock(t time.Time) int64 { return int64(t.Sub(clockStart)) + 1 }

// sawFailure notes a failed request that was not a recovery's early try.
func (w *worker) sawFailure(res Result) {
	if downs(res) {
		now := clock(time.Now())
		w.wakes.firstDown.CompareAndSwap(0, now)
		w.wakes.down.Store(now)
	}
}

// early is a try of a parked resource before its record's due time: the
// record as the schedule left it, and whether the try is a probe.
type early struct {
	rec   parkRecord
	probe bool
}

// tried notes the result of a request of the sink. A success that ends an
// outage begins a recovery; during one, every success asks for a look
// for resources to wake: at once, or, within t.wakeEvery of the last look,
// once that has passed. A success never goes without a look after it: the
// last woken resources may all succeed within t.wakeEvery of the look that
// woke them, and the look they ask for is what wakes the next ones.
func (w *worker) tried(res Result) {
	now := clock(time.Now())
	w.wakes.tried.Store(now)
	if res.Err != nil {
		return // sawFailure, from the retry policy
	}
	prev := w.wakes.answered.Swap(now)
	w.wakes.probes.Store(0)
	first := w.wakes.firstDown.Swap(0)
	if prev == 0 || first != 0 && w.wakes.down.Load()-first >= int64(w.t.outageMin) {
		w.wakes.downSince.Store(first)
		w.wakes.recovery.Store(now)
	}
	if w.wakes.recovery.Load() != 0 {
		w.askLook(true)
	}
}

// askLook has the worker look for resources to wake: now (in this
// goroutine if inline), or once t.wakeEvery has passed since the last
// look.
// One look is asked for or running at a time; one asked for meanwhile
// follows it.
func (w *worker) askLook(inline bool) {
	for !w.wakes.looking.CompareAndSwap(false, true) {
		w.wakes.again.Store(true)
		if w.wakes.looking.Load() {
			return // the look running sees again when it ends
		}
		// It ended between the two: take the look here.
	}
	var wait time.Duration
	if last := w.wakes.looked.Load(); last != 0 {
		wait = time.Duration(last + int64(w.t.wakeEvery) - clock(time.Now()))
	}
	if wait <= 0 && inline {
		w.look(time.Now())
		return
	}
	time.AfterFunc(max(wait, 0), func() { w.look(time.Now()) })
}

// look wakes up to wakeAhead resources parked before the recovery under
// way, fewer by the woken ones still out, and ends the recovery when
// none is left to wake or out.
func (w *worker) look(now time.Time) {
	defer func() {
		w.wakes.looking.Store(false)
		if w.wakes.again.Swap(false) {
			w.askLook(false)
		}
	}()
	w.wakes.looked.Store(clock(now))
	recovery := w.wakes.recovery.Load()
	if recovery == 0 {
		return
	}
	if w.wakes.firstDown.Load() != 0 {
		// Down again since the last success (a failure not of an early
		// try): the recovery is over; the next one wakes what is left.
		w.wakes.recovery.CompareAndSwap(recovery, 0)
		return
	}
	n, out := w.wake(now, w.wakeAhead(), recovery)
	if n == 0 {
		// Nothing left to wake or out: the recovery is over, said at
		// Info when it woke any, so that the log says when a backlog
		// left by an outage was worked off.
		if out == 0 && w.wakes.recovery.CompareAndSwap(recovery, 0) && w.wakes.woke.Load() >= recovery {
			w.log.Info("the receiver has caught up: every resource parked while it was down has been tried again (one that failed again keeps its schedule)",
				"took", time.Duration(clock(now)-recovery).Round(time.Millisecond))
		}
		return
	}
	// Said at Info when a recovery begins (nothing woken for a minute),
	// with how long the receiver was down when known, at Debug while it
	// goes on.
	level := slog.LevelDebug
	if last := w.wakes.woke.Swap(clock(now)); last == 0 || clock(now)-last >= int64(time.Minute) {
		level = slog.LevelInfo
	}
	attrs := []any{"resources", n}
	if since := w.wakes.downSince.Load(); since != 0 && since < recovery {
		attrs = append(attrs, "down_for", time.Duration(recovery-since).Round(time.Millisecond))
	}
	w.log.Log(context.Background(), level, "the receiver answers again: resources parked while it was down are tried now, not on their schedule", attrs...)
}

// probe tries one parked resource before its time when the sink has made
// no request for a while (probeEvery, doubled for each probe since the
// last success, up to maxProbeGaps times), and none is out already: of
// those no success has answered since they failed, the one that failed
// longest ago.
func (w *worker) probe(now time.Time) {
	gap := probeGap(w.t.probeEvery, int(w.wakes.probes.Load()))
	quiet := func(at *atomic.Int64) bool { last := at.Load(); return last == 0 || clock(now)-last >= int64(gap) }
	if !quiet(&w.wakes.tried) || !quiet(&w.wakes.probed) {
		return
	}
	// Stored once the probe is out, if any: a test that sees it sees the
	// probed resource woken.
	defer w.wakes.probed.Store(clock(now))
	answered := w.wakes.answered.Load()
	var pick *partition
	var oldest *lane
	var failed time.Time // oldest's
	for _, p := range w.ownedPartitions() {
		p.mu.Lock()
		for _, l := range p.lanes {
			if l.early != nil {
				p.mu.Unlock()
				return // one out already
			}
			if !wakeable(l, now) {
				continue
			}
			f := l.park.failed
			if (f.IsZero() || clock(f) > answered) && (oldest == nil || f.Before(failed)) {
				pick, oldest, failed = p, l, f
			}
		}
		p.mu.Unlock()
	}
	if pick == nil {
		return
	}
	pick.mu.Lock()
	n := pick.wakeLocked(now, 1, true, func(l *lane) bool { return l == oldest })
	pick.mu.Unlock()
	if n > 0 {
		w.wakes.probes.Add(1)
		w.log.Debug("no request for a while: a parked resource is tried before its time, in case the receiver is back", "quiet_for", gap)
	}
}

// running marks the partition as consuming, and wakes the resources a
// recovery passed over while it was not.
func (p *partition) running() {
	p.state.Store(stateRunning)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recovery != 0 {
		p.wakeLocked(time.Now(), p.w.wakeAhead(), false, failedBefore(p.recovery))
	}
}

// failedBefore holds for lanes whose failure came before t (a clock
// reading), or is not known (a record read from the bucket).
func failedBefore(t int64) func(*lane) bool {
	return func(l *lane) bool { return l.park.failed.IsZero() || clock(l.park.failed) < t }
}

// probeGap is how long a sink makes no request before a probe, after
// probes since its last success: every, doubled for each, up to
// maxProbeGaps times every.
func probeGap(every time.Duration, probes int) time.Duration {
	return every * time.Duration(min(1<<min(probes, 8), maxProbeGaps))
}

// wake starts up to want resources of the worker's partitions parked
// before the recovery (a clock reading), fewer by the woken ones still
// out, and returns how many it started and how many were out. It shares
// them out among the partitions: the woken resources of one partition
// hand their places on within it (wokenDoneLocked). A partition not
// consuming (taking its consumer, or taking it again) keeps the
// recovery, and wakes its resources once it runs (running).
func (w *worker) wake(now time.Time, want int, recovery int64) (started, out int) {
	ps := w.ownedPartitions()
	for _, p := range ps {
		out += p.wokenOut()
		p.mu.Lock()
		p.recovery = recovery
		p.mu.Unlock()
	}
	for want -= out; want > 0 && len(ps) > 0; {
		share, before := max(1, want/len(ps)), started
		for _, p := range ps {
			p.mu.Lock()
			n := p.wakeLocked(now, min(share, want), false, failedBefore(recovery))
			p.mu.Unlock()
			want -= n
			started += n
		}
		if started == before {
			break // none left
		}
	}
	return started, out
}

// wokenOut counts the partition's resources being tried before their time.
func (p *partition) wokenOut() int {
	return p.countLanes(func(l *lane) bool { return l.early != nil })
}

// wakeLocked starts up to n of the partition's parked resources that a
// receiver being down failed, and for which also holds, before their
// time, and returns how many it started. Only while the partition
// consumes: one setting up or recovering its consumer starts no lane.
func (p *partition) wakeLocked(now time.Time, n int, probe bool, also func(*lane) bool) int {
	if p.isStopping() || p.state.Load() != stateRunning {
		return 0
	}
	started := 0
	for _, l := range p.lanes {
		if started == n {
			break
		}
		if !wakeable(l, now) || !also(l) {
			continue
		}
		l.early = &early{rec: *l.park, probe: probe}
		rec := *l.park
		rec.Due = now
		l.park = &rec
		p.startLocked(l)
		p.w.metrics.earlyTry(p.w.name, probe)
		started++
	}
	return started
}

// wakeable reports whether a lane is parked, idle, after a failure of a
// receiver that was down, and not due for a while; and, if a recovery
// woke it before and it failed, due for another scheduled try since.
func wakeable(l *lane, now time.Time) bool {
	return l.park != nil && l.park.Down && l.hold == nil && !l.busy && l.parking == 0 &&
		l.catchUp == 0 && l.early == nil && l.park.Due.After(now.Add(wakeMargin)) &&
		!l.park.Due.Equal(l.wokeInVain)
}

// wokenDoneLocked ends a lane's try before its time. A probe that
// delivered begins a recovery. During a recovery,
// one that delivered something hands its place to another resource of
// the partition parked before the recovery, at once, or, where the
// partition has none left, asks for a look: woken resources stay out
// while the receiver takes them, not only at each look.
func (p *partition) wokenDoneLocked(l *lane) {
	e := l.early
	l.early = nil
	if l.park != nil && l.park.From == e.rec.From {
		// It delivered nothing (a failure, a read that failed, a dead
		// letter not taken): not woken again before its scheduled try.
		if !e.probe {
			l.wokeInVain = l.park.Due
		}
		return
	}
	now := time.Now()
	if e.probe {
		// The receiver was last seen down, and takes this: it is back
		// (since when it was down is not known here).
		p.w.wakes.downSince.Store(0)
		p.w.wakes.recovery.Store(clock(now))
		p.recovery = clock(now)
	}
	if p.recovery == 0 {
		return
	}
	if p.wakeLocked(now, 1, false, failedBefore(p.recovery)) == 0 {
		// None left here: another partition may have some.
		p.recovery = 0
		p.w.askLook(false)
	}
}

// earlyFor is the try before its time, when the try of failed (tries,
// this one included) is the woken one: the head of the resource, not an
// event after it that the read-back reached.
func (r *reader) earlyFor(head item, tries int) *early {
	if r.early == nil || head.sseq != r.early.rec.From || tries != r.early.rec.Attempts+1 {
		return nil
	}
	return r.early
}
