// SPDX-License-Identifier: Apache-2.0

package httpmw

import (
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
