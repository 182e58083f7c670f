// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestPartitionedSubjects publishes through a real stream: every event of
// one resource lands in one partition whatever its action, subscribers
// still select by tenant, kind and action with wildcards, and a resource's
// events can be read back by subject.
func TestPartitionedSubjects(t *testing.T) {
	s := eventstest.RunServer(t)
	_, js := eventstest.Connect(t, eventstest.URL(s))
	ctx := context.Background()
	st, err := events.EnsureStream(ctx, js, events.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute, Partitions: 8}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := events.Partitions(ctx, js); err != nil || p != 8 {
		t.Fatalf("Partitions = %d, %v; want 8", p, err)
	}
	ids := []string{"0198f3c2-0000-7000-8000-000000000001", "0198f3c2-0000-7000-8000-000000000002", "0198f3c2-0000-7000-8000-000000000003"}
	actions := []events.Action{events.UserCreated, events.UserUpdated, events.UserDeactivated, events.UserDeleted}
	partitionOf := map[string]int{}
	for _, a := range actions {
		for _, id := range ids {
			ack, err := js.Publish(ctx, events.Subject("acme", a, id), []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			m, err := st.GetMsg(ctx, ack.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := events.ParseStoredSubject(m.Subject)
			if err != nil {
				t.Fatal(err)
			}
			if ss.Tenant != "acme" || ss.Kind != "user" || ss.Action != a || ss.ResourceID != id || ss.Partition >= 8 {
				t.Fatalf("stored subject %s parsed as %+v", m.Subject, ss)
			}
			if p, seen := partitionOf[id]; seen && p != ss.Partition {
				t.Fatalf("resource %s is in partitions %d and %d", id, p, ss.Partition)
			}
			partitionOf[id] = ss.Partition
		}
	}
	// A subscriber's wildcards select by tenant, kind and action.
	count := func(filter string) uint64 {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	for filter, want := range map[string]uint64{
		"scimrelay.acme.user.>":               12,
		"scimrelay.acme.*.deactivated.>":      3,
		"scimrelay.acme.user.created.>":       3,
		events.TenantSubjects("acme"):         12,
		events.PartitionSubjects("", 0) + "x": 0,
	} {
		if got := count(filter); got != want {
			t.Errorf("%s selects %d events, want %d", filter, got, want)
		}
	}
	var inPartitions uint64
	for p := 0; p < 8; p++ {
		inPartitions += count(events.PartitionSubjects("acme", p))
	}
	if inPartitions != 12 {
		t.Errorf("the partition filters select %d events, want 12", inPartitions)
	}
	// One resource's events, read back by subject, in order.
	filter := events.ResourceSubjects("acme", "user", ids[1])
	var got []events.Action
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ss, _ := events.ParseStoredSubject(m.Subject)
		got = append(got, ss.Action)
		seq = m.Sequence + 1
	}
	if fmt.Sprint(got) != fmt.Sprint(actions) {
		t.Fatalf("read back %v, want %v", got, actions)
	}
	// A subject without the resource token is not taken.
	if _, err := js.Publish(ctx, "scimrelay.acme.user.created", nil); err == nil {
		t.Fatal("the stream stored an event without a resource id")
	}
}

func TestParseStoredSubjectRejects(t *testing.T) {
	for _, s := range []string{
		"", "scimrelay.acme.user.created.u1", "scimrelay.acme.user.exploded.u1.3", "scimrelay.Acme.user.created.u1.3",
		"scimrelay.acme.user.created.u1.x", "scimrelay.acme.user.created.u1.-1", "other.acme.user.created.u1.3",
		"scimrelay.acme.user.created.u1.3.4", "scimrelay.acme.user.created.u*1.3",
	} {
		if ss, err := events.ParseStoredSubject(s); !errors.Is(err, events.ErrNotEventSubject) {
			t.Errorf("%q parsed as %+v, %v", s, ss, err)
		}
	}
}

func TestPatternTenant(t *testing.T) {
	for pattern, want := range map[string]string{
		"scimrelay.acme.>": "acme", "scimrelay.acme.user.deactivated.>": "acme", "scimrelay.acme": "acme",
		"scimrelay.*.user.>": "", "scimrelay.>": "", "": "", "other.acme.>": "",
	} {
		if got := events.PatternTenant(pattern); got != want {
			t.Errorf("PatternTenant(%q) = %q, want %q", pattern, got, want)
		}
	}
}

func TestPartitionsOf(t *testing.T) {
	cfg := events.StreamConfig(events.StreamOptions{Partitions: 32})
	if p, err := events.PartitionsOf(cfg); err != nil || p != 32 {
		t.Fatalf("PartitionsOf = %d, %v", p, err)
	}
	if p := events.StreamConfig(events.StreamOptions{}).SubjectTransform.Destination; p == "" {
		t.Fatal("no transform by default")
	}
	cfg.SubjectTransform.Destination = "scimrelay.{{wildcard(1)}}"
	if _, err := events.PartitionsOf(cfg); err == nil {
		t.Fatal("a foreign transform was accepted")
	}
	cfg.SubjectTransform = nil
	if _, err := events.PartitionsOf(cfg); err == nil {
		t.Fatal("a stream without a transform was accepted")
	}
	if _, err := events.EnsureStream(context.Background(), nil, events.StreamOptions{Partitions: events.MaxPartitions + 1}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("too many partitions accepted")
	}
}
