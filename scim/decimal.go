// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"cmp"
	"strconv"
	"strings"
)

// Numbers compared by the value their texts write, exactly: a filter's
// number and a stored one as float64 lost every digit past 53 bits, and
// 9007199254740993 was 9007199254740992 (an id in a custom extension: a
// filter naming one selected the other, and a PATCH's value filter removed
// an element it did not name). The texts are compared digit by digit, in
// one pass and without expanding an exponent (math/big's exact reading of
// 1e1000000000 would build a billion-digit number, and its rounded one
// costs quadratic time in the digits of a long stored value).

// decimal is a number's text read exactly: its significant digits, without
// leading or trailing zeros ("" for zero), and the power of ten the last
// of them stands for.
type decimal struct {
	neg    bool
	digits string
	exp    int64
}

// parseDecimal reads JSON's number grammar (a leading '+' too, as a
// filter's text may have one); ok is false for anything else (hex, "Inf")
// and for exponents beyond ±10^15.
func parseDecimal(s string) (d decimal, ok bool) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		d.neg = s[i] == '-'
		i++
	}
	var digits []byte
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		digits = append(digits, s[i])
		i++
	}
	intDigits := i - start
	frac := 0
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			digits = append(digits, s[i])
			frac++
			i++
		}
		if frac == 0 {
			return decimal{}, false
		}
	}
	if intDigits == 0 {
		return decimal{}, false
	}
	var exp int64
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		e, err := strconv.ParseInt(s[i+1:], 10, 64)
		if err != nil || e > 1e15 || e < -1e15 || i+1 == len(s) {
			return decimal{}, false
		}
		exp = e
		i = len(s)
	}
	if i != len(s) {
		return decimal{}, false
	}
	exp -= int64(frac)
	j := 0
	for j < len(digits) && digits[j] == '0' {
		j++
	}
	digits = digits[j:]
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	d.digits, d.exp = string(digits), exp
	if d.digits == "" {
		d.neg, d.exp = false, 0 // -0 is 0
	}
	return d, true
}

// compare compares x with y exactly (-1, 0, +1).
func (x decimal) compare(y decimal) int {
	sign := func(d decimal) int {
		switch {
		case d.digits == "":
			return 0
		case d.neg:
			return -1
		}
		return 1
	}
	if sx, sy := sign(x), sign(y); sx != sy || sx == 0 {
		return cmp.Compare(sx, sy)
	}
	// The same sign: compare magnitudes, by the place of the first digit,
	// then digit by digit.
	mag := 0
	if px, py := int64(len(x.digits))+x.exp, int64(len(y.digits))+y.exp; px != py {
		mag = cmp.Compare(px, py)
	} else {
		mag = strings.Compare(x.digits, y.digits) // no trailing zeros: a longer one with the same start is larger
	}
	if x.neg {
		return -mag
	}
	return mag
}
