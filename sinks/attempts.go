// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Every delivery attempt is recorded in the JetStream stream
// SCIMRELAY_DELIVERIES, kept for the provisioning log's retention: a worker
// on any machine records, the admin API of any role reads. One record
// covers one attempt to deliver a slice of one resource's events (a single
// event, or in batch mode the events of the resource that one request
// carried) and is kept on the resource's subject,
//
//	scimrelay-deliveries.<sink>.<tenant>.<kind>.<resource id>
//
// so that the attempts of a request's events are read through the
// stream's subject index (AttemptsOf) rather than by scanning, and so that
// the stream has a subject per resource delivered, as the event stream
// does, not one per event: JetStream keeps every subject that holds a
// message in an in-memory index, and the retention is weeks of events. A
// record of a batch slice is also one JetStream write where there was one
// per event. Records written before are still read: one event each on
// scimrelay-deliveries.<sink>.<event id>, and before that on
// scimrelay-deliveries.<sink>.
const (
	deliveriesStream      = "SCIMRELAY_DELIVERIES"
	deliveriesSubjectRoot = "scimrelay-deliveries."
)

// DeliveriesStream is the stream of delivery attempts, and
// TenantAttempts the subjects of a tenant's attempts in it, to every sink
// (a tenant's purge deletes them). Attempts recorded before the layout
// above name no tenant, and are not among them.
const DeliveriesStream = deliveriesStream

func TenantAttempts(tenant string) string { return deliveriesSubjectRoot + "*." + tenant + ".>" }

// Attempt is one delivery attempt of one event to one sink.
//
// Attempt numbers the tries, from 1, of the first event the request
// carried: a delivery that succeeded on its third try is attempt 3.
// Records of delivered and replayed events written before this was kept
// have 0. Seq is the stream sequence of the record, as read: a reader
// passes the last one it read as AttemptQuery.After to read on (the
// attempts of one record, the events of one request, share it).
type Attempt struct {
	Time    time.Time     `json:"time"`
	Sink    string        `json:"sink"`
	EventID string        `json:"event_id,omitempty"`
	Type    string        `json:"type,omitempty"`
	Subject string        `json:"subject"`
	Outcome string        `json:"outcome"` // delivered, retry, dead_lettered, redriven, replayed
	Status  int           `json:"status,omitempty"`
	Latency time.Duration `json:"latency_ns"`
	Error   string        `json:"error,omitempty"`
	// ErrorClass says in a word why an attempt without a status failed
	// (errorClass: timeout, connection refused, tls…); "" otherwise.
	ErrorClass  string    `json:"error_class,omitempty"`
	Attempt     int       `json:"attempt,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Seq         uint64    `json:"seq,omitempty"`
}

// attemptRecord is a record as stored: an attempt with the events it
// covers, or (written before slices were recorded together) an attempt
// of the one event it names.
type attemptRecord struct {
	Attempt
	Events []attemptEvent `json:"events,omitempty"`
}

type attemptEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// attempts returns the record as one attempt per event.
func (r *attemptRecord) attempts() []Attempt {
	if len(r.Events) == 0 {
		return []Attempt{r.Attempt}
	}
	out := make([]Attempt, len(r.Events))
	for i, e := range r.Events {
		out[i] = r.Attempt
		out[i].EventID, out[i].Type = e.ID, e.Type
	}
	return out
}

type attemptLog struct {
	js  jetstream.JetStream
	log *slog.Logger
}

// ensureDeliveries creates or updates the stream of delivery attempts,
// kept for retention and, when maxBytes > 0, within maxBytes (the oldest
// go first): a receiver that fails for weeks must not fill the NATS store
// that the events themselves need. JetStream sets a stream's max_bytes
// aside in its store at once; a store without that much room gets a
// stream bounded by age only, and a warning that says what to change,
// rather than a relay that does not start.
func ensureDeliveries(ctx context.Context, js jetstream.JetStream, retention time.Duration, maxBytes int64, replicas int, log *slog.Logger) (*attemptLog, error) {
	if retention <= 0 {
		retention = 30 * 24 * time.Hour
	}
	if maxBytes <= 0 {
		maxBytes = -1 // no bound
	}
	cfg := jetstream.StreamConfig{
		Name:        deliveriesStream,
		Description: "scimrelay delivery attempts, one subject per sink",
		Subjects:    []string{deliveriesSubjectRoot + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      retention,
		MaxBytes:    maxBytes,
		Discard:     jetstream.DiscardOld,
		Replicas:    max(replicas, 1),
		AllowDirect: true,
	}
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	if maxBytes > 0 && noRoom(err) {
		log.Warn("the NATS store has no room to set provisioning_log.max_bytes aside for delivery attempts; they are bounded by age only: give NATS more storage or lower provisioning_log.max_bytes",
			"stream", deliveriesStream, "max_bytes", maxBytes, "err", err)
		cfg.MaxBytes = -1
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", deliveriesStream, err)
	}
	return &attemptLog{js: js, log: log}, nil
}

// noRoom reports whether JetStream refused a stream for want of storage
// to set aside (insufficient resources, or insufficient storage).
func noRoom(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10023 || apiErr.ErrorCode == 10047)
}

// record writes one attempt to deliver es, events of one resource sent in
// one request.
func (a *attemptLog) record(sink string, es []*event.Event, res Result, attempt int, outcome string) {
	a.write(sink, es, Attempt{Outcome: outcome, Status: res.Status, Latency: res.Latency, Error: errText(res.Err), ErrorClass: errorClass(res), Attempt: attempt})
}

// recordRetry writes a failed attempt to deliver es that is tried again at
// next.
func (a *attemptLog) recordRetry(sink string, es []*event.Event, res Result, attempt int, next time.Time) {
	a.write(sink, es, Attempt{Outcome: "retry", Status: res.Status, Latency: res.Latency, Error: errText(res.Err), ErrorClass: errorClass(res), Attempt: attempt, NextAttempt: next})
}

// write publishes without asking for an acknowledgement: the record must
// never slow delivery down, and losing one to a NATS hiccup is acceptable.
// A plain NATS publish, which the stream stores all the same: an
// asynchronous JetStream publish keeps each unanswered one pending, and
// acks that never came (the stream without a leader, say) would fill
// nats.go's pending limit and make every later record wait on it.
func (a *attemptLog) write(sink string, es []*event.Event, at Attempt) {
	if len(es) == 0 {
		return
	}
	at.Time = time.Now().UTC()
	at.Sink, at.Subject = sink, es[0].Subject()
	at.Error = truncate(at.Error, maxErrorInQueue)
	rec := attemptRecord{Attempt: at, Events: make([]attemptEvent, len(es))}
	for i, e := range es {
		rec.Events[i] = attemptEvent{ID: e.ID(), Type: e.Type()}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	if err := a.js.Conn().Publish(attemptSubject(sink, es[0]), b); err != nil {
		a.log.Debug("recording a delivery attempt", "sink", sink, "err", err)
	}
}

// AttemptQuery selects recorded attempts.
type AttemptQuery struct {
	Sink   string // "" for every sink
	Tenant string // "" for every tenant; records written before they named one have none
	// Since and Until bound when the attempts were stored (Until: before
	// it; zero: no bound).
	Since, Until time.Time
	// After continues after the record with this stream sequence (an
	// attempt's Seq); Since does not apply then.
	After uint64
	// Match, when set, keeps only the attempts it accepts.
	Match func(*Attempt) bool
	// Limit bounds how many attempts are returned, in whole records: a
	// record, the events of one request, is never split between pages, so
	// a page ends before a record that would take it past Limit, unless
	// that record is the page's first.
	Limit int
}

// Attempts returns recorded attempts, oldest first, as q selects.
func Attempts(ctx context.Context, js jetstream.JetStream, q AttemptQuery) ([]Attempt, error) {
	sink := q.Sink
	if sink == "" {
		sink = "*"
	}
	filters := []string{deliveriesSubjectRoot + ">"}
	switch {
	case q.Tenant != "":
		filters = []string{deliveriesSubjectRoot + sink + "." + q.Tenant + ".>"}
	case q.Sink != "":
		filters = sinkAttemptSubjects(q.Sink)
	}
	return readAttempts(ctx, js, attemptRange{filters: filters, since: q.Since, until: q.Until, after: q.After}, q.Limit, q.Match)
}

// attemptSubject is where an attempt to deliver e, and the other events of
// its resource sent with it, is recorded; an event that names no resource
// of the relay's (a message dead-lettered for not being an event) is
// recorded on the sink's own subject.
func attemptSubject(sink string, e *event.Event) string {
	r, err := RefOf(e.ID(), events.Tenant(*e), e.Type(), e.Subject())
	if err != nil {
		return deliveriesSubjectRoot + sink
	}
	return deliveriesSubjectRoot + sink + "." + r.Tenant + "." + r.Kind + "." + r.ResourceID
}

// EventRef names an event and the resource it is about, which is where the
// attempts to deliver it are recorded.
type EventRef struct {
	ID         string
	Tenant     string
	Kind       string // user or group
	ResourceID string
}

// RefOf returns the reference of an event from its id, tenant, type and
// subject (Users/<id> or Groups/<id>), as a structured CloudEvent carries
// them.
func RefOf(id, tenant, ceType, subject string) (EventRef, error) {
	a, err := events.ParseType(ceType)
	if err != nil {
		return EventRef{}, err
	}
	kind, rid, _ := strings.Cut(subject, "/")
	if !events.ValidName(tenant) || kind != a.ResourceType()+"s" || !events.ValidResourceID(rid) {
		return EventRef{}, fmt.Errorf("event %s: tenant %q and subject %q name no resource", id, tenant, subject)
	}
	return EventRef{ID: id, Tenant: tenant, Kind: a.Kind(), ResourceID: rid}, nil
}

// MaxAttemptsOf is how many events' attempts AttemptsOf reads at once.
const MaxAttemptsOf = 100

// AttemptsOf returns the recorded attempts to deliver the events refs (at
// most MaxAttemptsOf of them) to any sink since a time, oldest first, at
// most limit. A ref without a resource finds only records written one
// per event, before slices were recorded together.
func AttemptsOf(ctx context.Context, js jetstream.JetStream, refs []EventRef, since time.Time, limit int) ([]Attempt, error) {
	var filters []string
	want := map[string]bool{}
	seen := map[string]bool{}
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			filters = append(filters, f)
		}
	}
	for _, r := range refs[:min(len(refs), MaxAttemptsOf)] {
		if !events.ValidResourceID(r.ID) {
			continue // not a NATS token: never an id the relay made
		}
		want[r.ID] = true
		add(deliveriesSubjectRoot + "*." + r.ID)
		if events.ValidName(r.Tenant) && (r.Kind == "user" || r.Kind == "group") && events.ValidResourceID(r.ResourceID) {
			add(deliveriesSubjectRoot + "*." + r.Tenant + "." + r.Kind + "." + r.ResourceID)
		}
	}
	if len(filters) == 0 {
		return []Attempt{}, nil
	}
	return readAttempts(ctx, js, attemptRange{filters: filters, since: since}, limit, func(at *Attempt) bool { return want[at.EventID] })
}

// attemptRange is where readAttempts reads: the records on filters from
// since (or after the sequence after) up to until (zero: the last one
// there was when it started).
type attemptRange struct {
	filters      []string
	since, until time.Time
	after        uint64
}

// readAttempts reads the attempts recorded in r, at most limit in whole
// records (AttemptQuery.Limit). Only the attempts keep accepts (nil: all)
// are returned.
func readAttempts(ctx context.Context, js jetstream.JetStream, r attemptRange, limit int, keep func(*Attempt) bool) ([]Attempt, error) {
	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", deliveriesStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := []Attempt{}
	lastSeq := info.State.LastSeq
	if info.State.Msgs == 0 || r.after >= lastSeq {
		return out, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.filters, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &r.since}
	if r.after > 0 {
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, r.after+1
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer events.DeleteReader(st, cons)
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return out, nil // nothing selected: no need to wait for a fetch
	}
	for full := false; !full && len(out) < limit; {
		batch, err := cons.Fetch(min(512, limit-len(out)), jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return nil, err
		}
		n, pending := 0, uint64(1)
		var last uint64
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err == nil {
				last, pending = meta.Sequence.Stream, meta.NumPending
			}
			if full {
				continue // the batch is drained, not read
			}
			if err == nil && !r.until.IsZero() && !meta.Timestamp.Before(r.until) {
				full = true // past the window: records are in time order
				continue
			}
			var rec attemptRecord
			if json.Unmarshal(m.Data(), &rec) != nil {
				continue
			}
			var kept []Attempt
			for _, at := range rec.attempts() {
				if keep == nil || keep(&at) {
					at.Seq = last
					kept = append(kept, at)
				}
			}
			if len(out) > 0 && len(out)+len(kept) > limit {
				full = true // the record starts the next page
				continue
			}
			out = append(out, kept...)
		}
		if n == 0 || last >= lastSeq || pending == 0 {
			break
		}
	}
	return out, nil
}

// countAttempts counts the attempt records of a sink since a time, without
// reading them (a consumer starting then says how many it selects): the
// events of one resource sent in one request count once.
func countAttempts(ctx context.Context, js jetstream.JetStream, sink string, since time.Time) (uint64, error) {
	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		return 0, fmt.Errorf("opening stream %s: %w", deliveriesStream, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: sinkAttemptSubjects(sink),
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return 0, err
	}
	defer events.DeleteReader(st, cons)
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending, nil
}

// sinkAttemptSubjects are the subjects of every attempt record of a sink.
func sinkAttemptSubjects(sink string) []string {
	return []string{deliveriesSubjectRoot + sink, deliveriesSubjectRoot + sink + ".>"}
}
