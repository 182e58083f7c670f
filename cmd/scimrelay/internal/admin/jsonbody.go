// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/scimrelay/scimrelay/scim"
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
			key := scim.Fold(name) // equal exactly where strings.EqualFold holds, as encoding/json matches
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

// bodyError says in the API's words why encoding/json refused a body
// for v, without its Go types ("cannot unmarshal array into Go value of
// type admin.TokenRequest"): the field at fault and what it takes.
func bodyError(err error, v any) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("request body: not valid JSON: it ends before its value does")
	case errors.As(err, &syntax):
		return badRequest("request body: not valid JSON near byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typ) && typ.Field != "":
		return badRequest("request body: %s: want %s, got %s", typ.Field, kindOf(typ.Type), article(typ.Value))
	case errors.As(err, &typ):
		return badRequest("request body: the body must be a JSON object (%s)", fieldsOf(v))
	}
	// encoding/json has no type for an unknown field: its text is
	// `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("request body: unknown field %s (%s)", name, fieldsOf(v))
	}
	return badRequest("request body: not what the endpoint takes (%s)", fieldsOf(v))
}

// fieldsOf names the fields a request body for v may hold, for messages.
func fieldsOf(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	if t != nil && t.Kind() == reflect.Struct {
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.IsExported() && name != "-" {
				names = append(names, cmp.Or(name, f.Name))
			}
		}
	}
	if len(names) == 0 {
		return "it takes no fields"
	}
	return "fields: " + strings.Join(names, ", ")
}

// kindOf says in JSON's words what a field of Go type t takes.
func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another value"
}

// article puts "a" or "an" before a JSON kind of encoding/json's
// ("string", "array", "number 1.5").
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}
