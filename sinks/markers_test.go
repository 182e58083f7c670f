// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

func userSubject(i int) events.StoredSubject {
	return events.StoredSubject{Tenant: "acme", Kind: "user", ResourceID: fmt.Sprintf("u%02d", i)}
}

// bucketKeys reads every key of sink's parking bucket as the stream holds
// it: key → "record", "KeyValuePurgeOp" or "KeyValueDeleteOp". It reads
// each subject's last message, not a watch: a watch counts the messages
// it is to deliver when it starts, and one purged meanwhile (the sweep
// under test) never comes, so the watch never says it is done.
func bucketKeys(t testing.TB, js jetstream.JetStream, sink string) map[string]string {
	t.Helper()
	bucket := parkingBucketName(sink)
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$KV."+bucket+".>"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for subject := range info.State.Subjects {
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // purged since the info
		}
		if err != nil {
			t.Fatal(err)
		}
		key := strings.TrimPrefix(subject, "$KV."+bucket+".")
		out[key] = "record"
		switch op := m.Header.Get("KV-Operation"); op {
		case "":
		case "DEL":
			out[key] = jetstream.KeyValueDelete.String()
		case "PURGE":
			out[key] = jetstream.KeyValuePurge.String()
		default:
			t.Fatalf("%s: KV-Operation %q", subject, op)
		}
	}
	return out
}

// TestSweepRemovesOnlyOldMarkers: a sweep of partition 0 removes the
// markers its records left before the cutoff, and leaves the markers
// written after it, every record, the claims, and the other partitions'
// markers.
func TestSweepRemovesOnlyOldMarkers(t *testing.T) {
	_, _, js := natsServer(t)
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := pk.put(ctx, 0, userSubject(i), parkRecord{From: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pk.put(ctx, 1, userSubject(0), parkRecord{From: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := pk.remove(ctx, 0, userSubject(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pk.remove(ctx, 1, userSubject(0)); err != nil {
		t.Fatal(err)
	}
	for n := range 2 {
		rev, _, err := pk.claim(ctx, n, claim{Worker: "w1", Run: uint64(n + 1)}, func(_ context.Context, _ claim) (bool, error) { return false, nil })
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 { // released: its marker is not a record's
			if err := pk.unclaim(ctx, n, rev); err != nil {
				t.Fatal(err)
			}
		}
	}
	cutoff := time.Now()
	eventstest.CheckFor(t, time.Second, time.Millisecond, func() error {
		if !time.Now().After(cutoff) {
			return errors.New("the clock has not moved past the cutoff")
		}
		return nil
	})
	for i := 20; i < 25; i++ {
		if err := pk.remove(ctx, 0, userSubject(i)); err != nil {
			t.Fatal(err)
		}
	}

	ms, err := pk.oldMarkers(ctx, 0, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	n, err := pk.purgeMarkers(ctx, js, ms)
	if err != nil || n != 20 {
		t.Fatalf("the sweep removed %d markers (%v), want the 20 older than the cutoff", n, err)
	}

	want := map[string]string{
		"claim.0":                  "record",
		"claim.1":                  "KeyValueDeleteOp",
		parkKey(1, userSubject(0)): "KeyValuePurgeOp",
	}
	for i := 20; i < 25; i++ {
		want[parkKey(0, userSubject(i))] = "KeyValuePurgeOp"
	}
	for i := 25; i < 30; i++ {
		want[parkKey(0, userSubject(i))] = "record"
	}
	got := bucketKeys(t, js, "crm")
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("key %s: %q, want %q", k, got[k], want[k])
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("key %s: %q, want it gone", k, v)
		}
	}
	if c := readClaim(t, pk, 0); c != (claim{Worker: "w1", Run: 1}) {
		t.Errorf("partition 0's claim reads %+v after the sweep", c)
	}
	parked, err := pk.load(ctx, 0)
	if err != nil || len(parked) != 5 {
		t.Fatalf("partition 0 loads %d parked resources (%v), want 5", len(parked), err)
	}
}

// TestSweepKeepsARecordWrittenAfterItsMarker: a resource parked again
// between the sweep's reading of its marker and the marker's removal (its
// events were acknowledged when it was parked) keeps its new record:
// KeyValue.PurgeDeletes would purge the key whole.
func TestSweepKeepsARecordWrittenAfterItsMarker(t *testing.T) {
	_, _, js := natsServer(t)
	pk, err := parkingBucket(ctx, js, "crm", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := userSubject(1)
	if err := pk.put(ctx, 0, s, parkRecord{From: 7}); err != nil {
		t.Fatal(err)
	}
	if err := pk.remove(ctx, 0, s); err != nil {
		t.Fatal(err)
	}
	ms, err := pk.oldMarkers(ctx, 0, time.Now().Add(time.Hour))
	if err != nil || len(ms) != 1 {
		t.Fatalf("found %d markers (%v), want the one", len(ms), err)
	}
	if err := pk.put(ctx, 0, s, parkRecord{From: 9}); err != nil { // parked again
		t.Fatal(err)
	}
	if n, err := pk.purgeMarkers(ctx, js, ms); err != nil || n != 1 {
		t.Fatalf("removed %d markers (%v), want 1", n, err)
	}
	parked, err := pk.load(ctx, 0)
	if err != nil || len(parked) != 1 || parked[0].record.From != 9 {
		t.Fatalf("partition 0 loads %+v (%v); want the record written after the marker, from 9", parked, err)
	}
}

// TestPartitionOwnersRemoveOldMarkers: with a receiver that refuses each
// resource's first event three times (the webhook's quick retries
// included), every resource is parked and taken out again,
// leaving a marker; the partitions' owners remove them once they are
// MarkerAge old, while the claims stay and delivery goes on in order.
func TestPartitionOwnersRemoveOldMarkers(t *testing.T) {
	js := natsStream(t)
	l := newLedger()
	var mu sync.Mutex
	refused := map[string]int{}
	rc := slowReceiver(t, l, 0, func(subject string, seq uint64) int {
		mu.Lock()
		defer mu.Unlock()
		if seq == 1 && refused[subject] < 3 {
			refused[subject]++
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	log, logs := debugLog(t)
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("crm", rc.URL, nil)}, JS: js, AckWait: 5 * time.Second,
		Heartbeat: fastHeartbeat, MarkerAge: 300 * time.Millisecond, Logger: log})
	want := provision(newPublisher(t, js), "m", 40, 2, 0, 0)
	l.wantDeliveredOnce(t, want, 30*time.Second, logs)
	// Each resource's record was written (at least once) and taken out.
	st, err := js.Stream(ctx, "KV_"+parkingBucketName("crm"))
	if err != nil {
		t.Fatal(err)
	}
	if written := st.CachedInfo().State.LastSeq; written < 2*40 {
		t.Fatalf("the parking bucket took %d writes; want each of the 40 resources parked and taken out", written)
	}
	partitions := m.shared.partitions
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		keys := bucketKeys(t, js, "crm")
		claims := 0
		for k, v := range keys {
			switch {
			case v == "record" && strings.HasPrefix(k, "claim."):
				claims++
			case v == "record" && bookkeepingKey(k): // a partition's mark
			case v != "record":
				return fmt.Errorf("%s is still a %s marker (%d keys)", k, v, len(keys))
			default:
				return fmt.Errorf("%s is still parked", k)
			}
		}
		if claims != partitions {
			return fmt.Errorf("%d claims, want one for each of the %d partitions", claims, partitions)
		}
		return nil
	})
}
