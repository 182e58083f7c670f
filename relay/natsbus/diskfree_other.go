//go:build !unix

package natsbus

import "errors"

// freeSpace is unknown here: the healer restarts JetStream without
// checking for room first.
func freeSpace(string) (uint64, error) { return 0, errors.ErrUnsupported }
