// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// oldNATSEnv names an nats-server binary older than the sinks need (.ci/run
// builds 2.10 from the module proxy).
const oldNATSEnv = "SCIMRELAY_OLD_NATS_SERVER"

// TestOlderNATSIsRefusedAtStart runs the relay with a sink against a real
// nats-server 2.10 (JetStream without API levels): it refuses to start,
// saying what it needs. Without the check it started, and its partition
// consumers came out without their priority group, which that server
// ignores: two workers would have shared a partition and delivered a
// resource's events out of order.
func TestOlderNATSIsRefusedAtStart(t *testing.T) {
	bin := os.Getenv(oldNATSEnv)
	if bin == "" {
		t.Skipf("set %s to an older nats-server, e.g. GOBIN=/tmp/oldnats go install github.com/nats-io/nats-server/v2@v2.10.22 (.ci/run does)", oldNATSEnv)
	}
	port := eventstest.FreePort(t)
	runProcess(t, bin, []string{"-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", t.TempDir()})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})

	cfg := testConfig(t, t.TempDir())
	cfg.NATS.URL = "nats://" + addr
	withSink(cfg, "crm", "http://127.0.0.1:9/hook", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := newServer(ctx, cfg, roleAll, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	if err == nil {
		_ = srv.close()
		t.Fatal("the relay started on nats-server 2.10")
	}
	if !strings.Contains(err.Error(), "JetStream API level 0, and delivery needs 4 (nats-server 2.14 or later)") {
		t.Fatalf("refused with %v, want it to name the API level it needs", err)
	}
}
