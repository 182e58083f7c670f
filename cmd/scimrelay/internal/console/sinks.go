// SPDX-License-Identifier: Apache-2.0

package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/sinks"
)

// How much of a sink's history its page shows.
const (
	recentAttempts = 25
	deadLetterPage = 50
)

// GET /ui/sinks
func (c *Console) sinksPage(w http.ResponseWriter, r *http.Request, s *session) error {
	api := c.api(s)
	list, err := api.Sinks(r.Context())
	if err != nil {
		return err
	}
	queues, err := api.DeadLetterQueues(r.Context())
	if err != nil {
		return err
	}
	// The queues of sinks removed or renamed, which only dlq redrive --to
	// delivers: said here so that they are not left to age out unseen.
	var left []sinks.DeadLetterQueue
	for _, q := range queues {
		if !q.Configured {
			left = append(left, q)
		}
	}
	c.render(w, r, http.StatusOK, "sinks", page{Title: "Sinks", Nav: "sinks", CSRF: s.csrf, Data: struct {
		Now   time.Time
		Sinks []sinks.Status
		Left  []sinks.DeadLetterQueue
	}{c.now(), list, left}})
	return nil
}

// sinkData is one sink's page.
type sinkData struct {
	Now    time.Time
	Status sinks.Status
	// Recent are the latest delivery attempts of the last 10 minutes,
	// newest first (latestAttempts).
	Recent      []sinks.Attempt
	DeadLetters sinks.DeadLetterPage
	// After is the dead-letter page shown ("" for the first); Next links on.
	After, Next string
}

// GET /ui/sinks/{sink}?after=
func (c *Console) sink(w http.ResponseWriter, r *http.Request, s *session) error {
	api, ctx, name := c.api(s), r.Context(), r.PathValue("sink")
	d := sinkData{Now: c.now(), After: r.URL.Query().Get("after")}
	var err error
	if d.Status, err = api.Sink(ctx, name); err != nil {
		return err
	}
	if d.Recent, err = latestAttempts(ctx, api, name); err != nil {
		return err
	}
	if d.DeadLetters, err = api.DeadLetters(ctx, name, d.After, deadLetterPage); err != nil {
		return err
	}
	if d.DeadLetters.Next != "" {
		d.Next = Prefix + "sinks/" + url.PathEscape(name) + "?after=" + url.QueryEscape(d.DeadLetters.Next) + "#dead-letters"
	}
	c.render(w, r, http.StatusOK, "sink", page{Title: "Sink " + name, Nav: "sinks", CSRF: s.csrf, Notice: s.takeNotice(), Data: d})
	return nil
}

// latestAttempts returns a sink's latest recentAttempts delivery attempts
// of the last 10 minutes, newest first. The delivery log is read oldest
// first, a page at a time, so it reads the last minute to its end, and
// the 10 minutes only when the last minute holds fewer; a page of 5,000
// from the window's start would show, on a sink busier than that,
// attempts minutes old and never the latest.
func latestAttempts(ctx context.Context, api *adminclient.Client, sink string) ([]sinks.Attempt, error) {
	var latest []sinks.Attempt
	for _, since := range []string{"1m", "10m"} {
		latest = latest[:0]
		q := url.Values{"sink": {sink}, "since": {since}, "limit": {"5000"}}
		for {
			page, err := api.Deliveries(ctx, q)
			if err != nil {
				return nil, err
			}
			if len(page) == 0 {
				break
			}
			latest = append(latest, page...)
			latest = latest[len(latest)-min(len(latest), recentAttempts):]
			q.Set("after", strconv.FormatUint(page[len(page)-1].Seq, 10))
		}
		if len(latest) >= recentAttempts {
			break
		}
	}
	latest = slices.Clone(latest)
	slices.Reverse(latest)
	return latest, nil
}

// POST /ui/sinks/{sink}/redrive: id=<event id>, or all=1.
func (c *Console) redrive(w http.ResponseWriter, r *http.Request, s *session) error {
	req := admin.RedriveRequest{ID: strings.TrimSpace(r.PostFormValue("id")), All: r.PostFormValue("all") != ""}
	j, err := c.api(s).Redrive(r.Context(), r.PathValue("sink"), req)
	if err != nil {
		return err
	}
	http.Redirect(w, r, Prefix+"jobs/"+url.PathEscape(j.ID), http.StatusSeeOther)
	return nil
}

// POST /ui/sinks/{sink}/replay: since=<duration>.
func (c *Console) replay(w http.ResponseWriter, r *http.Request, s *session) error {
	j, err := c.api(s).Replay(r.Context(), r.PathValue("sink"), admin.ReplayRequest{Since: strings.TrimSpace(r.PostFormValue("since"))})
	if err != nil {
		return err
	}
	http.Redirect(w, r, Prefix+"jobs/"+url.PathEscape(j.ID), http.StatusSeeOther)
	return nil
}
