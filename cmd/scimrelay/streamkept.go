// SPDX-License-Identifier: Apache-2.0

package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/relay/events"
)

// checkStreamKept tells, at start, whether the event stream was lost: the
// relay found no SCIMRELAY stream (created: it made it anew) although its
// data file had made events before. That is a NATS store lost or wiped
// (data_dir/nats deleted, another NATS server, a volume not mounted):
// every event it held and the sinks had not delivered is gone, with the
// sinks' parked events and dead letters, and no later start can tell. So
// it is said at Error and kept in the scimrelay_stream_lost gauge, which
// an alert can watch. The outbox publishes what it still holds, events
// not yet published or published in its last moments.
func (s *server) checkStreamKept(created bool) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "scimrelay_stream_lost",
		Help: "1 when the relay found its event stream missing at start and made it anew although its data file had made events before (a lost NATS store: the events it held and no sink had delivered are gone); 0 otherwise.",
	})
	if !created || s.store == nil {
		return g
	}
	made, err := s.store.EventsMade()
	if err != nil {
		s.log.Warn("could not tell whether the event stream was lost: reading the data file's count of events failed", "err", err)
		return g
	}
	if made == 0 {
		return g
	}
	g.Set(1)
	s.log.Error("the event stream was missing at start and has been made anew, although this data file has made events: the NATS store was lost, "+
		"and with it the events no sink had delivered, the sinks' parked events and their dead letters; subscribers see a gap in each tenant's sequence. "+
		"Restore the NATS store with the data file (see README, Backup and recovery) if a copy exists",
		"stream", events.StreamName, "events_made_by_the_data_file", made)
	return g
}
