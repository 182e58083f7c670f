// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestExpiredTokenIsVisible: what an operator sees when Entra's token
// expires. An on-call review found it invisible: the expiry metric's series
// vanished at expiry (so the README's alert resolved just as Entra started
// being refused), the 401s were counted under tenant="", and nothing was
// logged. Now the series stays with its past expiry, the 401s count under
// the tenant (a name no tenant has still under "", so that requests cannot
// make label values), the refusals are logged once an hour with what to
// do, and a token issued with less than 14 days to live is warned about at
// once.
func TestExpiredTokenIsVisible(t *testing.T) {
	clock := newTestClock()
	log := &eventstest.Log{}
	p := startRelayWith(t, testConfig(t, t.TempDir()), roleAll,
		slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})), io.Discard, withClock(clock.now))
	code, secret, stderr := cli(t, "token", "create", "--tenant", "acme", "--name", "entra", "--expires", "10d", "--config", cliConfig(t, p, adminSecret))
	if code != exitOK {
		t.Fatalf("token create: %d %s", code, stderr)
	}
	secret = strings.TrimSpace(secret)
	if !strings.Contains(log.String(), "a SCIM token was issued that expires within 14 days") {
		t.Errorf("no warning for a token issued with 10 days to live:\n%s", log)
	}

	clock.add(11 * 24 * time.Hour)
	for range 3 {
		p.scim("acme", secret, http.MethodGet, "/Users", "").want(t, http.StatusUnauthorized)
	}
	p.scim("nosuch", secret, http.MethodGet, "/Users", "").want(t, http.StatusUnauthorized)
	p.scim("globex", "not-a-token", http.MethodGet, "/Users", "").want(t, http.StatusUnauthorized)

	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := metric(t, p, "scimrelay_scim_requests_total", "status", "401", "tenant", "acme"); n != 3 {
			return fmt.Errorf("scimrelay_scim_requests_total{status=401,tenant=acme} = %v, want 3", n)
		}
		if n := metric(t, p, "scimrelay_scim_requests_total", "status", "401", "tenant", "globex"); n != 1 {
			return fmt.Errorf("scimrelay_scim_requests_total{status=401,tenant=globex} = %v, want 1", n)
		}
		if n := metric(t, p, "scimrelay_scim_requests_total", "status", "401", "tenant", ""); n != 1 {
			return fmt.Errorf(`scimrelay_scim_requests_total{status=401,tenant=""} = %v, want 1 (the unknown tenant)`, n)
		}
		return nil
	})
	families, err := p.srv.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if v := labelValue(m, "tenant"); v == "nosuch" {
				t.Errorf("%s has a series labelled with a tenant no one configured: %v", f.GetName(), m)
			}
		}
	}

	at := metric(t, p, "scimrelay_token_expiry_timestamp_seconds", "tenant", "acme", "kind", "token", "name", "entra")
	if at <= 0 || at > float64(clock.now().Unix()) {
		t.Errorf("scimrelay_token_expiry_timestamp_seconds of the expired token = %v, want its expiry, a day ago", at)
	}
	if left := metric(t, p, "scimrelay_token_expiry_seconds", "tenant", "acme", "kind", "token", "name", "entra"); left >= 0 {
		t.Errorf("scimrelay_token_expiry_seconds of the expired token = %v, want negative", left)
	}

	var refused []string
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, "expired SCIM token") {
			refused = append(refused, l)
		}
	}
	if len(refused) != 1 || !strings.Contains(refused[0], "tenant=acme") || !strings.Contains(refused[0], "name=entra") ||
		!strings.Contains(refused[0], "scimrelay token create --tenant acme") {
		t.Errorf("want one line for 3 requests refused with the expired token, naming the tenant and the fix:\n%s", log)
	}
}
