// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestLeaseSurvivesAWallClockStepForward: a worker renews its lease on a
// heartbeat; the wall clock then steps forward a minute (NTP, a VM
// resumed). Nothing happened to the worker's contact with NATS, so its
// lease (8 heartbeats from the renewal) must still hold; reconcile
// otherwise releases every partition at its next heartbeat, abandoning
// the deliveries in flight.
func TestLeaseSurvivesAWallClockStepForward(t *testing.T) {
	m := &membership{t: timingFor(time.Second)}
	now := time.Now()
	began := eventstest.WallStepped(now, -time.Minute) // read before the clock stepped a minute forward
	if got := now.Sub(began); got != 0 {
		t.Fatalf("test set-up: monotonic distance %s, want 0", got)
	}
	m.renew(began)
	if !m.leaseValid() {
		t.Fatalf("the lease renewed %s ago (monotonic) lapsed because the wall clock stepped forward a minute; lease is %s", time.Since(began), m.t.lease)
	}
}

// TestLeaseLapsesAfterAWallClockStepBack: a worker renews its lease, then
// loses NATS (no heartbeat renews it) while its wall clock steps back an
// hour. Its lease must lapse 8 heartbeats after the renewal, before
// another worker can be pinned to its partitions (pinnedTTL); else it
// delivers for an hour beside the partitions' next owner.
func TestLeaseLapsesAfterAWallClockStepBack(t *testing.T) {
	m := &membership{t: timingFor(10 * time.Millisecond)}  // lease 80 ms
	began := eventstest.WallStepped(time.Now(), time.Hour) // read before the clock stepped an hour back
	m.renew(began)
	deadline := time.Now().Add(5 * time.Second)
	for m.leaseValid() {
		if time.Now().After(deadline) {
			t.Fatalf("the lease (%s) still holds %s after its renewal (monotonic): the wall clock stepped back an hour since", m.t.lease, time.Since(began))
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}
