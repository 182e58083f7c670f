// SPDX-License-Identifier: Apache-2.0

// Package disk holds what the project's writers of files need from the
// file system: how much room it has left, for the stores (the bbolt file,
// the embedded NATS server's) that heal once a full disk has room again,
// and the flush of a directory that makes a rename in it durable, for the
// files replaced whole (a backup, a restored data file, the sinks a reload
// added). It imports nothing of the project.
package disk

import (
	"errors"
	"os"
	"syscall"
)

// SyncDir flushes dir, so that a rename or removal in it survives a
// crash: without it a file renamed into place may be found under its old
// name, or not at all, after a power cut. A file system that cannot flush
// a directory (EINVAL: some network and FUSE mounts) keeps its renames as
// it keeps them; that is no error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}
