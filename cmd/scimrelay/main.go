// SPDX-License-Identifier: Apache-2.0

// Command scimrelay receives SCIM 2.0 provisioning from Microsoft Entra ID
// (and other identity providers), keeps a local identity index, and turns
// every change into a CloudEvent on NATS JetStream that sink workers deliver
// to webhooks.
//
// main parses flags and calls the command's run function; everything a test
// would want lives in the packages scim, relay, sinks and config.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/relay/certfile"
)

// Exit codes scripts can rely on.
const (
	exitOK       = 0
	exitError    = 1 // the command ran and failed
	exitUsage    = 2 // bad flags or arguments
	exitNotReady = 3 // the server could not be reached
)

// usageError marks an error in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// unreachableError marks a command that could not reach the running server.
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

func main() {
	os.Exit(execute(stopOnSignal(), os.Args[1:], os.Stdout, os.Stderr))
}

// stopOnSignal returns a context that ends at the first SIGTERM or
// interrupt. That signal begins a graceful stop, which may wait
// (limits.shutdown_delay, requests under way, a sink's hand-over); a
// second one stops the process at once, as an operator pressing Ctrl-C
// twice expects: the signals are handed back to their default and the
// second is raised again. The signals stay caught throughout, into a
// channel with room for both: handed back at the first (signal.Stop), a
// second sent right behind it reached the process while it was still
// caught, and was dropped (TestASecondSignalStopsAtOnce).
func stopOnSignal() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		second := <-sigs
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			_ = self.Signal(second) // its default: the process ends
		}
		os.Exit(exitError)
	}()
	return ctx
}

// execute runs the CLI with args and returns the process exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, certfile.ErrOtherCertificate) {
		// The admin listener answered, with another certificate than
		// admin.tls.cert_file's: not a relay out of reach.
		fmt.Fprintf(stderr, "scimrelay: admin listener: %v\n", certfile.ErrOtherCertificate)
		return exitError
	}
	fmt.Fprintf(stderr, "scimrelay: %v\n", err)
	if isUsageError(err) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	var ne unreachableError
	var ae *adminclient.UnreachableError
	if errors.As(err, &ne) || errors.As(err, &ae) {
		return exitNotReady
	}
	return exitError
}

// isUsageError reports whether err means the command was called wrongly:
// a bad flag or argument, a flag value the command or the admin API
// refuses (the API answers 400 only for a bad parameter), or a filter
// naming a tenant or sink that does not exist.
func isUsageError(err error) bool {
	var ue usageError
	var api *adminclient.Error
	switch {
	case errors.As(err, &ue), strings.HasPrefix(err.Error(), "required flag"):
		return true
	case errors.As(err, &api) && api.Status == http.StatusBadRequest:
		return true
	}
	return false
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "scimrelay",
		Short: "Receive SCIM provisioning from Entra ID and relay every change as a CloudEvent",
		Long: `scimrelay is a SCIM 2.0 service provider that Microsoft Entra ID (and other
identity providers) provision users and groups into. It keeps a local identity
index, turns every change into a CloudEvent on NATS JetStream, and delivers the
events to webhooks configured in relay.yaml, with retries, signatures and
per-resource ordering.

Start it with 'scimrelay serve'. Most other commands talk to the running
server through its admin listener (admin_listen in relay.yaml); restore and
compact work on its data file with it stopped.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// --version prints what the version command prints.
		Version: currentBuild().String(),
	}
	root.SetVersionTemplate("{{.Version}}")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCommand())
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	// cobra adds its completion command when the root runs; added now, its
	// group is refused a typo too.
	root.InitDefaultCompletionCmd()
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands walks the tree under cmd and makes every group
// (a command that only holds subcommands, the root included) print its
// help when called bare, and refuse anything after it as bad usage. cobra
// answers an unknown subcommand of a group other than the root with the
// group's help and no error, so "token revok ID" would exit 0: a script
// that mistyped a command would believe it had run.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = unknownSubcommand
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only on the root
		cmd.DisableFlagsInUseLine = true   // its usage is its subcommands'
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
}

// unknownSubcommand refuses the arguments of a group, which can only be a
// subcommand it does not have, naming the closest one it has.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	err := fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())
	if near := cmd.SuggestionsFor(args[0]); len(near) > 0 {
		err = fmt.Errorf("%w (did you mean %q?)", err, near[0])
	}
	return usageError{err}
}

// positional wraps an argument validator so that its errors count as usage
// errors, and refuses an empty argument.
func positional(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return usageError{err}
		}
		// An empty argument (an unset shell variable, "$ID") named
		// nothing and got the admin API's answer to a path without it.
		names := strings.Fields(cmd.Use)[1:]
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				name := fmt.Sprintf("argument %d", i+1)
				if i < len(names) {
					name = names[i]
				}
				return usageError{fmt.Errorf("%s is empty", name)}
			}
		}
		return nil
	}
}

// subcommands lists the constructors of the commands defined in other files.
var subcommands []func() *cobra.Command
