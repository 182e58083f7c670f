// SPDX-License-Identifier: Apache-2.0

package main

import (
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
