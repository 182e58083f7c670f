// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newLogCommand) }

func newLogCommand() *cobra.Command {
	var tenant, since, until, status, user, operation, sink, after string
	var follow, asJSON, deliveries bool
	var limit int
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Show the provisioning log: every SCIM request, or every delivery attempt",
		Long: `Show the provisioning log, like Entra's own provisioning logs from the other
side: every SCIM request with its tenant, operation, resource, userName or
displayName, status, SCIM error and the events it produced. With
--deliveries, every attempt to deliver an event to a sink instead: status,
attempt number, latency, error and when the next attempt is due.

Everything that matches is printed, oldest first, read from the relay a
page at a time. --limit stops after that many and says on stderr how to go
on (--after). With --deliveries, --tenant, --status, --until and --follow
apply to the attempts too; --user and --operation do not (attempts name
no userName nor operation), and --sink applies to the attempts only.

Entries are kept for provisioning_log.retention (30 days by default).`,
		Example: `  scimrelay log --tenant acme --since 1h
  scimrelay log --tenant acme --status 4xx --follow
  scimrelay log --user ann@acme.com --since 7d --json
  scimrelay log --operation delete --since 24h --until 2h
  scimrelay log --since 7d --limit 100
  scimrelay log --deliveries --sink crm --since 24h --status 5xx`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := logFlagsApply(cmd, deliveries); err != nil {
				return err
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			// A removed tenant's log is read until it is purged, a
			// removed sink's attempts until it is forgotten.
			unknown, err := heldFilters(cmd.Context(), c, tenant, sink)
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"tenant": tenant, "status": status, "user": user, "operation": operation, "until": absoluteTime(until), "sink": sink, "after": after} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if after == "" {
				q.Set("since", since)
			}
			out := cmd.OutOrStdout()
			read := func(q url.Values) (logPage, error) {
				list, err := c.Log(cmd.Context(), q)
				return pageOf(out, asJSON, list, err, writeLogTable, func(e relay.LogEntry) string { return e.Key })
			}
			what := "entries"
			if deliveries {
				what = "delivery attempts"
				read = func(q url.Values) (logPage, error) {
					list, err := c.Deliveries(cmd.Context(), q)
					return pageOf(out, asJSON, list, err, writeDeliveryTable, func(a sinks.Attempt) string { return strconv.FormatUint(a.Seq, 10) })
				}
			}
			err = answeredFilters(unknown, readLog(cmd.Context(), q, read, limit, follow))
			if errors.Is(err, errMoreFollow) {
				// --after takes the place of --since, which it refuses
				// beside it; a relative --until is given as the time it
				// named, so that the next page ends where this listing does.
				how := "add --after " + q.Get("after")
				if cmd.Flags().Changed("since") {
					how = "run it again with --after " + q.Get("after") + " in place of --since " + since
				}
				if u := q.Get("until"); u != "" && u != until {
					how += " and --until " + u + " in place of --until " + until
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "more %s follow: %s\n", what, how)
				return nil
			}
			return err
		},
	}
	configFlagOn(cmd)
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "only this tenant")
	f.StringVar(&since, "since", "1h", "how far back, e.g. 30m, 24h, 7d")
	f.StringVar(&status, "status", "", "only these statuses: 2xx, 4xx, 5xx or a code such as 409")
	f.StringVar(&until, "until", "", "only entries before this time: RFC 3339, or a duration ago such as 2h")
	f.StringVar(&user, "user", "", "only requests about this userName, displayName or email (substring, any case)")
	f.StringVar(&operation, "operation", "", "only this operation: "+strings.Join(admin.LogOperations(), ", "))
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new entries")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	f.IntVar(&limit, "limit", 0, "show at most this many, then say how to go on (0: all); a batch request's attempts are shown together")
	f.StringVar(&after, "after", "", "start after this point of an earlier listing, instead of --since")
	f.BoolVar(&deliveries, "deliveries", false, "show delivery attempts to sinks instead")
	f.StringVar(&sink, "sink", "", "with --deliveries: only this sink")
	return cmd
}

// logFlagsApply refuses, as bad usage, the flags of log that the log asked
// for cannot answer, and the combinations that make no sense: a flag
// ignored would print more than was asked for, as if it had been applied.
func logFlagsApply(cmd *cobra.Command, deliveries bool) error {
	f := cmd.Flags()
	if deliveries {
		for _, name := range []string{"user", "operation"} {
			if f.Changed(name) {
				return usageError{fmt.Errorf("--%s does not apply to --deliveries: delivery attempts name no userName nor operation (log --%s finds the requests; GET /admin/v1/log/<key> and the console show their deliveries)", name, name)}
			}
		}
	} else if f.Changed("sink") {
		return usageError{errors.New("--sink applies to --deliveries only: a SCIM request goes to no sink")}
	}
	if n, _ := f.GetInt("limit"); n < 0 {
		return usageError{errors.New("--limit must not be negative")}
	}
	for _, pair := range [][2]string{{"limit", "follow"}, {"since", "after"}} {
		if f.Changed(pair[0]) && f.Changed(pair[1]) {
			return usageError{fmt.Errorf("--%s and --%s exclude each other", pair[0], pair[1])}
		}
	}
	return nil
}

// absoluteTime turns a duration ago ("2h") into the time it names, so that
// every page of a listing ends at the same point; anything else is passed
// on as it is, for the relay to read or refuse.
func absoluteTime(s string) string {
	if d, err := config.ParseDuration(s); err == nil && s != "" {
		return time.Now().Add(-d).UTC().Format(time.RFC3339Nano)
	}
	return s
}

// logPage is one page of a log: n entries, the last of them at next (a
// point to read on after), printed by print.
type logPage struct {
	n     int
	next  string
	print func(header bool) error
}

// pageOf makes a logPage of list, what a read of the relay answered (with
// err), printed as JSON lines or by table; next names the point after an
// entry.
func pageOf[E any](out io.Writer, asJSON bool, list []E, err error, table func(io.Writer, []E, bool) error, next func(E) string) (logPage, error) {
	print := func(header bool) error {
		if asJSON {
			return writeJSONLines(out, list)
		}
		return table(out, list, header)
	}
	if err != nil || len(list) == 0 {
		return logPage{print: print}, err
	}
	return logPage{n: len(list), next: next(list[len(list)-1]), print: print}, nil
}

// logPageSize is how many entries log asks the relay for at once.
const logPageSize = 1000

// errMoreFollow says that readLog stopped at its limit with more to read,
// after q's "after".
var errMoreFollow = errors.New("more follow")

// readLog prints every page of a log that q selects, oldest first, each
// after the last entry of the one before: at most limit entries (0: all;
// a page can go past it by a batch request's attempts), then
// errMoreFollow if more follow. Following, it then looks for new ones
// every second until ctx ends.
func readLog(ctx context.Context, q url.Values, read func(url.Values) (logPage, error), limit int, follow bool) error {
	header := true
	for shown := 0; ; {
		size := logPageSize
		if limit > 0 {
			size = min(size, limit-shown)
		}
		q.Set("limit", strconv.Itoa(size))
		p, err := read(q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := p.print(header); err != nil {
			return err
		}
		header = false
		if p.n > 0 {
			shown += p.n
			// The rest is read from where this page ended, not from a
			// --since the relay would read again from its own now.
			q.Set("after", p.next)
			q.Del("since")
			if limit > 0 && shown >= limit {
				q.Set("limit", "1")
				if more, err := read(q); err != nil || more.n == 0 {
					return err
				}
				return errMoreFollow
			}
			continue
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func writeLogTable(w io.Writer, list []relay.LogEntry, header bool) error {
	var head []string
	if header {
		head = []string{"TIME", "TENANT", "OPERATION", "RESOURCE", "NAME", "STATUS", "LATENCY", "EVENTS", "ERROR"}
	}
	tw := newTable(w, head...)
	for _, e := range list {
		resource := e.Resource
		if e.ResourceID != "" {
			resource += "/" + e.ResourceID
		}
		problem := e.Detail
		if e.ScimType != "" {
			problem = e.ScimType + ": " + e.Detail
		}
		operation := e.Operation
		if e.Count > 0 { // a minute's summary: the rest is its last request's
			operation += fmt.Sprintf(" (%d requests)", e.Count)
		}
		tw.row(e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Tenant, operation,
			resource, e.Name, e.Status, e.Latency.Round(10*time.Microsecond), e.Events(), problem)
	}
	return tw.flush()
}

func writeDeliveryTable(w io.Writer, list []sinks.Attempt, header bool) error {
	var head []string
	if header {
		head = []string{"TIME", "SINK", "EVENT ID", "TYPE", "SUBJECT", "OUTCOME", "STATUS", "ATTEMPT", "LATENCY", "NEXT ATTEMPT", "ERROR"}
	}
	tw := newTable(w, head...)
	for _, a := range list {
		next := ""
		if !a.NextAttempt.IsZero() {
			next = a.NextAttempt.Local().Format("2006-01-02 15:04:05")
		}
		tw.row(a.Time.Local().Format("2006-01-02 15:04:05.000"), a.Sink, a.EventID,
			a.Type, a.Subject, a.Outcome, statusWord(a.Status, a.ErrorClass), a.Attempt, a.Latency.Round(10*time.Microsecond), next, a.Error)
	}
	return tw.flush()
}

// statusWord is what a STATUS column says of a delivery attempt: its
// HTTP status, or without one why it got no answer, in a word
// (sinks.Attempt.ErrorClass), or "-".
func statusWord(status int, class string) string {
	if status != 0 {
		return strconv.Itoa(status)
	}
	return cmp.Or(class, "-")
}

// writeJSONLine writes v as one line of JSON, printable (printableJSON).
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(printableJSON(b), '\n'))
	return err
}
