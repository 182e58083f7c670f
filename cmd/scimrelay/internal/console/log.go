// SPDX-License-Identifier: Apache-2.0

package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/sinks"
)

// logPageSize is how many requests a page of the log shows.
const logPageSize = 100

// Choices of the log's search form.
var (
	logWindows    = []string{"15m", "1h", "24h", "7d", "30d"}
	logStatuses   = []string{"2xx", "4xx", "5xx"}
	logOperations = admin.LogOperations()
)

// logData is a page of the provisioning log, newest first.
type logData struct {
	Tenants    []string
	Windows    []string
	Statuses   []string
	Operations []string
	// The search as asked: tenant, user, status, operation, since, until.
	Tenant, User, Status, Operation, Since, Until string
	Entries                                       []relay.LogEntry
	// Older is the URL of the next page, older entries; "" on the last.
	Older string
}

// GET /ui/log?tenant=&user=&status=&operation=&since=&until=&after=
func (c *Console) logPage(w http.ResponseWriter, r *http.Request, s *session) error {
	api, in := c.api(s), r.URL.Query()
	d := logData{Windows: logWindows, Statuses: logStatuses, Operations: logOperations,
		Tenant: in.Get("tenant"), User: strings.TrimSpace(in.Get("user")), Status: in.Get("status"),
		Operation: in.Get("operation"), Since: in.Get("since"), Until: in.Get("until")}
	if d.Since == "" {
		d.Since = "24h"
	}
	tenants, err := api.Tenants(r.Context())
	if err != nil {
		return err
	}
	for _, t := range tenants {
		d.Tenants = append(d.Tenants, t.Name)
	}
	q := url.Values{"order": {"newest"}, "limit": {"100"}, "since": {d.Since}}
	for k, v := range map[string]string{"tenant": d.Tenant, "user": d.User, "status": d.Status, "operation": d.Operation, "after": in.Get("after")} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if d.Until != "" {
		// A datetime-local input says no zone: the form says UTC.
		until, err := time.Parse("2006-01-02T15:04", d.Until)
		if err != nil {
			return errorf(http.StatusBadRequest, "until: want a date and time such as 2025-06-01T14:30 (UTC), got %q", d.Until)
		}
		q.Set("until", until.Format(time.RFC3339))
	}
	if d.Entries, err = api.Log(r.Context(), q); err != nil {
		return err
	}
	if len(d.Entries) == logPageSize {
		next := r.URL.Query()
		next.Set("after", d.Entries[len(d.Entries)-1].Key)
		d.Older = Prefix + "log?" + next.Encode()
	}
	c.render(w, r, http.StatusOK, "log", page{Title: "Provisioning log", Nav: "log", CSRF: s.csrf, Data: d})
	return nil
}

// logEntryData is one request: what it changed, its events, their
// deliveries per sink.
type logEntryData struct {
	Entry   relay.LogEntry
	Events  []shownEvent
	Missing []string
	// Deliveries are grouped by sink, sinks in name order.
	Deliveries []sinkAttempts
}

// shownEvent is an event as the detail page shows it: what changed, and
// the CloudEvent whole.
type shownEvent struct {
	ID, Type, Subject string
	Time              time.Time
	Data              events.Data
	Raw               json.RawMessage
}

type sinkAttempts struct {
	Sink string
	// Gone: the sink is no longer configured (its dead letters are kept,
	// listed on the sinks page); it has no page of its own to link to.
	Gone     bool
	Attempts []sinks.Attempt
}

// GET /ui/log/{key}
func (c *Console) logEntry(w http.ResponseWriter, r *http.Request, s *session) error {
	api := c.api(s)
	detail, err := api.LogEntry(r.Context(), r.PathValue("key"))
	if err != nil {
		return err
	}
	d := showDetail(detail)
	if len(d.Deliveries) > 0 {
		// Which sinks are still configured; without an answer (NATS
		// away) each keeps its link.
		if list, err := api.Sinks(r.Context()); err == nil {
			for i := range d.Deliveries {
				d.Deliveries[i].Gone = !slices.ContainsFunc(list, func(st sinks.Status) bool { return st.Name == d.Deliveries[i].Sink })
			}
		}
	}
	// An entry written before the relay made every request id its own may
	// hold a client's, bidi control characters and all.
	id := detail.Entry.RequestID
	c.render(w, r, http.StatusOK, "logentry", page{Title: "Request " + id, Heading: "Request " + isolate(id), Nav: "log", CSRF: s.csrf, Data: d})
	return nil
}

func showDetail(detail admin.LogDetail) logEntryData {
	d := logEntryData{Entry: detail.Entry, Missing: detail.Missing}
	for _, raw := range detail.Events {
		var e struct {
			ID      string      `json:"id"`
			Type    string      `json:"type"`
			Subject string      `json:"subject"`
			Time    time.Time   `json:"time"`
			Data    events.Data `json:"data"`
		}
		_ = json.Unmarshal(raw, &e) // shown raw whatever it holds
		d.Events = append(d.Events, shownEvent{ID: e.ID, Type: strings.TrimPrefix(e.Type, "io.scimrelay."), Subject: e.Subject, Time: e.Time, Data: e.Data, Raw: raw})
	}
	bySink := map[string][]sinks.Attempt{}
	for _, a := range detail.Deliveries {
		bySink[a.Sink] = append(bySink[a.Sink], a)
	}
	for sink, list := range bySink {
		d.Deliveries = append(d.Deliveries, sinkAttempts{Sink: sink, Attempts: list})
	}
	slices.SortFunc(d.Deliveries, func(a, b sinkAttempts) int { return strings.Compare(a.Sink, b.Sink) })
	return d
}
