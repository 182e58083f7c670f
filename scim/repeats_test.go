// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestRepeatIndexAgreesWithRepeats holds the index to repeats, the
// comparison it replaces: for every value, find gives the first element
// of the list that repeats it, on lists long enough to be indexed.
func TestRepeatIndexAgreesWithRepeats(t *testing.T) {
	emails := UserResourceType.Schema.Attribute("emails")
	exactValue := newSchema("urn:test", "Test", "", attr("things", Complex, "", multi, subs(attr("value", String, "", caseExact), attr("type", String, "")))).Attribute("things")
	// Values that fold alike only under Unicode simple folding (K and the
	// Kelvin sign, s and the long s, Σ ς σ), null beside absent and "",
	// values and types that are not strings, non-objects, repeats within
	// the list (the first counts) and a type decoding does not produce.
	vals := []any{
		map[string]any{"value": "Kelvin@x", "type": "work"},
		map[string]any{"value": "\u212aelvin@X", "type": "WORK"},
		map[string]any{"value": "kelvin@x", "type": "work", "primary": true},
		map[string]any{"value": "kelvin@x"},
		map[string]any{"value": "kelvin@x", "type": nil},
		map[string]any{"value": "kelvin@x", "type": ""},
		map[string]any{"value": "ſam", "type": "home"},
		map[string]any{"value": "SAM", "type": "home"},
		map[string]any{"value": "ΟΔΥΣΣΕΥΣ"},
		map[string]any{"value": "οδυσσευς"},
		map[string]any{"value": "οδυσσευσ"},
		map[string]any{"type": "work"},
		map[string]any{"type": "work", "display": "d"},
		map[string]any{},
		map[string]any{"value": json.Number("5"), "type": "work"},
		map[string]any{"value": json.Number("5.0"), "type": "work"},
		map[string]any{"value": "5", "type": json.Number("5")},
		map[string]any{"value": true},
		map[string]any{"value": map[string]any{"a": "b"}},
		map[string]any{"value": []any{"a", json.Number("1"), nil}},
		map[string]any{"value": "x", "type": []any{}},
		map[string]any{"value": "x", "type": 5.0}, // no encoding: compared one by one
		map[string]any{"value": "x", "type": 5.0, "display": "d"},
		"kelvin@x", "Kelvin@x", json.Number("5"), "5", true, false, nil,
		[]any{}, []any{"a"}, []any{"A"},
		5.0,
	}
	for _, a := range []*Attribute{emails, exactValue, nil} {
		name := "exact repeats only"
		if a != nil {
			name = a.Name
		}
		t.Run(name, func(t *testing.T) {
			// Every rotation puts each value first in turn, with the rest
			// (and their repeats) after it; the list is twice vals, so
			// that it is indexed and holds repeats of each.
			for r := range vals {
				list := append(append([]any{}, vals[r:]...), vals[:r]...)
				list = append(list, list...)
				if len(list) < indexFrom {
					t.Fatalf("a list of %d is not indexed", len(list))
				}
				x := newRepeatIndex(a, list)
				for _, v := range vals {
					want := -1
					for i, el := range list {
						if repeats(a, el, v) {
							want = i
							break
						}
					}
					if got := x.find(v); got != want {
						t.Errorf("rotation %d: find(%v) = %d, want %d (%v)", r, v, got, want, list[max(want, 0)])
					}
				}
			}
		})
	}
}

// TestRepeatIndexDoesNotScan holds find to its maps once a list is
// indexed: the list taken away, it still finds what it held (a find that
// compared v with every element, as the code before did, finds nothing).
func TestRepeatIndexDoesNotScan(t *testing.T) {
	emails := UserResourceType.Schema.Attribute("emails")
	var list []any
	for i := range 4 * indexFrom {
		list = append(list, map[string]any{"value": fmt.Sprintf("u%d@x", i), "type": "work"})
	}
	list = append(list, map[string]any{"value": json.Number("7")}, "plain")
	x := newRepeatIndex(emails, list)
	if got := x.find(map[string]any{"value": "U3@X", "type": "Work", "primary": true}); got != 3 {
		t.Fatalf("find = %d, want 3", got)
	}
	x.list = nil
	for v, want := range map[string]int{
		`{"value":"u40@x","type":"work"}`: 40,
		`{"value":7}`:                     4 * indexFrom,
		`"plain"`:                         4*indexFrom + 1,
		`{"value":"u40@x"}`:               -1,
	} {
		var dv any
		d := json.NewDecoder(strings.NewReader(v))
		d.UseNumber()
		if err := d.Decode(&dv); err != nil {
			t.Fatal(err)
		}
		if got := x.find(dv); got != want {
			t.Errorf("find(%s) = %d, want %d", v, got, want)
		}
	}
}
