// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"math/big"
	"strconv"
	"strings"
	"testing"
)

// compareDecimals compares two numbers' texts exactly; ok is false when
// either is not a number's text.
func compareDecimals(a, b string) (int, bool) {
	x, okx := parseDecimal(a)
	y, oky := parseDecimal(b)
	if !okx || !oky {
		return 0, false
	}
	return x.compare(y), true
}

// TestCompareDecimalsIsExact: numbers compare by their value, exactly,
// past float64's 53 bits too; what is not a plain decimal is left to
// float64.
func TestCompareDecimalsIsExact(t *testing.T) {
	pairs := [][2]string{
		{"9007199254740993", "9007199254740992"}, {"1", "1.0"}, {"-0", "0"}, {"0.1", "0.10000000000000000001"},
		{"1e400", "1e399"}, {"-1e400", "1"}, {"100", "1e2"}, {"1E+2", "99.99"}, {"-5", "-50"}, {"0.001", "1e-3"},
		{"123456789012345678901234567890", "123456789012345678901234567891"}, {"-0.5", "-0.50"}, {"+7", "7"},
		{"10", "9"}, {"0", "-0.0"}, {"2.5e-1", "0.25"},
	}
	for _, p := range pairs {
		got, ok := compareDecimals(p[0], p[1])
		x, _ := new(big.Rat).SetString(p[0])
		y, _ := new(big.Rat).SetString(p[1])
		if want := x.Cmp(y); !ok || got != want {
			t.Errorf("compareDecimals(%s, %s) = %d, %v; want %d", p[0], p[1], got, ok, want)
		}
	}
	for _, s := range []string{"Inf", "NaN", "0x1p3", "1e", ".5", "5.", "1e99999999999999999"} {
		if _, ok := compareDecimals(s, "1"); ok {
			t.Errorf("%s read as a decimal", s)
		}
	}
}

// FuzzCompareDecimals: compareDecimals agrees with big.Rat on every pair it
// reads (exponents kept small for big.Rat's sake).
func FuzzCompareDecimals(f *testing.F) {
	f.Add("9007199254740993", "9007199254740992")
	f.Add("-0.0e5", "0")
	f.Add("1.50", "15e-1")
	f.Fuzz(func(t *testing.T, a, b string) {
		got, ok := compareDecimals(a, b)
		if !ok {
			return
		}
		for _, s := range []string{a, b} {
			if i := strings.IndexAny(s, "eE"); i >= 0 {
				if e, err := strconv.Atoi(s[i+1:]); err != nil || e > 300 || e < -300 {
					return
				}
			}
		}
		x, okx := new(big.Rat).SetString(a)
		y, oky := new(big.Rat).SetString(b)
		if !okx || !oky {
			t.Fatalf("compareDecimals read %q and %q, big.Rat does not", a, b)
		}
		if want := x.Cmp(y); got != want {
			t.Fatalf("compareDecimals(%q, %q) = %d, want %d", a, b, got, want)
		}
	})
}

// TestSortKeysCompareNumbersExactly: sortBy orders numbers as a filter
// compares them: 9007199254740993 after 9007199254740992 (as float64 they
// were one, a tie), and -9007199254740993 before -9007199254740992; 1e400
// is a number, not a missing value; equal values written apart (100 and
// 1e2) are a tie, left to the id.
func TestSortKeysCompareNumbersExactly(t *testing.T) {
	const custom = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
	path, err := UserResourceType.ParsePath(custom + ":n")
	if err != nil {
		t.Fatal(err)
	}
	key := func(n string) SortKey {
		return SortKeyOf(fixture(t, UserResourceType, `{`+userSchemas+`,"id":"u1","userName":"ann","`+custom+`":{"n":`+n+`}}`), path)
	}
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"9007199254740993", "9007199254740992", 1},
		{"-9007199254740993", "-9007199254740992", -1},
		{"100", "1e2", 0},
		{"2", "10", -1},
		// Past float64's range: a number (it sorted as missing), by value.
		{"1e400", "5", 1},
		{"1e400", "2e400", -1},
		{"-1e400", "-5", -1},
	} {
		if got := key(c.a).Compare(key(c.b), false); got != c.want {
			t.Errorf("%s against %s: %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
