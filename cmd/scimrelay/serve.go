// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/gcfloor"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/tracing"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newServeCommand, newCheckCommand) }

// roleFlag is --role. It refuses an unknown role while the flags are
// parsed, so that a deployment file naming one fails even `serve --help`.
type roleFlag string

func (r *roleFlag) String() string { return string(*r) }
func (r *roleFlag) Type() string   { return "role" }

func (r *roleFlag) Set(s string) error {
	switch s {
	case roleAll, roleSCIM, roleSinks:
		*r = roleFlag(s)
		return nil
	}
	return fmt.Errorf("must be all, scim or sinks, got %q", s)
}

func newServeCommand() *cobra.Command {
	role := roleFlag(roleAll)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay: SCIM endpoint, event publisher, webhook delivery",
		Long: `Run the relay as relay.yaml describes it.

With no nats.url the relay runs its own NATS server (embedded, storing under
data_dir); services read from it with credentials from 'scimrelay subscriber
add'. On first start each tenant without a token gets one, shown once with the
Tenant URL to paste into Microsoft Entra ID: printed when stdout is a
terminal, else written to data_dir/initial-token (mode 0600), which the log
names.

Roles split the relay across machines that share an external NATS cluster:
  all    everything in one process (default)
  scim   the SCIM endpoint and the event publisher; holds the data file
  sinks  webhook delivery workers only; needs no data file, and opens the
         streams and buckets a scim or all process makes (waiting for them
         up to 2 minutes at start), creating none

SIGHUP (or 'scimrelay reload') re-reads relay.yaml and applies what can change
while running; SIGTERM or SIGINT stops it gracefully: requests under way
finish, their events go to NATS (up to 10 s more), workers hand their
partitions over. A second signal ends it at once.

Environment: SCIMRELAY_CONFIG names relay.yaml; OTEL_* turns on tracing;
GOGC overrides memory.gc_floor; in a container with a memory limit, Go's soft
limit is 90% of it unless GOMEMLIMIT is set (AUTOMEMLIMIT: another share, or
off).`,
		Example: `  scimrelay serve
  scimrelay serve --config /etc/scimrelay/relay.yaml
  scimrelay serve --role sinks --config relay.yaml`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGHUP reloads relay.yaml once the relay runs; until then (the
			// data file opening, NATS connecting) it must not end the
			// process, as Go's default action would.
			signal.Ignore(syscall.SIGHUP)
			cfg, err := loadConfig(configPathOf(cmd), string(role))
			if err != nil {
				return err
			}
			level := new(slog.LevelVar)
			log, err := newLogger(cfg.Log, cmd.ErrOrStderr(), level)
			if err != nil {
				return err
			}
			// A token created on first start is printed only to a person at a
			// terminal; under systemd or Kubernetes it goes to a file instead.
			var out io.Writer
			if isTerminal(cmd.OutOrStdout()) {
				out = cmd.OutOrStdout()
			}
			setMemoryLimit(log, memlimit.FromCgroup)
			defer gcfloor.Start(int64(cfg.Memory.GCFloor))()
			log.Info("starting", "version", versionString(), "role", string(role), "config", configPathOf(cmd),
				"data_dir", cfg.DataDir, "nats", natsDescription(cfg.NATS.URL))
			srv, err := newServer(cmd.Context(), cfg, string(role), log, out, withReload(configPathOf(cmd), level))
			if err != nil && errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				// SIGTERM while starting (a worker waiting for its front
				// end, say): a stop asked for, not a failure to start.
				log.Info("stopped", "while", "starting")
				return nil
			}
			if err != nil {
				return err
			}
			if err := srv.run(cmd.Context()); err != nil {
				return err
			}
			log.Info("stopped")
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().Var(&role, "role", "what this process runs: all, scim or sinks")
	return cmd
}

func newCheckCommand() *cobra.Command {
	role := roleFlag(roleAll)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate relay.yaml without starting anything",
		Long: `Validate relay.yaml the way serve does, without opening a file or a socket:
decode it strictly, expand ${ENV} references, build every component's options
and let each component check them, refuse two listeners of the role on one
port, look for the files NATS reads, and report every problem at once, each
naming its field. Exit status 0 means serve accepts the file. What only
starting can show (a port another process holds, an unreachable NATS, a data
file held by another process, a named file that cannot be read or does not
hold what it should) serve reports when it starts.`,
		Example: `  scimrelay check
  SCIMRELAY_ADMIN_TOKEN=... scimrelay check --config /etc/scimrelay/relay.yaml
  scimrelay check --role sinks --config relay.yaml`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// SIGHUP reloads relay.yaml once the relay runs; until then (the
			// data file opening, NATS connecting) it must not end the
			// process, as Go's default action would.
			signal.Ignore(syscall.SIGHUP)
			cfg, err := loadConfig(configPathOf(cmd), string(role))
			if err != nil {
				return err
			}
			// serve refuses an OTEL_* setting it cannot honour; so does check.
			if _, err := tracing.Enabled(os.Getenv); err != nil {
				return err
			}
			// What serve accepts and says at Warn, said here too.
			if why := clearTextOrigin(cfg); why != "" && role != roleSinks {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: public_url: %s\n", why)
			}
			for i, sink := range cfg.Sinks {
				if why := sinks.ClearText(sink.URL); why != "" && role != roleSCIM {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: sinks[%d].url: %s\n", i, why)
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s is valid for role %s: %d tenant(s), %d sink(s), NATS %s\n",
				configPathOf(cmd), role, len(cfg.Tenants), len(cfg.Sinks), natsDescription(cfg.NATS.URL))
			return err
		},
	}
	configFlagOn(cmd)
	cmd.Flags().Var(&role, "role", "the role serve would run: all, scim or sinks")
	return cmd
}

func natsDescription(url string) string {
	if url == "" {
		return "embedded"
	}
	return "external"
}

// isTerminal reports whether a command's stdin, stdout or stderr is a
// terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// memoryLimitRatio is the share of the container's memory limit given to Go
// as its soft limit; the rest is headroom for what Go does not count (the
// data file's mapped pages, the kernel's buffers).
const memoryLimitRatio = 0.9

// setMemoryLimit gives Go a soft memory limit of 90% of the container's
// (the cgroup's, from limit), so that the collector works harder as the
// heap nears it instead of the process being killed; memory.gc_floor keeps
// it from running while the heap is small. GOMEMLIMIT in the environment
// wins, and AUTOMEMLIMIT sets another ratio or "off"
// (github.com/KimMachineGun/automemlimit). Without a limit it does nothing.
func setMemoryLimit(log *slog.Logger, limit memlimit.Provider) {
	set, err := memlimit.SetGoMemLimitWithOpts(memlimit.WithProvider(limit), memlimit.WithRatio(memoryLimitRatio))
	switch {
	case errors.Is(err, memlimit.ErrNoCgroup) || errors.Is(err, memlimit.ErrCgroupsNotSupported):
		log.Debug("no container memory limit for Go's soft limit", "err", err)
	case err != nil: // AUTOMEMLIMIT unreadable, or the cgroup's files
		log.Warn("Go's soft memory limit is not set from the container's", "err", err)
	case set > 0:
		log.Info("Go's soft memory limit set from the container's", "gomemlimit_bytes", set)
	}
}
