// SPDX-License-Identifier: Apache-2.0

package eventstest

import (
	"time"
	"unsafe"
)

// WallStepped is t as time.Now() reads it once the wall clock has stepped
// by step (an NTP step, a VM resumed; forward when step is positive) and
// Go's monotonic clock has not: t's wall reading moved, its monotonic
// reading kept. No API makes such a reading; time.Time's layout, a wall
// word and a monotonic one, is the one Go has had since 1.9.
func WallStepped(t time.Time, step time.Duration) time.Time {
	s := t.Add(step) // moves the wall and the monotonic reading
	type timeLayout struct {
		wall uint64
		ext  int64 // the monotonic reading, when the wall has its flag
		loc  *time.Location
	}
	(*timeLayout)(unsafe.Pointer(&s)).ext = (*timeLayout)(unsafe.Pointer(&t)).ext
	return s
}
