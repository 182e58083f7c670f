// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

func init() { subcommands = append(subcommands, newTenantCommand) }

func newTenantCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tenant",
		Short:   "Delete what a tenant removed from relay.yaml left",
		Example: "  scimrelay tenant purge globex --yes",
	}
	var yes, asJSON bool
	purge := &cobra.Command{
		Use:   "purge NAME --yes",
		Short: "Delete everything a tenant removed from relay.yaml left: users, groups, credentials, subscribers, log entries, events",
		Long: `Delete everything the relay holds under the name of a tenant that is no
longer configured (remove it from relay.yaml and reload first): its users,
groups and memberships with every index, its stored tokens and OAuth clients
whatever their state, the NATS subscribers scoped to it (their connections
close and their consumers go, as with subscriber remove), its provisioning
log entries, its events not yet published (they never will be), its events
in the stream SCIMRELAY and the delivery attempts of its events. Dead letters
of the tenant stay in the sinks' queues, which are kept per sink: the command
counts them, and they age out after 30 days. Backups taken before keep what
they hold.

The relay deletes in the background, a few thousand keys per transaction, so
the other tenants' requests keep flowing however large the tenant; this
command follows the job, shows its progress, and prints what it deleted, by
kind. A purge that stops half-way (a restart, NATS away) keeps the name from
being configured again until the command, run again, finishes it. A name the
relay holds nothing under is refused as a misspelt one (exit 2), a tenant
that is configured is refused (exit 1). Deleting cannot be undone: --yes is
required.`,
		Example: "  scimrelay tenant purge globex --yes\n  scimrelay tenant purge globex --yes --json",
		Args:    positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				return usageError{fmt.Errorf("purging deletes everything tenant %s left, for good: add --yes", name)}
			}
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			j, err := c.PurgeTenant(cmd.Context(), name)
			var api *adminclient.Error
			if errors.As(err, &api) && api.Status == http.StatusNotFound {
				return usageError{err} // nothing under the name: misspelt, as for --tenant filters
			}
			if err != nil {
				return err
			}
			var res admin.PurgeResult
			err = followJob(cmd.Context(), c, j, cmd.ErrOrStderr(), &res, func() string {
				return fmt.Sprintf("%s: %d users, %d groups, %d keys in all deleted so far", res.Step, res.Users, res.Groups, res.Keys)
			})
			if asJSON {
				if werr := writeJSONLine(cmd.OutOrStdout(), res); werr != nil {
					return werr
				}
			} else if werr := writePurged(cmd.OutOrStdout(), res, err == nil); werr != nil {
				return werr
			}
			if err != nil {
				return fmt.Errorf("%w; run the command again to finish the purge", err)
			}
			return nil
		},
	}
	configFlagOn(purge)
	purge.Flags().BoolVar(&yes, "yes", false, "confirm: delete everything the tenant left, for good")
	purge.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	cmd.AddCommand(purge)
	return cmd
}

// writePurged says what a purge deleted, one kind a line, and the dead
// letters it left.
func writePurged(w io.Writer, res admin.PurgeResult, finished bool) error {
	if finished {
		fmt.Fprintf(w, "purged tenant %s:\n", res.Tenant)
	} else {
		fmt.Fprintf(w, "the purge of tenant %s stopped; it deleted:\n", res.Tenant)
	}
	subscribers := fmt.Sprint(len(res.Subscribers))
	if len(res.Subscribers) > 0 {
		subscribers += " (" + strings.Join(res.Subscribers, ", ") + ")"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range []struct {
		what string
		n    any
	}{
		{"users", res.Users}, {"groups", res.Groups}, {"memberships", res.Memberships},
		{"keys (resources, memberships, indexes)", res.Keys},
		{"SCIM tokens", res.Tokens}, {"OAuth clients", res.Clients}, {"NATS subscribers", subscribers},
		{"provisioning log entries", res.LogEntries},
		{"events in the outbox (never to be published)", res.Outbox}, {"events in quarantine", res.Quarantined},
		{"events in the stream", res.Events}, {"delivery attempts", res.Attempts},
	} {
		fmt.Fprintf(tw, "  %s\t%v\n", row.what, row.n)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	sinks := make([]string, 0, len(res.DeadLetters))
	for sink := range res.DeadLetters {
		sinks = append(sinks, sink)
	}
	slices.Sort(sinks)
	for _, sink := range sinks {
		letters := "dead letters"
		if res.DeadLetters[sink] == 1 {
			letters = "dead letter"
		}
		fmt.Fprintf(w, "deleted %d %s of %s from the queue of sink %s\n", res.DeadLetters[sink], letters, res.Tenant, sink)
	}
	return nil
}
