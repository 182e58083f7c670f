// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// StreamMetrics exports, at each scrape, the messages and bytes of the
// JetStream streams named (the relay's: SCIMRELAY, its dead letters,
// delivery attempts and workers), and when they were last read in full. A
// scrape that cannot read them (NATS away, or slower than the scrape's
// 2 s) reports the values last read, as the sinks' gauges do: series that
// came and went with JetStream's speed broke graphs and absent() alerts (a
// soak review saw them go in a 2.2 s stall). A stream not there has no
// series.
//
// Each stream is read by its name: a sink worker's NATS user may read the
// relay's streams so but not list the account's (README, Who can reach
// what), and a list refused had every scrape of a worker log a
// permissions violation and show no stream.
func StreamMetrics(js jetstream.JetStream, names ...string) prometheus.Collector {
	return &streamMetrics{js: js, names: names, last: map[string]streamFigures{}}
}

type streamMetrics struct {
	js    jetstream.JetStream
	names []string

	mu     sync.Mutex
	last   map[string]streamFigures // by stream name
	readAt time.Time                // the last read in full; zero: none yet
}

type streamFigures struct {
	msgs, bytes uint64
	first       time.Time // the oldest message's; zero when empty
}

var (
	streamMessagesDesc = prometheus.NewDesc("scimrelay_stream_messages",
		"Messages stored in a JetStream stream of the relay.", []string{"stream"}, nil)
	streamBytesDesc = prometheus.NewDesc("scimrelay_stream_bytes",
		"Bytes stored in a JetStream stream of the relay.", []string{"stream"}, nil)
	streamFirstDesc = prometheus.NewDesc("scimrelay_stream_first_timestamp_seconds",
		"When the oldest message a JetStream stream of the relay keeps was stored (unix seconds): time() minus this is how far back it reaches, which its max_bytes may keep shorter than its max_age.", []string{"stream"}, nil)
	streamReadDesc = prometheus.NewDesc("scimrelay_stream_read_timestamp_seconds",
		"When the relay's streams were last read in full. A scrape that cannot read them shows the values last read: alert when time() minus this grows past a minute.", nil, nil)
)

func (c *streamMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamMessagesDesc
	ch <- streamBytesDesc
	ch <- streamFirstDesc
	ch <- streamReadDesc
}

func (c *streamMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	read := map[string]streamFigures{}
	full := true
	for _, name := range c.names {
		st, err := c.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			full = false
			continue
		}
		info := st.CachedInfo()
		read[name] = streamFigures{msgs: info.State.Msgs, bytes: info.State.Bytes, first: info.State.FirstTime}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if full {
		c.last, c.readAt = read, time.Now() // a stream gone is gone
	} else {
		maps.Copy(c.last, read)
	}
	for name, f := range c.last {
		ch <- prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(f.msgs), name)
		ch <- prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(f.bytes), name)
		if f.msgs > 0 && !f.first.IsZero() {
			ch <- prometheus.MustNewConstMetric(streamFirstDesc, prometheus.GaugeValue, float64(f.first.UnixNano())/1e9, name)
		}
	}
	if !c.readAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(streamReadDesc, prometheus.GaugeValue, float64(c.readAt.UnixNano())/1e9)
	}
}
