// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/adminclient"
	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/bench"
)

func init() { subcommands = append(subcommands, newBenchCommand) }

// report is what each mode of the bench prints, and what failed in it
// (for --fail-on-errors).
type report interface {
	WriteTable(io.Writer) error
	Failures() []string
}

func newBenchCommand() *cobra.Command {
	var o bench.Options
	var asJSON, noProgress, failOnErrors bool
	cmd := &cobra.Command{
		Use:   "bench --url URL",
		Short: "Simulate an Entra provisioning cycle against a SCIM endpoint and report what it sustains",
		Long: `Run an Entra-style provisioning cycle against any SCIM 2.0 endpoint: for each
user a userName filter GET then a POST; for each group a displayName filter
GET then a POST; member additions in PATCH batches of 100; then an
incremental cycle of attribute PATCHes (20% of users), deactivations (5%) and
deletes (1%). It ends with a table per operation: count, requests/s, p50,
p95, p99, max and errors by status.

The SCIM bearer token comes from $SCIMRELAY_BENCH_TOKEN and the sink's
webhook secret from $SCIMRELAY_RECEIVER_SECRET (as for 'scimrelay receive'):
bench takes no secret on its command line, where ps shows it to every user
of the machine and the shell's history keeps it.

--rate makes the run open-loop: requests are sent at a fixed rate whatever the
server's speed, and latency counts from when each was due, so that queueing
shows. --receiver listens for the webhooks of a sink you point at it (one
event per request, or batches), verifies their signatures with
$SCIMRELAY_RECEIVER_SECRET (unset: not verified), and reports
acknowledgement-to-delivery latency, whether every expected event arrived,
once, in per-resource order, and when the last one arrived. --baseline
measures a minimal Go JSON handler with the same load in the same run, for
the ratio to the machine's ceiling.

--mode ops measures Entra's create-user POST and its userName filter GET (a
hit) alone: --requests of each per round at --concurrency, each followed by
the same against the baseline (with --baseline), for --rounds rounds, and
the medians. --mode scale creates --users users (the fill, reported per
10,000), --groups groups of --members-per-group members, then measures
--requests filter GETs at --read-concurrency and --requests creates at that
size. If the endpoint is a scimrelay, give its relay.yaml (--config, else
$SCIMRELAY_CONFIG, else ./relay.yaml if there is one): the scale mode then
reads, through the relay's admin API with its admin token as every command
does, its heap in use, its outbox (waited for before measuring at size) and
its data file's size by bucket.`,
		Example: `  export SCIMRELAY_BENCH_TOKEN=... SCIMRELAY_RECEIVER_SECRET=whsec_...
  scimrelay bench --url http://127.0.0.1:8080/scim/v2/default
  scimrelay bench --url ... --users 1000 --rate 500 --json
  scimrelay bench --url ... --receiver 127.0.0.1:9000 --baseline
  scimrelay bench --url ... --mode ops --concurrency 32 --baseline
  scimrelay bench --url ... --mode scale --users 1000000 --groups 10000 --members-per-group 100 --concurrency 32 --config relay.yaml`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := readBenchCredentials(cmd, &o); err != nil {
				return err
			}
			// A progress bar is for a person watching: on a terminal only,
			// never into a CI log or a file.
			if !noProgress && !asJSON && isTerminal(cmd.ErrOrStderr()) {
				o.Progress = cmd.ErrOrStderr()
			}
			var rep report
			var err error
			switch o.Mode {
			case bench.ModeOps:
				r, e := bench.RunOps(cmd.Context(), o)
				if rep, err = r, e; r == nil {
					rep = nil
				}
			case bench.ModeScale:
				r, e := bench.RunScale(cmd.Context(), o)
				if rep, err = r, e; r == nil {
					rep = nil
				}
			default:
				r, e := bench.Run(cmd.Context(), o)
				if rep, err = r, e; r == nil {
					rep = nil // not a typed nil: the report is absent
				}
			}
			if errors.Is(err, bench.ErrInvalidOptions) {
				return usageError{err}
			}
			if rep == nil {
				return err
			}
			if asJSON {
				if jerr := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); jerr != nil {
					return jerr
				}
			} else if werr := rep.WriteTable(cmd.OutOrStdout()); werr != nil {
				return werr
			}
			if err == nil && failOnErrors {
				if failures := rep.Failures(); len(failures) > 0 {
					return fmt.Errorf("--fail-on-errors: %s", strings.Join(failures, "; "))
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.URL, "url", "", "tenant base URL, e.g. http://127.0.0.1:8080/scim/v2/default (required)")
	f.IntVar(&o.Users, "users", 10000, "users to provision")
	f.IntVar(&o.Groups, "groups", 100, "groups to provision")
	f.IntVar(&o.MembersPerGroup, "members-per-group", 500, "members per group (at most --users)")
	f.IntVar(&o.Concurrency, "concurrency", bench.DefaultConcurrency, "parallel requests (closed loop); in open loop the least bound on requests in flight")
	f.Float64Var(&o.Rate, "rate", 0, "requests/s for an open-loop run; 0 = closed loop")
	f.StringVar(&o.Receiver, "receiver", "", "host:port to receive a sink's webhooks on, e.g. 127.0.0.1:9000 (the cycle mode only); signatures verified with $"+receiverSecretEnv)
	f.BoolVar(&o.Baseline, "baseline", false, "also measure a minimal Go JSON handler, for the ratio (the cycle and ops modes)")
	f.StringVar(&o.Prefix, "prefix", "", "prefix of userNames and group names (default: random, so runs do not collide)")
	f.BoolVar(&o.ShuffledNames, "shuffled-names", false, "start every userName with a random part, so that users arrive in no order, as a directory's do (default: numbered in order)")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "how long to wait for webhooks after the last request; scale: for the relay's outbox to be published before measuring at size")
	f.StringVar(&o.Mode, "mode", bench.ModeCycle, "cycle: the Entra cycle; ops: creates and filter GETs alone, in rounds, against the baseline too with --baseline; scale: fill with --users and --groups, then measure at that size")
	f.IntVar(&o.Requests, "requests", 0, "ops: creates and filter GETs per round (default 4000); scale: of each, measured at size (default 10000)")
	f.IntVar(&o.Rounds, "rounds", 0, "ops: rounds (default 3)")
	f.IntVar(&o.ReadConcurrency, "read-concurrency", 0, "scale: concurrency of the filter GETs at size (default 8)")
	configFlagOn(cmd)
	f.Lookup("config").Usage = "scale: the relay's relay.yaml, for its admin API (default $" + configEnv + ", else ./relay.yaml if there is one)"
	for name := range removedFlags {
		f.String(name, "", "")
		_ = f.MarkHidden(name)
	}
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar (there is none unless stderr is a terminal)")
	f.BoolVar(&failOnErrors, "fail-on-errors", false, "exit 1 when a request failed or an event was missing, repeated, out of order or badly signed (for CI)")
	return cmd
}

// Where the bench takes its secrets from: the environment, as 'scimrelay
// receive' takes its secret and as relay.yaml takes every secret, never
// the command line, which ps shows to every user of the machine and the
// shell's history keeps.
const (
	benchTokenEnv     = "SCIMRELAY_BENCH_TOKEN"
	receiverSecretEnv = "SCIMRELAY_RECEIVER_SECRET"
)

// removedFlags are the flags that took secrets, and the admin listener's
// address, before the bench read them as the other commands do. They stay,
// hidden, to say where the value goes now instead of "unknown flag".
var removedFlags = map[string]string{
	"token":           "a secret on the command line is visible in ps and kept in shell history; set $" + benchTokenEnv,
	"receiver-secret": "a secret on the command line is visible in ps and kept in shell history; set $" + receiverSecretEnv,
	"admin-token":     "a secret on the command line is visible in ps and kept in shell history; the scale mode reads the admin token from relay.yaml (--config), as every command does",
	"admin-url":       "the scale mode reads admin_listen from relay.yaml (--config), as every command does",
}

// refuseRemovedFlags refuses, as a usage error, a flag of removedFlags.
func refuseRemovedFlags(cmd *cobra.Command) error {
	for name, why := range removedFlags {
		if cmd.Flags().Changed(name) {
			return usageError{fmt.Errorf("--%s is no longer taken: %s", name, why)}
		}
	}
	return nil
}

// readBenchCredentials fills in what the flags do not carry: the secrets,
// from the environment, and in the scale mode the relay's admin API, from
// relay.yaml.
func readBenchCredentials(cmd *cobra.Command, o *bench.Options) error {
	if err := refuseRemovedFlags(cmd); err != nil {
		return err
	}
	if o.URL == "" {
		return usageError{errors.New("--url is required")}
	}
	if o.Token = os.Getenv(benchTokenEnv); o.Token == "" {
		return usageError{fmt.Errorf("no SCIM bearer token: set $%s to a token of the tenant --url names (bench reads it from the environment, not its command line)", benchTokenEnv)}
	}
	if o.Receiver != "" {
		o.ReceiverSecret = os.Getenv(receiverSecretEnv)
	}
	if cmd.Flags().Changed("config") && o.Mode != bench.ModeScale {
		return usageError{errors.New("--config is read by --mode scale only")}
	}
	if o.Mode != bench.ModeScale {
		return nil
	}
	admin, err := benchAdmin(cmd)
	if err != nil {
		return err
	}
	if admin == nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "no relay.yaml (--config, $"+configEnv+" or ./relay.yaml): the relay's heap, outbox and data file are not read")
	}
	o.Admin = admin
	return nil
}

// benchAdmin returns the admin client of the relay the scale mode reads:
// that of relay.yaml as every command finds it (--config, else
// $SCIMRELAY_CONFIG, else ./relay.yaml). Without any, it returns nil: the
// scale mode then measures any SCIM endpoint, without a relay's figures.
func benchAdmin(cmd *cobra.Command) (*adminclient.Client, error) {
	if !configNamed(cmd) {
		if _, err := os.Stat(configPathOf(cmd)); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	return adminClientOf(cmd)
}
