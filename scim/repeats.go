// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"slices"
	"strconv"
)

// repeats reports whether v would repeat el, an element of the
// multi-valued attribute a: equal, or both objects with the same "value"
// (by its case rule) and "type". With a nil, only equal values repeat
// (addresses in a POST, an unknown extension's array).
func repeats(a *Attribute, el, v any) bool {
	if jsonEqual(el, v) {
		return true
	}
	if a == nil {
		return false
	}
	em, ok := el.(map[string]any)
	m, isObj := v.(map[string]any)
	return ok && isObj && sameString(a.Sub("value"), em["value"], m["value"]) && sameString(a.Sub("type"), em["type"], m["type"])
}

// repeatIndex finds the first element of a list that a value repeats (as
// repeats says), without comparing the value with every element: merging
// or removing n values of n held was quadratic (40,000 emails in one POST
// took 78 s). An object whose value and type are strings or absent is
// found by that pair, under each one's case rule (Fold makes two strings
// equal exactly when strings.EqualFold does, as sameString compares);
// other values by an exact encoding of what jsonEqual compares. A value
// holding a type decoding does not produce (no encoding) is compared with
// each element, as before.
type repeatIndex struct {
	a     *Attribute
	list  []any
	pairs map[pairKey]int
	exact map[string]int
}

// pairKey is an object's value and type as repeats compares them.
type pairKey struct {
	value, typ       string
	hasValue, hasTyp bool
}

// indexFrom is the length from which a list is indexed: a shorter one (a
// user's few emails) is scanned, which costs less than building the maps.
const indexFrom = 16

// newRepeatIndex indexes list, a multi-valued attribute a's elements (a
// nil: exact repeats only). The index owns list from then on: add and set
// change it.
func newRepeatIndex(a *Attribute, list []any) *repeatIndex {
	return &repeatIndex{a: a, list: list}
}

// find returns the index of the first element v repeats, -1 when none.
func (x *repeatIndex) find(v any) int {
	if x.pairs == nil {
		if len(x.list) < indexFrom {
			return x.scan(v)
		}
		x.pairs, x.exact = make(map[pairKey]int, len(x.list)), make(map[string]int)
		for i, el := range x.list {
			x.note(i, el)
		}
	}
	if k, ok := x.pairOf(v); ok {
		if i, found := x.pairs[k]; found {
			return i
		}
		return -1
	}
	if enc, ok := exactKey(nil, v); ok {
		// An element of another type than decoding gives is never jsonEqual
		// to v, whose every part is of those types.
		if i, found := x.exact[string(enc)]; found {
			return i
		}
		return -1
	}
	return x.scan(v)
}

func (x *repeatIndex) scan(v any) int {
	return slices.IndexFunc(x.list, func(el any) bool { return repeats(x.a, el, v) })
}

// add appends v to the list.
func (x *repeatIndex) add(v any) {
	x.list = append(x.list, v)
	if x.pairs != nil {
		x.note(len(x.list)-1, v)
	}
}

// set puts v at i in place of an element it repeats (merged with it), which
// keeps i's keys.
func (x *repeatIndex) set(i int, v any) { x.list[i] = v }

func (x *repeatIndex) note(i int, v any) {
	if k, ok := x.pairOf(v); ok {
		if _, held := x.pairs[k]; !held {
			x.pairs[k] = i
		}
		return
	}
	if enc, ok := exactKey(nil, v); ok {
		if _, held := x.exact[string(enc)]; !held {
			x.exact[string(enc)] = i
		}
	}
}

// pairOf returns v's pair key when repeats compares v by its value and
// type: an object whose value and type are each a string or absent (null).
// An object with another value or type repeats only what equals it.
func (x *repeatIndex) pairOf(v any) (pairKey, bool) {
	m, ok := v.(map[string]any)
	if !ok || x.a == nil {
		return pairKey{}, false
	}
	var k pairKey
	if k.value, k.hasValue, ok = caseKey(x.a.Sub("value"), m["value"]); !ok {
		return pairKey{}, false
	}
	if k.typ, k.hasTyp, ok = caseKey(x.a.Sub("type"), m["type"]); !ok {
		return pairKey{}, false
	}
	return k, true
}

// caseKey is what sameString compares of v under sub-attribute a's case
// rule: a string, folded unless caseExact, or nothing for nil; ok is false
// for any other value, which sameString finds equal to nothing.
func caseKey(a *Attribute, v any) (key string, has bool, ok bool) {
	switch s := v.(type) {
	case nil:
		return "", false, true
	case string:
		if a != nil && a.CaseExact {
			return s, true, true
		}
		return Fold(s), true, true
	}
	return "", false, false
}

// exactKey appends to b an encoding of v that two values share exactly
// when jsonEqual calls them equal: each part tagged by its type, strings
// and numbers by their length and text, an object's members in key order.
// ok is false when v holds a type other than those decoding produces.
func exactKey(b []byte, v any) ([]byte, bool) {
	text := func(b []byte, tag byte, s string) []byte {
		b = append(b, tag)
		b = strconv.AppendInt(b, int64(len(s)), 10)
		return append(append(b, ':'), s...)
	}
	switch v := v.(type) {
	case nil:
		return append(b, 'n'), true
	case bool:
		if v {
			return append(b, 't'), true
		}
		return append(b, 'f'), true
	case string:
		return text(b, 's', v), true
	case json.Number:
		return text(b, 'd', string(v)), true
	case map[string]any:
		b = append(b, '{')
		for _, k := range sortedKeys(v) {
			b = text(b, 'k', k)
			var ok bool
			if b, ok = exactKey(b, v[k]); !ok {
				return nil, false
			}
		}
		return append(b, '}'), true
	case []any:
		b = append(b, '[')
		for _, el := range v {
			var ok bool
			if b, ok = exactKey(b, el); !ok {
				return nil, false
			}
		}
		return append(b, ']'), true
	}
	return nil, false
}
