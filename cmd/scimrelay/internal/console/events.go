// SPDX-License-Identifier: Apache-2.0

package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay/events"
)

// How the live tail's stream behaves: a comment every keepAlive keeps
// proxies from closing it, and the session is checked as often, so a
// session that idled out ends its stream (watching a tail is not a
// person's activity); signing out ends it at once.
const (
	keepAlive = 10 * time.Second
	// maxEventLen bounds a line of the admin API's tail: above the
	// largest message NATS takes (64 MiB), so that every event in the
	// stream is shown. At 4 MiB, one larger event (a PATCH of large
	// values, before resources were bounded; an earlier release's, kept
	// for the stream's retention) ended every open tail.
	maxEventLen = 64<<20 + 64<<10
	// resumeMargin is how far before the last message a browser had the
	// tail starts again when it reconnects (eventStream): an event stored
	// just before that message may not have reached it yet, and the NATS
	// server's clock, which stamps what the stream stores, may be behind
	// this one's. What it had is sent again; its script drops those.
	resumeMargin = 5 * time.Second
)

// eventsData is the live tail's page.
type eventsData struct {
	Tenants []string
	Types   []string
	// Tenant, Type and Since are the filter asked for.
	Tenant, Type, Since string
}

// GET /ui/events?tenant=&type=&since=
func (c *Console) eventsPage(w http.ResponseWriter, r *http.Request, s *session) error {
	tenants, err := c.api(s).Tenants(r.Context())
	if err != nil {
		return err
	}
	q := r.URL.Query()
	d := eventsData{Tenant: q.Get("tenant"), Type: q.Get("type"), Since: q.Get("since")}
	for _, t := range tenants {
		d.Tenants = append(d.Tenants, t.Name)
	}
	d.Types = append(d.Types, "user.*", "group.*")
	for _, a := range events.Catalog {
		d.Types = append(d.Types, string(a))
	}
	c.render(w, r, http.StatusOK, "events", page{Title: "Events", Nav: "events", CSRF: s.csrf, Data: d})
	return nil
}

// GET /ui/events/stream?tenant=&type=&since= streams the admin API's tail
// as server-sent events: "cloudevent" events carrying one structured
// CloudEvent each, "failure" when the tail cannot go on (then the script
// stops, rather than reconnecting into the same failure), "signed-out"
// when the session ends.
//
// Each message's id is when it was sent. A browser's EventSource that
// lost the stream reconnects by itself with the last id it had
// (Last-Event-ID), and the tail starts again resumeMargin before it, in
// place of the since asked for: the events stored while it was away are
// sent, where a new tail sent only those after the reconnection (or all
// of since again); the script drops the repeats by their id.
func (c *Console) eventStream(w http.ResponseWriter, r *http.Request, s *session) error {
	in := r.URL.Query()
	q := url.Values{"follow": {"true"}}
	for _, k := range []string{"tenant", "type", "since"} {
		if v := in.Get(k); v != "" {
			q.Set(k, v)
		}
	}
	if last, err := time.Parse(time.RFC3339Nano, r.Header.Get("Last-Event-ID")); err == nil && !last.After(time.Now()) {
		q.Set("since", fmt.Sprintf("%dms", (time.Since(last)+resumeMargin).Milliseconds()))
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	rc := http.NewResponseController(w)
	send := func(event, data string) bool {
		_, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", time.Now().UTC().Format(time.RFC3339Nano), event, data)
		return err == nil && rc.Flush() == nil
	}
	tail, err := c.api(s).Tail(ctx, q)
	var api *adminclient.Error
	if err != nil && (!errors.As(err, &api) || api.Status == http.StatusUnauthorized) {
		return err
	}
	admin.NoReadDeadline(w) // the live tail lasts as long as the page is open
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	if err != nil { // the admin API refused the tail: say why, once
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		send("failure", string(b))
		return nil
	}
	defer tail.Close()
	if !send("ready", "{}") {
		return nil
	}
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(tail)
		sc.Buffer(make([]byte, 64<<10), maxEventLen)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-ctx.Done():
				return
			}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		readErr <- err
	}()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ended():
			send("signed-out", "{}")
			return nil
		case line := <-lines:
			if !send("cloudevent", string(line)) {
				return nil
			}
		case err := <-readErr:
			b, _ := json.Marshal(map[string]string{"error": "the event tail ended: " + err.Error()})
			send("failure", string(b))
			return nil
		case <-tick.C:
			if !c.sessions.alive(s) {
				send("signed-out", "{}")
				return nil
			}
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		}
	}
}
