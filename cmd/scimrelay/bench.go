// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

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
		Use:   "bench --url URL --token TOKEN",
		Short: "Simulate an Entra provisioning cycle against a SCIM endpoint and report what it sustains",
		Long: `Run an Entra-style provisioning cycle against any SCIM 2.0 endpoint: for each
user a userName filter GET then a POST; for each group a displayName filter
GET then a POST; member additions in PATCH batches of 100; then an
incremental cycle of attribute PATCHes (20% of users), deactivations (5%) and
deletes (1%). It ends with a table per operation: count, requests/s, p50,
p95, p99, max and errors by status.

--rate makes the run open-loop: requests are sent at a fixed rate whatever the
server's speed, and latency counts from when each was due, so that queueing
shows. --receiver listens for the webhooks of a sink you point at it (one
event per request, or batches), verifies their signatures with
--receiver-secret, and reports acknowledgement-to-delivery latency, whether
every expected event arrived, once, in per-resource order, and when the last
one arrived. --baseline measures a minimal Go JSON handler
with the same load in the same run, for the ratio to the machine's ceiling.

--mode ops measures Entra's create-user POST and its userName filter GET (a
hit) alone: --requests of each per round at --concurrency, each followed by
the same against the baseline (with --baseline), for --rounds rounds, and
the medians. --mode scale creates --users users (the fill, reported per
10,000), --groups groups of --members-per-group members, then measures
--requests filter GETs at --read-concurrency and --requests creates at that
size; with --admin-url it reads the relay's heap in use and the data file's
size by bucket.`,
		Example: `  scimrelay bench --url http://127.0.0.1:8080/scim/v2/default --token "$TOKEN"
  scimrelay bench --url ... --token ... --users 1000 --rate 500 --json
  scimrelay bench --url ... --token ... --receiver 127.0.0.1:9000 --receiver-secret "$SECRET" --baseline
  scimrelay bench --url ... --token ... --mode ops --concurrency 32 --baseline
  scimrelay bench --url ... --token ... --mode scale --users 1000000 --groups 10000 --members-per-group 100 --concurrency 32 --admin-url http://127.0.0.1:8081`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.URL == "" || o.Token == "" {
				return usageError{errors.New("--url and --token are required")}
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
	f.StringVar(&o.Token, "token", os.Getenv("SCIMRELAY_BENCH_TOKEN"), "bearer token (default $SCIMRELAY_BENCH_TOKEN)")
	f.IntVar(&o.Users, "users", 10000, "users to provision")
	f.IntVar(&o.Groups, "groups", 100, "groups to provision")
	f.IntVar(&o.MembersPerGroup, "members-per-group", 500, "members per group (at most --users)")
	f.IntVar(&o.Concurrency, "concurrency", bench.DefaultConcurrency, "parallel requests (closed loop); in open loop the least bound on requests in flight")
	f.Float64Var(&o.Rate, "rate", 0, "requests/s for an open-loop run; 0 = closed loop")
	f.StringVar(&o.Receiver, "receiver", "", "host:port to receive a sink's webhooks on, e.g. 127.0.0.1:9000")
	f.StringVar(&o.ReceiverSecret, "receiver-secret", "", "the sink's whsec_ secret, to verify signatures")
	f.BoolVar(&o.Baseline, "baseline", false, "also measure a minimal Go JSON handler, for the ratio")
	f.StringVar(&o.Prefix, "prefix", "", "prefix of userNames and group names (default: random, so runs do not collide)")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "how long to wait for webhooks after the last request; scale: for the relay's outbox to be published before measuring at size")
	f.StringVar(&o.Mode, "mode", bench.ModeCycle, "cycle: the Entra cycle; ops: creates and filter GETs alone, in rounds, against the baseline too with --baseline; scale: fill with --users and --groups, then measure at that size")
	f.IntVar(&o.Requests, "requests", 0, "ops: creates and filter GETs per round (default 4000); scale: of each, measured at size (default 10000)")
	f.IntVar(&o.Rounds, "rounds", 0, "ops: rounds (default 3)")
	f.IntVar(&o.ReadConcurrency, "read-concurrency", 0, "scale: concurrency of the filter GETs at size (default 8)")
	f.StringVar(&o.AdminURL, "admin-url", "", "scale: the relay's admin listener, e.g. http://127.0.0.1:8081, for its heap in use and the data file by bucket")
	f.StringVar(&o.AdminToken, "admin-token", os.Getenv("SCIMRELAY_ADMIN_TOKEN"), "scale: the admin token (default $SCIMRELAY_ADMIN_TOKEN)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar (there is none unless stderr is a terminal)")
	f.BoolVar(&failOnErrors, "fail-on-errors", false, "exit 1 when a request failed or an event was missing, repeated, out of order or badly signed (for CI)")
	return cmd
}
