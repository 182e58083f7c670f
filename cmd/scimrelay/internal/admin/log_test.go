// SPDX-License-Identifier: Apache-2.0

package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay"
	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// TestLogEntryDetail: a log entry's detail has the events the request
// produced, found in the stream, and every attempt to deliver them, with
// the status, error and next attempt of each; an event not in the stream
// is named as missing.
func TestLogEntryDetail(t *testing.T) {
	f := newFixture(t)
	f.status.Store(http.StatusServiceUnavailable) // the first attempts fail and are retried
	start := time.Now()
	ids := f.publish("acme", events.UserCreated, 2)
	f.publish("acme", events.UserUpdated, 3) // other requests' events
	f.reqLog.Record(relay.LogEntry{Time: start, RequestID: "r1", Tenant: "acme", Operation: "bulk", Status: 200,
		EventIDs: append(slices.Clone(ids), "0198f3c2-0000-7000-8000-000000000000")})
	var key string
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list []relay.LogEntry
		f.request("GET", "/admin/v1/log", "").want(t, http.StatusOK, &list)
		if len(list) != 1 {
			return fmt.Errorf("%d entries", len(list))
		}
		key = list[0].Key
		return nil
	})
	var d LogDetail
	count := func() (delivered, retried int) {
		f.request("GET", "/admin/v1/log/"+key, "").want(t, http.StatusOK, &d)
		for _, a := range d.Deliveries {
			switch {
			case a.Outcome == "delivered" && a.Status == http.StatusNoContent:
				delivered++
			case a.Outcome == "retry" && a.Status == http.StatusServiceUnavailable && !a.NextAttempt.IsZero() && a.Error != "":
				retried++
			}
		}
		return delivered, retried
	}
	// Both events' first deliveries fail and wait for their next attempt;
	// then the receiver recovers.
	eventstest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, retried := count(); retried < 2 {
			return fmt.Errorf("%d attempts retried: %+v", retried, d.Deliveries)
		}
		return nil
	})
	f.status.Store(http.StatusNoContent)
	eventstest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		delivered, retried := count()
		if delivered != 2 || retried < 2 {
			return fmt.Errorf("%d delivered, %d retried of %d attempts: %+v", delivered, retried, len(d.Deliveries), d.Deliveries)
		}
		return nil
	})
	if len(d.Events) != 2 || len(d.Missing) != 1 || d.Missing[0] != "0198f3c2-0000-7000-8000-000000000000" || d.Entry.RequestID != "r1" {
		t.Fatalf("detail: %d events, missing %v, entry %+v", len(d.Events), d.Missing, d.Entry)
	}
	for i, raw := range d.Events {
		var e struct {
			ID, Type, Tenant string
			Data             events.Data
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.ID != ids[i] || e.Type != "io.scimrelay.user.created" || e.Data.ID != fmt.Sprintf("u%d", i) {
			t.Fatalf("event %d: %v %s", i, err, raw)
		}
	}
	for _, a := range d.Deliveries {
		if !slices.Contains(ids, a.EventID) || a.Sink != "crm" {
			t.Fatalf("an attempt of another event or sink: %+v", a)
		}
	}
}

// TestTenantsAndStats: the tenants with their URLs, and the overview's
// counts: requests per tenant and status class since a time, the outbox.
func TestTenantsAndStats(t *testing.T) {
	f := newFixture(t)
	var tenants []TenantInfo
	f.request("GET", "/admin/v1/tenants", "").want(t, http.StatusOK, &tenants)
	if len(tenants) != 1 || tenants[0].SCIMURL != "https://relay.example.com/scim/v2/acme" || tenants[0].TokenEndpoint == "" {
		t.Fatalf("tenants: %+v", tenants)
	}
	now := time.Now()
	// Before the window, and written before the others (the log files an
	// entry no earlier than the newest one written).
	f.reqLog.Record(relay.LogEntry{Time: now.Add(-2 * time.Hour), Tenant: "acme", Status: 500})
	for i, st := range []int{201, 200, 409, 500, 201} {
		tenant := "acme"
		if i == 4 {
			tenant = "globex"
		}
		f.reqLog.Record(relay.LogEntry{Time: now.Add(time.Duration(i) * time.Millisecond), Tenant: tenant, Status: st})
	}
	var st Stats
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.request("GET", "/admin/v1/stats?since=1h", "").want(t, http.StatusOK, &st)
		if len(st.Requests) != 2 || st.Requests[0].Total+st.Requests[1].Total != 5 {
			return fmt.Errorf("requests: %+v", st.Requests)
		}
		return nil
	})
	want := []relay.LogCount{{Tenant: "acme", Total: 4, Class2: 2, Class4: 1, Class5: 1}, {Tenant: "globex", Total: 1, Class2: 1}}
	if !slices.Equal(st.Requests, want) || st.OutboxDepth == nil || *st.OutboxDepth != 0 || time.Since(st.Since) < 59*time.Minute {
		t.Fatalf("stats: %+v, want requests %+v and an empty outbox", st, want)
	}
	f.request("GET", "/admin/v1/stats?since=later", "").wantError(t, http.StatusBadRequest, "since:")
}

// TestLogUntilFarFromNow: until= names a point in time; one past 2262 (or
// before 1678), a valid RFC 3339 time, bounds the entries as any other
// does: all of them for a time in the future, none for one long past.
// Until 2026-12-07 the time's nanoseconds wrapped and inverted the window.
func TestLogUntilFarFromNow(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	for i := range 3 {
		f.reqLog.Record(relay.LogEntry{Time: now.Add(time.Duration(i) * time.Millisecond), Tenant: "acme", Status: 201})
	}
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var list []relay.LogEntry
		f.request("GET", "/admin/v1/log", "").want(t, http.StatusOK, &list)
		if len(list) != 3 {
			return fmt.Errorf("%d entries", len(list))
		}
		return nil
	})
	for _, c := range []struct {
		until string
		want  int
	}{
		{"2200-01-01T00:00:00Z", 3},
		{"2300-01-01T00:00:00Z", 3},
		{"9999-01-01T00:00:00Z", 3},
		{"1900-01-01T00:00:00Z", 0},
		{"1600-01-01T00:00:00Z", 0},
	} {
		var list []relay.LogEntry
		f.request("GET", "/admin/v1/log?until="+c.until, "").want(t, http.StatusOK, &list)
		if len(list) != c.want {
			t.Errorf("until=%s: %d entries, want %d", c.until, len(list), c.want)
		}
	}
}

// TestLogKeyWithTrailingText: a log entry key, in GET /admin/v1/log/{key}
// and as after=, is 32 hex digits; one with more after them is no key
// the log gave and is refused (400, or 404 for the entry), not read as
// its first 32 digits and echoed back as the entry's key (until
// 2026-12-07).
func TestLogKeyWithTrailingText(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	for i := range 2 {
		f.reqLog.Record(relay.LogEntry{Time: now.Add(time.Duration(i) * time.Millisecond), Tenant: "acme", Status: 201})
	}
	var list []relay.LogEntry
	eventstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		f.request("GET", "/admin/v1/log", "").want(t, http.StatusOK, &list)
		if len(list) != 2 {
			return fmt.Errorf("%d entries", len(list))
		}
		return nil
	})
	for _, bad := range []string{list[0].Key + "zz", list[0].Key + "%20junk", "%20" + list[0].Key} {
		a := f.request("GET", "/admin/v1/log/"+bad, "")
		if a.status == http.StatusOK {
			t.Errorf("GET /admin/v1/log/%s: 200, want 400 or 404: %s", bad, a.body)
		}
		a = f.request("GET", "/admin/v1/log?after="+bad, "")
		if a.status != http.StatusBadRequest {
			t.Errorf("after=%s: status %d, want 400: %s", bad, a.status, a.body)
		}
	}
}
