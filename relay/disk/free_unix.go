// SPDX-License-Identifier: Apache-2.0

//go:build unix

package disk

import "syscall"

// Free returns the bytes an unprivileged process may still write on the
// file system holding dir.
func Free(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
