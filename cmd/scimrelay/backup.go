// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
)

func init() { subcommands = append(subcommands, newBackupCommand) }

func newBackupCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Write a consistent copy of the data file while the relay serves",
		Long: `Ask the running relay for a consistent copy of its bbolt data file (users,
groups, memberships, tokens, the undelivered outbox) and write it to FILE. A
copy that does not arrive whole is refused and nothing is written.

To restore, stop the relay and put the copy at data_dir/scimrelay.db. The
relay then holds the state at the backup: restart provisioning in Entra so
that it sends what changed since, and see README (Backup and recovery) for
what subscribers and revoked credentials see.`,
		Example: `  scimrelay backup --out /backups/scimrelay-$(date +%F).db`,
		Args:    positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(configPathOf(cmd))
			if err != nil {
				return err
			}
			res, err := c.Send(cmd.Context(), "GET", "/admin/v1/backup", nil)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			tmp, err := os.CreateTemp(filepath.Dir(out), ".scimrelay-backup-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			n, err := io.Copy(tmp, res.Body)
			if err != nil {
				_ = tmp.Close()
				return fmt.Errorf("receiving the backup (cut short after %d bytes; nothing was written to %s): %w", n, out, err)
			}
			err = tmp.Sync()
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing the backup: %w", err)
			}
			// Check the copy before it replaces anything.
			if err := checkWholeDataFile(tmp.Name()); err != nil {
				return fmt.Errorf("the backup received is not a valid data file: %w", err)
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes)\n", out, n)
			return err
		},
	}
	configFlagOn(cmd)
	cmd.Flags().StringVarP(&out, "out", "o", "", "file to write (required)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// checkWholeDataFile opens a copy of a data file and checks that it holds
// every page its meta page counts. bbolt opens a copy cut short without a
// complaint (it reads only the meta pages), and would fault on the first
// page past the end.
func checkWholeDataFile(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return db.View(func(tx *bolt.Tx) error {
		if want := tx.Size(); fi.Size() < want {
			return fmt.Errorf("%d bytes of the %d its pages take: the copy was cut short", fi.Size(), want)
		}
		return nil
	})
}
