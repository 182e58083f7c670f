// SPDX-License-Identifier: Apache-2.0

package sinks

import "time"

// Schedule is the delay before each retry of a failed delivery: retry 1
// waits Schedule[0], retry 2 Schedule[1], and so on; after the last the event
// is dead-lettered. Each delay is jittered by ±20% so that a receiver coming
// back is not hit by every retry at once.
//
// The default, DefaultSchedule, retries after 5 s, 1 m, 5 m, 30 m, 2 h, 5 h,
// 10 h and 14 h: the first retry within 10 s, and 31 h 36 m 5 s in all (more than
// 24 h even with every delay 20% short) before an event is dead-lettered.
type Schedule []time.Duration

// DefaultSchedule is the retry schedule of a sink that sets none.
var DefaultSchedule = Schedule{5 * time.Second, time.Minute, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 14 * time.Hour}

// maxRetryAfter caps how long a receiver's Retry-After can hold an event.
const maxRetryAfter = 24 * time.Hour

// Delay returns how long to wait before the next try after attempt failed
// tries (1-based), jittered by rnd (uniform in [0,1)), and false when the
// schedule is exhausted. A longer Retry-After from the receiver wins.
func (s Schedule) Delay(attempt int, r Result, rnd func() float64) (time.Duration, bool) {
	if attempt < 1 || attempt > len(s) {
		return 0, false
	}
	base := s[attempt-1]
	d := time.Duration(float64(base) * (0.8 + 0.4*rnd()))
	if ra := min(r.RetryAfter, maxRetryAfter); ra > d {
		d = ra
	}
	return d, true
}

// Horizon is the schedule's total delay without jitter.
func (s Schedule) Horizon() time.Duration {
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return total
}
