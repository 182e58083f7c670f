// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newDLQCommand, newSinksCommand) }

func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dlq",
		Short:   "List and redrive the events a sink gave up on",
		Example: "  scimrelay dlq list --sink crm\n  scimrelay dlq redrive --sink crm --all",
		Long: `Each sink has a dead-letter queue: events its receiver refused for good
(410 and other permanent 4xx), or that still failed after the last retry of
the schedule. Redrive delivers them again once the receiver is fixed.`,
		Args: positional(cobra.NoArgs),
	}
	var sink string
	var asJSON bool
	list := &cobra.Command{
		Use:     "list --sink NAME",
		Short:   "List a sink's dead letters, oldest first",
		Example: "  scimrelay dlq list --sink crm\n  scimrelay dlq list --sink crm --json | jq -r '.[].id'",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			var dls []sinks.DeadLetter
			if err := c.do(cmd.Context(), "GET", "/admin/v1/sinks/"+url.PathEscape(sink)+"/dlq", nil, &dls); err != nil {
				return err
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), dls)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "EVENT ID\tTYPE\tSUBJECT\tTENANT\tSTATUS\tATTEMPTS\tDEAD SINCE\tERROR")
			for _, d := range dls {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", d.ID, d.Type, d.Subject, d.Tenant, d.Status, d.Attempts, d.Time.Local().Format("2006-01-02 15:04:05"), d.Error)
			}
			return tw.Flush()
		},
	}
	configFlagOn(list)
	list.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = list.MarkFlagRequired("sink")

	var id string
	var all bool
	redrive := &cobra.Command{
		Use:     "redrive --sink NAME (--id EVENT_ID | --all)",
		Short:   "Deliver dead letters again",
		Example: "  scimrelay dlq redrive --sink crm --id 0198f3c2-6a7e-7b1c-9d2e-3f4a5b6c7d8e\n  scimrelay dlq redrive --sink crm --all",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (id != "") {
				return usageError{errors.New("give either --id or --all")}
			}
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			c.timeout = 0
			var res sinks.RedriveResult
			if err := c.do(cmd.Context(), "POST", "/admin/v1/sinks/"+url.PathEscape(sink)+"/dlq/redrive", admin.RedriveRequest{ID: id, All: all}, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "delivered %d, still failing %d\n", res.Delivered, len(res.Failed))
			for _, f := range res.Failed {
				fmt.Fprintf(cmd.ErrOrStderr(), "  %s: %s\n", f.ID, f.Error)
			}
			if len(res.Failed) > 0 {
				return fmt.Errorf("%d dead letter(s) failed again and stay in the queue", len(res.Failed))
			}
			return nil
		},
	}
	configFlagOn(redrive)
	redrive.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	redrive.Flags().StringVar(&id, "id", "", "the event id of one dead letter")
	redrive.Flags().BoolVar(&all, "all", false, "every dead letter of the sink")
	_ = redrive.MarkFlagRequired("sink")
	cmd.AddCommand(list, redrive)
	return cmd
}

func newSinksCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sinks",
		Short:   "Operate on sinks",
		Example: "  scimrelay sinks replay --sink crm --since 24h",
		Args:    positional(cobra.NoArgs),
	}
	var sink, since string
	replay := &cobra.Command{
		Use:   "replay --sink NAME --since DURATION",
		Short: "Send a sink the events of the past again",
		Long: `Send a sink every event of the stream since a time ago (that the sink's
tenants and event types select), in stream order, whether or not it had them
already: for a receiver that lost its data, or a sink added after the events.
The stream keeps events for nats.stream.max_age (7 days by default).`,
		Example: "  scimrelay sinks replay --sink crm --since 24h",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			c.timeout = 0 // a replay of days of events can take a while
			var res sinks.ReplayResult
			if err := c.do(cmd.Context(), "POST", "/admin/v1/sinks/"+url.PathEscape(sink)+"/replay", admin.ReplayRequest{Since: since}, &res); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "replayed %d events: %d delivered, %d dead-lettered\n", res.Matched, res.Delivered, res.DeadLettered)
			return err
		},
	}
	configFlagOn(replay)
	replay.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	replay.Flags().StringVar(&since, "since", "", "how far back, e.g. 24h (required)")
	_ = replay.MarkFlagRequired("sink")
	_ = replay.MarkFlagRequired("since")
	cmd.AddCommand(replay)
	return cmd
}
