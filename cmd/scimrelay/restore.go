// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

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

A restore brings back the state at the backup. It lists what the data
file it replaces held that the backup does not, for you to set right:
users and groups made since (gone; the sinks had their events), and
deleted since (back), each by id; credentials and subscribers made,
revoked or changed since; an OAuth key rotated since. Then restart
provisioning in Entra so that it sends what changed since, and see
README (Backup and recovery) for what subscribers and receivers see.`,
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
			r, err := restoreDataFile(src, name, target, keep)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restored %s to %s\n", name, target)
			if r.kept != "" {
				fmt.Fprintf(out, "the data file it replaced is kept at %s\n", r.kept)
			}
			sayWhatCameBack(out, r)
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
// short (a full disk) leaves the data file as it was. What the data file
// replaced held that the backup does not is compared before it is
// replaced (restored.since), under the same lock.
func restoreDataFile(src io.Reader, name, target string, keep bool) (restored, error) {
	// Refused at once rather than after the copy when the relay runs.
	held, err := holdTarget(target, ": stop it first")
	if err != nil {
		return restored{}, err
	}
	_ = held.Close()
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return restored{}, err
	}
	// Held, so that a relay starting meanwhile leaves it.
	path, staged, err := stageHeld(created(func() (*os.File, error) { return os.CreateTemp(dir, stagedRestore) }))
	if err != nil {
		return restored{}, err
	}
	defer os.Remove(path)
	defer staged.Close()
	tmp, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return restored{}, err
	}
	defer tmp.Close()
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return restored{}, fmt.Errorf("copying %s beside the data file (nothing was changed): %w", name, err)
	}
	if err := relay.CheckCopy(tmp.Name()); err != nil {
		return restored{}, fmt.Errorf("%s is not a backup this relay can restore (nothing was changed): %w", name, err)
	}
	if held, err = holdTarget(target, " (it started while the backup was copied): stop it, then restore again"); err != nil {
		return restored{}, err
	}
	defer func() { _ = held.Close() }() // until the copy is in place
	var r restored
	if held != nil {
		r.since, r.sinceErr = relay.CompareWithBackup(target, tmp.Name())
		r.compared = true
	}
	r.kept, err = putInPlace(tmp.Name(), target, keep, nil)
	return r, err
}

// restored is what a restore did: where it kept the data file it
// replaced (empty: nowhere), and what that file held that the backup
// does not (compared: there was one; sinceErr: it could not be read).
type restored struct {
	kept     string
	compared bool
	since    relay.SinceBackup
	sinceErr error
}

// sayWhatCameBack tells the operator what the restore took back, one line
// a kind and a line a resource or credential, for them to set right
// (README, Backup and recovery): every id, since receivers and Entra
// need them all.
func sayWhatCameBack(out io.Writer, r restored) {
	switch {
	case !r.compared:
		return
	case r.sinceErr != nil:
		fmt.Fprintf(out, "what changed since the backup is not known: the data file it replaced could not be compared with it (%v)\n", r.sinceErr)
		return
	case r.since.Empty():
		fmt.Fprintln(out, "the data file it replaced held nothing the backup does not: no resource or credential was made, deleted or revoked since")
		return
	}
	s := r.since
	for _, tenant := range slices.Sorted(maps.Keys(s.Made)) {
		fmt.Fprintf(out, "tenant %s: %d user(s) and group(s) made since the backup, gone now; the sinks had their events, and Entra makes them again under new ids: remove these from receivers that keep the relay's ids\n", tenant, len(s.Made[tenant]))
		for _, id := range s.Made[tenant] {
			fmt.Fprintf(out, "  %s\n", id)
		}
	}
	for _, tenant := range slices.Sorted(maps.Keys(s.Deleted)) {
		fmt.Fprintf(out, "tenant %s: %d user(s) and group(s) the data file it replaced no longer held (deleted since the backup), back now; the sinks were told, and Entra, which deleted them, does not know they are back: delete each with the tenant's token (DELETE <public_url>/scim/v2/%s/<the line>)\n", tenant, len(s.Deleted[tenant]), tenant)
		for _, id := range s.Deleted[tenant] {
			fmt.Fprintf(out, "  %s\n", id)
		}
	}
	for _, tenant := range slices.Sorted(maps.Keys(s.Purged)) {
		fmt.Fprintf(out, "tenant %s was purged since the backup, and %d of its users and groups and its credentials are back: once the relay runs, with %s not in relay.yaml, purge it again (scimrelay tenant purge %s --yes)\n", tenant, s.Purged[tenant], tenant, tenant)
	}
	for _, t := range s.CredentialsMade {
		fmt.Fprintf(out, "%s %s of tenant %s (%s) was made since the backup and is refused now: make it again, and give Entra the new one before restarting provisioning\n", t.Kind, t.Name, t.Tenant, t.ID)
	}
	for _, t := range s.CredentialsRevoked {
		fmt.Fprintf(out, "%s %s of tenant %s (%s) was revoked since the backup and is live again: revoke it again\n", t.Kind, t.Name, t.Tenant, t.ID)
	}
	for _, t := range s.CredentialsBack {
		fmt.Fprintf(out, "%s %s of tenant %s (%s) was deleted since the backup (a purge deletes them) and is back as it was then: revoke it again, or purge its tenant again\n", t.Kind, t.Name, t.Tenant, t.ID)
	}
	for _, name := range s.SubscribersAdded {
		fmt.Fprintf(out, "subscriber %s was added since the backup and is gone now: add it again\n", name)
	}
	for _, name := range s.SubscribersRemoved {
		fmt.Fprintf(out, "subscriber %s was removed since the backup and is back now: remove it again\n", name)
	}
	for _, name := range s.SubscribersChanged {
		fmt.Fprintf(out, "subscriber %s was changed since the backup and is back as it was: change it again\n", name)
	}
	if s.OAuthKeyChanged {
		fmt.Fprintln(out, "the key that signs OAuth access tokens was rotated since the backup and the old one is back: scimrelay keys rotate oauth")
	}
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
