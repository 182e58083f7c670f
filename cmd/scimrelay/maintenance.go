// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newMaintenanceCommand) }

func newMaintenanceCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "maintenance",
		Short: "Wait until stopped, serving nothing and holding no file: a stopped relay's pod, for restore and compact",
		Long: `Wait until SIGTERM or an interrupt, then exit 0. It serves nothing,
reads no relay.yaml and opens no file, so scimrelay restore and scimrelay
compact can run beside it on the relay's data file.

It is what the Helm chart's front-end pod runs with scim.maintenance=true:
the StatefulSet replaces the relay's pod with this one (the relay's pod
has stopped and let go of the data file before this one starts, with the
same volume, relay.yaml and environment), and the operator runs restore
or compact in it with kubectl exec. Setting scim.maintenance=false again
starts the relay on the result. See README (Backup and recovery).`,
		Example: `  helm upgrade scimrelay deploy/helm/scimrelay --reuse-values --set scim.maintenance=true
  kubectl rollout status statefulset/scimrelay-scim
  kubectl exec -i scimrelay-scim-0 -- scimrelay restore --from - < scimrelay-2026-11-30.db
  helm upgrade scimrelay deploy/helm/scimrelay --reuse-values --set scim.maintenance=false`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.ErrOrStderr(), "scimrelay: maintenance: the relay is not running; run scimrelay restore or compact beside this process, then stop it")
			<-cmd.Context().Done()
			return nil
		},
	}
}
