// SPDX-License-Identifier: Apache-2.0

package console

import (
	"encoding/json"
	"testing"
)

// TestIsolate: text a client chose is escaped and isolated, with its
// bidirectional control characters shown, not applied.
func TestIsolate(t *testing.T) {
	const shown = `<span class="bidi-control" title="a bidirectional control character, shown instead of applied">`
	for _, c := range []struct{ in, want string }{
		{"ann@acme.example", "<bdi>ann@acme.example</bdi>"},
		{"", "<bdi></bdi>"},
		{"admin\u202egnp.moc@acme.com", "<bdi>admin" + shown + "U+202E</span>gnp.moc@acme.com</bdi>"},
		{"<script>\u2066x\u2069</script>", "<bdi>&lt;script&gt;" + shown + "U+2066</span>x" + shown + "U+2069</span>&lt;/script&gt;</bdi>"},
		{"\u200f\u061c", "<bdi>" + shown + "U+200F</span>" + shown + "U+061C</span></bdi>"},
		{"שלום עולם", "<bdi>שלום עולם</bdi>"}, // right-to-left text is isolated, not changed
	} {
		if got := string(isolate(c.in)); got != c.want {
			t.Errorf("isolate(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	raw := json.RawMessage(`{"userName":"admin` + "\u202e" + `gnp.moc@acme.com"}`)
	got := pretty(raw)
	if want := "{\n  \"userName\": \"admin\\u202egnp.moc@acme.com\"\n}"; got != want {
		t.Errorf("pretty: %s, want %s", got, want)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(got), &back); err != nil || back["userName"] != "admin\u202egnp.moc@acme.com" {
		t.Errorf("pretty's JSON reads back as %q, %v", back, err)
	}
}
