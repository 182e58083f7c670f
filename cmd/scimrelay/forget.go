// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

// newSinksForgetCommand is `sinks forget`, under newSinksCommand.
func newSinksForgetCommand() *cobra.Command {
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "forget NAME --yes",
		Short: "Delete what a sink removed from relay.yaml left in NATS",
		Long: `Delete what a sink removed from relay.yaml left in NATS: its partition
consumers on the stream (and the events they still hold for it), its parking
bucket (the resources whose events waited there, and its partitions' claims),
its dead letters and its delivery attempts. Until then they stay, so that
adding the sink back resumes where it stopped; after a forget, a sink added
under the name starts with the events from the reload that adds it, like any
new sink, and is sent nothing of its namesake's.

Remove the sink from relay.yaml and reload every process first (or restart
it). A sink still configured, or still run by a delivery worker of a process
not reloaded yet, is refused (exit 1), and so is this command on a delivery
worker (--role sinks), whose NATS user may not delete these: run it where a
SCIM front end runs. A name under which nothing is stored is refused as bad
usage. Nothing is deleted when it is refused; what it deletes cannot be
brought back, hence --yes.`,
		Example: "  scimrelay sinks forget crm-old --yes",
		Args:    positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				return usageError{fmt.Errorf("sinks forget deletes for good what sink %s left: the events its consumers still hold for it, its parked resources, its dead letters and its delivery attempts; add --yes to do it", name)}
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			f, err := c.ForgetSink(cmd.Context(), name)
			var api *adminclient.Error
			if errors.As(err, &api) && api.Status == http.StatusNotFound {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLine(cmd.OutOrStdout(), f)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "forgot sink %s: deleted %d consumers (holding %d undelivered events), %d buckets (%d parked resources), %d dead letters, %d delivery attempts\n",
				f.Sink, f.Consumers, f.Undelivered, f.Buckets, f.Parked, f.DeadLetters, f.Attempts)
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&yes, "yes", false, "delete them (required: it cannot be undone)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was deleted as one JSON object")
	return cmd
}
