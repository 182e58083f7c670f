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

// foldUnicode folds a string holding some non-ASCII rune. Its ASCII bytes
// are lowered in place (foldRune gives the same): a value of one accented
// letter and a megabyte of ASCII took each of a filter's terms some 20 ms.
func foldUnicode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:]) // an invalid byte reads as U+FFFD, as EqualFold reads it
		b.WriteRune(foldRune(r))
		i += n
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

// foldedKeys finds the keys of unknown extensions' objects ignoring case, as
// findKeyFold does, without reading every key at each lookup: such an object
// is kept as sent and may hold thousands of keys, and a body or PATCH setting
// each of them looked each up among all the others (quadratic: 20,000 keys
// cost 4 CPU-seconds, 200,000 more than 11 minutes). One serves one request
// on one resource: an object is indexed the first time it is asked about,
// under the key it has in the resource's attributes, and whoever changes one
// of its keys tells note.
type foldedKeys map[string]map[string]string // object's key → Fold(key) → key

// find returns the key of obj, held under at, equal to k ignoring case, ""
// when none. An entry that fails to name a key of obj (two keys folding
// alike, marked "", or one since removed) is settled by reading them all,
// as is a lookup without an index (f nil) or at the top level (at "").
func (f foldedKeys) find(at string, obj map[string]any, k string) string {
	if _, ok := obj[k]; ok {
		return k
	}
	if f == nil || at == "" {
		return findKeyFold(obj, k)
	}
	idx := f[at]
	if idx == nil {
		idx = make(map[string]string, len(obj))
		for key := range obj {
			noteKey(idx, obj, key)
		}
		f[at] = idx
	}
	key, ok := idx[Fold(k)]
	if !ok {
		return ""
	}
	if _, held := obj[key]; !held || key == "" {
		return findKeyFold(obj, k)
	}
	return key
}

// note records that key k of obj, held under at, may have been added or
// removed.
func (f foldedKeys) note(at string, obj map[string]any, k string) {
	if idx := f[at]; idx != nil {
		noteKey(idx, obj, k)
	}
}

// drop forgets the object held under at, which was removed whole.
func (f foldedKeys) drop(at string) { delete(f, at) }

func noteKey(idx map[string]string, obj map[string]any, k string) {
	fk := Fold(k)
	cur, ok := idx[fk]
	_, held := obj[k]
	switch {
	case held && ok && cur == "":
		// several spellings, or the key "": find reads them all
	case held && ok && cur != k:
		if _, also := obj[cur]; also {
			idx[fk] = ""
		} else {
			idx[fk] = k
		}
	case held:
		idx[fk] = k
	case ok && cur == k:
		delete(idx, fk)
	}
}
