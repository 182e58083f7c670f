// SPDX-License-Identifier: Apache-2.0

package scimtest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// listIDs returns the ids of the resources of rt matching filter ("": all),
// sorted by sortBy when it is not "", in the backend's order.
func listIDs(t *testing.T, b scim.Backend, rt *scim.ResourceType, filter, sortBy string, descending bool) []string {
	t.Helper()
	q := scim.Query{StartIndex: 1, Count: 100, Descending: descending}
	if filter != "" {
		f, err := scim.ParseFilter(rt, filter)
		if err != nil {
			t.Fatalf("%s: %v", filter, err)
		}
		q.Filter = f
	}
	if sortBy != "" {
		p, err := rt.ParsePath(sortBy)
		if err != nil {
			t.Fatalf("sortBy %s: %v", sortBy, err)
		}
		q.SortBy = &p
	}
	page, err := b.List(ctx, Tenant, rt, q)
	if err != nil {
		t.Fatalf("List %s filter %q sortBy %q: %v", rt.Name, filter, sortBy, err)
	}
	out := []string{}
	for _, r := range page.Resources {
		out = append(out, r.ID())
	}
	if page.Total != len(out) {
		t.Fatalf("List %s filter %q: total %d, %d resources", rt.Name, filter, page.Total, len(out))
	}
	return out
}

// testFilterFolding: every comparison of a caseExact=false string folds
// case alike (scim.Fold), so that sw, co, ew, gt and lt agree with eq on
// values outside ASCII: Greek final sigma, the long s, the Kelvin sign.
func testFilterFolding(t *testing.T, b scim.Backend) {
	odysseus := create(t, b, User(t, `"userName":"ΟΔΥΣΣΕΥΣ"`)).ID()
	sam := create(t, b, User(t, `"userName":"ſam"`)).ID()
	kelvin := create(t, b, User(t, `"userName":"\u212Aelvin"`)).ID()
	sally := create(t, b, User(t, `"userName":"sally"`)).ID()
	for _, tt := range []struct {
		filter string
		want   []string
	}{
		{`userName eq "οδυσσευς"`, []string{odysseus}},
		{`userName sw "οδυσσευς"`, []string{odysseus}},
		{`userName ew "ς"`, []string{odysseus}},
		{`userName co "υσσ"`, []string{odysseus}},
		{`userName eq "SAM"`, []string{sam}},
		{`userName sw "s"`, []string{sam, sally}},
		{`userName sw "S"`, []string{sam, sally}},
		{`userName ew "AM"`, []string{sam}},
		{`userName eq "kelvin"`, []string{kelvin}},
		{`userName sw "K"`, []string{kelvin}},
		{`userName co "ELV"`, []string{kelvin}},
		{`userName lt "t"`, []string{sam, kelvin, sally}},
		{`userName ge "ſ"`, []string{odysseus, sam, sally}},
		{`userName le "SAM"`, []string{sam, kelvin, sally}},
		{`userName gt "SAM"`, []string{odysseus}},
	} {
		if got := listIDs(t, b, scim.UserResourceType, tt.filter, "", false); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.filter, got, tt.want)
		}
	}
}

// testFilterDateTimes: date-times compare as instants, exactly: a value
// finer than the stored milliseconds is not rounded, and one in another
// offset is the instant it names.
func testFilterDateTimes(t *testing.T, b scim.Backend) {
	u := create(t, b, User(t, `"userName":"ann"`))
	created := u.Meta().Created
	if created.IsZero() {
		t.Fatal("the created user has no meta.created")
	}
	at := func(d time.Duration, zone *time.Location) string {
		return created.Add(d).In(zone).Format(time.RFC3339Nano)
	}
	plus2 := time.FixedZone("", 2*3600)
	minus5 := time.FixedZone("", -5*3600)
	for _, tt := range []struct {
		op    string
		value string
		match bool
	}{
		{"eq", at(0, time.UTC), true},
		{"eq", at(0, plus2), true},
		{"eq", at(0, minus5), true},
		{"eq", at(900*time.Microsecond, time.UTC), false},
		{"eq", at(-100*time.Microsecond, time.UTC), false},
		{"ne", at(900*time.Microsecond, time.UTC), true},
		{"ge", at(400*time.Microsecond, time.UTC), false},
		{"gt", at(-time.Nanosecond, time.UTC), true},
		{"gt", at(0, plus2), false},
		{"ge", at(0, plus2), true},
		{"lt", at(400*time.Microsecond, time.UTC), true},
		{"lt", at(time.Nanosecond, minus5), true},
		{"lt", at(0, minus5), false},
		{"le", at(0, minus5), true},
		{"le", at(-time.Nanosecond, time.UTC), false},
		{"gt", at(time.Hour, plus2), false},
		{"lt", at(-time.Hour, minus5), false},
	} {
		filter := fmt.Sprintf(`meta.created %s %q`, tt.op, tt.value)
		got := listIDs(t, b, scim.UserResourceType, filter, "", false)
		if (len(got) == 1) != tt.match || len(got) > 1 {
			t.Errorf("%s (created %s): %v, want a match: %v", filter, created.Format(time.RFC3339Nano), got, tt.match)
		}
	}
}

// customSchema is an extension no backend knows: its attributes keep the
// JSON types a client sends.
const customSchema = "urn:example:custom:2.0:User"

// testSortOrder: sortBy orders caseExact=false strings by the same folded
// form the filter's gt and lt compare, so that the two agree, and numbers
// by value (RFC 7644 §3.4.2.3: by the attribute's type); values of
// different types, which only an unknown extension can mix, sort
// booleans, then numbers, then strings, and missing values last; each
// order reversed descending, missing values first.
func testSortOrder(t *testing.T, b scim.Backend) {
	type user struct {
		display string
		level   string // JSON
	}
	users := []user{{"ſb", "9"}, {"sa", "10"}, {"t", "100"}, {"Ø", "2"}, {"ß", "1"}, {"\u212Ab", `"x"`}, {"ø2", "true"}, {"", "false"}, {"A", ""}}
	id := map[string]string{}
	for i, u := range users {
		body := fmt.Sprintf(`{"schemas":[%q,%q],"userName":"u%d"`, scim.UserSchema, customSchema, i)
		if u.display != "" {
			body += fmt.Sprintf(`,"displayName":%q`, u.display)
		}
		if u.level != "" {
			body += fmt.Sprintf(`,%q:{"level":%s}`, customSchema, u.level)
		}
		r, err := scim.ParseResource(scim.UserResourceType, []byte(body+"}"))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		id[u.display+"/"+u.level] = create(t, b, r).ID()
	}
	ids := func(keys ...string) []string {
		var out []string
		for _, k := range keys {
			out = append(out, id[k])
		}
		return out
	}
	byName := ids("A/", "\u212Ab/\"x\"", "sa/10", "ſb/9", "t/100", "Ø/2", "ø2/true", "ß/1", "/false")
	if got := listIDs(t, b, scim.UserResourceType, "", "displayName", false); !slices.Equal(got, byName) {
		t.Errorf("sortBy displayName: %v, want %v", got, byName)
	}
	desc := slices.Clone(byName) // the one without a displayName first
	slices.Reverse(desc)
	if got := listIDs(t, b, scim.UserResourceType, "", "displayName", true); !slices.Equal(got, desc) {
		t.Errorf("sortBy displayName descending: %v, want %v", got, desc)
	}
	// displayName gt the i-th name in that order is what follows it.
	for i, u := range []string{"A", "\u212Ab", "sa", "ſb", "t", "Ø", "ø2", "ß"} {
		filter := fmt.Sprintf(`displayName gt %q`, u)
		got := listIDs(t, b, scim.UserResourceType, filter, "", false)
		want := slices.Clone(byName[i+1 : len(byName)-1])
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v (what sorts after it)", filter, got, want)
		}
	}
	level := customSchema + ":level"
	byLevel := ids("/false", "ø2/true", "ß/1", "Ø/2", "ſb/9", "sa/10", "t/100", "\u212Ab/\"x\"", "A/")
	if got := listIDs(t, b, scim.UserResourceType, "", level, false); !slices.Equal(got, byLevel) {
		t.Errorf("sortBy %s: %v, want %v", level, got, byLevel)
	}
	if got, want := listIDs(t, b, scim.UserResourceType, level+" gt 9", level, false), ids("sa/10", "t/100"); !slices.Equal(got, want) {
		t.Errorf("%s gt 9, sorted: %v, want %v", level, got, want)
	}
}
