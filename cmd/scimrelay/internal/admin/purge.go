// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/natsbus"
	"github.com/scimrelay/scimrelay/sinks"
)

// Purger deletes what a tenant no longer configured left: Begin marks it
// (refusing a configured tenant, and a name that holds nothing, at once),
// Purge deletes, in a job.
type Purger interface {
	Begin(ctx context.Context, tenant string) error
	Purge(ctx context.Context, tenant string, progress func(PurgeResult)) (PurgeResult, error)
}

// PurgeResult is what a tenant's purge deleted, by kind; while it runs,
// what it deleted so far and its step.
type PurgeResult struct {
	Tenant string `json:"tenant"`
	// Purged is what it deleted from the data file; its subscribers are
	// those removed from the embedded server too.
	relay.Purged
	// Events counts the tenant's events purged from the stream SCIMRELAY.
	Events uint64 `json:"events"`
	// Attempts counts the delivery attempts of its events purged from
	// SCIMRELAY_DELIVERIES.
	Attempts uint64 `json:"delivery_attempts"`
	// DeadLetters counts, by sink, the tenant's dead letters deleted from
	// the dead-letter queues (whose subjects name the sink alone: each is
	// read through).
	DeadLetters map[string]int `json:"dead_letters,omitempty"`
	// Step is what a purge under way is doing.
	Step string `json:"step,omitempty"`
}

// PurgeCount is one kind of what a purge deleted, as the CLI prints it
// and the console shows it.
type PurgeCount struct {
	What  string
	Count string
}

// Counts lists what the purge deleted, one kind a line; the subscribers
// are named after their count.
func (r PurgeResult) Counts() []PurgeCount {
	subscribers := fmt.Sprint(len(r.Subscribers))
	if len(r.Subscribers) > 0 {
		subscribers += " (" + strings.Join(r.Subscribers, ", ") + ")"
	}
	return []PurgeCount{
		{"users", fmt.Sprint(r.Users)}, {"groups", fmt.Sprint(r.Groups)}, {"memberships", fmt.Sprint(r.Memberships)},
		{"keys (resources, memberships, indexes)", fmt.Sprint(r.Keys)},
		{"SCIM tokens", fmt.Sprint(r.Tokens)}, {"OAuth clients", fmt.Sprint(r.Clients)}, {"NATS subscribers", subscribers},
		{"provisioning log entries", fmt.Sprint(r.LogEntries)},
		{"events in the outbox (not yet published, or published and kept)", fmt.Sprint(r.Outbox)}, {"events in quarantine", fmt.Sprint(r.Quarantined)},
		{"events in the stream", fmt.Sprint(r.Events)}, {"delivery attempts", fmt.Sprint(r.Attempts)},
	}
}

// DeadLettersDeleted says, a sentence a sink in the sinks' name order,
// how many of the tenant's dead letters the purge deleted from its queue.
func (r PurgeResult) DeadLettersDeleted() []string {
	sinks := slices.Sorted(maps.Keys(r.DeadLetters))
	out := make([]string, len(sinks))
	for i, sink := range sinks {
		letters := "dead letters"
		if r.DeadLetters[sink] == 1 {
			letters = "dead letter"
		}
		out[i] = fmt.Sprintf("deleted %d %s of %s from the queue of sink %s", r.DeadLetters[sink], letters, r.Tenant, sink)
	}
	return out
}

// Steps of a purge.
const (
	stepSubscribers = "removing its NATS subscribers"
	stepDataFile    = "deleting its data from the data file"
	stepWorkers     = "telling the delivery workers to deliver none of its events"
	stepStreams     = "purging its events and delivery attempts from NATS"
	stepDeadLetters = "deleting its dead letters"
)

// TenantSinks is what a purge asks of the sinks (sinks.Manager): that the
// delivery workers deliver none of a tenant's events numbered up to seq
// and stored by then, and the tenant's dead letters deleted from every
// sink's queue.
type TenantSinks interface {
	AnnouncePurge(ctx context.Context, tenant string, seq uint64) error
	DeleteTenantDeadLetters(ctx context.Context, tenant string) (map[string]int, error)
}

var _ TenantSinks = (*sinks.Manager)(nil)

// TenantPurger purges tenants: the data file's part in the store, the
// embedded server's subscribers through the registry (as subscriber
// remove does), the tenant's events in the stream and its delivery
// attempts.
type TenantPurger struct {
	store       *relay.Store
	log         *relay.RequestLog
	publisher   *relay.Publisher
	subscribers *SubscriberRegistry
	nc          *nats.Conn
	sinks       TenantSinks
}

var _ Purger = (*TenantPurger)(nil)

// NewTenantPurger returns the purger of store's tenants; log is store's
// provisioning log, publisher its outbox's publisher, and nc the
// connection to the NATS that holds the streams.
func NewTenantPurger(store *relay.Store, log *relay.RequestLog, publisher *relay.Publisher, subscribers *SubscriberRegistry, nc *nats.Conn, sinks TenantSinks) *TenantPurger {
	return &TenantPurger{store: store, log: log, publisher: publisher, subscribers: subscribers, nc: nc, sinks: sinks}
}

// Begin marks the tenant as being purged.
func (p *TenantPurger) Begin(ctx context.Context, tenant string) error {
	err := p.store.BeginPurge(ctx, tenant)
	switch {
	case errors.Is(err, relay.ErrTenantConfigured):
		return errorf(http.StatusConflict, "tenant %s is configured: remove it from relay.yaml and reload (scimrelay reload) before purging it", tenant)
	case errors.Is(err, relay.ErrNothingToPurge):
		return errorf(http.StatusNotFound, "no tenant %q to purge: the data file holds nothing under that name (tenants configured: %s)", tenant, TenantNames(p.store.Tenants()))
	}
	return err
}

// maxStreamPurge bounds each purge of a stream by subject.
const maxStreamPurge = 2 * time.Minute

// Purge deletes what tenant, which Begin marked, left: its NATS
// subscribers first (their connections close, their consumers go), then
// its data in the data file; once the publisher has let go of every
// outbox row it read (none of the tenant's is published after), it tells
// the delivery workers to deliver none of its events
// (sinks.Manager.AnnouncePurge: those they took from the stream already),
// then purges its events in the stream and its delivery attempts; it counts the dead
// letters it leaves, and ends the purge. Stopped half-way, run again it
// finishes, and counts what that run deleted.
func (p *TenantPurger) Purge(ctx context.Context, tenant string, progress func(PurgeResult)) (PurgeResult, error) {
	res := PurgeResult{Tenant: tenant}
	report := func(step string) {
		res.Step = step
		if progress != nil {
			progress(res)
		}
	}
	report(stepSubscribers)
	subs, err := p.store.SubscribersOf(ctx, tenant)
	if err != nil {
		return res, err
	}
	var removed []string
	for _, name := range subs {
		// With an external NATS the relay admitted none: the store
		// deletes their records with the rest.
		_, err := p.subscribers.RemoveSubscriber(ctx, name)
		switch {
		case err == nil:
			removed = append(removed, name)
		case !errors.Is(err, ErrExternalNATS) && !errors.Is(err, relay.ErrSubscriberNotFound):
			return res, fmt.Errorf("removing subscriber %s of tenant %s: %w", name, tenant, err)
		}
	}
	res.Subscribers = removed
	report(stepDataFile)
	purged, err := p.store.Purge(ctx, tenant, p.log, func(d relay.Purged) {
		res.Purged = d
		res.Subscribers = append(slices.Clone(removed), d.Subscribers...)
		report(stepDataFile)
	})
	res.Purged = purged
	res.Subscribers = append(removed, purged.Subscribers...)
	if err != nil {
		return res, err
	}
	// None of the tenant's outbox rows is left; the publisher finishes the
	// window it was sending, so none of its events reaches the stream
	// after the purge. Before the workers' notice, so that the stream's
	// purge follows the notice's wait at once, while the notice is in the
	// workers' stream (a worker started meanwhile reads it).
	if p.publisher != nil {
		p.publisher.AwaitWindow()
	}
	if p.sinks != nil {
		// Before the stream's purge: what a worker took from the stream
		// already is not delivered once it has read this.
		report(stepWorkers)
		seq, err := p.store.PurgedSequence(tenant)
		if err != nil {
			return res, err
		}
		if err := p.sinks.AnnouncePurge(ctx, tenant, seq); err != nil {
			return res, fromNATS(ctx, err)
		}
	}
	report(stepStreams)
	for _, s := range []struct {
		stream, filter string
		n              *uint64
	}{{events.StreamName, events.TenantSubjects(tenant), &res.Events}, {sinks.DeliveriesStream, sinks.TenantAttempts(tenant), &res.Attempts}} {
		sctx, cancel := context.WithTimeout(ctx, maxStreamPurge)
		*s.n, err = natsbus.PurgeSubject(sctx, p.nc, s.stream, s.filter)
		cancel()
		if err != nil {
			return res, fromNATS(ctx, err)
		}
	}
	report(stepDeadLetters)
	if p.sinks != nil {
		if res.DeadLetters, err = p.sinks.DeleteTenantDeadLetters(ctx, tenant); err != nil {
			return res, fromNATS(ctx, err)
		}
	}
	if err := p.store.EndPurge(ctx, tenant); err != nil {
		return res, err
	}
	res.Step = ""
	return res, nil
}

// jobPurge is the kind of a purge's job.
const jobPurge = "purge"

// POST /admin/v1/tenants/{tenant}/purge starts a purge job: refused at
// once (409) for a tenant that is configured, and (404) for a name under
// which nothing is stored. It is audited when it starts (outcome
// started: a purge cut short by a crash has deleted something, and the
// run that finishes it counts only what is left) and when it ends, with
// what it deleted.
func (h *Handler) purgeTenant(w http.ResponseWriter, r *http.Request) error {
	if h.o.Purge == nil {
		return unavailable("purging a tenant")
	}
	tenant := r.PathValue("tenant")
	if err := h.o.Purge.Begin(r.Context(), tenant); err != nil {
		return err
	}
	started := make(chan string, 1) // the job's id, once it has one
	j, err := h.newJob(jobPurge, tenant, func(ctx context.Context, report func(any)) (any, error) {
		res, err := h.o.Purge.Purge(ctx, tenant, func(p PurgeResult) { report(p) })
		outcome := "done"
		if err != nil {
			outcome = "failed"
		}
		h.audit(r, actionTenantPurge, "tenant", tenant, "job", <-started, "outcome", outcome,
			"users", res.Users, "groups", res.Groups, "memberships", res.Memberships, "keys", res.Keys,
			"tokens", res.Tokens, "clients", res.Clients, "subscribers", res.Subscribers,
			"log_entries", res.LogEntries, "outbox_events", res.Outbox, "quarantined_events", res.Quarantined,
			"events", res.Events, "delivery_attempts", res.Attempts, "dead_letters", res.DeadLetters)
		return res, err
	})
	if err != nil {
		return err
	}
	h.audit(r, actionTenantPurge, "tenant", tenant, "job", j.ID, "outcome", "started")
	started <- j.ID
	acceptJob(w, j)
	return nil
}
