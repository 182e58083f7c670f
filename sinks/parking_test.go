// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

const day = 24 * time.Hour

// TestParkRecordsOutliveTheirRetry: a parked resource's events were
// acknowledged when it was parked, so its record is all that brings them
// back. With a stream kept 90 days and `retry: [40d]`, a record written
// at the first failure is due in 32–48 days; the bucket kept records 30
// days, and the events would have been neither delivered nor
// dead-lettered. The bucket now keeps them as long as the stream keeps
// events, and a day more.
func TestParkRecordsOutliveTheirRetry(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: 90 * day, Duplicates: 10 * time.Minute}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, func(int, *http.Request) int { return 503 })
	runSinks(t, js, 5*time.Second, sinkConfig("crm", rc.URL, func(c *Config) { c.Retry = Schedule{40 * day} }))
	newPublisher(t, js).publish("acme", events.UserCreated, "u1")
	kv, err := js.KeyValue(ctx, parkingBucketName("crm"))
	if err != nil {
		t.Fatal(err)
	}
	var entry jetstream.KeyValueEntry
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		keys, err := kv.ListKeysFiltered(ctx, "*.acme.user.u1")
		if err != nil {
			return err
		}
		defer func() { _ = keys.Stop() }()
		for k := range keys.Keys() {
			entry, err = kv.Get(ctx, k)
			return err
		}
		return fmt.Errorf("Users/u1 is not parked")
	})
	var r parkRecord
	if err := json.Unmarshal(entry.Value(), &r); err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gone := entry.Created().Add(st.TTL()); st.TTL() != 0 && !gone.After(r.Due) {
		t.Fatalf("the park record goes at %s (the bucket keeps keys %s), before its retry at %s", gone, st.TTL(), r.Due)
	}
}

// TestParkingTTL: the bucket keeps keys at least 30 days (a partition's
// claim is written once a day), as long as the stream keeps events and a
// day more, for ever for a stream without max_age; and a worker that read
// a shorter max_age than the bucket is set up for (it started before the
// stream changed) does not shorten it.
func TestParkingTTL(t *testing.T) {
	_, _, js := natsServer(t)
	for _, step := range []struct {
		keepFor, want time.Duration
	}{
		{time.Hour, 30 * day},
		{7 * day, 30 * day},
		{90 * day, 91 * day},
		{7 * day, 91 * day}, // not shortened
		{0, 0},              // for ever
		{90 * day, 0},       // for ever still
	} {
		pk, err := parkingBucket(ctx, js, "crm", 1, step.keepFor)
		if err != nil {
			t.Fatal(err)
		}
		st, err := pk.kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != step.want {
			t.Errorf("max_age %s: the bucket keeps keys %s, want %s", step.keepFor, st.TTL(), step.want)
		}
	}
}
