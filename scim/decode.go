// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// decodeObject decodes one JSON object into the generic form Resource.Attrs
// holds: map[string]any, []any, string, bool, nil, and numbers as
// json.Number with their text, as encoding/json's UseNumber gives them.
//
// It reads with jsontext's tokenizer rather than encoding/json, which
// scans the text twice and builds the values by reflection: every request
// body and every stored record read passes here, and this takes about half
// the time and bytes (BenchmarkDecodeObject). It reads what encoding/json
// reads: a repeated name's last value counts, and invalid UTF-8 or an
// unpaired surrogate escape becomes U+FFFD. Request bodies holding either are
// refused before they get here (readBody); stored records hold neither.
// what names the text in errors: "request body", or "stored record".
func decodeObject(data []byte, what string) (map[string]any, error) {
	dec := decoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(noInput{}) // let go of data before the pool keeps it
		decoders.Put(dec)
	}()
	dec.Reset(bytes.NewBuffer(data), decodeOptions...)
	if dec.PeekKind() != '{' {
		if _, err := readValue(dec); err != nil {
			return nil, syntaxError(what, err)
		}
		return nil, Errorf(ErrInvalidSyntax, "%s must be a JSON object", what)
	}
	v, err := readValue(dec)
	if err != nil {
		return nil, syntaxError(what, err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, Errorf(ErrInvalidSyntax, "%s has data after the JSON object", what)
	}
	return v.(map[string]any), nil
}

var (
	decodeOptions = []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
	decoders      = sync.Pool{New: func() any { return jsontext.NewDecoder(noInput{}) }}
)

// noInput is an empty reader that pooled decoders point at while unused.
type noInput struct{}

func (noInput) Read([]byte) (int, error) { return 0, io.EOF }

// readValue reads the next JSON value whole.
func readValue(dec *jsontext.Decoder) (any, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case '{':
		obj := make(map[string]any)
		for dec.PeekKind() != '}' {
			name, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			key := name.String() // before the next read voids name
			if _, twice := obj[key]; twice {
				// The last would win silently; the same name in another
				// case is refused too (parse).
				return nil, fmt.Errorf("the name %q is given twice in one object", key)
			}
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			obj[key] = v
		}
		_, err := dec.ReadToken()
		return obj, err
	case '[':
		list := []any{}
		for dec.PeekKind() != ']' {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.ReadToken()
		return list, err
	case '"':
		return tok.String(), nil
	case '0':
		return json.Number(tok.String()), nil
	case 't', 'f':
		return tok.Bool(), nil
	default: // 'n'
		return nil, nil
	}
}

// syntaxError describes why the text named what is not JSON, and where.
func syntaxError(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Errorf(ErrInvalidSyntax, "%s is not valid JSON: it ends before its value does", what)
	}
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		return Errorf(ErrInvalidSyntax, "%s is not valid JSON near byte %d: %v", what, se.ByteOffset, se.Err)
	}
	return Errorf(ErrInvalidSyntax, "%s is not valid JSON: %v", what, err)
}
