// SPDX-License-Identifier: Apache-2.0

//go:build !unix

package main

import "io/fs"

// everyoneReads is false where a file's mode does not say who may read it
// (Windows keeps that in the file's access list, which Go does not report).
func everyoneReads(fs.FileMode) bool { return false }
