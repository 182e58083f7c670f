// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/scimrelay/scimrelay/relay"
)

func init() { subcommands = append(subcommands, newRestoreCommand) }

func newRestoreCommand() *cobra.Command {
	var from string
	var keep, fresh bool
	cmd := &cobra.Command{
		Use:   "restore --from FILE|-",
		Short: "Put a backup in place of the data file, with the relay stopped",
		Long: `Put a copy made by scimrelay backup in place of the relay's data file
(data_dir/scimrelay.db, data_dir as relay.yaml says; a relative data_dir
is taken from the current directory). The relay must be stopped: while a
relay holds the data file, the restore is refused; so is one that finds
no data file to replace, unless --new says the machine has none yet. The copy is checked
first (whole, and a scimrelay data file of a layout this build opens);
nothing is changed when it is not. The copy takes the data file's place
in one rename, with the owner of the file it replaces; that file is kept
beside it as scimrelay.db.replaced-<time> unless --keep=false. A damaged
data file is replaced like any other; where scimrelay.db is a symbolic
link, the file it names is. The backup is copied and checked before the
data file's lock is taken: a relay started while it arrives makes the
restore refuse, changing nothing; one started as the copy is put in
place waits for it and opens the copy. With
--from -, the backup is read from stdin, which is how it reaches a
container whose image has no shell.

Copying or moving a backup over the data file of a running relay (cp,
mv) is not a restore: the relay may crash while cp writes; otherwise it
finds the file changed, refuses writes and stops, and serves the new
file when started again.

A restore brings back the state at the backup: restart provisioning in
Entra so that it sends what changed since, and see README (Backup and
recovery) for what subscribers and revoked credentials see.`,
		Example: `  scimrelay restore --from /backups/scimrelay-2026-11-30.db
  docker compose run --rm -T relay-scim restore --from - < scimrelay-2026-11-30.db`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, missing, err := dataFileOf(cmd)
			if err != nil {
				return err
			}
			if missing != "" && !fresh {
				return usageError{fmt.Errorf("there is no data file at %s to replace (%s): run restore where serve runs, with its relay.yaml, or add --new to restore onto a machine that has none yet", target, missing)}
			}
			var src io.Reader = cmd.InOrStdin()
			name := "the backup on stdin"
			if from == fromStdin {
				if isTerminal(src) {
					return usageError{errors.New("--from - reads the backup from stdin, which is a terminal: redirect it from the file")}
				}
			} else {
				f, err := os.Open(from)
				if err != nil {
					return err
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil && fi.IsDir() {
					return usageError{fmt.Errorf("--from %s: %s, not a backup file", from, fileKind(fi.Mode()))}
				}
				src, name = f, from
			}
			kept, err := restoreDataFile(src, name, target, keep)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restored %s to %s\n", name, target)
			if kept != "" {
				fmt.Fprintf(out, "the data file it replaced is kept at %s\n", kept)
			}
			fmt.Fprintln(out, "once the relay runs, restart provisioning in Entra, so that its next cycle sends what changed since the backup (README, Backup and recovery)")
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVar(&from, "from", "", "the backup to restore, or - for stdin (required)")
	cmd.Flags().BoolVar(&keep, "keep", true, "keep the data file it replaces beside it")
	cmd.Flags().BoolVar(&fresh, "new", false, "restore where there is no data file yet (a new machine)")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

// fromStdin is the --from that means stdin.
const fromStdin = "-"

// restoreDataFile puts a copy of what src holds (name says what it is) in
// place of the data file at target. It copies and checks the backup
// (relay.CheckCopy) beside the data file first, then takes the data
// file's lock (holdDataFile, which a damaged data file does not stop) to
// put the copy in place: a relay running then makes it refuse, and one
// starting waits for it and opens the copy. The lock is not held while
// the backup arrives, which may take minutes from stdin, longer than a
// starting relay waits. With keep, the data file replaced stays beside it
// (a hard link, so it costs no copy); its path is returned. A copy cut
// short (a full disk) leaves the data file as it was.
func restoreDataFile(src io.Reader, name, target string, keep bool) (kept string, err error) {
	// Refused at once rather than after the copy when the relay runs.
	held, err := holdTarget(target, ": stop it first")
	if err != nil {
		return "", err
	}
	_ = held.Close()
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".scimrelay-restore-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("copying %s beside the data file (nothing was changed): %w", name, err)
	}
	if err := relay.CheckCopy(tmp.Name()); err != nil {
		return "", fmt.Errorf("%s is not a backup this relay can restore (nothing was changed): %w", name, err)
	}
	if held, err = holdTarget(target, " (it started while the backup was copied): stop it, then restore again"); err != nil {
		return "", err
	}
	defer func() { _ = held.Close() }() // until the copy is in place
	return putInPlace(tmp.Name(), target, keep)
}

// holdTarget holds the lock of the data file at target (holdDataFile)
// until the returned file is closed; with no data file there, it holds
// nothing (a nil *os.File closes without harm). A relay that holds it is
// an error, saying what to do (do).
func holdTarget(target, do string) (*os.File, error) {
	f, err := holdDataFile(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case errors.Is(err, errRelayRunning):
		return nil, fmt.Errorf("%s: %w%s; nothing was changed", target, err, do)
	case err != nil:
		return nil, fmt.Errorf("opening the data file %s: %w", target, err)
	}
	return f, nil
}
