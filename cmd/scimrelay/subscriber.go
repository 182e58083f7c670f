// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/admin"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

func init() { subcommands = append(subcommands, newSubscriberCommand) }

func newSubscriberCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "subscriber",
		Short: "Give services read-only credentials for the embedded NATS",
		Long: `Manage the services that read events from the embedded NATS server. Each
subscriber has an nkey of its own and reads with one durable pull consumer on
the SCIMRELAY stream, named as the subscriber, which the relay makes and keeps:
the subscriber pulls, acknowledges and reads its info, and can never create or
delete a consumer, publish an event, or change a stream or a key-value bucket.
With --subjects it reads only events under that subject pattern (the
consumer's filter). Subjects naming one tenant (scimrelay.acme.>) need that
tenant configured; a subscriber whose tenant is removed from relay.yaml is cut
off, and let in again if a tenant of that name is configured again.

Changes take effect at once; removing a subscriber closes its connections.
With an external NATS (nats.url) create credentials in that server instead.`,
		Example: "  scimrelay subscriber add billing --subjects 'scimrelay.acme.user.>'\n  scimrelay subscriber list\n  scimrelay subscriber remove billing",
	}
	cmd.AddCommand(newSubscriberAddCommand(), newSubscriberListCommand(), newSubscriberRemoveCommand())
	return cmd
}

func newSubscriberAddCommand() *cobra.Command {
	var subjects, out, from string
	var toStdout, replace bool
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Create a subscriber and its consumer, and write its nkey seed to a file",
		Long: `Create a subscriber, and its durable consumer on SCIMRELAY, named as the
subscriber and filtered on --subjects. The consumer starts from every event the
stream still holds (--from all) or from the events stored after it is made
(--from new); --from applies only when the consumer is made: to change it,
remove the subscriber and add it again.

A subscriber that exists is refused, unless --replace: then add gives it
a new key (its service's connections close), and the --subjects given
(without --subjects it keeps its own; --subjects '' reads every event):
its consumer's filter is updated in place and it keeps its position.

The nkey pair is generated here and only the public key is sent to the relay:
the seed is written to --out (mode 0600, never overwriting a file), or printed
alone on stdout with --stdout.`,
		Example: `  scimrelay subscriber add billing
  scimrelay subscriber add audit-acme --subjects 'scimrelay.acme.>' --out /etc/audit/nats.nk
  scimrelay subscriber add crm-sync --subjects 'scimrelay.*.user.>' --from new --stdout`,
		Args: positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if toStdout && cmd.Flags().Changed("out") {
				return usageError{errors.New("--out and --stdout exclude each other")}
			}
			if from != natsbus.FromAll && from != natsbus.FromNew {
				return usageError{fmt.Errorf("--from must be %s or %s, not %q", natsbus.FromAll, natsbus.FromNew, from)}
			}
			if !cmd.Flags().Changed("from") {
				from = "" // a subscriber there already keeps where its consumer started
			}
			if out == "" {
				out = name + ".nk"
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			kp, err := nkeys.CreateUser()
			if err != nil {
				return fmt.Errorf("generating an nkey: %w", err)
			}
			defer kp.Wipe()
			pub, err := kp.PublicKey()
			if err != nil {
				return err
			}
			seed, err := kp.Seed()
			if err != nil {
				return err
			}
			if !toStdout {
				// Claim the file before asking the relay, so that an existing
				// file is never overwritten and a refusal leaves nothing behind.
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("writing the seed: %w", err)
				}
				_, werr := f.Write(append(seed, '\n'))
				if err := errors.Join(werr, f.Close()); err != nil {
					_ = os.Remove(out)
					return fmt.Errorf("writing the seed to %s: %w", out, err)
				}
			}
			req := admin.SubscriberRequest{Name: name, PublicKey: pub, From: from, Replace: replace}
			if cmd.Flags().Changed("subjects") {
				req.Subjects = &subjects // '' is every event; left out, a subscriber there keeps its subjects
			}
			var info admin.SubscriberInfo
			if err := c.Do(cmd.Context(), "POST", "/admin/v1/subscribers", req, &info); err != nil {
				if !toStdout {
					_ = os.Remove(out)
				}
				return err
			}
			if toStdout {
				printConnectHelp(cmd.ErrOrStderr(), info, "<seed file>")
				_, err := fmt.Fprintln(cmd.OutOrStdout(), string(seed))
				return err
			}
			printConnectHelp(cmd.OutOrStdout(), info, out)
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&subjects, "subjects", "", "limit it to events under this subject pattern, e.g. 'scimrelay.acme.>' (its consumer's filter)")
	cmd.Flags().StringVar(&from, "from", natsbus.FromAll, "where its consumer starts when it is made: all (every event the stream holds) or new (events from now on)")
	cmd.Flags().StringVar(&out, "out", "", "file for the nkey seed (default NAME.nk)")
	cmd.Flags().BoolVar(&toStdout, "stdout", false, "print the seed alone on stdout instead of writing a file")
	cmd.Flags().BoolVar(&replace, "replace", false, "give a subscriber that exists a new key (and --subjects, if given)")
	return cmd
}

// printConnectHelp says how a subscriber connects, for nats.go, nats.js
// and the nats CLI.
func printConnectHelp(w io.Writer, info admin.SubscriberInfo, seedFile string) {
	scope := "every event"
	filter := "none"
	if info.Subjects != "" {
		scope, filter = "events under "+info.Subjects, info.Subjects
	}
	natsURL := info.URL
	if natsURL == "" {
		natsURL = "<nats.listen is empty: set it to accept subscribers>"
	}
	fmt.Fprintf(w, "Subscriber %s may read %s. Its nkey seed is in %s: keep it secret (the relay holds only %s).\n", info.Name, scope, seedFile, info.PublicKey)
	if info.Replaced {
		fmt.Fprintf(w, "It was there already: its old key no longer connects, and its consumer keeps its position with the filter %s.\n", filter)
	}
	fmt.Fprintf(w, "It connects to %s with that nkey and the inbox prefix %s, and reads with the durable pull consumer %q on stream %s, which the relay keeps (filter %s, from %s): bind to it (nats.go js.Consumer, nats.js consumers.get); it may not create or delete consumers.\n",
		natsURL, info.InboxPrefix, info.Consumer, info.Stream, filter, info.From)
	fmt.Fprintf(w, "  nats.go:  opt, err := nats.NkeyOptionFromSeed(%q)\n            nc, err := nats.Connect(%q, opt, nats.CustomInboxPrefix(%q), nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort(), nats.RetryOnFailedConnect(true))\n", seedFile, natsURL, info.InboxPrefix)
	fmt.Fprintf(w, "  nats.js:  connect({ servers: %q, authenticator: nkeyAuthenticator(seed), inboxPrefix: %q, maxReconnectAttempts: -1, ignoreAuthErrorAbort: true, waitOnFirstConnect: true })\n", natsURL, info.InboxPrefix)
	fmt.Fprintf(w, "Keep reconnecting, refused or not (the options above): by default the client gives up at the second refusal (a reload cutting its tenant off) or after a few minutes without the relay, and reads nothing more.\n")
	fmt.Fprintf(w, "  nats CLI: nats --server %s --nkey %s --inbox-prefix %s ...\n", natsURL, seedFile, info.InboxPrefix)
	if strings.HasPrefix(natsURL, "tls://") {
		fmt.Fprintf(w, "The listener requires TLS: trust its CA (nats.go nats.RootCAs, nats CLI --tlsca) and, if nats.tls.ca_file is set, present a client certificate it signed.\n")
	}
}

func newSubscriberListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List subscribers (names, subjects, where their consumers started, public keys)",
		Example: "  scimrelay subscriber list\n  scimrelay subscriber list --json",
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			var list []admin.SubscriberInfo
			if err := c.Do(cmd.Context(), "GET", "/admin/v1/subscribers", nil, &list); err != nil {
				return err
			}
			if asJSON {
				return writeJSONLines(cmd.OutOrStdout(), list)
			}
			tw := newTable(cmd.OutOrStdout(), "NAME", "SUBJECTS", "FROM", "PUBLIC KEY", "CREATED")
			for _, s := range list {
				subjects := s.Subjects
				if subjects == "" {
					subjects = "(all)"
				}
				if s.CutOff {
					subjects += " (cut off: its tenant is not configured)"
				}
				tw.row(s.Name, subjects, s.From, s.PublicKey, s.Created.Local().Format("2006-01-02 15:04"))
			}
			return tw.flush()
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return cmd
}

func newSubscriberRemoveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a subscriber: its connections close and its consumer is deleted",
		Example: "  scimrelay subscriber remove billing",
		Args:    positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), "DELETE", "/admin/v1/subscribers/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed subscriber %s: its connections are closed and its consumer deleted\n", args[0])
			return err
		},
	}
	configFlagOn(cmd)
	return cmd
}
