// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bytes"
	"strings"
	"unicode"

	"github.com/go-json-experiment/json/jsontext"
)

// repeatedName returns the first member name given twice in one object of
// the JSON text data, at any depth, "" when none is. Names are compared
// as encoding/json matches them to a struct's fields, without regard to
// case ("tenant" and "Tenant" are the same field): encoding/json would
// take the last silently, so that {"tenant":"nope","tenant":"default"}
// acted on a tenant the caller may not have meant. The SCIM side refuses
// the same in scim/decode.go (readValue), inside its own decoder. Text
// that is not JSON is left to the decoder that follows.
func repeatedName(data []byte) string {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var seen []map[string]bool // the names of each object open, innermost last
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return "" // io.EOF, or not JSON: the decoder says which
		}
		switch tok.Kind() {
		case '{':
			seen = append(seen, map[string]bool{})
		case '}':
			seen = seen[:len(seen)-1]
		case '"':
			// A string directly in an object, where a name is due, is one.
			if len(seen) == 0 || !atName(dec) {
				continue
			}
			name := tok.String()
			key := foldName(name)
			if seen[len(seen)-1][key] {
				return name
			}
			seen[len(seen)-1][key] = true
		}
	}
}

// atName reports whether the string the decoder just read is an object
// member's name: its stack's innermost level is an object with an odd
// count of tokens read.
func atName(dec *jsontext.Decoder) bool {
	kind, n := dec.StackIndex(dec.StackDepth())
	return kind == '{' && n%2 == 1
}

// foldName maps name to a text equal for every name strings.EqualFold
// holds equal to it (encoding/json's rule for field names): each rune
// becomes the least of its case-folding orbit.
func foldName(name string) string {
	var b strings.Builder
	for _, r := range name {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}
