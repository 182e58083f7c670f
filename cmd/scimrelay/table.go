// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// table writes aligned columns for people: every table the CLI prints.
// A cell is shown as printable text: a control or format character in it
// is written as its Go escape (\x1b, \n, \u202e). Cells carry text from
// outside: the id in a SCIM request's path (written to the provisioning
// log before the request's credential is checked), a SCIM error's detail,
// a webhook receiver's answer. Raw, an ESC sequence among them would
// rewrite the operator's terminal (clear it, hide lines, set its title),
// and a tab or a newline would break the table's columns and rows.
type table struct{ tw *tabwriter.Writer }

// newTable starts a table on w, with a header row unless header is empty.
func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toCells(header)...)
	}
	return t
}

func toCells(s []string) []any {
	cells := make([]any, len(s))
	for i, v := range s {
		cells[i] = v
	}
	return cells
}

// row writes one row, each cell as fmt.Sprint formats it.
func (t *table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		_, _ = io.WriteString(t.tw, printable(fmt.Sprint(c)))
	}
	_, _ = io.WriteString(t.tw, "\n")
}

// flush writes the table out; rows may follow, aligned anew.
func (t *table) flush() error { return t.tw.Flush() }

// printable is s with every rune that is not graphic (unicode.IsGraphic:
// letters, marks, numbers, punctuation, symbols and spaces) written as
// its escape.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsGraphic(r) {
			b.WriteRune(r)
			continue
		}
		b.WriteString(strings.Trim(strconv.QuoteRuneToGraphic(r), "'"))
	}
	return b.String()
}

// printableJSON is the JSON b with every rune that is neither graphic nor
// JSON's white space written as its \u escape: the same JSON, and nothing
// in it that a terminal acts on. encoding/json escapes the controls below
// U+0020 but writes DEL, the C1 controls (U+009B is CSI to a terminal
// reading UTF-8) and format characters (U+202E) as they are, and the
// CLI's JSON carries text from outside as its tables do.
func printableJSON(b []byte) []byte {
	// A log line is nearly always printable ASCII, which a byte's range
	// tells without decoding a rune (BenchmarkPrintableJSON).
	ascii := 0
	for ascii < len(b) && (' ' <= b[ascii] && b[ascii] < 0x7f || b[ascii] == '\n' || b[ascii] == '\t' || b[ascii] == '\r') {
		ascii++
	}
	if bytes.IndexFunc(b[ascii:], unprintableInJSON) < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch r1, r2 := utf16.EncodeRune(r); {
		case !unprintableInJSON(r):
			out = append(out, b[:n]...)
		case r1 != unicode.ReplacementChar:
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		b = b[n:]
	}
	return out
}

func unprintableInJSON(r rune) bool {
	return !unicode.IsGraphic(r) && !strings.ContainsRune(" \t\n\r", r)
}
