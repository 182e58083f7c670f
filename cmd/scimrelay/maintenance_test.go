// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestMaintenanceLetsRestoreAndCompactRun: scimrelay maintenance, what the
// chart's front-end pod runs with scim.maintenance=true, holds no file:
// restore and compact of the relay's data file run beside it, as through
// kubectl exec; it waits until SIGTERM (a pod's stop) and exits 0 then,
// and the relay started on the result serves the backup's state.
func TestMaintenanceLetsRestoreAndCompactRun(t *testing.T) {
	p, c, cfg, backup := relayWithABackup(t)
	p.stop()

	m := runProcess(t, binary(t), []string{"maintenance"})
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(m.stderr.String(), "maintenance: the relay is not running") {
			return errors.New("maintenance has not said it waits")
		}
		return nil
	})
	if code, out, stderr := cli(t, "restore", "--from", backup, "--keep=false", "--config", cfg); code != exitOK {
		t.Fatalf("restore beside maintenance: %d\n%s\n%s", code, out, stderr)
	}
	if code, out, stderr := cli(t, "compact", "--config", cfg); code != exitOK {
		t.Fatalf("compact beside maintenance: %d\n%s\n%s", code, out, stderr)
	}
	select {
	case <-m.exited:
		t.Fatalf("maintenance exited before it was stopped: %v\n%s", m.err, m.stderr.String())
	default:
	}
	m.stopWith(t, syscall.SIGTERM)

	p = startRelay(t, c, roleAll)
	if n := userCount(t, p); n != "1" {
		t.Fatalf("the relay started after maintenance has %s users, want ann alone (the backup's)", n)
	}
}
