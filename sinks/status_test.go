// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

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
		// A token as the whole query, or a part of it without "=".
		"https://fn.example.net/scim?SECRET":       "https://fn.example.net/scim?redacted",
		"https://fn.example.net/scim?a=1&SECRET&b": "https://fn.example.net/scim?a=redacted&redacted",
		// Written without its scheme: the user information is read as the
		// path's first segment.
		"SECRET@crm.example.com/hook": "redacted@crm.example.com/…",
		"SECRET@crm.example.com":      "redacted@crm.example.com",
		// A part with ";" (which Go's own query parser drops whole) and a
		// token whose base64 padding reads as "=" are not keys to show.
		"https://fn.example.net/scim?SECRET;v=2":           "https://fn.example.net/scim?redacted",
		"https://fn.example.net/scim?a=1&SECRET;v=2":       "https://fn.example.net/scim?a=redacted&redacted",
		"https://fn.example.net/scim?U0VDUkVUc2VjcmV0VA==": "https://fn.example.net/scim?redacted",
		"https://fn.example.net/scim?SECRET=":              "https://fn.example.net/scim?redacted",
		// Without its scheme, user:password@ reads as a scheme.
		"SECRETTOKEN:@crm.example.com/hook":         "redacted:…",
		"SECRETTOKEN:pa55word@crm.example.com/hook": "redacted:…",
		// A password with "/", "#" or "?", which end the opaque part.
		"SECRETTOKEN:pa/ss@crm.example.com/hook": "redacted:…",
		"SECRETTOKEN:pa#ss@crm.example.com/hook": "redacted:…",
		"SECRETTOKEN:pa?ss@crm.example.com/hook": "redacted:…?redacted",
		"crm.example.com:8443/hook":              "crm.example.com:…",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStatusWithNATSAnsweringLate: a sink's status reads its partitions,
// and its other figures, at once, so that with NATS answering every
// request late it takes a few of those delays rather than one for each of
// its requests (about sixty, with the default 16 partitions: read one
// after another, a second late each, it took a minute; README: `sinks
// status` answers within 5 s or fails).
func TestStatusWithNATSAnsweringLate(t *testing.T) {
	s, fast := natsStreamAt(t, t.TempDir(), -1)
	slow := eventstest.NewSlowProxy(t, s.Addr().String())
	_, js := eventstest.Connect(t, "nats://"+slow.Addr)
	down := newReceiver(t, func(int, *http.Request) int { return http.StatusServiceUnavailable })
	later := func(c *Config) { c.Retry = []time.Duration{30 * time.Minute} }
	m, _ := runManager(t, Options{Sinks: []Config{sinkConfig("a", down.URL, later)}, JS: js})
	p := newPublisher(t, fast)
	p.publish("acme", events.UserCreated, "u1")
	p.publish("acme", events.UserCreated, "u2")
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if a, err := m.Status(ctx, "a"); err != nil || a.Parked != 2 {
			return fmt.Errorf("sink a: %+v, %v", a, err)
		}
		return nil
	})

	const late = 250 * time.Millisecond
	slow.SetDelay(late)
	start := time.Now()
	st, err := m.Status(ctx, "a")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if st.Parked != 2 || st.OldestUndelivered == nil || st.Attempts5m == 0 || st.LastAttempt == nil {
		t.Errorf("status with NATS answering late: %+v", st)
	}
	// Read at once: about six delays (a partition's consumer, its parked
	// resources listed and read, the oldest's lookup); one after another,
	// sixty.
	t.Logf("the status took %s with NATS answering %s late", took, late)
	if took > 20*late {
		t.Errorf("the status took %s with NATS answering %s late: %.0f delays", took, late, took.Seconds()/late.Seconds())
	}
}
