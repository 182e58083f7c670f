// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"testing"
	"unicode/utf8"
)

// TestTruncateKeepsCharactersWhole: a character the cut would split is
// left out whole, so that the message stays UTF-8.
func TestTruncateKeepsCharactersWhole(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 8, "short"},
		{"exactly8", 8, "exactly8"},
		{"abcdefghij", 4, "abcd..."},
		{"ab\u00e9cd", 3, "ab..."},       // é is 2 bytes: the cut falls inside it
		{"ab\u00e9cd", 4, "ab\u00e9..."}, // after it
		{"a\u20acb", 2, "a..."},          // € is 3 bytes
		{"a\u20acb", 3, "a..."},
		{"\U0001F600x", 3, "..."}, // a 4-byte emoji cut anywhere inside
	} {
		got := Truncate(tt.s, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
