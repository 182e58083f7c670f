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
groups, memberships, tokens, the undelivered outbox) and write it to FILE.
To restore, stop the relay and put the copy at data_dir/scimrelay.db.`,
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
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing the backup: %w", err)
			}
			// A copy cut short would not open; check before it replaces anything.
			db, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				return fmt.Errorf("the backup received is not a valid data file: %w", err)
			}
			if err := db.Close(); err != nil {
				return err
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
