// SPDX-License-Identifier: Apache-2.0

package sinks

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/scimrelay/scimrelay/relay/events"
)

const newSecret = "whsec_bmV3LXNlY3JldC1vZi0zMi1ieXRlcy1sb25nISEhISE="

// verifiesWith reports whether the official library accepts a delivery
// with secret alone.
func verifiesWith(t *testing.T, secret string, r received) bool {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(r.body, r.header) == nil
}

// TestSecretRotation: during a rotation each delivery carries a signature
// by the new and by the previous secret, and the official library accepts
// it with either secret alone; after the overlap's expiry only the new one
// signs; a third secret is refused.
func TestSecretRotation(t *testing.T) {
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a-third-secret-nobody-has-32byte"))
	for _, batch := range []bool{false, true} {
		rc := newReceiver(t, nil)
		rotating := webhook(t, rc.URL, func(o *WebhookOptions) { o.Secret, o.PreviousSecret, o.Batch = newSecret, testSecret, batch })
		expired := webhook(t, rc.URL, func(o *WebhookOptions) {
			o.Secret, o.PreviousSecret, o.Batch = newSecret, testSecret, batch
			o.PreviousSecretExpires = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		})
		for _, w := range []*Webhook{rotating, expired} {
			if res := w.Deliver(ctx, testEvent(t, events.UserCreated, "u1", 1)); res.Err != nil {
				t.Fatal(res.Err)
			}
		}
		reqs := rc.requests()
		sigs := strings.Fields(reqs[0].header.Get("Webhook-Signature"))
		if len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
			t.Fatalf("batch %v: webhook-signature %q, want two v1 signatures", batch, reqs[0].header.Get("Webhook-Signature"))
		}
		for i, secret := range []string{newSecret, testSecret} { // v1,<new> v1,<old>
			one := received{body: reqs[0].body, header: reqs[0].header.Clone()}
			one.header.Set("Webhook-Signature", sigs[i])
			if !verifiesWith(t, secret, one) {
				t.Fatalf("batch %v: signature %d of %q is not the %s secret's; want the new secret's first, then the previous one's", batch, i+1, reqs[0].header.Get("Webhook-Signature"), []string{"new", "previous"}[i])
			}
		}
		if !verifiesWith(t, newSecret, reqs[0]) || !verifiesWith(t, testSecret, reqs[0]) || verifiesWith(t, other, reqs[0]) {
			t.Fatalf("batch %v: during the overlap the library must accept the new secret and the previous one, and no other", batch)
		}
		if !verifiesWith(t, newSecret, reqs[1]) || verifiesWith(t, testSecret, reqs[1]) {
			t.Fatalf("batch %v: after the overlap the previous secret must no longer sign", batch)
		}
	}
}

func TestSecretOptionsAreChecked(t *testing.T) {
	tests := []struct {
		name, previous, expires, detail string
	}{
		{"previous not a secret", "secret", "", "previous_secret: must be whsec_"},
		{"previous same as secret", testSecret, "", "previous_secret: is the same as secret"},
		{"expiry not a time", newSecret, "tomorrow", "previous_secret_expires: want an RFC 3339 time"},
		{"expiry alone", "", "2026-12-31T00:00:00Z", "previous_secret_expires: set without previous_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewWebhook(WebhookOptions{Name: "x", URL: "https://crm.example.com/h", Secret: testSecret, PreviousSecret: tt.previous, PreviousSecretExpires: tt.expires}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("got %v, want an error containing %q", err, tt.detail)
			}
		})
	}
}
