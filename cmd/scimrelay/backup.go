// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/disk"
)

func init() { subcommands = append(subcommands, newBackupCommand) }

// toStdout is the --out that means stdout.
const toStdout = "-"

func newBackupCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent copy of the data file while the relay serves",
		Long: `Ask the running relay for a consistent copy of its bbolt data file (users,
groups, memberships, tokens, the undelivered outbox) and write it to FILE. A
copy that does not arrive whole is refused and nothing is written. FILE is
replaced only if it is a regular file, and not the data file of a running
relay. The copy is staged beside FILE (.scimrelay-backup-*); one that a
backup killed left there is removed by the next backup to that directory.

With --out -, the copy goes to stdout (never a terminal) once it has arrived
whole: it waits for that in a temporary file, in $TMPDIR (/tmp) or, where
that cannot be written (a read-only root file system, as in the Helm
chart's pods), in data_dir, which then needs room for a second copy.

To restore, stop the relay and run scimrelay restore --from FILE. The
relay then holds the state at the backup: restart provisioning in Entra so
that it sends what changed since, and see README (Backup and recovery) for
what subscribers and revoked credentials see.`,
		Example: `  scimrelay backup --out /backups/scimrelay-$(date +%F).db
  kubectl -n scimrelay exec scimrelay-scim-0 -- scimrelay backup --out - > scimrelay.db`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOut(cmd, out); err != nil {
				return err
			}
			c, err := adminClientOf(cmd)
			if err != nil {
				return err
			}
			res, err := c.Send(cmd.Context(), "GET", "/admin/v1/backup", nil)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			dest := out
			if out == toStdout {
				dest = "stdout"
			} else {
				// A copy a backup killed here left (a nightly job stopped
				// past its time) would stay hidden beside the backups,
				// one more each time.
				removeStale(filepath.Dir(out), []string{stagedBackup}, tellStaleCopy(cmd.ErrOrStderr()))
			}
			// Held (holdStaged), so that a relay starting meanwhile, or
			// another backup to the same directory, leaves it; one that
			// other removed between its creation and its hold is made
			// again.
			path, staged, err := stageHeld(created(func() (*os.File, error) {
				if out == toStdout {
					return createStaging(configPathOf(cmd))
				}
				return os.CreateTemp(filepath.Dir(out), stagedBackup)
			}))
			if err != nil {
				return fmt.Errorf("writing the backup: %w", err)
			}
			defer os.Remove(path)
			defer staged.Close()
			tmp, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return fmt.Errorf("writing the backup: %w", err)
			}
			defer tmp.Close()
			n, err := io.Copy(tmp, res.Body)
			if err != nil {
				return fmt.Errorf("receiving the backup (cut short after %d bytes; nothing was written to %s): %w", n, dest, err)
			}
			// Check the copy before it replaces anything or reaches stdout.
			if err := relay.CheckCopy(tmp.Name()); err != nil {
				return fmt.Errorf("the backup received is not a valid data file (nothing was written to %s): %w", dest, err)
			}
			if out == toStdout {
				if _, err := tmp.Seek(0, io.SeekStart); err != nil {
					return fmt.Errorf("reading the backup back: %w", err)
				}
				if _, err := io.Copy(cmd.OutOrStdout(), tmp); err != nil {
					return fmt.Errorf("writing the backup to stdout: %w", err)
				}
				_, err = fmt.Fprintf(cmd.ErrOrStderr(), "wrote the backup to stdout (%d bytes)\n", n)
				return err
			}
			err = tmp.Sync()
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing the backup: %w", err)
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			if err := disk.SyncDir(filepath.Dir(out)); err != nil {
				return fmt.Errorf("flushing %s after writing the backup to it: %w", filepath.Dir(out), err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes)\n", out, n)
			return err
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "file to write, or - for stdout (required)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// checkOut refuses, before anything is asked of the relay, an --out the
// backup cannot go to. The copy replaces the file at out by renaming
// itself over it: over a device (/dev/stdout, a disk), a link or a named
// pipe it would replace the name, not write through it.
func checkOut(cmd *cobra.Command, out string) error {
	if out == toStdout {
		if isTerminal(cmd.OutOrStdout()) {
			return usageError{errors.New("--out -: stdout is a terminal; redirect it to a file or a pipe")}
		}
		return nil
	}
	fi, err := os.Lstat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return usageError{fmt.Errorf("--out %s: %s, not a regular file; the backup replaces a regular file or writes a new one, or goes to stdout with --out -", out, fileKind(fi.Mode()))}
	}
	// The relay's own data file (by any name, a hard link too): a copy
	// renamed over it takes its place under the relay, which finds it
	// replaced at its next write and stops.
	db, err := lockDataFile(out)
	if errors.Is(err, errRelayRunning) {
		return usageError{fmt.Errorf("--out %s: %w: it is that relay's data file, and a backup in its place would stop the relay; write the backup to another file", out, err)}
	}
	if db != nil {
		_ = db.Close()
	}
	return nil
}

// fileKind names the kind of a file that is not a regular one.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

// createStaging creates the temporary file in which a backup for stdout
// waits until it is checked: in the temporary directory or, where that
// cannot be written (a container's read-only root file system), beside
// the data file.
func createStaging(configPath string) (*os.File, error) {
	f, err := os.CreateTemp("", stagedBackup)
	if err == nil {
		return f, nil
	}
	cfg, cerr := config.Read(configPath, "data_dir")
	if cerr != nil {
		return nil, errors.Join(err, cerr)
	}
	// Beside the data file (the file a link there names, on another
	// volume), where the relay's start and compact look for the copies
	// of commands killed (removeStaleCopies).
	f, derr := os.CreateTemp(filepath.Dir(linkTarget(cfg.DBPath())), stagedBackup)
	if derr != nil {
		return nil, errors.Join(err, derr)
	}
	return f, nil
}
