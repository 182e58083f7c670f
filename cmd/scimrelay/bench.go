// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"errors"
	"os"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/bench"
)

func init() { subcommands = append(subcommands, newBenchCommand) }

func newBenchCommand() *cobra.Command {
	var o bench.Options
	var asJSON, noProgress bool
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
with the same load in the same run, for the ratio to the machine's ceiling.`,
		Example: `  scimrelay bench --url http://127.0.0.1:8080/scim/v2/default --token "$TOKEN"
  scimrelay bench --url ... --token ... --users 1000 --rate 500 --json
  scimrelay bench --url ... --token ... --receiver 127.0.0.1:9000 --receiver-secret "$SECRET" --baseline`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.URL == "" || o.Token == "" {
				return usageError{errors.New("--url and --token are required")}
			}
			if !noProgress && !asJSON {
				o.Progress = cmd.ErrOrStderr()
			}
			rep, err := bench.Run(cmd.Context(), o)
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
	f.DurationVar(&o.DrainTimeout, "drain-timeout", bench.DefaultDrainTimeout, "how long to wait for webhooks after the last request")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&noProgress, "no-progress", false, "no progress bar")
	return cmd
}
