// SPDX-License-Identifier: Apache-2.0

package scim

import "strings"

// Truncate shortens a value, a client's most often, for a message: to its
// first n bytes and "..." when it is longer, cut before a character the n
// bytes would split, so that the message stays UTF-8. The relay and the
// token endpoint use it too; sinks, which may not import scim, has its own.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
