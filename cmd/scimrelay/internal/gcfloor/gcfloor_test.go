// SPDX-License-Identifier: Apache-2.0

package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const MiB = 1 << 20
	for _, c := range []struct {
		floor, live uint64
		want        int
	}{
		{256 * MiB, 16 * MiB, 1500}, // the next cycle at 16 + 16×15 = 256 MiB
		{256 * MiB, 128 * MiB, 100}, // doubling reaches the floor already
		{256 * MiB, 900 * MiB, 100}, // above the floor: Go's default pacing
		{256 * MiB, 2 * MiB, 6400},  // bounded: Go's 4 MiB heap minimum × 64 is the floor
		{256 * MiB, 0, 6400},        // before the first cycle: 1 MiB assumed, bounded
		{64 * MiB, 40 * MiB, 100},   // 40 → 80 MiB passes the floor: no less than 100
		{64 * MiB, 20 * MiB, 220},   // 20 + 20×2.2 = 64
		{64 * MiB, 32 * MiB, 100},   // exactly half the floor
		{64 * MiB, 30 * MiB, 113},   // 30 + 30×1.13 ≈ 64
		{2 * MiB, 100, 100},         // a floor under Go's own minimum changes nothing
		{MaxFloor, 0, 26214400},     // the largest floor: no overflow, bounded by the heap minimum
		{MaxFloor, MaxFloor, 100},
	} {
		if got := percentFor(c.floor, c.live); got != c.want {
			t.Errorf("percentFor(%d MiB, %d B) = %d, want %d", c.floor/MiB, c.live, got, c.want)
		}
	}
}

// cycles allocates n bytes of garbage in 8 KiB pieces, keeping little
// alive, and returns how many collections ran meanwhile.
func cycles(n int) uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	var keep [16][]byte
	for i := 0; i < n/8192; i++ {
		keep[i%len(keep)] = make([]byte, 8192)
	}
	runtime.KeepAlive(keep)
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// gcPercent reads the GC percentage without changing it.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestFloorHoldsOffCollections: under a 64 MiB floor, with a live heap of
// a few MiB, the percentage is raised after a cycle, and 512 MiB of
// garbage takes about 8 collections (at most 16); Go's default pacing
// collects every few MiB (30 to 150 times here). The figures are the
// collector's on a shared machine: a cycle's marking, slowed by other
// load, counts what is allocated meanwhile as live, so the default's
// count falls (to 10 once), and a percentage read after a burst of
// allocation can be back at 100; the test forces a quiet cycle to read the
// percentage, and bounds the count under the floor, which load only
// lowers (a floor that did nothing collects far more than 16 times).
func TestFloorHoldsOffCollections(t *testing.T) {
	t.Setenv("GOGC", "") // the floor applies only when GOGC is not set
	const floor, garbage = 64 << 20, 512 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(100)) // Go's default, whatever GOGC the test runs under
	runtime.GC()
	before := gcPercent()
	stop := Start(floor)
	runtime.GC() // a cycle with nothing else allocating: its cleanup tunes for the live heap
	deadline := time.Now().Add(10 * time.Second)
	for gcPercent() <= basePercent && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := gcPercent(); p <= basePercent {
		t.Errorf("GC percent under a 64 MiB floor with a small live heap = %d, want > %d", p, basePercent)
	}
	with := cycles(garbage)
	stop()
	if p := gcPercent(); p != before {
		t.Errorf("GC percent after stop = %d, want %d as before Start", p, before)
	}
	without := cycles(garbage)
	t.Logf("512 MiB of garbage: %d collections with a 64 MiB floor, %d without", with, without)
	if with > 16 {
		t.Errorf("%d collections with a 64 MiB floor for 512 MiB of garbage; want at most 16", with)
	}
	if with < 2 {
		t.Errorf("%d collections with a 64 MiB floor for 512 MiB of garbage; want at least 2: a floor must not stop collection", with)
	}
}

func TestGOGCWins(t *testing.T) {
	t.Setenv("GOGC", "100")
	defer debug.SetGCPercent(debug.SetGCPercent(100)) // as GOGC=100 would have set it
	before := gcPercent()
	stop := Start(1 << 30)
	defer stop()
	if p := gcPercent(); p != before {
		t.Errorf("GC percent with GOGC set = %d, want it left at %d", p, before)
	}
	if n := cycles(64 << 20); n == 0 {
		t.Error("no collection in 64 MiB of garbage with GOGC=100 set: the floor was applied anyway")
	}
}

func TestZeroFloorIsOff(t *testing.T) {
	t.Setenv("GOGC", "")
	before := gcPercent()
	stop := Start(0)
	defer stop()
	if p := gcPercent(); p != before {
		t.Errorf("GC percent with gc_floor 0 = %d, want it left at %d", p, before)
	}
}
