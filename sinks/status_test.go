// SPDX-License-Identifier: Apache-2.0

package sinks

import "testing"

// TestRedactURL: what the admin API, logs and delivery errors show of a
// sink's URL has neither its user information (a username alone is often a
// token) nor its query values, which can be secrets.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://crm.example.com/hooks/scim":                     "https://crm.example.com/hooks/scim",
		"https://bot:s3cret@crm.example.com/hooks":               "https://redacted@crm.example.com/hooks",
		"https://tok_0123456789abcdef@crm.example.com/hooks":     "https://redacted@crm.example.com/hooks",
		"https://fn.example.net/api/scim?code=abc123&clientId=x": "https://fn.example.net/api/scim?clientId=redacted&code=redacted",
		"https://crm.example.com/h#frag":                         "https://crm.example.com/h",
		"::not a url":                                            "(unreadable URL)",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
