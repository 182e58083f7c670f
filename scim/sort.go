// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"cmp"
	"encoding/json"
	"strings"
)

// SortKey is what a resource sorts by under sortBy (RFC 7644 §3.4.2.3: "by
// the attribute type"). Every backend sorts with it, so that they agree
// with each other and with the filter: strings of a caseExact=false
// attribute compare by Fold, as gt and lt do, numbers by value.
type SortKey struct {
	kind sortKind
	num  float64
	str  string
	// dec is a number's text read exactly, where exact.
	dec   decimal
	exact bool
}

// sortKind orders values of different JSON types, which only an attribute
// of an unknown extension can mix: booleans (false, then true), then
// numbers, then strings, CouchDB's collation; a missing value comes last.
type sortKind uint8

const (
	sortBool sortKind = iota
	sortNumber
	sortString
	sortMissing
)

// SortKeyOf returns the key r sorts by at p: for a multi-valued attribute
// its primary value, else its first; for a complex one the sub-attribute p
// names, else its "value". A missing value, an empty string and a value of
// no comparable type (an object) are missing.
func SortKeyOf(r *Resource, p AttrPath) SortKey {
	v := lookupAttr(r.Attrs, p)
	if list, ok := v.([]any); ok {
		v = nil
		for i, el := range list {
			m, _ := el.(map[string]any)
			if primary, _ := m["primary"].(bool); primary || i == 0 {
				v = el
				if primary {
					break
				}
			}
		}
	}
	exact := p.caseExact()
	if m, ok := v.(map[string]any); ok {
		sub := p.Sub
		if sub == "" {
			sub = "value"
			if p.attr != nil && p.attr.Sub("value") != nil {
				exact = p.attr.Sub("value").CaseExact
			}
		}
		v = m[findKeyFold(m, sub)]
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			break
		}
		if !exact {
			v = Fold(v)
		}
		return SortKey{kind: sortString, str: v}
	case json.Number:
		// Read exactly for Compare; one past float64's range (1e400) is
		// ±Inf as a float, not missing.
		if d, f, ok := readNumber(string(v)); ok {
			return SortKey{kind: sortNumber, num: f, dec: d, exact: true}
		}
		if f, err := v.Float64(); err == nil {
			return SortKey{kind: sortNumber, num: f}
		}
	case float64:
		return SortKey{kind: sortNumber, num: v}
	case bool:
		if v {
			return SortKey{kind: sortBool, num: 1}
		}
		return SortKey{kind: sortBool}
	}
	return SortKey{kind: sortMissing}
}

// Compare orders k before o (-1), after (+1) or with it (0), in the
// direction asked for. A missing value comes last ascending and first
// descending, as RFC 7644 §3.4.2.3 asks (sortMissing is the last kind).
func (k SortKey) Compare(o SortKey, descending bool) int {
	c := cmp.Compare(k.kind, o.kind)
	if c == 0 {
		if k.exact && o.exact {
			// Numbers by their texts' values, as a filter compares them:
			// float64 cannot tell 9007199254740993 from 9007199254740992,
			// nor 1e400 from 2e400 (both +Inf).
			c = k.dec.compare(o.dec)
		} else {
			c = cmp.Compare(k.num, o.num)
		}
	}
	if c == 0 {
		c = strings.Compare(k.str, o.str)
	}
	if descending {
		return -c
	}
	return c
}
