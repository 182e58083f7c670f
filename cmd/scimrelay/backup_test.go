// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
)

// TestCLIBackupToStdout: with --out -, the copy goes to stdout and nothing
// else does (what was written is said on stderr); it is the data file of a
// relay with the same users, and no file named "-" appears. Where the
// temporary directory cannot be written (the Helm chart's read-only root
// file system), the copy waits for its check in the data directory; either
// way the staged copy is removed.
func TestCLIBackupToStdout(t *testing.T) {
	c := testConfig(t, t.TempDir())
	p := startRelay(t, c, roleAll)
	uid := p.createUser(t, "ann")
	// The CLI's relay.yaml names the relay's data directory too.
	cfg := cliConfig(t, p, adminSecret)
	text, err := os.ReadFile(cfg)
	if err == nil {
		err = os.WriteFile(cfg, fmt.Appendf(text, "data_dir: %s\n", c.DataDir), 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, tc := range []struct {
		name, tmpdir, staged string
	}{
		{"temporary directory", tmp, tmp},
		{"data directory", filepath.Join(tmp, "missing"), c.DataDir},
	} {
		var copied string
		ran := t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TMPDIR", tc.tmpdir)
			code, stdout, stderr := cli(t, "backup", "--out", "-", "--config", cfg)
			if code != exitOK || !strings.Contains(stderr, fmt.Sprintf("wrote the backup to stdout (%d bytes)", len(stdout))) {
				t.Fatalf("backup --out -: exit %d, %d bytes on stdout, stderr %q", code, len(stdout), stderr)
			}
			copied = stdout
		})
		if _, err := os.Lstat("-"); !errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove("-")
			t.Errorf("%s: backup --out - wrote a file named -: %v", tc.name, err)
		}
		if left, _ := filepath.Glob(filepath.Join(tc.staged, ".scimrelay-backup-*")); len(left) > 0 {
			t.Errorf("%s: the staged copy is left in %s: %v", tc.name, tc.staged, left)
		}
		if !ran {
			continue
		}
		restored := testConfig(t, t.TempDir())
		if err := os.WriteFile(restored.DBPath(), []byte(copied), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := relay.CheckCopy(restored.DBPath()); err != nil {
			t.Fatalf("%s: stdout is not a whole data file: %v", tc.name, err)
		}
		r := startRelay(t, restored, roleAll)
		if u := r.scim("acme", acmeToken, "GET", "/Users/"+uid, "").want(t, 200); u.str("userName") != "ann" {
			t.Fatalf("%s: user in the relay restored from stdout: %s", tc.name, u.raw)
		}
	}
}

// TestCLIBackupRefusesSpecialFiles: an --out that exists and is not a
// regular file is bad usage, named, and left as it was: the backup used to
// rename its copy over whatever was there, /dev/stdout included.
func TestCLIBackupRefusesSpecialFiles(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	dir := t.TempDir()
	target, link, sub := filepath.Join(dir, "target.db"), filepath.Join(dir, "link.db"), filepath.Join(dir, "sub")
	if err := os.WriteFile(target, []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ out, is string }{
		{link, "a symbolic link"},
		{sub, "a directory"},
		{"/dev/null", "a device"},
	} {
		code, stdout, stderr := cli(t, "backup", "--out", tc.out, "--config", cfg)
		says := "--out " + tc.out + ": " + tc.is + ", not a regular file"
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, says) || !strings.Contains(stderr, "Run 'scimrelay backup --help' for usage.") {
			t.Errorf("backup --out %s: exit %d, stdout %q, stderr %q; want %d saying %q", tc.out, code, stdout, stderr, exitUsage, says)
		}
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "kept" {
		t.Errorf("the link's target holds %q (%v)", b, err)
	}
	if fi, err := os.Stat(sub); err != nil || !fi.IsDir() {
		t.Errorf("the directory was replaced: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".scimrelay-backup-*")); len(left) > 0 {
		t.Errorf("staged copies left: %v", left)
	}
	// A regular file is replaced, as before, and the copy (every user, the
	// OAuth signing key) is its owner's alone whatever the file's mode was.
	if err := os.Chmod(target, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, "backup", "--out", target, "--config", cfg); code != exitOK {
		t.Errorf("backup over a regular file: exit %d, %s", code, stderr)
	}
	if err := relay.CheckCopy(target); err != nil {
		t.Errorf("the regular file is not the backup: %v", err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the backup's mode: %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	fresh := filepath.Join(dir, "fresh.db")
	if code, _, stderr := cli(t, "backup", "--out", fresh, "--config", cfg); code != exitOK {
		t.Errorf("backup to a new file: exit %d, %s", code, stderr)
	}
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("a new backup file's mode: %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// TestCLIBackupRefusesTheRelaysDataFile: an --out that is the data file of
// the running relay, by its name or by a hard link, is bad usage and left
// as it was; the copy used to take its place under the relay, which found
// it replaced at its next write and stopped.
func TestCLIBackupRefusesTheRelaysDataFile(t *testing.T) {
	c := testConfig(t, t.TempDir())
	p := startRelay(t, c, roleAll)
	cfg := cliConfig(t, p, adminSecret)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Link(c.DBPath(), link); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(c.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{c.DBPath(), link} {
		code, stdout, stderr := cli(t, "backup", "--out", out, "--config", cfg)
		says := "--out " + out + ": a relay is running on it (it holds the file): it is that relay's data file"
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, says) {
			t.Errorf("backup --out %s: exit %d, stdout %q, stderr %q; want %d saying %q", out, code, stdout, stderr, exitUsage, says)
		}
		if after, err := os.Stat(out); err != nil || !os.SameFile(before, after) {
			t.Fatalf("backup --out %s replaced the relay's data file (%v)", out, err)
		}
	}
	// The relay still writes the file it opened.
	p.createUser(t, "ann")
	if n := userCount(t, p); n != "1" {
		t.Fatalf("after the refused backups the relay has %s users, want 1", n)
	}
	// The file refused while the relay ran is a regular file: with the
	// relay stopped, a backup of another relay may take its place.
	other := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	p.stop()
	if code, _, stderr := cli(t, "backup", "--out", link, "--config", cliConfig(t, other, adminSecret)); code != exitOK {
		t.Fatalf("backup over the stopped relay's file: exit %d, %s", code, stderr)
	}
}

// TestBackupRemovesTheCopyOfAKilledBackup: `backup --out FILE` stages its
// copy beside FILE; one killed (a nightly job stopped past its time, a
// second Ctrl-C) left it there, as large as the data file, hidden among
// the backups for good, one more each time. The next backup there removes
// it, saying so, and leaves the copy of a backup still running.
func TestBackupRemovesTheCopyOfAKilledBackup(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	backups := t.TempDir()
	stage := func() string {
		f, err := os.CreateTemp(backups, stagedBackup)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		return f.Name()
	}
	killed, running := stage(), stage()
	held, err := holdStaged(running)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	out := filepath.Join(backups, "nightly.db")
	code, stdout, stderr := cli(t, "backup", "--out", out, "--config", cfg)
	if code != exitOK {
		t.Fatalf("backup: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if left := stagedCopies(t, backups); len(left) != 1 || left[filepath.Base(running)] == 0 {
		t.Errorf("after the backup %s holds the copies %v, want only the running backup's %s", backups, left, filepath.Base(running))
	}
	if !strings.Contains(stderr, "removed "+killed) {
		t.Errorf("the backup does not say it removed %s: %q", killed, stderr)
	}
	if err := relay.CheckCopy(out); err != nil {
		t.Errorf("the backup beside them: %v", err)
	}
}

// TestBackupCopyRemovedAsItIsMadeIsMadeAgain: two backups to one
// directory at once (two relays' nightly jobs sharing /backups). Each
// removes the unheld .scimrelay-backup-* beside its FILE as a killed
// backup's copy, and the other's is unheld between its creation and its
// hold: that one failed after receiving the whole backup ("no such file
// or directory"). The other's removal here comes exactly in that gap.
func TestBackupCopyRemovedAsItIsMadeIsMadeAgain(t *testing.T) {
	dir := t.TempDir()
	removed := 0
	path, held, err := stageHeld(created(func() (*os.File, error) {
		f, err := os.CreateTemp(dir, stagedBackup)
		if err == nil && removed == 0 {
			removeStale(dir, []string{stagedBackup}, func(string, int64, error) { removed++ }) // the other backup
		}
		return f, err
	}))
	if err != nil {
		t.Fatalf("staging a copy the other backup removed as it was made: %v", err)
	}
	defer held.Close()
	if removed != 1 {
		t.Fatalf("the other backup removed %d copies, want the first one made", removed)
	}
	removeStale(dir, []string{stagedBackup}, func(name string, _ int64, _ error) {
		t.Errorf("another backup removed %s, the copy staged and held", name)
	})
	if fi, err := os.Stat(path); err != nil {
		t.Fatalf("the copy staged: %v", err)
	} else if hi, err := held.Stat(); err != nil || !os.SameFile(fi, hi) {
		t.Fatalf("the copy held is not the one at %s (%v)", path, err)
	}
}

// TestBackupBesideAFIFONamedAsACopyFinishes: --out in a shared directory
// (/tmp/nightly.db): anyone there can make a named pipe called
// .scimrelay-backup-*. The backup, looking for a killed backup's copy to
// remove, must not wait on it for a writer that never comes.
func TestBackupBesideAFIFONamedAsACopyFinishes(t *testing.T) {
	p := startRelay(t, testConfig(t, t.TempDir()), roleAll)
	cfg := cliConfig(t, p, adminSecret)
	shared := t.TempDir()
	fifo := filepath.Join(shared, ".scimrelay-backup-planted")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := cli(t, "backup", "--out", filepath.Join(shared, "nightly.db"), "--config", cfg)
		done <- result{code, stdout, stderr}
	}()
	select {
	case r := <-done:
		if r.code != exitOK {
			t.Fatalf("backup: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if _, err := os.Lstat(fifo); err != nil {
			t.Errorf("the named pipe, no copy of a backup, was removed: %v", err)
		}
	case <-time.After(20 * time.Second): // a deadline
		// Let the stuck backup go: open the pipe's other end.
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			defer f.Close()
		}
		<-done
		t.Fatal("backup --out beside a named pipe called .scimrelay-backup-* has not finished in 20 s: it waits on the pipe")
	}
}
