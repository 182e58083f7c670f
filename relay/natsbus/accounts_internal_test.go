// SPDX-License-Identifier: Apache-2.0

package natsbus

import "testing"

func TestSubjectWithin(t *testing.T) {
	for _, tt := range []struct {
		filter, pattern string
		want            bool
	}{
		{"scimrelay.acme.>", "scimrelay.acme.>", true},
		{"scimrelay.acme.user.>", "scimrelay.acme.>", true},
		{"scimrelay.acme.user.created.u1.3", "scimrelay.acme.>", true},
		{"scimrelay.acme", "scimrelay.acme.>", false},
		{"scimrelay.>", "scimrelay.acme.>", false},
		{"scimrelay.*.user.>", "scimrelay.acme.>", false},
		{"scimrelay.globex.>", "scimrelay.acme.>", false},
		{"scimrelay.acme.user.*.*.*", "scimrelay.*.user.*.*.*", true},
		{"scimrelay.acme.user.*.*.>", "scimrelay.acme.user.*.*.*", true}, // as the permissions admit
		{"scimrelay.acme.user.*.>", "scimrelay.acme.user.*.*.*", false},
		{"scimrelay.acme.group.*.*.*", "scimrelay.acme.user.*.*.*", false},
		{"scimrelay.acme.user.created.u1.3.x", "scimrelay.acme.user.*.*.*", false},
	} {
		if got := subjectWithin(tt.filter, tt.pattern); got != tt.want {
			t.Errorf("subjectWithin(%q, %q) = %v, want %v", tt.filter, tt.pattern, got, tt.want)
		}
	}
}
