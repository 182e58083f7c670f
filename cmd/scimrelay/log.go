// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newLogCommand) }

func newLogCommand() *cobra.Command {
	var tenant, since, until, status, user, operation, sink string
	var follow, asJSON, deliveries bool
	var limit int
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Show the provisioning log: every SCIM request, or every delivery attempt",
		Long: `Show the provisioning log, like Entra's own provisioning logs from the other
side: every SCIM request with its tenant, operation, resource, userName or
displayName, status, SCIM error and the events it produced. With
--deliveries, every attempt to deliver an event to a sink instead: status,
latency, error and when the next attempt is due.

Entries are kept for provisioning_log.retention (30 days by default).`,
		Example: `  scimrelay log --tenant acme --since 1h
  scimrelay log --tenant acme --status 4xx --follow
  scimrelay log --user ann@acme.com --since 7d --json
  scimrelay log --operation delete --since 24h --until 2h
  scimrelay log --deliveries --sink crm --since 24h`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			if err := checkFilters(cmd.Context(), c, tenant, sink); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if deliveries {
				q := url.Values{"since": {since}, "limit": {strconv.Itoa(limit)}}
				if sink != "" {
					q.Set("sink", sink)
				}
				list, err := c.Deliveries(cmd.Context(), q)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSONLines(out, list)
				}
				return writeDeliveryTable(out, list)
			}
			q := url.Values{"since": {since}, "limit": {strconv.Itoa(limit)}}
			for k, v := range map[string]string{"tenant": tenant, "status": status, "user": user, "operation": operation, "until": until} {
				if v != "" {
					q.Set(k, v)
				}
			}
			header := true
			for {
				list, err := c.Log(cmd.Context(), q)
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				if asJSON {
					if err := writeJSONLines(out, list); err != nil {
						return err
					}
				} else if err := writeLogTable(out, list, header); err != nil {
					return err
				}
				if len(list) > 0 {
					header = false
					q.Set("after", list[len(list)-1].Key)
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	configFlagOn(cmd)
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "only this tenant")
	f.StringVar(&since, "since", "1h", "how far back, e.g. 30m, 24h, 7d")
	f.StringVar(&status, "status", "", "only these statuses: 2xx, 4xx, 5xx or a code such as 409")
	f.StringVar(&until, "until", "", "only requests before this time: RFC 3339, or a duration ago such as 2h")
	f.StringVar(&user, "user", "", "only requests about this userName, displayName or email (substring, any case)")
	f.StringVar(&operation, "operation", "", "only this operation: create, get, list, search, replace, patch, delete, bulk, token")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new entries")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per line")
	f.IntVar(&limit, "limit", 1000, "at most this many entries per page")
	f.BoolVar(&deliveries, "deliveries", false, "show delivery attempts to sinks instead")
	f.StringVar(&sink, "sink", "", "with --deliveries: only this sink")
	return cmd
}

func writeLogTable(w io.Writer, list []relay.LogEntry, header bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "TIME\tTENANT\tOPERATION\tRESOURCE\tNAME\tSTATUS\tLATENCY\tEVENTS\tERROR")
	}
	for _, e := range list {
		resource := e.Resource
		if e.ResourceID != "" {
			resource += "/" + e.ResourceID
		}
		problem := e.Detail
		if e.ScimType != "" {
			problem = e.ScimType + ": " + e.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Tenant, e.Operation,
			resource, e.Name, e.Status, e.Latency.Round(10*time.Microsecond), e.Events(), problem)
	}
	return tw.Flush()
}

func writeDeliveryTable(w io.Writer, list []sinks.Attempt) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSINK\tEVENT ID\tTYPE\tSUBJECT\tOUTCOME\tSTATUS\tATTEMPT\tLATENCY\tNEXT ATTEMPT\tERROR")
	for _, a := range list {
		next := ""
		if !a.NextAttempt.IsZero() {
			next = a.NextAttempt.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", a.Time.Local().Format("2006-01-02 15:04:05.000"), a.Sink, a.EventID,
			a.Type, a.Subject, a.Outcome, a.Status, a.Attempt, a.Latency.Round(10*time.Microsecond), next, a.Error)
	}
	return tw.Flush()
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
