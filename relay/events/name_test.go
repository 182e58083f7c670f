// SPDX-License-Identifier: Apache-2.0

package events_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events"
)

// namePattern is the regular expression ValidName's loop amounts to, as
// the event schemas (docs/events/common.json) write it.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// TestValidName: tenants, sinks and subscribers share one name syntax;
// ValidName's loop is the schemas' regular expression.
func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"acme": true, "a": true, "0": true, "a_b-c9": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "-a": false, "_a": false, "Acme": false,
		"a.b": false, "a b": false, "a*": false, "a>": false, "é": false, "acme\n": false,
	} {
		if got := events.ValidName(name); got != want || got != namePattern.MatchString(name) {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
		if events.ValidName(name) != want {
			t.Errorf("ValidName(%q) differs from ValidName", name)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"acme", "", "-a", "a_b", strings.Repeat("z", 64), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if events.ValidName(name) != namePattern.MatchString(name) {
			t.Fatalf("ValidName(%q) = %v, the pattern says otherwise", name, events.ValidName(name))
		}
	})
}
