// SPDX-License-Identifier: Apache-2.0

// Package gcfloor keeps Go's garbage collector from running while the heap
// is small.
//
// With the default GOGC=100 the collector runs each time the heap doubles
// its live size. A relay holding a few tens of MiB live, serving thousands
// of requests a second that each allocate and drop their request, body and
// event, then collects many times a second: measured, its mark workers
// alone took 12% of the relay's CPU during creates (docs/decisions.md,
// Memory). A floor lets the heap grow to a size the operator chose before
// a cycle; once the live heap is past half the floor the usual pacing
// applies, so a large live heap costs no more memory than under GOGC=100.
//
// Go has GOMEMLIMIT for a ceiling, not a floor. The floor is kept by
// re-setting the GC percentage after every cycle from the live heap that
// cycle measured: percent = floor/live − 1, never less than 100.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// basePercent is the pacing above the floor: Go's default.
const basePercent = 100

// MaxFloor bounds the floor: far above any machine the relay runs on, and
// low enough that percentFor's floor×100 cannot overflow (it did above
// about 1.8e17 bytes).
const MaxFloor = 1 << 40

// heapMinimum is the heap at which Go collects however small the live heap,
// at GOGC=100; it scales with the percentage (4 MiB × percent/100), so the
// percentage is bounded to keep it at the floor.
const heapMinimum = 4 << 20

// Start keeps the collector from running before the heap reaches floor
// bytes, until stop is called (stop restores the percentage found). It
// does nothing when floor is 0 or when GOGC is set in the environment: an
// operator's GOGC wins.
func Start(floor int64) (stop func()) {
	if floor <= 0 || os.Getenv("GOGC") != "" {
		return func() {}
	}
	t := &tuner{floor: uint64(floor), sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.previous = debug.SetGCPercent(basePercent)
	t.tune()
	t.arm()
	return t.stop
}

type tuner struct {
	floor    uint64
	previous int

	mu      sync.Mutex // tune runs on the cleanup goroutine; stop on the caller's
	sample  []metrics.Sample
	percent int
	stopped atomic.Bool
}

// sentinel is what the collector frees once per cycle; its cleanup runs
// tune and arms the next one. It is too large for the tiny allocator,
// whose objects may be freed late.
type sentinel [32]byte

func (t *tuner) arm() {
	s := new(sentinel)
	runtime.AddCleanup(s, func(t *tuner) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	}, t)
}

// tune sets the percentage for the live heap the last cycle measured.
func (t *tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.sample)
	p := percentFor(t.floor, t.sample[0].Value.Uint64())
	if p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped.Swap(true) {
		debug.SetGCPercent(t.previous)
	}
}

// percentFor is the GC percentage that puts the next cycle at floor bytes
// for a live heap of live bytes.
func percentFor(floor, live uint64) int {
	if live == 0 {
		live = 1 << 20 // before the first cycle: assume a small heap
	}
	if live*2 >= floor {
		return basePercent
	}
	p := floor*100/live - 100
	return int(max(min(p, floor*100/heapMinimum), basePercent))
}
