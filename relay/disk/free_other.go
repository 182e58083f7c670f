// SPDX-License-Identifier: Apache-2.0

//go:build !unix

package disk

import "errors"

// Free is unknown on this system.
func Free(string) (uint64, error) { return 0, errors.ErrUnsupported }
