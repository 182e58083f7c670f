// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Duration is a time.Duration written as "10s", "5m", "2h" or with days:
// "90d", "1d12h".
type Duration time.Duration

// ParseDuration parses a Go duration, also accepting a whole number of days
// ("7d") in front of it.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 32)
		if err != nil {
			if strings.IndexFunc(s[:i], unicode.IsLetter) >= 0 { // "yesterday", not "1.5d"
				return 0, fmt.Errorf("duration %q: want a number with a unit such as 10s, 5m, 2h or 7d", s)
			}
			return 0, fmt.Errorf("duration %q: %q is not a whole number of days", s, s[:i])
		}
		if n > 100*365 {
			return 0, fmt.Errorf("duration %q is longer than a century", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number with a unit such as 10s, 5m, 2h or 7d", s)
	}
	if d < 0 || days > 0 && d > math.MaxInt64-days {
		return 0, fmt.Errorf("duration %q is out of range", s)
	}
	return days + d, nil
}

// MarshalYAML writes the duration readably, in days when it is whole days.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats the duration as relay.yaml would spell it.
func (d Duration) String() string {
	td := time.Duration(d)
	const day = 24 * time.Hour
	if td >= day && td%day == 0 {
		return strconv.FormatInt(int64(td/day), 10) + "d"
	}
	return td.String()
}

// Size is a byte count written as "4MiB", "64KiB", "1GB", "1TiB" or "1048576".
type Size int64

var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"B", 1},
}

// parseSize parses a byte count with an optional unit.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	factor := int64(1)
	num := s
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, factor = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a byte count such as 4MiB, 64KiB or 1048576", s)
	}
	if n > math.MaxInt64/factor {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return n * factor, nil
}

// MarshalYAML writes the size in the largest binary unit that divides it.
func (z Size) MarshalYAML() (any, error) { return z.String(), nil }

// String formats the size as relay.yaml would spell it.
func (z Size) String() string {
	for _, u := range []struct {
		suffix string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(z) >= u.factor && int64(z)%u.factor == 0 {
			return strconv.FormatInt(int64(z)/u.factor, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(z), 10)
}
