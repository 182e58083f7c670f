// SPDX-License-Identifier: Apache-2.0

package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"

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
in the stream SCIMRELAY, the delivery attempts of its events, and its dead
letters in every sink's queue. Before it purges the stream it tells the
delivery workers, and waits 9 s, a worker's lease, after which a worker
that has not read it has stopped delivering: they then deliver none of the
tenant's events they had taken already (one under way ends as it would
have). It keeps the last sequence number the
tenant's events reached: a tenant added again under the name continues
after it. Backups taken before keep what they hold.

The relay deletes in the background, a few thousand keys per transaction, so
the other tenants' requests keep flowing however large the tenant; this
command follows the job, shows its progress, and prints what it deleted, by
kind. A purge that stops half-way (a restart, NATS away) keeps the name from
being configured again until the command, run again, finishes it. The
command interrupted (Ctrl-C) stops following and the purge goes on: run
again, it follows the purge under way to its end. A name the
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
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			j, err := c.PurgeTenant(cmd.Context(), name)
			var api *adminclient.Error
			if errors.As(err, &api) && api.Status == http.StatusNotFound {
				return usageError{err} // nothing under the name: misspelt, as for --tenant filters
			}
			if errors.As(err, &api) && api.Status == http.StatusConflict && api.JobID != "" {
				// A purge of the name under way (one this command left when
				// interrupted): follow it to its end.
				j, err = c.Job(cmd.Context(), api.JobID)
			}
			if err != nil {
				return err
			}
			var res admin.PurgeResult
			err = followJob(cmd.Context(), c, j, cmd.ErrOrStderr(), &res, func() string {
				return fmt.Sprintf("%s: %d users, %d groups, %d keys in all deleted so far", res.Step, res.Users, res.Groups, res.Keys)
			})
			if err != nil && cmd.Context().Err() != nil {
				// Interrupted: the purge goes on, and the command run again
				// follows it (it said the purge stopped, for an empty name).
				return fmt.Errorf("%w; run the command again to follow it to its end", err)
			}
			seen := res.Tenant != "" // a progress of the job was read
			res.Tenant = cmp.Or(res.Tenant, name)
			state := purgeFinished
			var lost jobLostError
			switch {
			case errors.As(err, &lost) && !seen:
				state = purgeUnknown
			case errors.As(err, &lost):
				state = purgeLastSeen
			case err != nil:
				state = purgeStopped
			}
			if asJSON {
				if werr := writeJSONLine(cmd.OutOrStdout(), purgeJSON{res, state.String()}); werr != nil {
					return werr
				}
			} else if werr := writePurged(cmd.OutOrStdout(), res, state); werr != nil {
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

// How far the command knows what a purge deleted.
type purgeState int

const (
	purgeFinished purgeState = iota // the job is done: its result
	purgeStopped                    // the job failed: its result
	purgeLastSeen                   // the relay stopped answering: the last progress read
	purgeUnknown                    // the relay stopped answering before any progress was read
)

// String names the state in the object --json prints: "done", "failed"
// (the counts are what the purge deleted before it failed), or "lost"
// (the relay stopped answering: the counts are what the purge had deleted
// at least, zero when the command read nothing of it).
func (s purgeState) String() string {
	switch s {
	case purgeFinished:
		return "done"
	case purgeStopped:
		return "failed"
	default:
		return "lost"
	}
}

// purgeJSON is the object tenant purge --json prints: the result and how
// far it is known.
type purgeJSON struct {
	admin.PurgeResult
	State string `json:"state"`
}

// writePurged says what a purge deleted, one kind a line (as the
// console's page of its job shows it), and the dead letters it deleted.
// When the relay stopped answering, what the command last read of the
// job is all it knows: the purge may have deleted more.
func writePurged(w io.Writer, res admin.PurgeResult, state purgeState) error {
	switch state {
	case purgeFinished:
		fmt.Fprintf(w, "purged tenant %s:\n", res.Tenant)
	case purgeStopped:
		fmt.Fprintf(w, "the purge of tenant %s stopped; it deleted:\n", res.Tenant)
	case purgeLastSeen:
		fmt.Fprintf(w, "the relay stopped answering during the purge of tenant %s; it had deleted at least:\n", res.Tenant)
	case purgeUnknown:
		_, err := fmt.Fprintf(w, "the relay stopped answering during the purge of tenant %s, before saying what it deleted (its audit line tenant.purge says)\n", res.Tenant)
		return err
	}
	tw := newTable(w)
	for _, c := range res.Counts() {
		tw.row("  "+c.What, c.Count)
	}
	if err := tw.flush(); err != nil {
		return err
	}
	for _, line := range res.DeadLettersDeleted() {
		fmt.Fprintln(w, line)
	}
	return nil
}
