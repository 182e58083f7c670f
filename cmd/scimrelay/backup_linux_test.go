// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestCLIBackupToATerminalRefused: --out - with stdout a terminal is bad
// usage: a data file is no use on a screen, and would garble it.
func TestCLIBackupToATerminalRefused(t *testing.T) {
	_, tty := openTerminal(t)
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	code := execute(ctx, []string{"backup", "--out", "-", "--config", cfg}, tty, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "--out -: stdout is a terminal") {
		t.Errorf("backup --out - to a terminal: exit %d, stderr %q; want %d saying stdout is a terminal", code, stderr.String(), exitUsage)
	}
}
