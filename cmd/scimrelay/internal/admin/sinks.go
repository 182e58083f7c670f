// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/sinks"
)

// Sinks is the delivery side the admin API manages.
type Sinks interface {
	Names() []string
	Status(ctx context.Context, sink string) (sinks.Status, error)
	DeadLetterQueues(ctx context.Context) ([]sinks.DeadLetterQueue, error)
	DeadLetters(ctx context.Context, sink, after string, limit int) (sinks.DeadLetterPage, error)
	Redrive(ctx context.Context, q sinks.RedriveQuery, progress func(sinks.RedriveResult)) (sinks.RedriveResult, error)
	Replay(ctx context.Context, sink string, since time.Time, progress func(sinks.ReplayResult)) (sinks.ReplayResult, error)
}

var _ Sinks = (*sinks.Manager)(nil)

// RedriveRequest asks to deliver dead letters again: one by event id, or
// all; to the queue's own sink, or To, a configured sink that takes them
// (sinks.RedriveQuery).
type RedriveRequest struct {
	ID  string `json:"id,omitempty"`
	All bool   `json:"all,omitempty"`
	To  string `json:"to,omitempty"`
}

// ReplayRequest asks to send a sink the events since a duration ago.
type ReplayRequest struct {
	Since string `json:"since"`
}

// Kinds of the sinks' jobs.
const (
	jobRedrive = "redrive"
	jobReplay  = "replay"
)

// sink returns the sink the path names, or 404.
func (h *Handler) sink(r *http.Request) (string, error) {
	if h.o.Sinks == nil {
		return "", unavailable("sink management")
	}
	name := r.PathValue("sink")
	if !slices.Contains(h.o.Sinks.Names(), name) {
		return "", errorf(http.StatusNotFound, "%v %q", sinks.ErrUnknownSink, name)
	}
	return name, nil
}

// GET /admin/v1/sinks lists the sinks with their state.
func (h *Handler) listSinks(w http.ResponseWriter, r *http.Request) error {
	if h.o.Sinks == nil {
		return unavailable("sink management")
	}
	// A few sinks at once: each status is JetStream requests, whose
	// lateness would add up one sink after another.
	names := h.o.Sinks.Names()
	list := make([]sinks.Status, len(names))
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(4)
	for i, name := range names {
		g.Go(func() (err error) {
			if list[i], err = h.o.Sinks.Status(ctx, name); err != nil {
				return fmt.Errorf("reading the state of sink %s: %w", name, fromNATS(r.Context(), err))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	writeList(w, list)
	return nil
}

// GET /admin/v1/sinks/{sink}
func (h *Handler) sinkStatus(w http.ResponseWriter, r *http.Request) error {
	name, err := h.sink(r)
	if err != nil {
		return err
	}
	st, err := h.o.Sinks.Status(r.Context(), name)
	if err != nil {
		return fmt.Errorf("reading the state of sink %s: %w", name, fromNATS(r.Context(), err))
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// deadLetterQueue returns the dead-letter queue the path names: a
// configured sink's, or one a sink no longer configured left; or 404.
func (h *Handler) deadLetterQueue(r *http.Request) (sinks.DeadLetterQueue, error) {
	if h.o.Sinks == nil {
		return sinks.DeadLetterQueue{}, unavailable("sink management")
	}
	name := r.PathValue("sink")
	queues, err := h.o.Sinks.DeadLetterQueues(r.Context())
	if err != nil {
		return sinks.DeadLetterQueue{}, fromNATS(r.Context(), err)
	}
	for _, q := range queues {
		if q.Sink == name {
			return q, nil
		}
	}
	return sinks.DeadLetterQueue{}, errorf(http.StatusNotFound, "%v %q, nor dead letters under that name", sinks.ErrUnknownSink, name)
}

// GET /admin/v1/dlq lists the dead-letter queues: every configured sink's,
// and those sinks no longer configured left with dead letters in them.
func (h *Handler) listDeadLetterQueues(w http.ResponseWriter, r *http.Request) error {
	if h.o.Sinks == nil {
		return unavailable("sink management")
	}
	queues, err := h.o.Sinks.DeadLetterQueues(r.Context())
	if err != nil {
		return fromNATS(r.Context(), err)
	}
	writeList(w, queues)
	return nil
}

// GET /admin/v1/sinks/{sink}/dlq?after=&limit=
func (h *Handler) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	queue, err := h.deadLetterQueue(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := limitParam(q.Get("limit"), sinks.DefaultPageSize, sinks.MaxPageSize)
	if err != nil {
		return err
	}
	page, err := h.o.Sinks.DeadLetters(r.Context(), queue.Sink, q.Get("after"), limit)
	if err != nil {
		return fromNATS(r.Context(), err)
	}
	if page.DeadLetters == nil {
		page.DeadLetters = []sinks.DeadLetter{} // an empty listing is [], never null
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// POST /admin/v1/sinks/{sink}/dlq/redrive starts a redrive job.
func (h *Handler) redrive(w http.ResponseWriter, r *http.Request) error {
	q, err := h.deadLetterQueue(r)
	if err != nil {
		return err
	}
	var req RedriveRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.All == (req.ID != ""):
		return badRequest("give either an id or all")
	case req.To == "" && !q.Configured:
		return badRequest("sink %s is no longer configured: give to, a configured sink to deliver its dead letters to", q.Sink)
	case req.To != "" && !slices.Contains(h.o.Sinks.Names(), req.To):
		return badRequest("to: %v %q", sinks.ErrUnknownSink, req.To)
	}
	query := sinks.RedriveQuery{Sink: q.Sink, ID: req.ID, To: req.To}
	return h.startJob(w, r, jobRedrive, q.Sink, func(ctx context.Context, report func(any)) (any, error) {
		return h.o.Sinks.Redrive(ctx, query, func(p sinks.RedriveResult) { report(p) })
	}, "id", req.ID, "all", req.All, "to", req.To)
}

// POST /admin/v1/sinks/{sink}/replay starts a replay job.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request) error {
	name, err := h.sink(r)
	if err != nil {
		return err
	}
	var req ReplayRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	d, err := config.ParseDuration(req.Since)
	if err != nil {
		return badRequest("since: want a duration such as 24h, got %q (%v)", req.Since, err)
	}
	if d <= 0 {
		return badRequest("since: want a duration such as 24h, got %q", req.Since)
	}
	since := time.Now().Add(-d)
	return h.startJob(w, r, jobReplay, name, func(ctx context.Context, report func(any)) (any, error) {
		return h.o.Sinks.Replay(ctx, name, since, func(p sinks.ReplayResult) { report(p) })
	}, "since", req.Since)
}

// GET /admin/v1/deliveries?sink=&tenant=&since=1h&until=&status=4xx&after=&limit=
//
// Oldest first; after (the seq of the last attempt read) pages on, and
// a page ends between records (sinks.AttemptQuery.Limit).
func (h *Handler) deliveries(w http.ResponseWriter, r *http.Request) error {
	if h.o.Attempts == nil {
		return unavailable("the delivery log")
	}
	v := r.URL.Query()
	q := sinks.AttemptQuery{Sink: v.Get("sink"), Tenant: v.Get("tenant")}
	if q.Sink != "" && !events.ValidName(q.Sink) {
		return errorf(http.StatusNotFound, "%v %q", sinks.ErrUnknownSink, q.Sink)
	}
	if q.Tenant != "" && !events.ValidName(q.Tenant) {
		return badRequest("tenant: not a tenant name: %q", q.Tenant)
	}
	var err error
	if q.Since, err = sinceParam(v.Get("since"), time.Hour); err != nil {
		return err
	}
	if s := v.Get("until"); s != "" {
		if q.Until, err = timeParam("until", s); err != nil {
			return err
		}
	}
	if s := v.Get("after"); s != "" {
		if q.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			return badRequest("after: want the seq of an attempt, got %q", s)
		}
	}
	if s := v.Get("status"); s != "" {
		if !validStatusFilter(s) {
			return badRequest("status: want 2xx, 4xx, 5xx or a code such as 409, got %q", s)
		}
		q.Match = func(at *sinks.Attempt) bool { return relay.StatusMatches(s, at.Status) }
	}
	if q.Limit, err = limitParam(v.Get("limit"), 1000, 100_000); err != nil {
		return err
	}
	list, err := h.o.Attempts(r.Context(), q)
	if err != nil {
		return fromNATS(r.Context(), err)
	}
	held := func() (bool, error) {
		first, err := h.o.Attempts(r.Context(), sinks.AttemptQuery{Tenant: q.Tenant, Limit: 1})
		return len(first) > 0, fromNATS(r.Context(), err)
	}
	if err := h.checkTenantHeld(q.Tenant, len(list) > 0 || narrowedBy(v, "after", "status", "sink"), held); err != nil {
		return err
	}
	// A sink removed from relay.yaml keeps its attempts until sinks
	// forget, and they are read by its name (before, the name was
	// refused 404 while its attempts were listed without the filter); a
	// name with none stored is a misspelt one.
	if len(list) == 0 && q.Sink != "" && h.o.Sinks != nil && !slices.Contains(h.o.Sinks.Names(), q.Sink) {
		first, err := h.o.Attempts(r.Context(), sinks.AttemptQuery{Sink: q.Sink, Limit: 1})
		if err != nil {
			return fromNATS(r.Context(), err)
		}
		if len(first) == 0 {
			return errorf(http.StatusNotFound, "%v %q", sinks.ErrUnknownSink, q.Sink)
		}
	}
	writeList(w, list)
	return nil
}

// limitParam reads a limit query parameter: def when absent, at most most.
func limitParam(s string, def, most int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, badRequest("limit: want a positive number, got %q", s)
	}
	return min(n, most), nil
}

// boolParam reads a boolean query parameter as strconv.ParseBool does
// (true, false, 1, 0, t, f in any of their cases); def when absent. Any
// other value is refused: one taken as the default (follow=FALSE once
// followed for ever) is a silent change of what the caller asked.
func boolParam(name, s string, def bool) (bool, error) {
	if s == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return def, badRequest("%s: want true or false, got %q", name, s)
	}
	return b, nil
}

// sinceParam reads a since query parameter, a duration ago; def when absent.
func sinceParam(s string, def time.Duration) (time.Time, error) {
	if s == "" {
		return time.Now().Add(-def), nil
	}
	d, err := config.ParseDuration(s)
	if err != nil {
		return time.Time{}, badRequest("since: %v", err)
	}
	return time.Now().Add(-d), nil
}
