// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/relay/events"
)

// How a tail reads the stream: batches of up to tailBatch, waiting up to
// tailWait for one; after a failed fetch it waits from tailRetryMin,
// doubling to tailRetryMax, so that a NATS outage costs a request every few
// seconds rather than a busy loop.
const (
	tailBatch    = 256
	tailWait     = time.Second
	tailRetryMin = 100 * time.Millisecond
	tailRetryMax = 5 * time.Second
	// tailEmptyMax is how many empty batches in a row a tail that is not
	// following accepts while JetStream says events wait.
	tailEmptyMax = 3
)

// tailEvents streams events from the SCIMRELAY stream as NDJSON, one
// structured-mode CloudEvent per line:
//
//	GET /admin/v1/events?tenant=acme&type=user.*&since=10m&follow=true
//	GET /admin/v1/events?tenant=acme&from_seq=42
//
// since and from_seq (the tenant's event sequence) start in the past;
// without them only new events come. follow=false ends the answer as soon
// as no matching event is pending.
func (h *Handler) tailEvents(w http.ResponseWriter, r *http.Request) error {
	if h.o.Events == nil {
		return unavailable("the event stream")
	}
	q := r.URL.Query()
	tenant := q.Get("tenant")
	if tenant != "" && !events.ValidName(tenant) {
		return badRequest("tenant: %q is not a tenant name (%s)", tenant, events.NameRule)
	}
	var patterns events.Patterns
	if t := q.Get("type"); t != "" {
		p, err := events.ParsePattern(t)
		if err != nil {
			return badRequest("type: %v", err)
		}
		patterns = events.Patterns{p}
	}
	follow, err := boolParam("follow", q.Get("follow"), true)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{
		// One attempt at making the consumer per fetch: the tail's own
		// retry waits, and stops when the caller goes.
		MaxResetAttempts:  1,
		InactiveThreshold: 30 * time.Second,
	}
	if tenant != "" {
		cfg.FilterSubjects = []string{events.TenantSubjects(tenant)}
	}
	if q.Get("since") != "" && q.Get("from_seq") != "" {
		return badRequest("since and from_seq exclude each other")
	}
	if s := q.Get("since"); s != "" {
		start, err := sinceParam(s, 0)
		if err != nil {
			return err
		}
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	var fromSeq uint64
	if s := q.Get("from_seq"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || tenant == "" {
			return badRequest("from_seq needs a tenant and a number (the tenant's event sequence)")
		}
		fromSeq = n
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	newOnly := q.Get("since") == "" && q.Get("from_seq") == ""
	asked := time.Now()
	// open makes the tail's consumer; again is a later attempt, once NATS
	// is back.
	open := func(ctx context.Context, again bool) (jetstream.Consumer, error) {
		stream, err := h.o.Events.Stream(ctx, events.StreamName)
		if err != nil {
			return nil, fmt.Errorf("opening stream %s: %w", events.StreamName, fromNATS(ctx, err))
		}
		cfg := cfg
		switch {
		case newOnly && !again:
			// New events only: those after the last one now, so that none
			// published once the caller has the answer is missed.
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = stream.CachedInfo().State.LastSeq + 1
		case newOnly:
			// Opened once NATS is back: the outbox may have published what
			// was written meanwhile, which is new to the caller too.
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &asked
		}
		cons, err := stream.OrderedConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", events.StreamName, fromNATS(ctx, err))
		}
		return cons, nil
	}
	cons, err := await(r.Context(), func() (jetstream.Consumer, error) { return open(r.Context(), false) })
	if err != nil {
		// A following tail waits for NATS, as it does once it has begun;
		// one that does not follow answers now that it cannot, and so
		// does one of a tenant not configured, which only NATS could say
		// holds events.
		if !follow || natsAway(err) == "" || r.Context().Err() != nil || h.checkTenant(tenant, false) != nil {
			return err
		}
		h.log.WarnContext(r.Context(), "tailing events: NATS is away; the tail begins when it is back", append(requestIDs(r.Context()), "err", err)...)
	}
	if cons != nil {
		// A tenant not configured is tailed only for the events the
		// stream still holds of it from the start asked for: none new
		// come for it.
		ci := cons.CachedInfo()
		if err := h.checkTenant(tenant, ci != nil && ci.NumPending > 0); err != nil {
			return err
		}
	}
	NoReadDeadline(w) // the tail lasts as long as its caller reads
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	reopen := func(ctx context.Context) (jetstream.Consumer, error) { return open(ctx, true) }
	return h.tail(r.Context(), cons, reopen, w, follow, func(m jetstream.Msg) ([]byte, bool) { return tailLine(h.o.Trust, m, patterns, fromSeq) })
}

// tail copies the consumer's messages to w as render makes them, until
// ctx ends or, when not following, until nothing is pending. Without a
// consumer (NATS was away) it makes one with open first, retrying as it
// does a fetch.
func (h *Handler) tail(ctx context.Context, cons jetstream.Consumer, open func(context.Context) (jetstream.Consumer, error), w http.ResponseWriter, follow bool, render func(jetstream.Msg) ([]byte, bool)) error {
	rc := http.NewResponseController(w)
	retry, empty := tailRetryMin, 0
	// failed says whether to try again: a following tail waits and does;
	// one that does not follow ends with the error (NATS went away while
	// it read), which cuts its answer short.
	failed := func(err error) (bool, error) {
		if ctx.Err() != nil {
			return false, nil
		}
		if !follow {
			return false, fmt.Errorf("reading stream %s: %w", events.StreamName, fromNATS(ctx, err))
		}
		h.log.WarnContext(ctx, "tailing events: reading the stream failed", append(requestIDs(ctx), "err", err, "retry_in", retry)...)
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(retry):
		}
		retry = min(2*retry, tailRetryMax)
		return true, nil
	}
	for ctx.Err() == nil {
		if cons == nil {
			c, err := await(ctx, func() (jetstream.Consumer, error) { return open(ctx) })
			if err != nil {
				if again, err := failed(err); !again {
					return err
				}
				continue
			}
			cons = c
		}
		// nats.go's fetch takes no context and can wait for NATS for
		// seconds (10 to make its consumer): a stop or a caller that went
		// does not wait for it.
		batch, err := await(ctx, func() (jetstream.MessageBatch, error) {
			return cons.Fetch(tailBatch, jetstream.FetchMaxWait(h.tailWait))
		})
		if err != nil {
			if again, err := failed(err); !again {
				return err
			}
			continue
		}
		// Each fetch makes a consumer at the tail's position, which says
		// how many events are pending: with none, a tail that does not
		// follow is done without waiting for the fetch.
		if ci := cons.CachedInfo(); !follow && ci != nil && ci.NumPending == 0 {
			return nil
		}
		n := 0
	read:
		for {
			var m jetstream.Msg
			select {
			case <-ctx.Done():
				return nil
			case msg, ok := <-batch.Messages():
				if !ok {
					break read
				}
				m = msg
			}
			n++
			if line, ok := render(m); ok {
				if _, err := w.Write(line); err != nil {
					return nil // the caller went away
				}
			}
			if meta, err := m.Metadata(); err == nil && !follow && meta.NumPending == 0 {
				_ = rc.Flush()
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			if again, err := failed(err); !again {
				return err
			}
			continue
		}
		retry = tailRetryMin
		if n > 0 {
			empty = 0
			_ = rc.Flush()
		} else if !follow {
			if empty++; empty >= tailEmptyMax {
				return fmt.Errorf("events wait in stream %s but none arrived in %s", events.StreamName, tailEmptyMax*h.tailWait)
			}
		}
	}
	return nil
}

// await returns f's result, or ctx's error as soon as ctx ends, leaving f
// to end by itself: for a call into nats.go that takes no context, or that
// waits for a connection that is coming back without heeding one.
func await[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// tailLine renders a message as a line of NDJSON when it is an event the
// relay published (events.Published) and passes the filters.
func tailLine(trust *events.Trust, m jetstream.Msg, patterns events.Patterns, fromSeq uint64) ([]byte, bool) {
	seq, _ := events.StoredAt(m)
	e, err := trust.Published(seq, m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return nil, false
	}
	if a, err := events.ActionOf(e); err != nil || !patterns.Match(a) {
		return nil, false
	}
	if fromSeq > 0 {
		if seq, err := events.Sequence(e); err != nil || seq < fromSeq {
			return nil, false
		}
	}
	line, err := events.MarshalStructured(e)
	if err != nil {
		return nil, false
	}
	return append(line, '\n'), true
}
