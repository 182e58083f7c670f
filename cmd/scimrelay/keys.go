// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
)

func init() { subcommands = append(subcommands, newKeysCommand) }

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Short:   "List and rotate the keys in the data file: the event-signing key and the access-token key",
		Example: "  scimrelay keys list\n  scimrelay keys rotate events\n  scimrelay keys rotate oauth --overlap 0",
		Long: `The data file holds two keys, and so does every backup of it: the Ed25519 key
the SCIM front end signs events with on an external NATS, and the key that
signs OAuth access tokens. Whoever holds a copy can sign events the workers
deliver and access tokens the relay accepts. After a data file or a backup
leaked, rotate both on the front end (oauth with --overlap 0, or the
copy's key signs accepted access tokens for the overlap): the copy's keys
then sign nothing that is accepted.`,
	}
	cmd.AddCommand(newKeysListCommand(), newKeysRotateCommand())
	return cmd
}

func newKeysListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the event-signing keys and the access-token key (never a secret)",
		Example: "  scimrelay keys list\n  scimrelay keys list --json | jq .events.stream.retired",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			keys, err := c.Keys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONLine(cmd.OutOrStdout(), keys)
			}
			return writeKeys(cmd.OutOrStdout(), keys)
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the keys as one JSON object")
	return cmd
}

// writeKeys prints the keys for people, one a line.
func writeKeys(w io.Writer, k admin.KeysInfo) error {
	tw := newTable(w)
	if k.Events.Key == "" {
		tw.row("event-signing key", "none: "+k.Events.Note)
	} else {
		tw.row("event-signing key", fmt.Sprintf("%s (this front end's)", k.Events.Key))
		if s := k.Events.Stream; s != nil {
			for _, named := range s.Named {
				tw.row("named by the stream", named)
			}
			for _, r := range s.Retired {
				tw.row("retired", fmt.Sprintf("%s: verifies events stored up to stream sequence %d, dead letters stored before %s", r.Key, r.UpTo, r.At.Local().Format(time.RFC3339)))
			}
			for _, d := range s.Dropped {
				tw.row("dropped", fmt.Sprintf("%s: retired and dropped; verifies nothing and is never named again", d))
			}
		}
	}
	created := "with the data file (never rotated)"
	if !k.OAuth.Created.IsZero() {
		created = k.OAuth.Created.Local().Format(time.RFC3339)
	}
	tw.row("access-token key", fmt.Sprintf("%s, created %s", k.OAuth.ID, created))
	if k.OAuth.Previous != "" {
		tw.row("previous access-token key", fmt.Sprintf("%s, its access tokens accepted until %s", k.OAuth.Previous, k.OAuth.PreviousUntil.Local().Format(time.RFC3339)))
	}
	return tw.flush()
}

// The kinds of key keys rotate takes.
const (
	keyEvents = "events"
	keyOAuth  = "oauth"
)

func newKeysRotateCommand() *cobra.Command {
	var overlap string
	cmd := &cobra.Command{
		Use:   "rotate events|oauth",
		Short: "Give the relay a new event-signing key or access-token key",
		Long: `rotate events gives the SCIM front end this command reaches a new event-signing
key: stored in its data file, named by the event stream, then signing; the
old key is then retired. Events stored in the stream SCIMRELAY up to its last
sequence at that moment (dead letters: stored before that time) stay
verifiable with the old key; any other event it signed is refused as an
unknown key's. A front end whose data file holds a retired key (a backup from
before the rotation restored) takes a new key when it starts. Workers of an
older release know nothing of retired keys: they dead-letter the events the
old key signed that they had not delivered yet; upgrade the workers first.
With NATS embedded, events are not signed and there is nothing to rotate.

rotate oauth gives the relay a new access-token key. Access tokens signed
with the old one keep working for --overlap (default: the access tokens'
lifetime, oauth.token_lifetime, 1h unless set, so that an identity provider
asks for a new token before its old one is refused); --overlap 0 refuses them
at once, for a leak. Only the key replaced last is kept for the overlap.`,
		Example: "  scimrelay keys rotate events\n  scimrelay keys rotate oauth\n  scimrelay keys rotate oauth --overlap 0",
		Args: positional(func(cmd *cobra.Command, args []string) error {
			if err := cobra.ExactArgs(1)(cmd, args); err != nil {
				return fmt.Errorf("%w: which key, events or oauth", err)
			}
			switch args[0] {
			case keyEvents:
				if cmd.Flags().Changed("overlap") {
					return fmt.Errorf("--overlap is for rotate oauth: a retired event-signing key has no overlap, it verifies only what was stored before it was retired")
				}
			case keyOAuth:
			default:
				return fmt.Errorf("unknown key %q: rotate events or oauth", args[0])
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := keysRotateClient(cmd)
			if err != nil {
				return err
			}
			if args[0] == keyEvents {
				res, err := c.RotateEventKey(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "this front end signs events with its new key %s\n", res.Key)
				for _, r := range res.Retired {
					fmt.Fprintf(cmd.OutOrStdout(), "retired %s: it verifies the events stored up to stream sequence %d (dead letters stored before %s); anything else it signed is refused\n", r.Key, r.UpTo, r.At.Local().Format(time.RFC3339))
				}
				return nil
			}
			res, err := c.RotateOAuthKey(cmd.Context(), admin.KeyRotateRequest{Overlap: overlap})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "the relay signs access tokens with its new key %s\n", res.OAuth.ID)
			if res.OAuth.Previous != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "access tokens of the old key %s are accepted until %s\n", res.OAuth.Previous, res.OAuth.PreviousUntil.Local().Format(time.RFC3339))
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "access tokens of the old key are refused from now on")
			}
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&overlap, "overlap", "", "rotate oauth: how long access tokens of the old key keep working, e.g. 1h, or 0 (default: oauth.token_lifetime)")
	return cmd
}

// keysRotateClient is the keys rotate command's client: it waits for the
// relay's answer as long as a rotation may run (admin.RotationTime) and
// more.
func keysRotateClient(cmd *cobra.Command) (*adminclient.Client, error) {
	return adminClientWaiting(cmd, admin.RotationTime)
}
