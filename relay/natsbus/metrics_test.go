// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// TestStreamGaugesKeepTheirValuesWhileNATSIsAway: the streams' gauges
// (messages, bytes, when the oldest message was stored) show what was last
// read when a scrape cannot read them (NATS away, or slower than the
// scrape), with when they were last read in full, rather than dropping out
// of the scrape; streams of other names are not shown.
func TestStreamGaugesKeepTheirValuesWhileNATSIsAway(t *testing.T) {
	ctx := context.Background()
	s := eventstest.RunServer(t)
	nc, js := eventstest.Connect(t, eventstest.URL(s))
	for _, name := range []string{"SCIMRELAY", "OTHER"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, name+".x", []byte("one")); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(natsbus.StreamMetrics(js, "SCIMRELAY"))
	scrape := func() map[string]float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				name := f.GetName()
				for _, l := range m.GetLabel() {
					name += "{" + l.GetValue() + "}"
				}
				out[name] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	before := scrape()
	if first := before["scimrelay_stream_first_timestamp_seconds{SCIMRELAY}"]; before["scimrelay_stream_messages{SCIMRELAY}"] != 1 || before["scimrelay_stream_bytes{SCIMRELAY}"] == 0 ||
		before["scimrelay_stream_read_timestamp_seconds"] == 0 || len(before) != 4 || first < float64(time.Now().Add(-time.Minute).Unix()) || first > float64(time.Now().Unix()+1) {
		t.Fatalf("with NATS up: %v", before)
	}
	nc.Close() // NATS away, as far as the relay can tell
	if after := scrape(); len(after) != 4 || after["scimrelay_stream_messages{SCIMRELAY}"] != 1 ||
		after["scimrelay_stream_read_timestamp_seconds"] != before["scimrelay_stream_read_timestamp_seconds"] {
		t.Fatalf("with NATS away: %v, want what was read before, %v", after, before)
	}
}
