// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/go-json-experiment/json/jsontext"
	"reflect"
	"strings"
	"testing"
)

// decodeStd is what decodeObject replaced and must agree with: encoding/json
// with UseNumber, followed by nothing but JSON's whitespace (the code it
// replaced also took Unicode's, such as a trailing \v).
func decodeStd(data []byte) (map[string]any, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || len(bytes.Trim(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return nil, false
	}
	obj, ok := v.(map[string]any)
	return obj, ok
}

// decodeSeeds are JSON texts where a decoder can differ from encoding/json:
// every request Entra documents, and the edges.
func decodeSeeds(t testing.TB) []string {
	seeds := []string{
		baseUserJSON, baseGroupJSON,
		`{}`, `{"a":[]}`, `{"a":{}}`, `{"a":null,"b":true,"c":false}`,
		`{"n":1,"f":-0.5e+10,"z":0,"big":123456789012345678901234567890}`,
		`{"a":1,"a":"last"}`, `{"a":{"x":1},"a":{"y":2}}`,
		`{"s":"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"}`,
		"{\"bad\":\"\xff\xfe\"}", `{"lone":"\ud800x"}`, `{"low":"\udc00"}`,
		` {"ws": 1} ` + "\n\t\r", "{}\v", "{}\u00a0",
		`{"a":1} {"b":2}`, `{"a":1}}`, `[{"a":1}]`, `"str"`, `3`, `null`,
		`{"a":`, `{"a":1,}`, `{"a" 1}`, `{'a':1}`, `{"a":01}`, `{"a":tru}`, ``, `{`,
		`{"a":[1,2,` + strings.Repeat("[", 50) + strings.Repeat("]", 50) + `]}`,
	}
	for _, s := range loadEntraSteps(t) {
		if s.RequestBody != nil {
			seeds = append(seeds, *s.RequestBody)
		}
	}
	return seeds
}

func TestDecodeObjectAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range decodeSeeds(t) {
		checkDecodeAgrees(t, []byte(s))
	}
}

func FuzzDecodeObject(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDecodeAgrees)
}

func checkDecodeAgrees(t *testing.T, data []byte) {
	t.Helper()
	want, wantOK := decodeStd(data)
	got, err := decodeObject(data, "request body")
	if wantOK && duplicateNames(data) {
		// encoding/json keeps the last; decodeObject refuses the object.
		var se *Error
		if err == nil || !asSCIM(err, &se) || se.Type != "invalidSyntax" || !strings.Contains(err.Error(), "given twice") {
			t.Fatalf("%q gives a name twice: decodeObject %v, want an invalidSyntax error saying so", data, err)
		}
		return
	}
	switch {
	case wantOK && err != nil:
		t.Fatalf("%q: encoding/json decodes it, decodeObject: %v", data, err)
	case !wantOK && err == nil:
		t.Fatalf("%q: encoding/json refuses it, decodeObject gives %#v", data, got)
	case err != nil:
		var se *Error
		if !asSCIM(err, &se) || se.Type != "invalidSyntax" {
			t.Fatalf("%q: %v, want an invalidSyntax error", data, err)
		}
	case !reflect.DeepEqual(got, want):
		t.Fatalf("%q:\n got %#v\nwant %#v", data, got, want)
	}
}

// duplicateNames reports whether an object in data gives a name twice.
func duplicateNames(data []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowInvalidUTF8(true))
	for {
		if _, err := dec.ReadToken(); err != nil {
			return errors.Is(err, jsontext.ErrDuplicateName)
		}
	}
}

func TestDecodeObjectSaysWhereTextIsNotJSON(t *testing.T) {
	for body, want := range map[string]string{
		`{"userName":`:          "ends before its value does",
		`{"userName":"a",}`:     "near byte 15",
		`{"userName":"a"} junk`: "data after the JSON object",
		`["a"]`:                 "must be a JSON object",
	} {
		_, err := decodeObject([]byte(body), "request body")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", body, err, want)
		}
	}
}

// TestStoredRecordErrorsNameTheRecord: a stored record that is not JSON
// says so, not that a request body is wrong: an operator reading the log
// looks at the data file, not at the client.
func TestStoredRecordErrorsNameTheRecord(t *testing.T) {
	_, err := UnmarshalResource(UserResourceType, []byte(`{"id":"a",`))
	if err == nil || !strings.Contains(err.Error(), "decoding stored User: stored record is not valid JSON") {
		t.Fatalf("%v, want it to name the stored record", err)
	}
}

// BenchmarkDecodeObject decodes Entra's create-user body; /std is
// encoding/json, which decodeObject replaced.
func BenchmarkDecodeObject(b *testing.B) {
	var body []byte
	for _, s := range loadEntraSteps(b) {
		if s.ID == "create-user" {
			body = []byte(*s.RequestBody)
		}
	}
	b.Run("jsontext", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeObject(body, "request body"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("std", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := decodeStd(body); !ok {
				b.Fatal("not decoded")
			}
		}
	})
}

// BenchmarkParseEntraUser parses Entra's create-user body as a POST does:
// decoded, its names resolved against the schema and its values checked.
//
//	go test ./scim -run x -bench ParseEntraUser -count 3
func BenchmarkParseEntraUser(b *testing.B) {
	var body []byte
	for _, s := range loadEntraSteps(b) {
		if s.ID == "create-user" {
			body = []byte(*s.RequestBody)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseResourceNoting(UserResourceType, body); err != nil {
			b.Fatal(err)
		}
	}
}
