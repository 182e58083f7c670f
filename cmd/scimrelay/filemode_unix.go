// SPDX-License-Identifier: Apache-2.0

//go:build unix

package main

import "io/fs"

// everyoneReads says whether a file of mode can be read by every user of
// the machine.
func everyoneReads(mode fs.FileMode) bool { return mode.Perm()&0o004 != 0 }
