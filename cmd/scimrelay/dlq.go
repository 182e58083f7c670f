// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newDLQCommand, newSinksCommand) }

func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dlq",
		Short:   "List and redrive the events a sink gave up on",
		Example: "  scimrelay dlq list --sink crm\n  scimrelay dlq redrive --sink crm --all\n  scimrelay dlq queues",
		Long: `Each sink has a dead-letter queue: events its receiver refused for good
(410 and other permanent 4xx), or that still failed after the last retry of
the schedule. Redrive delivers them again once the receiver is fixed.

A sink removed or renamed leaves its queue under its old name (dlq queues
lists it) until its dead letters age out after 30 days: dlq list shows
them, and dlq redrive --to delivers them to a configured sink.`,
	}
	cmd.AddCommand(newDLQListCommand(), newDLQRedriveCommand(), newDLQQueuesCommand())
	return cmd
}

// newDLQListCommand is dlq list: a sink's dead letters, a page at a time.
func newDLQListCommand() *cobra.Command {
	var sink, after string
	var asJSON bool
	var limit int
	list := &cobra.Command{
		Use:   "list --sink NAME",
		Short: "List a sink's dead letters, oldest first",
		Long: `List a sink's dead letters, oldest first, a page at a time: the relay never
reads more than a page of them at once, however long the queue. With --limit
the list stops after that many and says how to go on (--after).`,
		Example: `  scimrelay dlq list --sink crm
  scimrelay dlq list --sink crm --limit 20
  scimrelay dlq list --sink crm --json | jq -r .id`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError{errors.New("--limit must not be negative")}
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			if _, err := deadLetterQueue(cmd.Context(), c, sink, ""); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var head []string
			if !asJSON {
				head = []string{"EVENT ID", "TYPE", "SUBJECT", "TENANT", "STATUS", "ATTEMPTS", "DEAD SINCE", "ERROR"}
			}
			tw := newTable(out, head...)
			for shown := 0; ; {
				pageSize := 0
				if limit > 0 {
					pageSize = min(limit-shown, sinks.MaxPageSize)
				}
				page, err := c.DeadLetters(cmd.Context(), sink, after, pageSize)
				if err != nil {
					return err
				}
				for _, d := range page.DeadLetters {
					if asJSON {
						if err := writeJSONLine(out, d); err != nil {
							return err
						}
						continue
					}
					tw.row(d.ID, d.Type, d.Subject, d.Tenant, statusWord(d.Status, d.ErrorClass), d.Attempts, d.Time.Local().Format("2006-01-02 15:04:05"), d.Error)
				}
				if err := tw.flush(); err != nil {
					return err
				}
				shown += len(page.DeadLetters)
				after = page.Next
				if after == "" {
					return nil
				}
				if limit > 0 && shown >= limit {
					fmt.Fprintf(cmd.ErrOrStderr(), "more dead letters follow: add --after %s\n", after)
					return nil
				}
			}
		},
	}
	configFlagOn(list)
	list.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	list.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	list.Flags().StringVar(&after, "after", "", "start after this point of an earlier listing")
	_ = list.MarkFlagRequired("sink")
	return list
}

// newDLQRedriveCommand is dlq redrive: dead letters delivered again, by a
// job it follows.
func newDLQRedriveCommand() *cobra.Command {
	var sink, id, to string
	var all bool
	redrive := &cobra.Command{
		Use:   "redrive --sink NAME (--id EVENT_ID | --all) [--to SINK]",
		Short: "Deliver dead letters again",
		Long: `Deliver dead letters again, once the receiver is fixed: one by event id, or
all the sink has. The relay runs the redrive as a background job, reading the
queue a batch at a time; this command follows the job, shows its progress
and exits 1 if the job fails or a dead letter fails again (it stays in the
queue with its new error).

--to delivers them to another configured sink instead: for the queue a
removed or renamed sink left behind. Only the dead letters whose tenant and
event type that sink takes go to it; the others stay where they are. One
that fails again joins that sink's queue.`,
		Example: "  scimrelay dlq redrive --sink crm --id 0198f3c2-6a7e-7b1c-9d2e-3f4a5b6c7d8e\n  scimrelay dlq redrive --sink crm --all\n  scimrelay dlq redrive --sink crm-old --to crm --all",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (id != "") {
				return usageError{errors.New("give either --id or --all")}
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			q, err := deadLetterQueue(cmd.Context(), c, sink, to)
			if err != nil {
				return err
			}
			if to == "" && !q.Configured {
				return usageError{fmt.Errorf("sink %s is no longer configured: add --to SINK, a configured sink to deliver its dead letters to", sink)}
			}
			var res sinks.RedriveResult
			j, err := c.Redrive(cmd.Context(), sink, admin.RedriveRequest{ID: id, All: all, To: to})
			if err != nil {
				return err
			}
			err = followJob(cmd.Context(), c, j, cmd.ErrOrStderr(), &res, func() string {
				return fmt.Sprintf("%d of %d dead letters: %d delivered, %d still failing", res.Done, res.Total, res.Delivered, res.Failed)
			})
			fmt.Fprintf(cmd.OutOrStdout(), "delivered %d, still failing %d\n", res.Delivered, res.Failed)
			if res.Skipped > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "left %d in the queue: sink %s does not take their tenant or event type\n", res.Skipped, cmp.Or(to, sink))
			}
			if res.Purged > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "took %d out of the queue, undelivered: deleted meanwhile (their tenant purged, or redriven through another relay)\n", res.Purged)
			}
			if res.Held > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "kept %d in the queue behind an earlier one of their resource that failed again, in order\n", res.Held)
			}
			for _, f := range res.Failures {
				fmt.Fprintf(cmd.ErrOrStderr(), "  %s: %s\n", f.ID, printable(f.Error))
			}
			if more := res.Failed - len(res.Failures); more > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "  and %d more (scimrelay dlq list --sink %s)\n", more, cmp.Or(to, sink))
			}
			switch {
			case err != nil:
				return err
			case res.Failed > 0:
				return fmt.Errorf("%d dead letter(s) failed again and stay in the queue", res.Failed)
			}
			return nil
		},
	}
	configFlagOn(redrive)
	redrive.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	redrive.Flags().StringVar(&id, "id", "", "the event id of one dead letter")
	redrive.Flags().BoolVar(&all, "all", false, "every dead letter of the sink")
	redrive.Flags().StringVar(&to, "to", "", "deliver them to this configured sink instead (for a removed or renamed sink's queue)")
	_ = redrive.MarkFlagRequired("sink")
	return redrive
}

// newDLQQueuesCommand is dlq queues: every dead-letter queue and its size.
func newDLQQueuesCommand() *cobra.Command {
	var asJSON bool
	queues := &cobra.Command{
		Use:   "queues",
		Short: "List the dead-letter queues and how many each holds",
		Long: `List every configured sink's dead-letter queue, and the queues of sinks no
longer configured that still hold dead letters (a sink removed or renamed),
with how many each holds.`,
		Example: "  scimrelay dlq queues",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			list, err := c.DeadLetterQueues(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(cmd.OutOrStdout(), list)
			}
			tw := newTable(cmd.OutOrStdout(), "SINK", "DEAD LETTERS", "CONFIGURED")
			for _, q := range list {
				configured := "yes"
				if !q.Configured {
					configured = "no: scimrelay dlq redrive --sink " + q.Sink + " --to SINK --all"
				}
				tw.row(q.Sink, q.DeadLetters, configured)
			}
			return tw.flush()
		},
	}
	configFlagOn(queues)
	queues.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return queues
}

// deadLetterQueue returns the dead-letter queue sink (--sink) names: a
// configured sink's, or one a removed or renamed sink left; and checks
// that to (--to), when given, names a configured sink.
func deadLetterQueue(ctx context.Context, c *adminclient.Client, sink, to string) (sinks.DeadLetterQueue, error) {
	list, err := c.DeadLetterQueues(ctx)
	if err != nil {
		return sinks.DeadLetterQueue{}, err
	}
	var queues, configured []string
	for _, q := range list {
		queues = append(queues, q.Sink)
		if q.Configured {
			configured = append(configured, q.Sink)
		}
	}
	if to != "" && !slices.Contains(configured, to) {
		return sinks.DeadLetterQueue{}, usageError{fmt.Errorf("--to %s: no such sink (sinks: %s)", to, strings.Join(configured, ", "))}
	}
	i := slices.IndexFunc(list, func(q sinks.DeadLetterQueue) bool { return q.Sink == sink })
	if i < 0 {
		return sinks.DeadLetterQueue{}, usageError{fmt.Errorf("--sink %s: no such sink, nor dead letters under that name (queues: %s)", sink, strings.Join(queues, ", "))}
	}
	return list[i], nil
}

func newSinksCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sinks",
		Short:   "Operate on sinks",
		Example: "  scimrelay sinks list\n  scimrelay sinks replay --sink crm --since 24h\n  scimrelay sinks forget crm-old --yes",
	}
	var sink, since string
	replay := &cobra.Command{
		Use:   "replay --sink NAME --since DURATION",
		Short: "Send a sink the events of the past again",
		Long: `Send a sink every event of the stream since a time ago (that the sink's
tenants and event types select), in stream order, whether or not it had them
already: for a receiver that lost its data, or a sink added after the events.
The stream keeps events for nats.stream.max_age (7 days by default). The
relay runs the replay as a background job, reading the stream a batch at a
time; this command follows the job, shows its progress and exits 1 if the
job fails or an event it sent failed: events the sink refuses are
dead-lettered (scimrelay dlq list).`,
		Example: "  scimrelay sinks replay --sink crm --since 24h\n  scimrelay sinks replay --sink crm --since 7d",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			if err := checkFilters(cmd.Context(), c, "", sink); err != nil {
				return err
			}
			var res sinks.ReplayResult
			j, err := c.Replay(cmd.Context(), sink, admin.ReplayRequest{Since: since})
			if err != nil {
				return err
			}
			err = followJob(cmd.Context(), c, j, cmd.ErrOrStderr(), &res, func() string {
				return fmt.Sprintf("%d of at most %d events read: %d delivered, %d dead-lettered", res.Done, res.Total, res.Delivered, res.DeadLettered)
			})
			fmt.Fprintf(cmd.OutOrStdout(), "replayed %d events: %d delivered, %d dead-lettered\n", res.Matched, res.Delivered, res.DeadLettered)
			if res.Purged > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "none sent of %d of a tenant purged meanwhile\n", res.Purged)
			}
			if err == nil && res.DeadLettered > 0 {
				err = fmt.Errorf("%d event(s) failed and were dead-lettered (scimrelay dlq list --sink %s)", res.DeadLettered, sink)
			}
			return err
		},
	}
	configFlagOn(replay)
	replay.Flags().StringVar(&sink, "sink", "", "sink name (required)")
	replay.Flags().StringVar(&since, "since", "", "how far back, e.g. 24h (required)")
	_ = replay.MarkFlagRequired("sink")
	_ = replay.MarkFlagRequired("since")
	cmd.AddCommand(newSinksListCommand(), replay, newSinksForgetCommand())
	return cmd
}
