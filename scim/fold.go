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
