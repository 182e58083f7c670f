// SPDX-License-Identifier: Apache-2.0

// Package disktest injects disk faults for tests: writes to an open file
// that vanish and flushes that fail (FailWrites), a file overwritten in
// place under a process that has it open (WriteInPlace), and a small file
// system filled to the last byte (MountTmpfs, Fill). It is a normal
// package so that tests of several packages (relay, cmd/scimrelay) can use
// it; nothing outside tests imports it.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FailWrites makes what this process writes to the open file at path
// vanish and its flushes fail, as on a failing disk: the file's descriptor
// is pointed at /dev/null (fdatasync fails there with EINVAL, and the file
// reads as empty to fstat, which bbolt checks before it writes).
// What it returns puts the disk back (the test's end does too), unless
// the process closed the descriptor meanwhile (a relay that stopped on the
// failure): the number may name another file by then, and a descriptor
// put back on the data file would hold its lock until the test ends.
func FailWrites(t testing.TB, path string) (restore func()) {
	t.Helper()
	fd := openFD(t, path)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	var devNull unix.Stat_t
	if err := unix.Fstat(int(null.Fd()), &devNull); err != nil {
		t.Fatal(err)
	}
	saved, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(int(null.Fd()), fd); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if !restored {
			restored = true
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Dev == devNull.Dev && st.Ino == devNull.Ino && st.Rdev == devNull.Rdev {
				if err := unix.Dup2(saved, fd); err != nil {
					t.Fatal(err)
				}
			}
			_ = unix.Close(saved)
		}
	}
	t.Cleanup(restore)
	return restore
}

// openFD returns this process's descriptor of the file at path.
func openFD(t testing.TB, path string) int {
	t.Helper()
	want, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("finding the file's descriptor needs /proc: %v", err)
	}
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == want {
			var fd int
			if _, err := fmt.Sscan(e.Name(), &fd); err == nil {
				return fd
			}
		}
	}
	t.Fatalf("%s is not open in this process", path)
	return -1
}

// WriteInPlace writes data over the start of the file at path, in place,
// as cp does over a file it replaces, but without cp's truncation first:
// a process that has the file mapped would fault (SIGBUS) on the pages cp
// cut off, and the test with it.
func WriteInPlace(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
}

// MountTmpfs mounts a tmpfs of size (as mount's size= takes it: "24m") at
// dir for the test, unmounted when it ends; it skips the test where it
// cannot (not root, no mount).
func MountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs to fill needs root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs at %s: %v: %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v: %s", dir, err, out)
		}
	})
}

// Fill writes a file in dir until its file system has no room left, and
// returns its path; called again, it adds to the file until there is none
// again.
func Fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return path
}
