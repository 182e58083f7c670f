// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// TestSinkConsumersExistBeforeServing holds the README's "Webhooks"
// promise: "Each sink in relay.yaml gets one durable JetStream consumer per
// partition (scimrelay-sink-<name>-P0 … -P15), created before the relay
// answers any SCIM request", each holding at most 1,000 events (the
// consumer's window), with its parking bucket scimrelay-parked-<sink>. The
// server is built as serve builds it, and looked at before it serves.
func TestSinkConsumersExistBeforeServing(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	withSink(cfg, "crm", "http://127.0.0.1:1/hook", nil)
	srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	ctx := context.Background()
	stream, err := srv.js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	list := stream.ConsumerNames(ctx)
	for name := range list.Name() {
		if strings.HasPrefix(name, "scimrelay-sink-") {
			names = append(names, name)
		}
	}
	if err := list.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) != 16 {
		t.Fatalf("before serving, the sink's consumers are %v; want scimrelay-sink-crm-P0 … -P15", names)
	}
	for p := range 16 {
		c, err := stream.Consumer(ctx, fmt.Sprintf("scimrelay-sink-crm-P%d", p))
		if err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
		info := c.CachedInfo()
		if info.Config.Durable == "" || info.Config.MaxAckPending != 1000 || info.Config.DeliverPolicy != jetstream.DeliverNewPolicy {
			t.Fatalf("partition %d: durable %q, window %d, deliver policy %v; want durable, 1,000, new events", p, info.Config.Durable, info.Config.MaxAckPending, info.Config.DeliverPolicy)
		}
	}
	if _, err := srv.js.KeyValue(ctx, "scimrelay-parked-crm"); err != nil {
		t.Fatalf("the sink's parking bucket: %v", err)
	}
}

// TestStreamDropsEventsOnlyByAge holds "No retry is put off past the time
// the stream drops its event (nats.stream.max_age, 7 days …) … Events the
// stream drops by its other limits (an external stream given max_bytes or
// max_msgs) are not covered: the relay's stream sets neither."
func TestStreamDropsEventsOnlyByAge(t *testing.T) {
	srv, err := newServer(context.Background(), testConfig(t, t.TempDir()), roleAll, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	stream, err := srv.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	c := stream.CachedInfo().Config
	if c.MaxAge != 7*24*time.Hour || c.MaxBytes > 0 || c.MaxMsgs > 0 || c.MaxMsgsPerSubject > 0 {
		t.Fatalf("the stream keeps events %s, at most %d bytes, %d messages, %d per subject; want 7 days and no other limit", c.MaxAge, c.MaxBytes, c.MaxMsgs, c.MaxMsgsPerSubject)
	}
}
