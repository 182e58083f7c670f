// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
)

// Every delivery attempt is recorded in the JetStream stream
// SCIMRELAY_DELIVERIES (subject scimrelay-deliveries.<sink>.<event id>),
// kept for the provisioning log's retention: a worker on any machine
// records, the admin API of any role reads. The event id in the subject
// lets the attempts of one event be read through the stream's subject
// index (AttemptsOf) rather than by scanning; records written before it was
// there (scimrelay-deliveries.<sink>) are still read by sink.
const (
	deliveriesStream      = "SCIMRELAY_DELIVERIES"
	deliveriesSubjectRoot = "scimrelay-deliveries."
)

// Attempt is one delivery attempt of one event to one sink.
type Attempt struct {
	Time        time.Time     `json:"time"`
	Sink        string        `json:"sink"`
	EventID     string        `json:"event_id"`
	Type        string        `json:"type"`
	Subject     string        `json:"subject"`
	Outcome     string        `json:"outcome"` // delivered, retry, dead_lettered, redriven, replayed
	Status      int           `json:"status,omitempty"`
	Latency     time.Duration `json:"latency_ns"`
	Error       string        `json:"error,omitempty"`
	Attempt     int           `json:"attempt,omitempty"`
	NextAttempt time.Time     `json:"next_attempt,omitzero"`
}

type attemptLog struct {
	js  jetstream.JetStream
	log *slog.Logger
}

func ensureDeliveries(ctx context.Context, js jetstream.JetStream, retention time.Duration, replicas int, log *slog.Logger) (*attemptLog, error) {
	if retention <= 0 {
		retention = 30 * 24 * time.Hour
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        deliveriesStream,
		Description: "scimrelay delivery attempts, one subject per sink",
		Subjects:    []string{deliveriesSubjectRoot + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      retention,
		Replicas:    max(replicas, 1),
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", deliveriesStream, err)
	}
	return &attemptLog{js: js, log: log}, nil
}

func (a *attemptLog) record(sink string, e *event.Event, res Result, attempt int, outcome string) {
	a.write(Attempt{Sink: sink, EventID: e.ID(), Type: e.Type(), Subject: e.Subject(), Outcome: outcome,
		Status: res.Status, Latency: res.Latency, Error: errText(res.Err), Attempt: attempt})
}

func (a *attemptLog) recordRetry(sink string, e *event.Event, res Result, attempt int, next time.Time) {
	a.write(Attempt{Sink: sink, EventID: e.ID(), Type: e.Type(), Subject: e.Subject(), Outcome: "retry",
		Status: res.Status, Latency: res.Latency, Error: errText(res.Err), Attempt: attempt, NextAttempt: next})
}

// write publishes without waiting for the acknowledgement: the record must
// never slow delivery down, and losing one to a NATS hiccup is acceptable.
func (a *attemptLog) write(at Attempt) {
	at.Time = time.Now().UTC()
	at.Error = truncate(at.Error, maxErrorInQueue)
	b, err := json.Marshal(at)
	if err != nil {
		return
	}
	if _, err := a.js.PublishAsync(attemptSubject(at.Sink, at.EventID), b); err != nil {
		a.log.Debug("recording a delivery attempt", "sink", at.Sink, "err", err)
	}
}

// Attempts returns recorded attempts, oldest first, of one sink ("" for
// all) since a time, at most limit.
func Attempts(ctx context.Context, js jetstream.JetStream, sink string, since time.Time, limit int) ([]Attempt, error) {
	filters := []string{deliveriesSubjectRoot + ">"}
	if sink != "" {
		filters = []string{deliveriesSubjectRoot + sink, deliveriesSubjectRoot + sink + ".>"}
	}
	return readAttempts(ctx, js, filters, since, limit)
}

// attemptSubject is where an attempt of event id to sink is recorded; an
// id that is not a NATS token (never one the relay made) is left out.
func attemptSubject(sink, id string) string {
	if id == "" || strings.ContainsAny(id, ".*> \t\r\n") {
		return deliveriesSubjectRoot + sink
	}
	return deliveriesSubjectRoot + sink + "." + id
}

// MaxAttemptsOf is how many events' attempts AttemptsOf reads at once.
const MaxAttemptsOf = 100

// AttemptsOf returns the recorded attempts to deliver the events ids (at
// most MaxAttemptsOf of them) to any sink since a time, oldest first, at
// most limit.
func AttemptsOf(ctx context.Context, js jetstream.JetStream, ids []string, since time.Time, limit int) ([]Attempt, error) {
	var filters []string
	for _, id := range ids[:min(len(ids), MaxAttemptsOf)] {
		if s := attemptSubject("*", id); s != deliveriesSubjectRoot+"*" {
			filters = append(filters, s)
		}
	}
	if len(filters) == 0 {
		return []Attempt{}, nil
	}
	return readAttempts(ctx, js, filters, since, limit)
}

// readAttempts reads the attempts recorded on filters since a time, up to
// the last one there was when it started, at most limit.
func readAttempts(ctx context.Context, js jetstream.JetStream, filters []string, since time.Time, limit int) ([]Attempt, error) {
	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", deliveriesStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := []Attempt{}
	if info.State.Msgs == 0 {
		return out, nil
	}
	lastSeq := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return nil, err
	}
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return out, nil // nothing selected: no need to wait for a fetch
	}
	for len(out) < limit {
		batch, err := cons.Fetch(min(512, limit-len(out)), jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return nil, err
		}
		n, pending := 0, uint64(1)
		var last uint64
		for m := range batch.Messages() {
			n++
			var at Attempt
			if json.Unmarshal(m.Data(), &at) == nil {
				out = append(out, at)
			}
			if meta, err := m.Metadata(); err == nil {
				last, pending = meta.Sequence.Stream, meta.NumPending
			}
		}
		if n == 0 || last >= lastSeq || pending == 0 {
			break
		}
	}
	return out, nil
}

// countAttempts counts the attempts recorded for a sink since a time,
// without reading them: a consumer starting then says how many it selects.
func countAttempts(ctx context.Context, js jetstream.JetStream, sink string, since time.Time) (uint64, error) {
	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		return 0, fmt.Errorf("opening stream %s: %w", deliveriesStream, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{deliveriesSubjectRoot + sink, deliveriesSubjectRoot + sink + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending, nil
}
