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

func init() { subcommands = append(subcommands, newCompactCommand) }

func newCompactCommand() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Give the data file's free pages back to the disk, with the relay stopped",
		Long: `Rewrite the relay's data file (data_dir/scimrelay.db, data_dir as
relay.yaml says; a relative data_dir is taken from the current directory)
without its free pages. bbolt reuses the pages that deleted data leaves
(events once published, users and groups deleted, a tenant purged,
provisioning log entries past their bound) but never gives them back to
the file system, so the file stays as large as it ever was: after an
initial fill with an external NATS, for instance, it holds the space of
every event the relay kept. The metric scimrelay_store_free_bytes, and
free_bytes in GET /admin/v1/storage, say how much of the file is free.

The relay must be stopped: while a relay holds the data file, compact
refuses, changing nothing, and a relay started while compact runs gives
up after a second, saying that another scimrelay process holds the data
file. The copy is written beside the data file (so
data_dir needs room for what the file holds in use), checked to hold
every bucket, key and value of the data file and nothing else, and put
in its place in one rename, with the owner of the file it replaces. The
data file is not changed until then: a copy that fails (a full disk) is
removed, and so is, first, one a compact, restore or backup killed left
(the relay's start removes them too). A restore that puts a backup in
place while compact runs stays: compact then leaves the data file as the
restore put it, saying so. Where scimrelay.db is a symbolic link (the
file on another volume), the file it names is compacted, beside itself,
and the link kept. With --keep, the file it replaces stays beside it as
scimrelay.db.replaced-<time> (a hard link: it keeps its space until you
delete it).

The relay holds the same state before and after: no event is made, and
Entra and the sinks notice nothing but the relay's stop.`,
		Example: `  sudo systemctl stop scimrelay && (cd /var/lib/scimrelay && sudo scimrelay compact --config /etc/scimrelay/relay.yaml) && sudo systemctl start scimrelay
  docker compose stop relay-scim && docker compose run --rm relay-scim compact && docker compose start relay-scim`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			target, missing, err := dataFileOf(cmd)
			if err != nil {
				return err
			}
			if missing != "" {
				return usageError{fmt.Errorf("there is no data file at %s to compact (%s): run compact where serve runs, with its relay.yaml", target, missing)}
			}
			before, after, kept, err := compactDataFile(target, keep, cmd.ErrOrStderr())
			out := cmd.OutOrStdout()
			if errors.Is(err, errReplacedMeanwhile) {
				// Not a failure: the file another compact or a restore
				// put in place is what the relay is to serve.
				fmt.Fprintf(out, "%s was not compacted: it was replaced while this compact ran (a restore or another compact) and is left as that one put it, %s\n", target, sizeMiB(after))
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "compacted %s: %s before, %s now\n", target, sizeMiB(before), sizeMiB(after))
			if kept != "" {
				fmt.Fprintf(out, "the data file it replaced is kept at %s (delete it to free its space)\n", kept)
			}
			return nil
		},
	}
	configFlagOn(cmd)
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the data file it replaces beside it")
	return cmd
}

// compactDataFile puts a compacted copy of the data file at target in its
// place (relay.CompactCopy), holding the data file's lock throughout, so
// that a running relay refuses it and one starting waits. It returns the
// file's sizes before and after, and with keep the path of the file
// replaced. On an error the data file is as it was; errReplacedMeanwhile
// (with after the size of the file now there) when another compact or a
// restore put its file in place meanwhile, which stays. It first removes
// the copies killed commands left beside the data file, saying so on
// stderr.
func compactDataFile(target string, keep bool, stderr io.Writer) (before, after int64, kept string, err error) {
	db, err := lockDataFile(target)
	if errors.Is(err, errRelayRunning) {
		return 0, 0, "", fmt.Errorf("%s: %w: stop it first; nothing was changed", target, err)
	}
	if err != nil {
		return 0, 0, "", fmt.Errorf("opening the data file %s: %w", target, err)
	}
	// Held until the copy is in place.
	defer func() { _ = db.Close() }()
	// A copy a compact killed left (the relay's start removes them too)
	// would take the room this one needs.
	removeStaleCopies(target, tellStaleCopy(stderr))
	if err := relay.CheckCopy(target); err != nil {
		return 0, 0, "", fmt.Errorf("%s is not a data file this relay can compact (nothing was changed): %w", target, err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		return 0, 0, "", err
	}
	// Held until it is in place: bbolt holds it while it writes it, and
	// a second compact of this file (whose lock is shared) removes an
	// unheld copy as one a compact killed left, one caught between bbolt's
	// close and the hold too (stageHeld makes that one again).
	staged, held, err := stageHeld(func() (string, error) {
		tmp, err := os.CreateTemp(filepath.Dir(target), stagedCompact)
		if err != nil {
			return "", err
		}
		_ = tmp.Close()
		if err := relay.CompactCopy(db, tmp.Name()); err != nil {
			_ = os.Remove(tmp.Name())
			return "", fmt.Errorf("compacting %s (nothing was changed): %w", target, err)
		}
		return tmp.Name(), nil
	})
	if err != nil {
		return 0, 0, "", err
	}
	defer os.Remove(staged)
	defer held.Close()
	if compacting != nil {
		compacting(staged)
	}
	done, err := os.Stat(staged)
	if err != nil {
		return 0, 0, "", err
	}
	if kept, err = putInPlace(staged, target, keep, fi); errors.Is(err, errReplacedMeanwhile) {
		// Another compact (the same data, compacted) or a restore (which
		// a copy of the file it replaced must not undo) put its file
		// in place meanwhile: that one stays.
		now, serr := os.Stat(target)
		if serr != nil {
			return 0, 0, "", serr
		}
		return fi.Size(), now.Size(), "", err
	} else if err != nil {
		return 0, 0, "", err
	}
	return fi.Size(), done.Size(), kept, nil
}

// compacting, when set (by tests), is called with the compacted copy's
// path before it takes the data file's place, the lock still held.
var compacting func(staged string)

// sizeMiB says a file's size in MiB.
func sizeMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
