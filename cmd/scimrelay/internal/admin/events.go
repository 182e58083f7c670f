// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/events"
)

// EventsTail streams events from the SCIMRELAY stream as NDJSON, one
// structured-mode CloudEvent per line:
//
//	GET /admin/v1/events?tenant=acme&type=user.*&since=10m&follow=true
//	GET /admin/v1/events?tenant=acme&from_seq=42
//
// since and from_seq (the tenant's event sequence) start in the past;
// without them only new events come. follow=false ends the answer once it
// has caught up.
func EventsTail(js jetstream.JetStream) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := tail(r.Context(), js, w, r); err != nil {
			var se *statusError
			if errors.As(err, &se) {
				WriteError(w, se.status, err)
				return
			}
			WriteError(w, http.StatusBadGateway, err)
		}
	})
}

// tailLine renders a message as a line of NDJSON when it passes the filters.
func tailLine(m jetstream.Msg, patterns events.Patterns, fromSeq uint64) ([]byte, bool) {
	e, err := events.FromMsg(m.Subject(), m.Headers(), m.Data())
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

func tail(ctx context.Context, js jetstream.JetStream, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	tenant := q.Get("tenant")
	if tenant != "" && !events.ValidTenant(tenant) {
		return Errorf(http.StatusBadRequest, "tenant %q is not a valid tenant name", tenant)
	}
	var patterns events.Patterns
	if t := q.Get("type"); t != "" {
		p, err := events.ParsePattern(t)
		if err != nil {
			return Errorf(http.StatusBadRequest, "type: %v", err)
		}
		patterns = events.Patterns{p}
	}
	follow := q.Get("follow") != "false"
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if tenant != "" {
		cfg.FilterSubjects = []string{events.TenantSubjects(tenant)}
	}
	var fromSeq uint64
	if s := q.Get("since"); s != "" {
		d, err := config.ParseDuration(s)
		if err != nil {
			return Errorf(http.StatusBadRequest, "since: %v", err)
		}
		start := time.Now().Add(-d)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	if s := q.Get("from_seq"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || tenant == "" {
			return Errorf(http.StatusBadRequest, "from_seq needs a tenant and a number (the tenant's event sequence)")
		}
		fromSeq = n
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", events.StreamName, err)
	}
	var last uint64
	if !follow {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		last = info.State.LastSeq
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", events.StreamName, err)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	var seen uint64 // stream sequence of the last message read
	for {
		if !follow && seen >= last {
			return nil
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if meta, err := m.Metadata(); err == nil {
				seen = meta.Sequence.Stream
			}
			if line, ok := tailLine(m, patterns, fromSeq); ok {
				if _, err := w.Write(line); err != nil {
					return nil // the client went away
				}
			}
		}
		if n > 0 {
			_ = rc.Flush()
		} else if !follow {
			return nil // caught up: nothing more for this filter
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
