// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
	"github.com/scimrelay/scimrelay/sinks"
)

// Log is the provisioning log the admin API reads.
type Log interface {
	Query(ctx context.Context, q relay.LogQuery) ([]relay.LogEntry, error)
	Entry(ctx context.Context, key string) (relay.LogEntry, error)
	Count(ctx context.Context, since time.Time) ([]relay.LogCount, error)
}

var _ Log = (*relay.RequestLog)(nil)

// logOperations are the operations a log entry can have, for the operation
// filter: the SCIM handler's, and "token" that the OAuth token endpoint
// (internal/oauth) logs.
var logOperations = append(scim.Operations(), "token")

// LogOperations returns every operation a log entry can have, for those that
// offer the filter. The slice is the caller's.
func LogOperations() []string { return slices.Clone(logOperations) }

// GET /admin/v1/log?tenant=&since=1h&until=&after=&status=4xx&user=&operation=&order=&limit=
//
// order=newest reads from until (or now) back, and after then pages to
// older entries.
func (h *Handler) queryLog(w http.ResponseWriter, r *http.Request) error {
	if h.o.Log == nil {
		return unavailable("the provisioning log")
	}
	v := r.URL.Query()
	q := relay.LogQuery{Tenant: v.Get("tenant"), After: v.Get("after"), Status: v.Get("status"), User: v.Get("user"), Operation: v.Get("operation")}
	var err error
	if s := v.Get("since"); s != "" {
		if q.Since, err = sinceParam(s, 0); err != nil {
			return err
		}
	}
	if s := v.Get("until"); s != "" {
		if q.Until, err = timeParam("until", s); err != nil {
			return err
		}
	}
	if q.Limit, err = limitParam(v.Get("limit"), 1000, 100_000); err != nil {
		return err
	}
	if s := q.Status; s != "" && !validStatusFilter(s) {
		return badRequest("status: want 2xx, 4xx, 5xx or a code such as 409, got %q", s)
	}
	switch v.Get("order") {
	case "", "oldest":
	case "newest":
		q.Newest = true
	default:
		return badRequest("order: want oldest or newest, got %q", v.Get("order"))
	}
	if q.Operation != "" && !slices.Contains(logOperations, q.Operation) {
		return badRequest("operation: want one of %v, got %q", logOperations, q.Operation)
	}
	list, err := h.o.Log.Query(r.Context(), q)
	if err != nil {
		return err
	}
	held := func() (bool, error) {
		first, err := h.o.Log.Query(r.Context(), relay.LogQuery{Tenant: q.Tenant, Limit: 1})
		return len(first) > 0, err
	}
	if err := h.checkTenantHeld(q.Tenant, len(list) > 0 || narrowedBy(v, "after", "status", "user", "operation"), held); err != nil {
		return err
	}
	writeList(w, list)
	return nil
}

// timeParam reads a point in time: RFC 3339, or a duration ago ("2h").
func timeParam(name, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := sinceParam(s, 0)
	if err != nil {
		return t, badRequest("%s: want a time (RFC 3339) or a duration ago such as 2h, got %q", name, s)
	}
	return t, nil
}

func validStatusFilter(s string) bool {
	if len(s) != 3 {
		return false
	}
	if (s[1] == 'x' || s[1] == 'X') && (s[2] == 'x' || s[2] == 'X') {
		return s[0] >= '1' && s[0] <= '5'
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 100 && n <= 599
}

// LogDetail is one request of the provisioning log with what it caused:
// the events it produced (what changed is in their data) and every
// recorded attempt to deliver them.
type LogDetail struct {
	Entry relay.LogEntry `json:"entry"`
	// Events are the request's events as structured CloudEvents, in
	// stream order.
	Events []json.RawMessage `json:"events"`
	// Missing are the ids of events not found in the stream: not published
	// yet (they wait in the outbox), past the stream's retention, or
	// further on than the search reads.
	Missing []string `json:"missing,omitempty"`
	// Deliveries are the attempts to deliver the events, oldest first.
	Deliveries []sinks.Attempt `json:"deliveries"`
}

// How far the events of a request are searched for: from a little before
// its time (the log's clock and the event's are the same process's, read
// at different moments), at most this many events of its tenant.
const (
	eventSearchSlack = 5 * time.Second
	eventSearchMost  = 20_000
)

// GET /admin/v1/log/{key}
func (h *Handler) logEntry(w http.ResponseWriter, r *http.Request) error {
	if h.o.Log == nil {
		return unavailable("the provisioning log")
	}
	e, err := h.o.Log.Entry(r.Context(), r.PathValue("key"))
	if err != nil {
		return err
	}
	d := LogDetail{Entry: e, Events: []json.RawMessage{}, Deliveries: []sinks.Attempt{}}
	if len(e.EventIDs) > 0 && h.o.Events != nil {
		found, err := findEvents(r.Context(), h.o.Events, h.o.Trust, e.Tenant, e.EventIDs, e.Time.Add(-eventSearchSlack))
		if err != nil {
			return fmt.Errorf("reading the events of log entry %s: %w", e.Key, fromNATS(r.Context(), err))
		}
		for _, id := range e.EventIDs {
			if ev, ok := found[id]; ok {
				d.Events = append(d.Events, ev)
			} else {
				d.Missing = append(d.Missing, id)
			}
		}
		if d.Deliveries, err = sinks.AttemptsOf(r.Context(), h.o.Events, eventRefs(e, found), e.Time.Add(-eventSearchSlack), 1000); err != nil {
			return fmt.Errorf("reading the deliveries of log entry %s: %w", e.Key, fromNATS(r.Context(), err))
		}
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// eventRefs names the entry's events and the resources they are about,
// where their delivery attempts are recorded: from each event found, else
// (the event has left the stream) the entry's own resource, which is what
// most requests' events are about.
func eventRefs(e relay.LogEntry, found map[string]json.RawMessage) []sinks.EventRef {
	refs := make([]sinks.EventRef, 0, len(e.EventIDs))
	for _, id := range e.EventIDs {
		var ce struct {
			Tenant  string `json:"tenant"`
			Type    string `json:"type"`
			Subject string `json:"subject"`
		}
		if raw, ok := found[id]; ok && json.Unmarshal(raw, &ce) == nil {
			if ref, err := sinks.RefOf(id, ce.Tenant, ce.Type, ce.Subject); err == nil {
				refs = append(refs, ref)
				continue
			}
		}
		ref := sinks.EventRef{ID: id, Tenant: e.Tenant, ResourceID: e.ResourceID}
		switch e.Resource {
		case "User":
			ref.Kind = "user"
		case "Group":
			ref.Kind = "group"
		}
		refs = append(refs, ref)
	}
	return refs
}

// findEvents reads a tenant's events from a time on until it has found the
// ids, the stream ends or eventSearchMost were read; it returns those found
// as structured CloudEvents.
func findEvents(ctx context.Context, js jetstream.JetStream, trust *events.Trust, tenant string, ids []string, from time.Time) (map[string]json.RawMessage, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	found := map[string]json.RawMessage{}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.TenantSubjects(tenant)},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if err != nil {
		return nil, err
	}
	defer events.DeleteReader(stream, cons)
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		return found, nil
	}
	for read := 0; read < eventSearchMost && len(found) < len(want); {
		batch, err := cons.Fetch(min(tailBatch, eventSearchMost-read), jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return nil, err
		}
		n, pending := 0, uint64(1)
		for m := range batch.Messages() {
			n++
			if meta, err := m.Metadata(); err == nil {
				pending = meta.NumPending
			}
			id := events.MessageAttribute(m.Headers(), "id")
			if !want[id] {
				continue
			}
			seq, _ := events.StoredAt(m)
			e, err := trust.Published(seq, m.Subject(), m.Headers(), m.Data())
			if err != nil {
				continue
			}
			if b, err := events.MarshalStructured(e); err == nil {
				found[id] = b
			}
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		read += n
		if n == 0 || pending == 0 {
			break
		}
	}
	return found, nil
}
