// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Status is what an operator sees of a sink: where it delivers, what it
// selects, how far behind it is and how it fares.
type Status struct {
	Name string `json:"name"`
	// URL is the sink's URL without credentials, query values or its path
	// past the first segment, which may be secrets (a function key, a
	// signed query, a token in the path): RedactURL.
	URL     string   `json:"url"`
	Events  []string `json:"events,omitempty"`  // empty: every type
	Tenants []string `json:"tenants,omitempty"` // empty: every tenant
	Format  string   `json:"format"`
	// Pending events wait in the stream; InFlight ones are being
	// delivered or wait in a worker (summed over the sink's partitions;
	// events of a parked resource count in neither).
	Pending  uint64 `json:"pending"`
	InFlight int    `json:"in_flight"`
	// Parked counts the resources whose events wait to be read back from
	// the stream, after a failure (a receiver down) or a burst.
	Parked int `json:"parked"`
	// OldestUndelivered is when the oldest event not yet delivered (nor
	// dead-lettered) was stored, parked resources' included; nil when
	// none waits. Its age is the metric
	// scimrelay_sink_oldest_undelivered_age_seconds, of every partition.
	OldestUndelivered *time.Time `json:"oldest_undelivered,omitempty"`
	DeadLetters       uint64     `json:"dead_letters"`
	// Attempts5m and Attempts1h count the delivery attempts of the last
	// five minutes and of the last hour, whatever their outcome; the
	// events of one resource sent in one request are one attempt.
	Attempts5m uint64 `json:"attempts_5m"`
	Attempts1h uint64 `json:"attempts_1h"`
	// LastAttempt is the latest attempt recorded; nil when none is.
	LastAttempt *Attempt `json:"last_attempt,omitempty"`
	// NotSetUp is set for a sink this process has not set up: its setup
	// at start, or at the reload that added it, failed (NATS away; on a
	// delivery worker, the front end had not made its bucket yet), and a
	// reload or restart tries again. Nothing here delivers it, and its
	// backlog is not known here: Pending, InFlight, Parked and
	// OldestUndelivered say nothing (they said 0 while events waited).
	NotSetUp bool `json:"not_set_up,omitempty"`
}

// Status returns the state of the sink named.
func (m *Manager) Status(ctx context.Context, name string) (Status, error) {
	s, err := m.sink(name)
	if err != nil {
		return Status{}, err
	}
	st := Status{Name: name, URL: RedactURL(s.cfg.URL), Events: s.cfg.Events, Tenants: s.cfg.Tenants, Format: s.cfg.Format}
	switch {
	case s.cfg.Batch != nil:
		st.Format = formatBatch
	case st.Format == "":
		st.Format = "binary"
	}
	// Its figures are read at once, each a JetStream request or a few:
	// one after another, a slow NATS's lateness adds up (worker.backlog).
	g, gctx := errgroup.WithContext(ctx)
	if s.worker == nil {
		st.NotSetUp = true
	} else {
		g.Go(func() error {
			b, err := s.worker.backlog(gctx)
			if err != nil {
				return err
			}
			st.Pending, st.InFlight, st.Parked = b.pending, b.inFlight, b.parked
			if !b.oldest.IsZero() {
				st.OldestUndelivered = &b.oldest
			}
			return nil
		})
	}
	now := time.Now()
	g.Go(func() (err error) {
		st.DeadLetters, err = m.dlq.count(gctx, name)
		return err
	})
	g.Go(func() (err error) {
		st.Attempts5m, err = countAttempts(gctx, m.o.JS, name, now.Add(-5*time.Minute))
		return err
	})
	g.Go(func() (err error) {
		st.Attempts1h, err = countAttempts(gctx, m.o.JS, name, now.Add(-time.Hour))
		return err
	})
	g.Go(func() (err error) {
		st.LastAttempt, err = lastAttempt(gctx, m.o.JS, name)
		return err
	})
	return st, g.Wait()
}

// lastAttempt reads the latest attempt recorded for a sink, nil when none is.
func lastAttempt(ctx context.Context, js jetstream.JetStream, sink string) (*Attempt, error) {
	st, err := js.Stream(ctx, deliveriesStream)
	if err != nil {
		return nil, err
	}
	var last *jetstream.RawStreamMsg
	for _, subject := range sinkAttemptSubjects(sink) {
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if last == nil || m.Sequence > last.Sequence {
			last = m
		}
	}
	if last == nil {
		return nil, nil
	}
	var rec attemptRecord
	if err := json.Unmarshal(last.Data, &rec); err != nil {
		return nil, nil // not ours to show
	}
	all := rec.attempts()
	return &all[len(all)-1], nil
}

// knownScheme: schemes RedactURL shows before an opaque "…@host" (any
// other is taken for a token written as user information).
var knownScheme = map[string]bool{"http": true, "https": true, "mailto": true, "nats": true, "tls": true, "ws": true, "wss": true}

// RedactURL is a sink's URL as the admin API, logs and errors show it
// (and public_url as a problem with it shows it): its user information
// (a username alone is often a token, and so is what is before an "@" in
// a URL written without its scheme) and its query values are "redacted",
// and so is a query part that may be a token whole (no "=", no value, "="
// alone, a ";"); its path is kept only to its first segment, the rest
// shown as "/…" (Slack, Discord, Teams and Zapier put the webhook's token
// in the path: /services/T/B/<token>, /api/webhooks/<id>/<token>); the
// fragment is dropped.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unreadable URL)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.Opaque != "" { // "scheme:rest", no host: the rest may be anything
		if _, rest, _ := strings.Cut(raw, ":"); strings.Contains(rest, "@") && !knownScheme[u.Scheme] {
			// TOKEN:@host or TOKEN:PASSWORD@host written without its
			// scheme: the "scheme" is the user information (its password
			// may hold a "/", "?" or "#", which end the opaque part).
			u.Scheme = "redacted"
		}
		u.Opaque = "…"
	}
	u.Fragment, u.RawFragment = "", ""
	query := ""
	if u.RawQuery != "" {
		// Keys kept, each value "redacted"; a part without "=" may be the
		// whole token (https://host/hook?TOKEN): "redacted" too.
		q, bare := url.Values{}, false
		for _, part := range strings.Split(u.RawQuery, "&") {
			k, v, hasValue := strings.Cut(part, "=")
			k, err := url.QueryUnescape(k)
			switch {
			case part == "":
			// A value of "=" alone, or none, is a token's base64 padding
			// as likely as a key's; a key with ";" (which Go's query
			// parser drops whole) may hold a token before it.
			case !hasValue || err != nil || strings.Trim(v, "=") == "" || strings.Contains(k, ";"):
				bare = true
			default:
				q.Set(k, "redacted")
			}
		}
		shown := []string{}
		if len(q) > 0 {
			shown = append(shown, q.Encode())
		}
		if bare {
			shown = append(shown, "redacted")
		}
		query = "?" + strings.Join(shown, "&")
		u.RawQuery, u.ForceQuery = "", false
	}
	// The first segment as written (escaped: an escaped "/" stays in it).
	more := false
	if p := u.EscapedPath(); p != "" {
		lead := ""
		if strings.HasPrefix(p, "/") {
			lead, p = "/", p[1:]
		}
		first, rest, found := strings.Cut(p, "/")
		more = rest != ""
		if at := strings.LastIndex(first, "@"); at >= 0 && u.Host == "" {
			// Written without its scheme (TOKEN@host/path): url.Parse
			// takes the user information for the path's first segment.
			first = "redacted" + first[at:]
		}
		u.RawPath = lead + first
		if found && !more {
			u.RawPath += "/"
		}
		if u.Path, err = url.PathUnescape(u.RawPath); err != nil {
			return "(unreadable URL)"
		}
	}
	out := u.String()
	if more {
		out += "/…"
	}
	return out + query
}
