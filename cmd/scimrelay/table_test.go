// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestTableCellsArePrintable: a cell keeps letters, marks, symbols and
// spaces of any script, and writes control and format characters as
// escapes, so that a tab or a newline in a value does not add a column or
// a row, and a bidi override does not reorder what follows it.
func TestTableCellsArePrintable(t *testing.T) {
	var b strings.Builder
	tw := newTable(&b, "A", "B")
	tw.row("Zoë 東京 ✓", "a\tb\nc\u202ed\u009be\x7f")
	if err := tw.flush(); err != nil {
		t.Fatal(err)
	}
	want := "A         B\nZoë 東京 ✓  a\\tb\\nc\\u202ed\\u009be\\x7f\n"
	if b.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestPrintableJSON: JSON for a terminal carries no rune a terminal acts
// on (DEL, C1, format characters, those past U+FFFF too, as surrogate
// pairs) and means what it meant.
func TestPrintableJSON(t *testing.T) {
	in, err := json.Marshal(map[string]string{"v": "Zoë 東京 ✓ a\x7fb\u009b2Jc\u202ed\U000E0041e\tf"})
	if err != nil {
		t.Fatal(err)
	}
	out := printableJSON(in)
	if i := bytes.IndexFunc(out, unprintableInJSON); i >= 0 {
		t.Fatalf("raw %q at %d in %s", string([]rune(string(out[i:]))[0]), i, out)
	}
	if want := `{"v":"Zoë 東京 ✓ a\u007fb\u009b2Jc\u202ed\udb40\udc41e\tf"}`; string(out) != want {
		t.Fatalf("printableJSON:\n%s\nwant\n%s", out, want)
	}
	var before, after any
	if err := json.Unmarshal(in, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &after); err != nil || !reflect.DeepEqual(before, after) {
		t.Fatalf("%v: %v, want %v", err, after, before)
	}
	if got := printableJSON([]byte("{\n\t\"a\": 1\r\n}")); string(got) != "{\n\t\"a\": 1\r\n}" {
		t.Fatalf("white space between values changed: %q", got)
	}
	if got := printableJSON([]byte("{\"a\":\"bc\x7f\"}")); string(got) != `{"a":"bc\u007f"}` {
		t.Fatalf("DEL after ASCII only: %q", got)
	}
}

// BenchmarkPrintableJSON is the cost printableJSON adds to each line of the
// JSON log, whose lines are nearly always printable ASCII.
func BenchmarkPrintableJSON(b *testing.B) {
	line := []byte(`{"time":"2026-12-06T21:40:00.123456789Z","level":"INFO","msg":"scim request","tenant":"acme","method":"PATCH","path":"/scim/v2/acme/Users/2819c223-7f76-453a-919d-413861904646","status":204,"duration_ms":3.2,"request_id":"4f1c9c2e-8d1b-4bb0-9d35-0f3a1d2b6f7e"}`)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if out := printableJSON(line); len(out) != len(line) {
			b.Fatal("changed a printable line")
		}
	}
}
