// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay"
)

// credentialCLI builds the create, list, rotate and revoke commands of one
// kind of stored credential (SCIM tokens, OAuth clients), which share their
// lifecycle and their admin API shape.
type credentialCLI struct {
	noun    string           // "token", "client"
	kind    adminclient.Kind // the admin API collection
	example string           // an id, for examples
	// printNew prints a new credential: its secret is shown only then.
	printNew func(cmd *cobra.Command, res admin.TokenResponse) error
}

func (k credentialCLI) createCommand(short, long, example string) *cobra.Command {
	var tenant, name, expires string
	cmd := &cobra.Command{
		Use:     "create --tenant T",
		Short:   short,
		Long:    long,
		Example: example,
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			if err := checkFilters(cmd.Context(), c, tenant, ""); err != nil {
				return err // a tenant the relay does not have is bad usage, as for list
			}
			res, err := c.Issue(cmd.Context(), k.kind, admin.TokenRequest{Tenant: tenant, Name: name, Expires: expires})
			if err != nil {
				return err
			}
			return k.printNew(cmd, res)
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant the "+k.noun+" is for (required)")
	cmd.Flags().StringVar(&name, "name", "", "a name to recognise the "+k.noun+" by")
	cmd.Flags().StringVar(&expires, "expires", "90d", "lifetime, e.g. 90d, 12h, or never")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func (k credentialCLI) rotateCommand(long, example string) *cobra.Command {
	var tenant, name, expires, overlap string
	cmd := &cobra.Command{
		Use:     "rotate --tenant T",
		Short:   "Issue a new " + k.noun + "; the tenant's other issued " + k.noun + "s expire after an overlap",
		Long:    long,
		Example: example,
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			if err := checkFilters(cmd.Context(), c, tenant, ""); err != nil {
				return err // a tenant the relay does not have is bad usage, as for list
			}
			res, err := c.Rotate(cmd.Context(), k.kind, admin.TokenRequest{Tenant: tenant, Name: name, Expires: expires, Overlap: overlap})
			if err != nil {
				return err
			}
			for _, old := range res.Expired {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s %s (%s) now expires at %s\n", k.noun, old.ID, old.Name, old.Expires.Local().Format(time.RFC3339))
			}
			for _, kept := range res.StillValid {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s %s (%s in relay.yaml) stays valid after the overlap: rotate does not change relay.yaml; remove it from relay.yaml and reload the relay (SIGHUP or scimrelay reload) to end it\n", k.noun, kept.ID, kept.Name)
			}
			return k.printNew(cmd, res)
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant whose "+k.noun+"s to rotate (required)")
	cmd.Flags().StringVar(&name, "name", "rotated", "a name for the new "+k.noun)
	cmd.Flags().StringVar(&expires, "expires", "90d", "lifetime of the new "+k.noun+", e.g. 90d, or never")
	cmd.Flags().StringVar(&overlap, "overlap", "24h", "how long the old "+k.noun+"s keep working")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func (k credentialCLI) listCommand() *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List " + k.noun + "s (never their secrets)",
		Example: "  scimrelay " + k.noun + " list --tenant acme\n  scimrelay " + k.noun + " list --json",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			// A tenant that is not configured may still hold credentials
			// (one removed, whose come back with its name): they are
			// listed, so that they can be revoked; with none (the relay
			// answers 404), the name is bad usage, as for every filter.
			unknown, err := heldFilters(cmd.Context(), c, tenant, "")
			if err != nil {
				return err
			}
			list, err := c.Credentials(cmd.Context(), k.kind, tenant)
			switch {
			case unknown != nil && err == nil && len(list) == 0:
				return unknown
			case err != nil:
				return answeredFilters(unknown, err)
			case unknown != nil:
				fmt.Fprintf(cmd.ErrOrStderr(), "tenant %s is not configured; these %ss of it come back if a tenant of that name is configured again: scimrelay %s revoke ID\n", tenant, k.noun, k.noun)
			}
			if asJSON {
				return writeJSONLines(cmd.OutOrStdout(), list)
			}
			return writeCredentialTable(cmd.OutOrStdout(), list, time.Now())
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's "+k.noun+"s")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return cmd
}

func (k credentialCLI) revokeCommand(extra string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a " + k.noun + " at once" + extra,
		Example: "  scimrelay " + k.noun + " revoke " + k.example,
		Args:    positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			t, err := c.Revoke(cmd.Context(), k.kind, args[0])
			if err != nil {
				return err
			}
			if t.AlreadyRevoked {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s) of tenant %s was revoked already, at %s\n", k.noun, t.ID, t.Name, t.Tenant, t.Revoked.Local().Format(time.RFC3339))
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked %s %s (%s) of tenant %s\n", k.noun, t.ID, t.Name, t.Tenant)
			return err
		},
	}
	configFlagOn(cmd)
	return cmd
}

// writeCredentialTable lists tokens or clients with their state.
func writeCredentialTable(w io.Writer, list []relay.Token, now time.Time) error {
	tw := newTable(w, "ID", "TENANT", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATE")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04")
	}
	for _, t := range list {
		expires := "never"
		if !t.Expires.IsZero() {
			expires = day(t.Expires)
		}
		tw.row(t.ID, t.Tenant, t.Name, day(t.Created), expires, day(t.LastUsed), t.State(now))
	}
	return tw.flush()
}

// expiresText is a credential's expiry for people.
func expiresText(t relay.Token) string {
	if t.Expires.IsZero() {
		return "never"
	}
	return t.Expires.Local().Format(time.RFC3339)
}
