// SPDX-License-Identifier: Apache-2.0

package sinks

import "testing"

// TestRedactURL: what the admin API, logs and delivery errors show of a
// sink's URL has neither its user information (a username alone is often a
// token) nor its query values nor its path past the first segment, which
// can be secrets (Slack, Discord, Teams and Zapier put the webhook's token
// in the path).
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://crm.example.com/scim-events":                    "https://crm.example.com/scim-events",
		"https://crm.example.com/hooks/scim":                     "https://crm.example.com/hooks/…",
		"https://crm.example.com:8443/hooks/":                    "https://crm.example.com:8443/hooks/",
		"https://crm.example.com":                                "https://crm.example.com",
		"https://crm.example.com/":                               "https://crm.example.com/",
		"https://bot:s3cret@crm.example.com/hooks":               "https://redacted@crm.example.com/hooks",
		"https://tok_0123456789abcdef@crm.example.com/hooks":     "https://redacted@crm.example.com/hooks",
		"https://fn.example.net/api/scim?code=abc123&clientId=x": "https://fn.example.net/api/…?clientId=redacted&code=redacted",
		"https://fn.example.net/scim?code=abc123":                "https://fn.example.net/scim?code=redacted",
		"https://crm.example.com/h#frag":                         "https://crm.example.com/h",
		"::not a url":                                            "(unreadable URL)",
		// Receivers with the token in the path.
		"https://hooks.slack.com/services/T0/B0/SECRET":                                     "https://hooks.slack.com/services/…",
		"https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXXXXXXXXXXXX":               "https://hooks.slack.com/services/…",
		"https://discord.com/api/webhooks/123/SECRETTOKENabcdef":                            "https://discord.com/api/…",
		"https://acme.webhook.office.com/webhookb2/g@t/IncomingWebhook/SECRET/g":            "https://acme.webhook.office.com/webhookb2/…",
		"https://hooks.zapier.com/hooks/catch/123/SECRET/":                                  "https://hooks.zapier.com/hooks/…",
		"https://prod.logic.azure.com:443/workflows/w/triggers/manual/paths/invoke?sig=SEC": "https://prod.logic.azure.com:443/workflows/…?sig=redacted",
		// An escaped "/" is part of its segment; the rest still goes.
		"https://crm.example.com/a%2Fb/SECRET": "https://crm.example.com/a%2Fb/…",
		// A redirect's Location may be relative or opaque.
		"/moved/SECRET":      "/moved/…",
		"moved/SECRET":       "moved/…",
		"mailto:SECRET@x.io": "mailto:…",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
