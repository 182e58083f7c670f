// SPDX-License-Identifier: Apache-2.0

// Package disk answers how much room a file system has left, for the
// stores (the bbolt file, the embedded NATS server's) that heal once a
// full disk has room again. It imports nothing of the project.
package disk
