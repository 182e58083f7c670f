// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/sinks"
)

// newSinksListCommand is `sinks list`, under newSinksCommand.
func newSinksListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the sinks and how each is keeping up",
		Long: `List the sinks relay.yaml configures and how each is keeping up: the events
waiting in the stream for it (PENDING), those taken by a worker and not yet
settled (IN FLIGHT), the resources whose events wait to be read back from
the stream after a failure or a burst (PARKED: while a receiver is down,
its events wait there, not in PENDING), how long ago the oldest event not
yet delivered was stored (OLDEST), its dead letters, its delivery attempts of the last five
minutes and hour (the events of one resource sent in one request are one
attempt) and its latest attempt. The counts are the sink's, whichever
worker delivers them. A sink with dead letters is named on stderr with the
command that lists them.`,
		Example: "  scimrelay sinks list\n  scimrelay sinks list --json | jq -r 'select(.dead_letters > 0) | .name'",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			list, err := c.Sinks(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(cmd.OutOrStdout(), list)
			}
			if len(list) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "relay.yaml declares no sink")
				return nil
			}
			if err := writeSinks(cmd.OutOrStdout(), list, time.Now()); err != nil {
				return err
			}
			for _, s := range list {
				if s.DeadLetters > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "sink %s has %d dead letters: scimrelay dlq list --sink %s\n", s.Name, s.DeadLetters, s.Name)
				}
			}
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return cmd
}

// writeSinks writes the sinks' states as a table.
func writeSinks(w io.Writer, list []sinks.Status, now time.Time) error {
	tw := newTable(w, "SINK", "URL", "FORMAT", "PENDING", "IN FLIGHT", "PARKED", "OLDEST", "DEAD LETTERS", "ATTEMPTS 5M/1H", "LAST ATTEMPT")
	for _, s := range list {
		last := "none yet"
		if a := s.LastAttempt; a != nil {
			last = a.Outcome
			if a.Status != 0 {
				last += fmt.Sprintf(" %d", a.Status)
			} else if a.ErrorClass != "" {
				last += " (" + a.ErrorClass + ")"
			}
			last += " at " + a.Time.Local().Format("2006-01-02 15:04:05")
		}
		oldest := "-"
		if s.OldestUndelivered != nil {
			oldest = max(now.Sub(*s.OldestUndelivered), 0).Round(time.Second).String()
		}
		pending, inFlight, parked := any(s.Pending), any(s.InFlight), any(s.Parked)
		if s.NotSetUp { // its backlog is not known on this relay
			pending, inFlight, parked, oldest = "not set up", "-", "-", "-"
		}
		tw.row(s.Name, s.URL, s.Format, pending, inFlight, parked, oldest, s.DeadLetters, fmt.Sprintf("%d/%d", s.Attempts5m, s.Attempts1h), last)
	}
	return tw.flush()
}
