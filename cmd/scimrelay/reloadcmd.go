// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

func init() { subcommands = append(subcommands, newReloadCommand) }

func newReloadCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running relay re-read relay.yaml and apply it",
		Long: `Ask the running relay to re-read its relay.yaml (the file serve was started
with) and apply it without a restart, as SIGHUP does: tenants (added, removed,
their options and tokens from the file), sinks (added, removed, changed; the
others keep delivering), limits, the token endpoint's settings and the log
level. Requests under way finish with the configuration they started with.
A tenant removed cuts off the NATS subscribers scoped to it, and the answer
names them; a tenant added under a name that holds users, groups, live
credentials or subscribers from before has them back, and the answer counts
them: for a new customer, use a new tenant name, or purge the old one first
('scimrelay tenant purge NAME --yes' once it is removed). A tenant whose purge
has not finished cannot be added: the file is refused.

A file that 'scimrelay check' would refuse is refused: the relay keeps running
as it was, and the problems are printed (exit 1). A reload that fails after
applying part of the file (a sink that cannot be set up) keeps what it applied
and prints it with the cause (exit 1); reload again once that is mended.
Settings that only a restart
applies (listen, admin_listen, data_dir, nats, storage, public_url, admin,
log.format, the listener's timeouts …) are listed as needing a restart and
keep their running values.`,
		Example: `  scimrelay reload
  SCIMRELAY_CONFIG=/etc/scimrelay/relay.yaml scimrelay reload --json`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := reloadClient(cmd)
			if err != nil {
				return err
			}
			res, err := c.Reload(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSONLine(out, res)
			}
			if len(res.Applied) == 0 {
				fmt.Fprintf(out, "reloaded %s: nothing to change\n", res.Config)
			} else {
				fmt.Fprintf(out, "reloaded %s:\n", res.Config)
				for _, a := range res.Applied {
					fmt.Fprintf(out, "  %s\n", a)
				}
			}
			for _, key := range res.RestartNeeded {
				fmt.Fprintf(out, "  %s changed: needs a restart (the running value stays)\n", key)
			}
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}

// reloadClient is the reload command's client: it waits for the relay's
// answer as long as a reload may run (maxReload) and more.
func reloadClient(cmd *cobra.Command) (*adminclient.Client, error) {
	return adminClientWaiting(cmd, maxReload)
}
