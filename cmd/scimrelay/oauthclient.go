// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/oauth"
	"github.com/scimrelay/scimrelay/config"
)

func init() { subcommands = append(subcommands, newClientCommand) }

var clientCLI = credentialCLI{noun: "client", kind: adminclient.Clients, example: "cli_3f9a1c2b7d4e5f60", printNew: printClient}

func newClientCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "client",
		Short: "Issue, list, rotate and revoke OAuth 2.0 clients (client credentials grant)",
		Long: `Manage OAuth 2.0 clients, one set per tenant, for identity providers that
authenticate with the client credentials grant (RFC 6749 section 4.4), such
as Entra ID's "OAuth2 Client Credentials Grant" authentication method. A
client gets access tokens from its tenant's token endpoint,
<public_url>/oauth2/<tenant>/token, with client_secret_basic or
client_secret_post; they expire after oauth.token_lifetime (1h) and stop
working when the client is revoked or expires. The client's id and secret
also work as HTTP Basic credentials on the SCIM endpoints (oauth.basic_auth),
which is what Okta's "Basic Auth" authentication mode sends.

A new client's secret is printed once; only its SHA-256 is stored. Clients
have the lifecycle of tokens: expiry (90 days unless --expires), warnings
14 days before, scimrelay_token_expiry_timestamp_seconds{kind="client"}, rotation with
overlap, revocation.`,
		Example: "  scimrelay client create --tenant acme --name entra\n  scimrelay client list\n  scimrelay client rotate --tenant acme --overlap 24h\n  scimrelay client revoke cli_3f9a1c2b7d4e5f60",
	}
	cmd.AddCommand(
		clientCLI.createCommand("Issue a client and print its id and secret once",
			`Issue an OAuth client for a tenant. stdout gets three lines, client_id,
client_secret and token_endpoint, the values Entra ID asks for under
Authentication Method "OAuth2 Client Credentials Grant" (Client Identifier,
Client Secret, Token Endpoint).`,
			`  scimrelay client create --tenant acme --name entra-prod
  scimrelay client create --tenant acme --expires 30d`),
		clientCLI.listCommand(),
		clientCLI.revokeCommand("; its access tokens stop working with it"),
		clientCLI.rotateCommand(`Issue a new client for a tenant and make every other live client of the
tenant expire after the overlap, so that you can enter the new client id and
secret in the identity provider before the old one stops working.`, `  scimrelay client rotate --tenant acme --overlap 24h`),
	)
	return cmd
}

// printClient prints a new client's id, secret and token endpoint on stdout,
// one "key: value" line each, and the details on stderr.
func printClient(cmd *cobra.Command, res admin.TokenResponse) error {
	t := res.Token
	// The endpoint is under public_url, else the SCIM listener; listen
	// matters only without public_url, so an unset variable in it is no
	// reason to print the placeholder.
	endpoint, hint := tokenEndpoint("<public_url>", t.Tenant), ""
	if cfg, err := config.Read(configPathOf(cmd), "public_url", "tls.cert_file", "tls.key_file"); err == nil && (cfg.PublicURL != "" || cfg.Listen != "") {
		endpoint, hint = tokenEndpoint(publicOrigin(cfg), t.Tenant), unreachableOrigin(cfg)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "client %s for tenant %s (%s), expires %s. The secret is shown only now:\n", t.ID, t.Tenant, t.Name, expiresText(t))
	if hint != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "token_endpoint: %s.\n", hint)
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "client_id: %s\nclient_secret: %s\ntoken_endpoint: %s\n", t.ID, res.Secret, endpoint)
	return err
}

// tokenEndpoint is a tenant's OAuth token endpoint as identity providers
// reach it at origin.
func tokenEndpoint(origin, tenant string) string {
	return origin + strings.ReplaceAll(oauth.PathPattern, "{tenant}", tenant)
}
