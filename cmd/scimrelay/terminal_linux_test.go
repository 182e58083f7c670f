// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestFirstTokenIsPrintedToATerminal: the README's first command, run by
// a person at a terminal, prints the two values Entra asks for there, and
// writes no data_dir/initial-token (which is for output that is not a
// terminal: TestServeBinaryAsAServiceRunsIt).
func TestFirstTokenIsPrintedToATerminal(t *testing.T) {
	bin := binary(t)
	ptmx, tty := openTerminal(t)
	data := t.TempDir()
	addrs := freeAddrs(t, 2)
	path := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf("listen: %s\nadmin_listen: %s\ndata_dir: %s\nadmin:\n  token: %s\nnats:\n  listen: \"\"\ntenants:\n  - name: acme\n", addrs[0], addrs[1], data, adminSecret)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", path)
	stderr := &eventstest.Log{}
	cmd.Stdout, cmd.Stderr = tty, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	screen := &eventstest.Log{}
	go func() { _, _ = io.Copy(screen, ptmx) }() // ends when ptmx closes
	eventstest.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(screen.String(), "Secret Token:  scimrelay_") {
			return fmt.Errorf("the terminal shows %q; stderr: %s", screen.String(), stderr.String())
		}
		return nil
	})
	if s := screen.String(); !strings.Contains(s, `Tenant "acme" had no token`) || !strings.Contains(s, "Tenant URL:    http://"+addrs[0]+"/scim/v2/acme") {
		t.Errorf("the terminal shows:\n%s\nwant the README's block", s)
	}
	if _, err := os.Stat(filepath.Join(data, "initial-token")); !os.IsNotExist(err) {
		t.Errorf("data_dir/initial-token written though the output is a terminal: %v", err)
	}
}

// openTerminal opens a pseudo-terminal and returns its two ends: what a
// program writes to tty is read from ptmx.
func openTerminal(t *testing.T) (ptmx, tty *os.File) {
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
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = tty.Close() })
	return ptmx, tty
}
