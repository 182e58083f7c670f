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

func TestLookupLowerFindsWhatToLowerFinds(t *testing.T) {
	m := map[string]int{"username": 1, "emails": 2, "ünïcode": 3, strings.Repeat("x", 40): 4}
	for _, name := range []string{"userName", "USERNAME", "username", "Emails", "ÜNÏCODE", strings.Repeat("X", 40), "", "name", "user\x00Name", "\xff"} {
		want, wantOK := m[strings.ToLower(name)]
		got, ok := lookupLower(m, name)
		if got != want || ok != wantOK {
			t.Errorf("lookupLower(%q) = %d, %v; map[strings.ToLower] gives %d, %v", name, got, ok, want, wantOK)
		}
	}
	if n := testing.AllocsPerRun(100, func() { lookupLower(m, "userName") }); n != 0 {
		t.Errorf("looking up a short ASCII name made %v allocations, want 0", n)
	}
}
