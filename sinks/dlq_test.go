// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"testing"
	"unicode/utf8"
)

// TestTruncateKeepsCharactersWhole: an error cut for a dead letter's
// header or a record leaves a character the cut would split out whole, so
// that the text stays UTF-8.
func TestTruncateKeepsCharactersWhole(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 8, "short"},
		{"abcdefghij", 4, "abcd..."},
		{"ab\u00e9cd", 3, "ab..."}, // é is 2 bytes: the cut falls inside it
		{"ab\u00e9cd", 4, "ab\u00e9..."},
		{"a\u20acb", 3, "a..."},   // € is 3 bytes
		{"\U0001F600x", 2, "..."}, // a 4-byte emoji
	} {
		got := truncate(tt.s, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
