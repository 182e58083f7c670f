// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCLIBackupToATerminalRefused: --out - with stdout a terminal is bad
// usage: a data file is no use on a screen, and would garble it.
func TestCLIBackupToATerminalRefused(t *testing.T) {
	tty := openTerminal(t)
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

// openTerminal opens a pseudo-terminal and returns its terminal end.
func openTerminal(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlocking a pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("naming a pseudo-terminal: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = tty.Close() })
	return tty
}
