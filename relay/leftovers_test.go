// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"slices"
	"testing"
	"time"
)

// TestLeftoversOfARemovedTenant: a tenant removed from the configuration
// keeps its users, groups, live stored credentials and the subscribers
// scoped to it (not those of another tenant or of every tenant, nor a
// revoked token); a name that never held anything holds nothing. The
// tenants configured are recorded, so that the next Open says which were
// added since, whether the last change was a reload or a restart.
func TestLeftoversOfARemovedTenant(t *testing.T) {
	s, c, path := openStore(t)
	create(t, s, "globex", user(t, `"userName":"ann"`))
	create(t, s, "globex", user(t, `"userName":"bob"`))
	create(t, s, "globex", group(t, `"displayName":"staff"`))
	create(t, s, "acme", user(t, `"userName":"ann"`))
	for _, tenant := range []string{"globex", "globex", "acme"} {
		if _, _, err := s.Tokens().Create(ctx, tenant, "entra", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	_, revoked, _ := s.Tokens().Create(ctx, "globex", "old", time.Time{})
	if _, _, err := s.Tokens().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Clients().Create(ctx, "globex", "entra", time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []Subscriber{
		{Name: "globexsub", PublicKey: "UA", Subjects: "scimrelay.globex.>"},
		{Name: "globexusers", PublicKey: "UB", Subjects: "scimrelay.globex.user.>"},
		{Name: "acmesub", PublicKey: "UC", Subjects: "scimrelay.acme.>"},
		{Name: "allusers", PublicKey: "UD", Subjects: "scimrelay.*.user.>"},
		{Name: "audit", PublicKey: "UE"},
	} {
		if _, err := s.AddSubscriber(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	without := testOptions(c)
	without.Tenants = slices.DeleteFunc(without.Tenants, func(o TenantOptions) bool { return o.Name == "globex" })
	if err := s.SetTenants(without.Tenants); err != nil {
		t.Fatal(err)
	}
	l, err := s.Leftovers(ctx, "globex")
	if err != nil {
		t.Fatal(err)
	}
	if l.Users != 2 || l.Groups != 1 || l.Tokens != 2 || l.Clients != 1 || !slices.Equal(l.Subscribers, []string{"globexsub", "globexusers"}) || l.Empty() {
		t.Errorf("globex removed holds %+v; want 2 users, 1 group, 2 live tokens, 1 client, subscribers globexsub and globexusers", l)
	}
	if l, err := s.Leftovers(ctx, "initech"); err != nil || !l.Empty() {
		t.Errorf("a name that never was a tenant holds %+v, %v", l, err)
	}

	// The reload recorded the tenants: a restart with globex back says it
	// was added; a start that failed before it recorded them (record
	// false) says nothing was recorded, so the next one says it again; the
	// next, which changes nothing, says nothing.
	for _, step := range []struct {
		opts   Options
		record bool
		want   []string
	}{{testOptions(c), false, []string{"globex"}}, {testOptions(c), true, []string{"globex"}}, {testOptions(c), true, nil}, {without, true, nil}} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err = Open(path, step.opts); err != nil {
			t.Fatal(err)
		}
		if got := s.AddedSinceLastRun(); !slices.Equal(got, step.want) {
			t.Errorf("opened with %d tenants: added since the last run %v, want %v", len(step.opts.Tenants), got, step.want)
		}
		if step.record {
			if err := s.RecordTenants(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
