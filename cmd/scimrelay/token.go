// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

func init() { subcommands = append(subcommands, newTokenCommand) }

var tokenCLI = credentialCLI{noun: "token", kind: adminclient.Tokens, example: "tok_3f9a1c2b7d4e", printNew: printSecret}

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Short:   "Issue, list, rotate and revoke SCIM bearer tokens",
		Example: "  scimrelay token create --tenant acme --name entra\n  scimrelay token list\n  scimrelay token rotate --tenant acme --overlap 24h\n  scimrelay token revoke tok_3f9a1c2b7d4e",
		Long: `Manage the bearer tokens Entra ID authenticates with, one set per tenant.
A new token's secret is printed once, alone on stdout, so scripts can capture
it; only its SHA-256 is stored. Tokens written in relay.yaml are listed too,
marked relay.yaml, with an id from their SHA-256 (yaml_ and its first 12 hex
digits); only relay.yaml and a reload take them away.`,
	}
	cmd.AddCommand(
		tokenCLI.createCommand("Issue a token and print its secret once", "", `  scimrelay token create --tenant acme --name entra-prod
  scimrelay token create --tenant acme --expires 30d
  TOKEN=$(scimrelay token create --tenant acme --expires never)`),
		tokenCLI.listCommand(),
		tokenCLI.revokeCommand(" (not one written in relay.yaml: remove that from relay.yaml and reload)"),
		tokenCLI.rotateCommand(`Issue a new token for a tenant and make the tenant's other live tokens issued
by token create or rotate expire after the overlap, so that you can paste the
new one into Entra ID before the old one stops working.

Tokens written in relay.yaml (tenants[].tokens) are not touched: rotate names
them, and they stay valid until you remove them from relay.yaml and reload the
relay (SIGHUP or scimrelay reload). token list shows them, marked relay.yaml.`, `  scimrelay token rotate --tenant acme --overlap 24h`),
	)
	return cmd
}

// printSecret prints the secret alone on stdout and the details on stderr.
func printSecret(cmd *cobra.Command, res admin.TokenResponse) error {
	t := res.Token
	fmt.Fprintf(cmd.ErrOrStderr(), "token %s for tenant %s (%s), expires %s. The secret is shown only now:\n", t.ID, t.Tenant, t.Name, expiresText(t))
	_, err := fmt.Fprintln(cmd.OutOrStdout(), res.Secret)
	return err
}

// writeJSONLines writes each element of list as one line of JSON, as every
// --json does: a script reads a line at a time (jq, grep, a follow).
func writeJSONLines[T any](w io.Writer, list []T) error {
	for _, v := range list {
		if err := writeJSONLine(w, v); err != nil {
			return err
		}
	}
	return nil
}
