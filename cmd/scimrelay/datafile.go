// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/disk"
)

// What the commands that work on the data file with the relay stopped
// share (restore, compact): its path, its lock, held while they work, so
// that a running relay makes them refuse and one starting waits for them
// (a second, then gives up: relay.ErrInUse), and putting a file prepared
// beside the data file in its place.

// dataFileLockWait is how long backup, restore and compact wait for a data
// file's lock: a relay that holds it is running.
const dataFileLockWait = 500 * time.Millisecond

// errRelayRunning is lockDataFile's answer for a file a running relay holds.
var errRelayRunning = errors.New("a relay is running on it (it holds the file)")

// lockDataFile opens the bbolt file at path read-only, which holds its
// lock, shared, until the returned db is closed: a relay starting waits
// for it. A file a running relay holds is errRelayRunning.
func lockDataFile(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: dataFileLockWait})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, errRelayRunning
	}
	return db, err
}

// holdDataFile takes the lock of the data file at path, shared, as
// lockDataFile does, without reading the file: a restore replaces a data
// file that may be damaged (which bbolt would not open), and needs its
// lock only to keep a relay from running on it meanwhile. Held until the
// returned file is closed. A file a running relay holds is
// errRelayRunning.
func holdDataFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(dataFileLockWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		switch {
		case err == nil:
			return f, nil
		case !errors.Is(err, syscall.EWOULDBLOCK):
			_ = f.Close()
			return nil, err
		case time.Now().After(deadline):
			_ = f.Close()
			return nil, errRelayRunning
		}
		time.Sleep(50 * time.Millisecond) // bbolt's own pace
	}
}

// dataFileOf reads data_dir from the relay.yaml cmd names and returns the
// data file's absolute path (the file a symbolic link there names) and,
// when no file is there, the data_dir it came from, for the error: a
// relative data_dir is the current directory's, and a command run
// elsewhere would work on a file nobody serves.
func dataFileOf(cmd *cobra.Command) (target, missing string, err error) {
	cfg, err := config.Read(configPathOf(cmd), "data_dir")
	if err != nil {
		return "", "", err
	}
	if target, err = filepath.Abs(cfg.DBPath()); err != nil {
		return "", "", err
	}
	if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
		// A symbolic link that names no file yet (a new volume): the
		// file it names is where serve makes the data file, and where a
		// restore --new puts it, keeping the link.
		target = linkTarget(target)
		missing = fmt.Sprintf("data_dir %q", cfg.DataDir)
		if !filepath.IsAbs(cfg.DataDir) {
			missing += ", relative to this directory"
		}
		return target, missing, nil
	}
	// The file the relay serves, where the path is a symbolic link (a data
	// file on another volume): the copy is staged beside it and renamed
	// over it there. Renamed over the link, it would replace the link,
	// leave the file as it was, and a link put back would serve that.
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return "", "", err
	}
	return real, "", nil
}

// putInPlace renames staged, a checked copy in the data file's directory,
// over the data file at target, with the data file's owner (ownLike).
// With keep, the data file replaced stays beside it (a hard link, so it
// costs no copy) and its path is returned. The caller holds the data
// file's lock (lockDataFile).
//
// That lock is shared (restore and compact each take it so), so the
// rename is made under an exclusive lock on the data directory, and when
// from is not nil (compact: the file its copy was made of) only while
// target still names from: a restore that put its backup in place while
// the compact ran would otherwise be undone by a copy of the file it
// replaced. Otherwise errReplacedMeanwhile, and nothing is changed.
func putInPlace(staged, target string, keep bool, from os.FileInfo) (kept string, err error) {
	dir := filepath.Dir(target)
	if err := ownLike(staged, target, dir); err != nil {
		return "", err
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", err
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s to put the copy in place: %w", dir, err)
	}
	defer func() { _ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN) }()
	if from != nil {
		if now, err := os.Stat(target); err != nil || !os.SameFile(now, from) {
			return "", errReplacedMeanwhile
		}
	}
	if keep {
		kept = target + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Link(target, kept); errors.Is(err, os.ErrNotExist) {
			kept = "" // nothing to keep: a restore on a new machine
		} else if err != nil {
			return "", fmt.Errorf("keeping the data file beside it (nothing was changed; --keep=false replaces it without): %w", err)
		}
	}
	if err := os.Rename(staged, target); err != nil {
		return "", fmt.Errorf("putting the copy in place of %s: %w", target, err)
	}
	return kept, disk.SyncDir(dir)
}

// ownLike gives the copy at path the owner of the data file it replaces
// (else of the data directory), so that a restore or compaction run as
// root (sudo) for a relay that runs as its own user (the systemd unit's
// scimrelay) leaves a file that user can open.
func ownLike(path, target, dir string) error {
	fi, err := os.Stat(target)
	if errors.Is(err, os.ErrNotExist) {
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return nil
	}
	if err := os.Chown(path, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("giving the copy the owner of %s, uid %d gid %d (nothing was changed): run the command as that user or as root: %w", fi.Name(), st.Uid, st.Gid, err)
	}
	return nil
}

// errReplacedMeanwhile: the data file was replaced (a restore, another
// compact) after the copy that was to replace it was made of it.
var errReplacedMeanwhile = errors.New("the data file was replaced (a restore or another compact) while this copy of it was made; the copy was not put in place")

// linkTarget returns the path the symbolic links at path lead to, where
// no file is yet; path itself when it is no link.
func linkTarget(path string) string {
	for range 40 { // the kernel's bound on links followed
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return path
		}
		dest, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(path), dest)
		}
		path = dest
	}
	return path
}

// The copies restore, compact and backup (to stdout, where $TMPDIR cannot
// be written) stage beside the data file while they work, removed when
// they end; a process killed (SIGKILL, a second Ctrl-C, a container
// stopped past its grace) removes nothing, and its copy, as large as the
// data file, would stay hidden in data_dir for good: removeStaleCopies.
const (
	stagedRestore = ".scimrelay-restore-*"
	stagedCompact = ".scimrelay-compact-*"
	stagedBackup  = ".scimrelay-backup-*"
)

// holdStaged takes a shared lock on the copy staged at path, held until
// the returned file is closed: removeStaleCopies leaves a copy so held,
// whose command still runs. (A compaction's copy is held by bbolt while
// it is written, then so: compact holds the data file's lock, shared,
// throughout, so no relay starts meanwhile, but a second compact may.)
func holdStaged(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// stageHeld makes a staged copy with stage, which leaves it at the path
// it returns, and holds it (holdStaged), as restore, backup and compact
// stage theirs. Another command's removeStale (a relay starting, a
// compact, another backup to the same directory) takes an unheld copy for
// a killed one's and may remove it between stage and the hold: the hold
// then names no file, or another, and the copy is made again, at most ten
// times. On an error no copy is left.
func stageHeld(stage func() (string, error)) (path string, held *os.File, err error) {
	for attempt := 1; ; attempt++ {
		if path, err = stage(); err != nil {
			return "", nil, err
		}
		if held, err = holdStaged(path); err == nil {
			a, aerr := held.Stat()
			b, berr := os.Stat(path)
			if aerr == nil && berr == nil && os.SameFile(a, b) {
				return path, held, nil
			}
			_ = held.Close()
			err = fmt.Errorf("%s was removed as it was made: %w", path, os.ErrNotExist)
		}
		_ = os.Remove(path)
		if !errors.Is(err, os.ErrNotExist) || attempt >= 10 {
			return "", nil, err
		}
	}
}

// created is a stage for stageHeld: the empty file create makes.
func created(create func() (*os.File, error)) func() (string, error) {
	return func() (string, error) {
		f, err := create()
		if err != nil {
			return "", err
		}
		if err := f.Close(); err != nil {
			_ = os.Remove(f.Name())
			return "", err
		}
		return f.Name(), nil
	}
}

// removeStaleCopies removes the copies that restore, compact and backup
// staged beside the data file at path (the file a link there names) and
// left when they were killed, and tells report of each (err: it could
// not be removed). The caller holds the data file's lock, as a relay that
// opened it and compact do; a restore, backup or (beside another compact,
// the lock being shared) compact still running holds its copy's lock
// (holdStaged), and its copy stays.
func removeStaleCopies(path string, report func(name string, size int64, err error)) {
	removeStale(filepath.Dir(linkTarget(path)), []string{stagedRestore, stagedCompact, stagedBackup}, report)
}

// removeStale removes the copies in dir named by patterns that no running
// command holds (holdStaged), telling report of each.
func removeStale(dir string, patterns []string, report func(name string, size int64, err error)) {
	for _, pattern := range patterns {
		names, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, name := range names {
			// Not blocking: a named pipe of that name (anyone can make
			// one in a shared directory such as /tmp, --out's) would
			// wait for a writer; it is not a regular file, and is left.
			f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				continue
			}
			fi, err := f.Stat()
			if err != nil || !fi.Mode().IsRegular() || syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				_ = f.Close()
				continue // in use: its command still runs
			}
			err = os.Remove(name)
			_ = f.Close()
			report(name, fi.Size(), err)
		}
	}
}

// tellStaleCopy is removeStale's report to a command's stderr.
func tellStaleCopy(stderr io.Writer) func(name string, size int64, err error) {
	return func(name string, size int64, err error) {
		if err != nil {
			fmt.Fprintf(stderr, "could not remove %s (%s), a copy a restore, compact or backup cut short left: %v\n", name, sizeMiB(size), err)
			return
		}
		fmt.Fprintf(stderr, "removed %s (%s), a copy a restore, compact or backup cut short left\n", name, sizeMiB(size))
	}
}

// logStaleCopy is removeStaleCopies' report to a relay's log.
func logStaleCopy(log *slog.Logger) func(name string, size int64, err error) {
	return func(name string, size int64, err error) {
		if err != nil {
			log.Warn("a copy a restore, compact or backup cut short left beside the data file could not be removed; delete it to free its space", "file", name, "bytes", size, "err", err)
			return
		}
		log.Info("removed a copy a restore, compact or backup cut short left beside the data file", "file", name, "bytes", size)
	}
}
