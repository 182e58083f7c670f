// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestUnknownTenantIsRefused: every endpoint that takes a tenant
// parameter answers 404 naming it for a name that is not configured and
// of which the relay holds nothing asked for; a tenant no longer
// configured (globex: in the data file, not in relay.yaml) is answered
// with what it left; an empty listing is [], never null.
func TestUnknownTenantIsRefused(t *testing.T) {
	f := newFixture(t)
	f.h.tailWait = time.Minute // a tail that waited for a fetch to time out would not end in time
	for _, path := range []string{
		"/admin/v1/tokens?tenant=initech",
		"/admin/v1/clients?tenant=initech",
		"/admin/v1/log?tenant=initech&since=1h",
		"/admin/v1/deliveries?tenant=initech",
		"/admin/v1/events?follow=false&tenant=initech",
		"/admin/v1/events?follow=false&since=1h&tenant=initech",
		"/admin/v1/events?tenant=initech", // following new events, of which none come
		// A removed tenant's, asked for what it did not leave.
		"/admin/v1/tokens?tenant=globex",
		"/admin/v1/events?follow=false&since=1h&tenant=globex",
	} {
		e := f.request("GET", path, "").wantError(t, http.StatusNotFound, "tenant: no such tenant")
		if !strings.Contains(e.Error, "(tenants: acme)") {
			t.Errorf("%s: %q does not name the tenants", path, e.Error)
		}
	}

	// A window that holds none of what it left is an empty answer: its
	// last request may be older than the window (the CLI asks for the
	// last hour by default).
	f.reqLog.Record(relay.LogEntry{Time: time.Now().Add(-50 * time.Minute), Tenant: "globex", Operation: "get", Status: 200, RequestID: "r0", Method: "GET", Path: "/scim/v2/globex/Users"})
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list []relay.LogEntry
		if a := f.request("GET", "/admin/v1/log?tenant=globex&since=1h", ""); a.status != http.StatusOK || json.Unmarshal(a.body, &list) != nil || len(list) != 1 {
			return fmt.Errorf("globex's log: %d %s", a.status, a.body)
		}
		return nil
	})
	if a := f.request("GET", "/admin/v1/log?tenant=globex&since=30m", "").want(t, http.StatusOK, nil); strings.TrimSpace(string(a.body)) != "[]" {
		t.Errorf("globex's log of the last 30 minutes: %s, want []", a.body)
	}

	// What a tenant no longer configured left is answered.
	if _, _, err := f.store.Tokens().Create(context.Background(), "globex", "old", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f.reqLog.Record(relay.LogEntry{Time: time.Now(), Tenant: "globex", Operation: "get", Status: 200, RequestID: "r1", Method: "GET", Path: "/scim/v2/globex/Users"})
	f.publish("globex", events.UserCreated, 1)
	var toks []relay.Token
	f.request("GET", "/admin/v1/tokens?tenant=globex", "").want(t, http.StatusOK, &toks)
	if len(toks) != 1 || toks[0].Name != "old" {
		t.Fatalf("globex's tokens: %+v", toks)
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list []relay.LogEntry
		if a := f.request("GET", "/admin/v1/log?tenant=globex&since=1h", ""); a.status != http.StatusOK || json.Unmarshal(a.body, &list) != nil || len(list) != 2 {
			return fmt.Errorf("globex's log: %d %s", a.status, a.body)
		}
		return nil
	})
	if a := f.request("GET", "/admin/v1/events?follow=false&since=1h&tenant=globex", ""); a.status != http.StatusOK || strings.Count(string(a.body), "\n") != 1 {
		t.Fatalf("globex's events: %d %s", a.status, a.body)
	}
	// A page past its last entry, or a filter that leaves none, is an
	// empty answer, not a tenant unknown.
	var page []relay.LogEntry
	f.request("GET", "/admin/v1/log?tenant=globex&since=1h", "").want(t, http.StatusOK, &page)
	for _, path := range []string{
		"/admin/v1/log?tenant=globex&since=1h&status=5xx",
		"/admin/v1/log?tenant=globex&after=" + page[len(page)-1].Key,
		"/admin/v1/deliveries?tenant=globex&status=5xx",
	} {
		if a := f.request("GET", path, "").want(t, http.StatusOK, nil); strings.TrimSpace(string(a.body)) != "[]" {
			t.Errorf("%s: %s, want []", path, a.body)
		}
	}

	// Every listing is an array, empty ones too.
	for _, path := range []string{
		"/admin/v1/tokens?tenant=acme", "/admin/v1/clients", "/admin/v1/clients?tenant=acme",
		"/admin/v1/log?tenant=acme", "/admin/v1/deliveries", "/admin/v1/deliveries?tenant=acme",
	} {
		if a := f.request("GET", path, "").want(t, http.StatusOK, nil); strings.TrimSpace(string(a.body)) != "[]" {
			t.Errorf("%s: %s, want []", path, a.body)
		}
	}
	for _, path := range []string{"/admin/v1/sinks/crm/dlq", "/admin/v1/outbox/quarantine"} {
		if a := f.request("GET", path, "").want(t, http.StatusOK, nil); !strings.Contains(string(a.body), "[]") || strings.Contains(string(a.body), "null") {
			t.Errorf("%s: %s, want an empty array", path, a.body)
		}
	}
}
