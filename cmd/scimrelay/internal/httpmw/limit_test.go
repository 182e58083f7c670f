// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// TestAllowN: a request of n takes n tokens; n above the burst takes the
// whole burst, so the largest bulk request passes on a full bucket; a
// refused request takes nothing; keys have buckets of their own.
func TestAllowN(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(Limit{Rate: 10, Burst: 5}, map[string]Limit{"big": {Rate: 10, Burst: 50}})
	l.now = func() time.Time { return now }
	if ok, _ := l.AllowN("a", 3); !ok {
		t.Fatal("3 of 5 refused")
	}
	if ok, wait := l.AllowN("a", 3); ok || wait != 100*time.Millisecond {
		t.Fatalf("3 more of the 2 left: ok %v, wait %s", ok, wait)
	}
	if ok, _ := l.AllowN("a", 2); !ok {
		t.Fatal("the refusal consumed tokens")
	}
	if ok, _ := l.AllowN("b", 1000); !ok {
		t.Fatal("a request above the burst on a full bucket refused")
	}
	if ok, _ := l.Allow("b"); ok {
		t.Fatal("the capped request left tokens")
	}
	if ok, _ := l.AllowN("big", 40); !ok {
		t.Fatal("override ignored")
	}
	unlimited := NewLimiter(Limit{}, nil)
	if ok, _ := unlimited.AllowN("x", 1_000_000); !ok {
		t.Fatal("rate 0 limited")
	}
}

// TestCharge: work already done is charged past what the bucket holds,
// more than its burst too, and the key's next requests wait until the debt
// is paid back; an unlimited key is charged nothing.
func TestCharge(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(Limit{Rate: 10, Burst: 5}, nil)
	l.now = func() time.Time { return now }
	l.Charge("a", 12) // 5 held, 7 owed: 0.8 s until one token is there
	if ok, wait := l.Allow("a"); ok || wait != 800*time.Millisecond {
		t.Fatalf("after a debt of 7: ok %v, wait %s", ok, wait)
	}
	now = now.Add(800 * time.Millisecond)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("the debt paid back, the next request refused")
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key charged")
	}
	unlimited := NewLimiter(Limit{}, nil)
	unlimited.Charge("x", 1_000_000)
	if ok, _ := unlimited.Allow("x"); !ok {
		t.Fatal("rate 0 charged")
	}
}

// TestLimiterForgetsFullBuckets: keys that come from anywhere (the
// console's sign-in limits each client address) do not grow the limiter
// without end: past its prune size it drops the buckets back at full, and
// keeps the others, whose limit still holds.
func TestLimiterForgetsFullBuckets(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(Limit{Rate: 1, Burst: 1}, nil)
	l.now = func() time.Time { return now }
	l.prune = 10
	for i := range 10 {
		l.Allow(fmt.Sprintf("10.0.0.%d", i))
	}
	now = now.Add(2 * time.Second) // every bucket is full again
	if ok, _ := l.Allow("attacker"); !ok {
		t.Fatal("a new key refused")
	}
	if n := len(l.buckets); n != 1 {
		t.Errorf("%d buckets after the full ones were dropped, want the new one", n)
	}
	for i := range 20 {
		l.Allow(fmt.Sprintf("10.0.1.%d", i))
	}
	// None is full again yet: they are all kept, the first one's limit too.
	if n := len(l.buckets); n != 21 {
		t.Errorf("%d buckets, want 21: none was full", n)
	}
	if ok, _ := l.Allow("attacker"); ok {
		t.Error("a key's limit was forgotten while its bucket was not full")
	}
}

// TestWait: Wait says when a key's bucket holds a token without taking
// one, and gives no bucket to a key that has none.
func TestWait(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(Limit{Rate: 0.5, Burst: 1}, nil)
	l.now = func() time.Time { return now }
	if wait := l.Wait("a"); wait != 0 || len(l.buckets) != 0 {
		t.Fatalf("a new key waits %s (%d buckets)", wait, len(l.buckets))
	}
	l.Allow("a")
	if wait := l.Wait("a"); wait != 2*time.Second {
		t.Fatalf("an empty bucket at 0.5/s waits %s, want 2s", wait)
	}
	if wait := l.Wait("a"); wait != 2*time.Second {
		t.Fatalf("Wait took a token: the second wait is %s", wait)
	}
	now = now.Add(2 * time.Second)
	if wait := l.Wait("a"); wait != 0 {
		t.Fatalf("a refilled bucket waits %s", wait)
	}
}

// TestBurst: a tenant's burst is its own where it has one, the default's
// otherwise, at least 1, and without end without a rate.
func TestBurst(t *testing.T) {
	l := NewLimiter(Limit{Rate: 10, Burst: 20}, map[string]Limit{"own": {Rate: 5, Burst: 7}, "zero": {Rate: 5}, "free": {}})
	for tenant, want := range map[string]int{"any": 20, "own": 7, "zero": 1, "free": math.MaxInt} {
		if got := l.Burst(tenant); got != want {
			t.Errorf("Burst(%q) = %d, want %d", tenant, got, want)
		}
	}
}
