// SPDX-License-Identifier: Apache-2.0

package console

import (
	"fmt"
	"html/template"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text that a SCIM client or any caller chose (a userName, an email, a
// request's path, a detail quoting a value) may hold bidirectional control
// characters: SCIM takes them, since names are the identity provider's,
// but rendered as they are they reorder what is shown. A userName
// admin<U+202E>gnp.moc@acme.com reads as admin followed by
// moc.emca@com.png reversed into another name, and an override left open
// reaches the text after it. The console shows such text isolated, and
// every such character as its code point rather than applied.

// isBidiControl reports whether r is a bidirectional control character:
// the embeddings, overrides and isolates, their terminators, and the
// marks (Unicode's Bidi_Control property).
func isBidiControl(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }

// isolate renders text a client chose: escaped, inside <bdi>, so that its
// direction does not reach the text around it, and with each
// bidirectional control character shown as its code point
// (<span class="bidi-control">U+202E</span>).
func isolate(s string) template.HTML {
	var b strings.Builder
	b.WriteString("<bdi>")
	for {
		i := strings.IndexFunc(s, isBidiControl)
		if i < 0 {
			break
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		fmt.Fprintf(&b, `%s<span class="bidi-control" title="a bidirectional control character, shown instead of applied">U+%04X</span>`,
			template.HTMLEscapeString(s[:i]), r)
		s = s[i+n:]
	}
	b.WriteString(template.HTMLEscapeString(s))
	b.WriteString("</bdi>")
	return template.HTML(b.String())
}

// escapeBidi writes each bidirectional control character of a JSON text
// as its \u escape: the same JSON (such a character can only stand inside
// a string), shown without reordering the line it is on.
func escapeBidi(json string) string { return replaceBidi(json, `\u%04x`) }

// plainBidi writes each bidirectional control character of a text as its
// code point, U+202E, for where isolate's markup cannot go: a page's
// <title>, which the browser shows in its tab and history.
func plainBidi(s string) string { return replaceBidi(s, "U+%04X") }

// replaceBidi writes each bidirectional control character of s in format.
func replaceBidi(s, format string) string {
	if !strings.ContainsFunc(s, isBidiControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isBidiControl(r) {
			fmt.Fprintf(&b, format, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
