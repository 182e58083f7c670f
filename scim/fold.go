// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fold maps s to one representative per case-folding class: two strings
// fold to the same bytes exactly when strings.EqualFold says they are equal
// (it compares rune by rune under Unicode simple folding). ASCII folds to
// lower case, so the common index keys read naturally.
//
// Every comparison of a caseExact=false string goes through Fold: the
// filter's eq, co, sw, ew, gt, ge, lt and le, the sort order of both
// backends, and the relay's index keys. Ordering is by the folded strings'
// bytes (code points), not by any language's collation.
func Fold(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return foldUnicode(s)
		}
	}
	return strings.ToLower(s)
}

func foldUnicode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s { // invalid bytes read as U+FFFD, as EqualFold reads them
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

// foldRune returns the smallest rune of r's folding orbit, in lower case when
// that is an ASCII capital: K, k and the Kelvin sign all give k.
func foldRune(r rune) rune {
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	if 'A' <= least && least <= 'Z' {
		least += 'a' - 'A'
	}
	return least
}

// lookupLower looks name up, ignoring case, in m, whose keys are lower
// case (as strings.ToLower gives them). Most names a request gives are
// short and ASCII, with capitals ("userName", "externalId", "Users"):
// those are lowered into a buffer on the stack, not a new string, since
// every path, filter, body and PATCH names some.
func lookupLower[V any](m map[string]V, name string) (V, bool) {
	var lower [32]byte
	if len(name) > len(lower) {
		v, ok := m[strings.ToLower(name)]
		return v, ok
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= utf8.RuneSelf {
			v, ok := m[strings.ToLower(name)]
			return v, ok
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	v, ok := m[string(lower[:len(name)])] // indexing a map with a converted []byte makes no string
	return v, ok
}
