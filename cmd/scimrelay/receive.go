// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/sinks"
)

func init() { subcommands = append(subcommands, newReceiveCommand) }

func newReceiveCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "receive [--listen ADDR]",
		Short: "Run a webhook receiver that verifies deliveries and prints each event",
		Long: `Listen for a sink's deliveries, verify each signature with the official
Standard Webhooks library, and print every event as one line of JSON: single
events (binary or structured mode) and batches (a sink's batch setting), each
event of a batch on its own line, in order. For trying a sink out, and as the
demo receiver of deploy/compose.yaml.

It answers 204 to a delivery it verified, 401 to a bad or missing
signature, 400 to a body that is not a CloudEvent (or a batch of them),
413 to a body over 64 MiB (a batch's largest max_bytes, and more than the
structured body of the largest event), and 405 to anything but POST. A sink
takes a 400, 413 or 405 as permanent (as every 4xx but 401, 403, 408, 425 and
429): the delivery goes to the sink's dead letters at once. A 401 (this
receiver's secret is not the sink's) is retried on the sink's schedule,
its resource's events waiting in order until the secrets agree.

The sink's whsec_ secret comes from $SCIMRELAY_RECEIVER_SECRET, never the
command line, where ps shows it to every user of the machine.`,
		Example: `  SCIMRELAY_RECEIVER_SECRET="$CRM_WEBHOOK_SECRET" scimrelay receive --listen 127.0.0.1:9000`,
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("secret") {
				return usageError{errors.New("--secret is no longer taken: a secret on the command line is visible in ps and kept in shell history; set $" + receiverSecretEnv)}
			}
			secret := os.Getenv(receiverSecretEnv)
			if secret == "" {
				return usageError{errors.New("no secret: set $" + receiverSecretEnv + " to the sink's whsec_ secret")}
			}
			var mu sync.Mutex
			out := cmd.OutOrStdout()
			h, err := sinks.NewReceiver(secret, func(e event.Event) {
				line, err := events.MarshalStructured(e)
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				fmt.Fprintf(out, "%s\n", printableJSON(line))
			})
			if err != nil {
				return usageError{err}
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "receiving webhooks on http://%s/\n", ln.Addr())
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9000", "address to listen on")
	cmd.Flags().String("secret", "", "")
	_ = cmd.Flags().MarkHidden("secret") // refused: see RunE
	return cmd
}
