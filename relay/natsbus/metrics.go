// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// StreamMetrics exports, at each scrape, the messages and bytes of every
// JetStream stream whose name starts with prefix (the relay's: SCIMRELAY,
// its dead letters, delivery attempts and workers). A scrape while NATS is
// away reports nothing for them rather than stale numbers.
func StreamMetrics(js jetstream.JetStream, prefix string) prometheus.Collector {
	return streamMetrics{js: js, prefix: prefix}
}

type streamMetrics struct {
	js     jetstream.JetStream
	prefix string
}

var (
	streamMessagesDesc = prometheus.NewDesc("scimrelay_stream_messages",
		"Messages stored in a JetStream stream of the relay.", []string{"stream"}, nil)
	streamBytesDesc = prometheus.NewDesc("scimrelay_stream_bytes",
		"Bytes stored in a JetStream stream of the relay.", []string{"stream"}, nil)
)

func (c streamMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamMessagesDesc
	ch <- streamBytesDesc
}

func (c streamMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list := c.js.ListStreams(ctx)
	for info := range list.Info() {
		if !strings.HasPrefix(info.Config.Name, c.prefix) {
			continue
		}
		ch <- prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(info.State.Msgs), info.Config.Name)
		ch <- prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(info.State.Bytes), info.Config.Name)
	}
}
