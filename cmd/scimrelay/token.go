package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay"
)

func init() { subcommands = append(subcommands, newTokenCommand) }

func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Short:   "Issue, list, rotate and revoke SCIM bearer tokens",
		Example: "  scimrelay token create --tenant acme --name entra\n  scimrelay token list\n  scimrelay token rotate --tenant acme --overlap 24h\n  scimrelay token revoke tok_3f9a1c2b7d4e",
		Long: `Manage the bearer tokens Entra ID authenticates with, one set per tenant.
A new token's secret is printed once, alone on stdout, so scripts can capture
it; only its SHA-256 is stored.`,
		Args: positional(cobra.NoArgs),
	}
	cmd.AddCommand(newTokenCreateCommand(), newTokenListCommand(), newTokenRevokeCommand(), newTokenRotateCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var tenant, name, expires string
	cmd := &cobra.Command{
		Use:   "create --tenant T",
		Short: "Issue a token and print its secret once",
		Example: `  scimrelay token create --tenant acme --name entra-prod
  scimrelay token create --tenant acme --expires 30d
  TOKEN=$(scimrelay token create --tenant acme --expires never)`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			var res admin.TokenResponse
			if err := c.do(cmd.Context(), "POST", "/admin/v1/tokens", admin.TokenRequest{Tenant: tenant, Name: name, Expires: expires}, &res); err != nil {
				return err
			}
			return printSecret(cmd, res)
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant the token is for (required)")
	cmd.Flags().StringVar(&name, "name", "", "a name to recognise the token by")
	cmd.Flags().StringVar(&expires, "expires", "90d", "lifetime, e.g. 90d, 12h, or never")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func newTokenRotateCommand() *cobra.Command {
	var tenant, name, expires, overlap string
	cmd := &cobra.Command{
		Use:   "rotate --tenant T",
		Short: "Issue a new token; the tenant's other tokens expire after an overlap",
		Long: `Issue a new token for a tenant and make every other live token of the tenant
expire after the overlap, so that you can paste the new one into Entra ID
before the old one stops working.`,
		Example: `  scimrelay token rotate --tenant acme --overlap 24h`,
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			var res admin.TokenResponse
			if err := c.do(cmd.Context(), "POST", "/admin/v1/tokens/rotate", admin.TokenRequest{Tenant: tenant, Name: name, Expires: expires, Overlap: overlap}, &res); err != nil {
				return err
			}
			for _, old := range res.Expired {
				fmt.Fprintf(cmd.ErrOrStderr(), "token %s (%s) now expires at %s\n", old.ID, old.Name, old.Expires.Format(time.RFC3339))
			}
			return printSecret(cmd, res)
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant whose tokens to rotate (required)")
	cmd.Flags().StringVar(&name, "name", "rotated", "a name for the new token")
	cmd.Flags().StringVar(&expires, "expires", "90d", "lifetime of the new token, e.g. 90d, or never")
	cmd.Flags().StringVar(&overlap, "overlap", "24h", "how long the old tokens keep working")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

// printSecret prints the secret alone on stdout and the details on stderr.
func printSecret(cmd *cobra.Command, res admin.TokenResponse) error {
	t := res.Token
	expires := "never"
	if !t.Expires.IsZero() {
		expires = t.Expires.Format(time.RFC3339)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "token %s for tenant %s (%s), expires %s. The secret is shown only now:\n", t.ID, t.Tenant, t.Name, expires)
	_, err := fmt.Fprintln(cmd.OutOrStdout(), res.Secret)
	return err
}

func newTokenListCommand() *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List tokens (never their secrets)",
		Example: "  scimrelay token list --tenant acme\n  scimrelay token list --json",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			var list []relay.Token
			if err := c.do(cmd.Context(), "GET", "/admin/v1/tokens?tenant="+url.QueryEscape(tenant), nil, &list); err != nil {
				return err
			}
			if asJSON {
				return writeJSONTo(cmd.OutOrStdout(), list)
			}
			return writeTokenTable(cmd.OutOrStdout(), list, time.Now())
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's tokens")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeTokenTable(w io.Writer, list []relay.Token, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tNAME\tCREATED\tEXPIRES\tLAST USED\tSTATE")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04")
	}
	for _, t := range list {
		state := "live"
		switch {
		case !t.Revoked.IsZero():
			state = "revoked"
		case !t.Expires.IsZero() && !now.Before(t.Expires):
			state = "expired"
		case !t.Expires.IsZero() && t.Expires.Sub(now) < 14*24*time.Hour:
			state = fmt.Sprintf("expires in %dd", int(t.Expires.Sub(now).Hours()/24))
		}
		expires := "never"
		if !t.Expires.IsZero() {
			expires = day(t.Expires)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Tenant, t.Name, day(t.Created), expires, day(t.LastUsed), state)
	}
	return tw.Flush()
}

func newTokenRevokeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a token at once",
		Example: "  scimrelay token revoke tok_3f9a1c2b7d4e",
		Args:    positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			var t relay.Token
			if err := c.do(cmd.Context(), "DELETE", "/admin/v1/tokens/"+url.PathEscape(args[0]), nil, &t); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s (%s) of tenant %s\n", t.ID, t.Name, t.Tenant)
			return err
		},
	}
	configFlagOn(cmd)
	return cmd
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
