// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"strings"
	"testing"
)

// FuzzFold: two strings fold alike exactly when strings.EqualFold calls
// them equal, so that an index keyed by Fold and the filter's
// case-insensitive eq give the same answers.
func FuzzFold(f *testing.F) {
	for _, p := range [][2]string{{"Ann", "aNN"}, {"\u212Aelvin", "kelvin"}, {"ſ", "S"}, {"Σ", "ς"}, {"ß", "SS"}, {"\xff", "\xfe"}, {"\uFFFD", "\xff"}, {"İ", "i"}, {"", ""}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if (Fold(a) == Fold(b)) != strings.EqualFold(a, b) {
			t.Fatalf("Fold(%q)=%q, Fold(%q)=%q, EqualFold=%v", a, Fold(a), b, Fold(b), strings.EqualFold(a, b))
		}
		if !strings.EqualFold(Fold(a), a) {
			t.Fatalf("Fold(%q)=%q is not EqualFold to it", a, Fold(a))
		}
	})
}
