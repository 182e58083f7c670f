// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/config"
)

func init() { subcommands = append(subcommands, newHealthcheckCommand) }

func newHealthcheckCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the relay on this machine is ready; for container health checks",
		Long: `Ask the admin listener that admin_listen in relay.yaml names for /readyz.
Exit status 0 when it answers 200; 1 when it answers anything else (the
failing checks on one line on stderr); 3 when it cannot be reached. With
admin.tls set it asks over HTTPS, and accepts the certificate in
admin.tls.cert_file alone. It reads those two keys of relay.yaml alone: a
mistake elsewhere in the file (an edit not yet reloaded, which the running
relay does not use) does not fail it; scimrelay check reports it.

It needs no admin token (/readyz is open), no shell and no curl, so it is
the health check of the distroless image and of deploy/compose.yaml:

  healthcheck:
    test: ["CMD", "/usr/local/bin/scimrelay", "healthcheck", "--config", "/etc/scimrelay/relay.yaml"]

Kubernetes probes ask /healthz and /readyz over HTTP themselves.`,
		Example: `  scimrelay healthcheck
  scimrelay healthcheck --config /etc/scimrelay/relay.yaml --timeout 2s`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return usageError{fmt.Errorf("--timeout must be positive, got %s", timeout)}
			}
			cfg, err := config.ReadOnly(configPathOf(cmd), "admin_listen", "admin.tls.cert_file")
			if err != nil {
				return err
			}
			hc, err := adminHTTPClient(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			target := adminBaseURL(cfg) + "/readyz"
			if err := checkReady(ctx, hc, target); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "ready: %s answered 200\n", target)
			return err
		},
	}
	configFlagOn(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}

// checkReady asks target once and returns nil for a 200, an
// unreachableError when there is no answer, and otherwise an error naming
// what is not ready.
func checkReady(ctx context.Context, hc *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	res, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return unreachableError{fmt.Errorf("%s did not answer in time", target)}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the method and URL said again
		}
		return unreachableError{fmt.Errorf("cannot reach %s: %w", target, err)}
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("not ready: %s answered %d: %s", target, res.StatusCode, readinessReason(body))
}

// readinessReason turns the body of a failed /readyz into one line: the
// failing checks ("[-]nats failed: not connected" becomes "nats: not
// connected"), or the body's first line.
func readinessReason(body []byte) string {
	var failing []string
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "[-]"); ok {
			name, reason, _ := strings.Cut(rest, " failed: ")
			failing = append(failing, name+": "+strings.TrimSpace(reason))
		}
	}
	if len(failing) > 0 {
		return strings.Join(failing, "; ")
	}
	if line := oneLine(string(body)); line != "" {
		return line
	}
	return "no reason given"
}

// oneLine keeps the first line of s, trimmed, so that a health check's
// output stays one line.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(s)
}
