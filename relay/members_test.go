// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// repeatOps is n copies of a PATCH operation, as a PATCH body lists them.
func repeatOps(n int, op func(i int) string) string {
	ops := make([]string, n)
	for i := range ops {
		ops[i] = op(i)
	}
	return strings.Join(ops, ",")
}

// TestMemberRemovalsByFilterAreBounded: removals by a filter that does not
// name the members walk the group once per operation inside the committer,
// so a request may walk at most maxExamined members in all (review F3);
// removals that name members by value read their keys alone, however many.
func TestMemberRemovalsByFilterAreBounded(t *testing.T) {
	s := openFastStore(t)
	s.maxExamined = 1000
	g, ids := buildGroup(t, s, 100)
	walk := func(int) string { return `{"op":"remove","path":"members[display co \"zz\"]"}` }
	// 10 operations × 100 members is the limit exactly; one more is refused.
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(10, walk))
	_, err := patch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(11, walk))
	wantErr(t, err, scim.ErrTooMany, "more than 1000 memberships")
	// Removing every member is free once; again in the same request it
	// walks the group again, and counts: 999 of them walked a group of
	// 10,000 members 999 times inside the committer, uncounted (review
	// 2026-12-04). The first and ten more are the limit; one more is
	// refused, and nothing changes.
	all := func(int) string { return `{"op":"remove","path":"members"}` }
	_, err = patch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(12, all))
	wantErr(t, err, scim.ErrTooMany, "more than 1000 memberships")
	if left, err := s.Members(ctx, "acme", g.ID(), "", "", 0); err != nil || len(left) != 100 {
		t.Fatalf("members after a refused PATCH: %d, %v", len(left), err)
	}
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(11, all))
	if left, err := s.Members(ctx, "acme", g.ID(), "", "", 0); err != nil || len(left) != 0 {
		t.Fatalf("members after eleven removals of them all: %d, %v", len(left), err)
	}
	g, ids = buildGroup(t, s, 100)
	// 1,000 operations naming a member each read 1,000 keys: as Entra
	// sends them, and with another term beside the value.
	named := map[string]func(i int) string{
		"members[value eq U]": func(i int) string {
			return fmt.Sprintf(`{"op":"remove","path":"members[value eq \"%s\"]"}`, ids[i%50])
		},
		"members[value eq U and type eq User]": func(i int) string {
			return fmt.Sprintf(`{"op":"remove","path":"members[value eq \"%s\" and type eq \"User\"]"}`, ids[50+i%50])
		},
	}
	for name, op := range named {
		if _, err := patch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(1000, op)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if left, err := s.Members(ctx, "acme", g.ID(), "", "", 0); err != nil || len(left) != 0 {
		t.Fatalf("members left: %d, %v", len(left), err)
	}
}

// TestMemberRemovalsByNameMatchTheWalk: a removal whose filter names the
// members (read by key) removes what the same filter read by walking the
// group removes, with the same events in the same order.
func TestMemberRemovalsByNameMatchTheWalk(t *testing.T) {
	s := openFastStore(t)
	users := make([]string, 6)
	for i := range users {
		users[i] = create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"m%d","displayName":"M%d"`, i, i))).ID()
	}
	expand := func(s string) string {
		for i, id := range users {
			s = strings.ReplaceAll(s, fmt.Sprintf("U%d", i), id)
		}
		return s
	}
	add := func(us ...string) scim.MemberOp {
		op := scim.MemberOp{Kind: scim.AddMembers}
		for _, u := range us {
			op.Members = append(op.Members, scim.Member{Value: expand(u)})
		}
		return op
	}
	// Each case runs before the removal by filter, on a group of U0-U3.
	cases := map[string][]scim.MemberOp{
		"as is":                  nil,
		"after adding U4 and U5": {add("U5", "U4")},
		"after replacing by U1":  {{Kind: scim.RemoveAllMembers}, add("U1")},
	}
	filters := []string{
		`value eq "U2" or value eq "U0"`,
		`value eq "U5" or value eq "U1" or value eq "U5" or value eq "U4"`,
		`value eq "U4" or value eq "U0" or value eq "U3"`,
		`value eq "U1" and display eq "M1"`,
		`value eq "U1" and display eq "other"`,
		`value eq "no-such-member"`,
	}
	groups := 0
	run := func(ops []scim.MemberOp, filter string) (members, events string) {
		groups++
		g := create(t, s, "acme", group(t, expand(fmt.Sprintf(`"displayName":"g%d","members":[{"value":"U0"},{"value":"U1"},{"value":"U2"},{"value":"U3"}]`, groups))))
		m := mark(t, s)
		ops = append(slices.Clone(ops), scim.MemberOp{Kind: scim.RemoveMatchingMembers, Filter: mustValueFilter(t, expand(filter))})
		if _, err := s.Update(ctx, "acme", scim.GroupResourceType, g.ID(), func(cur *scim.Resource) (*scim.Update, error) {
			return &scim.Update{Resource: cur, Members: ops}, nil
		}); err != nil {
			t.Fatal(err)
		}
		list, err := s.Members(ctx, "acme", g.ID(), "", "", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			members += m.Value + " "
		}
		for _, e := range eventsAfter(t, s, m) {
			events += string(e.action) + ":" + e.data.Member.Value + " "
		}
		return members, events
	}
	for name, ops := range cases {
		for _, f := range filters {
			if _, named := mustValueFilter(t, expand(f)).ElementValues(); !named {
				t.Fatalf("%s does not name its members", f)
			}
			// The same filter, walking: no member has type "none".
			walked := "(" + f + `) or type eq "none"`
			if _, named := mustValueFilter(t, expand(walked)).ElementValues(); named {
				t.Fatalf("%s names its members", walked)
			}
			gotMembers, gotEvents := run(ops, f)
			wantMembers, wantEvents := run(ops, walked)
			if gotMembers != wantMembers || gotEvents != wantEvents {
				t.Errorf("%s, removing %s:\nby name: %s/ %s\nby walk: %s/ %s", name, f, gotMembers, gotEvents, wantMembers, wantEvents)
			}
		}
	}
}

func mustValueFilter(t *testing.T, filter string) *scim.Filter {
	t.Helper()
	path, err := scim.GroupResourceType.ParsePath("members")
	if err != nil {
		t.Fatal(err)
	}
	f, err := scim.ParseValueFilter(scim.GroupResourceType, path, filter)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMembershipFiltersAreBounded: a List's filter on members or groups
// reads at most maxExamined memberships, summed over its terms and the
// resources it tests (review F4), and a term naming a member reads one.
func TestMembershipFiltersAreBounded(t *testing.T) {
	s := openFastStore(t)
	s.maxExamined = 1000
	g, ids := buildGroup(t, s, 100) // 100 memberships in all
	terms := func(n int, term string) string {
		return strings.TrimSuffix(strings.Repeat(term+" or ", n), " or ")
	}
	list := func(rt *scim.ResourceType, filter string) (scim.Page, error) {
		f, err := scim.ParseFilter(rt, filter)
		if err != nil {
			t.Fatal(err)
		}
		return s.List(ctx, "acme", rt, scim.Query{Filter: f, StartIndex: 1, Count: 10})
	}
	for _, c := range []struct {
		rt   *scim.ResourceType
		term string
	}{
		{scim.GroupResourceType, `members.display co "zz"`},
		{scim.UserResourceType, `groups.display co "zz"`},
	} {
		// Every term reads the 100 memberships: 10 terms are the limit
		// exactly, 11 are refused.
		if page, err := list(c.rt, terms(10, c.term)); err != nil || page.Total != 0 {
			t.Fatalf("10 × %s: %d, %v", c.term, page.Total, err)
		}
		_, err := list(c.rt, terms(11, c.term))
		wantErr(t, err, scim.ErrTooMany, "more than 1000 memberships")
	}
	// Terms naming a member read its key alone: 50 of them on one group
	// cost 50.
	var named []string
	for _, id := range ids[:50] {
		named = append(named, fmt.Sprintf("members eq %q", id))
	}
	if page, err := list(scim.GroupResourceType, strings.Join(named, " or ")); err != nil || page.Total != 1 || page.Resources[0].ID() != g.ID() {
		t.Fatalf("50 members named: %d, %v", page.Total, err)
	}
	// A match is still found: the answer does not change under the limit.
	if page, err := list(scim.UserResourceType, terms(9, `groups.display co "zz"`)+fmt.Sprintf(` or groups.display eq %q`, g.String("displayName"))); err != nil || page.Total != 100 {
		t.Fatalf("users by their group's display: %d, %v", page.Total, err)
	}
}

// cancelAfter is a context whose Err is context.Canceled from its n+1th
// call on: a client that leaves part way through a walk.
type cancelAfter struct {
	context.Context
	n atomic.Int64
}

func (c *cancelAfter) Err() error {
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestMembershipFiltersStopWhenTheClientLeaves: a List stops when its
// context is done, before it starts and part way through walking one
// group's members, one user's groups, or the users.
func TestMembershipFiltersStopWhenTheClientLeaves(t *testing.T) {
	s := openFastStore(t)
	g, ids := buildGroup(t, s, 100)
	for i := range 2 { // ids[0] is in three groups
		create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"also-%d","members":[{"value":%q}]`, i, ids[0])))
	}
	for _, c := range []struct {
		rt     *scim.ResourceType
		filter string
	}{
		{scim.GroupResourceType, fmt.Sprintf(`id eq %q and members.display co "zz"`, g.ID())},
		{scim.UserResourceType, fmt.Sprintf(`id eq %q and groups.display co "zz"`, ids[0])},
		{scim.UserResourceType, `groups.display co "zz"`},
		{scim.UserResourceType, `userName co "zz"`}, // no membership read
	} {
		f, err := scim.ParseFilter(c.rt, c.filter)
		if err != nil {
			t.Fatal(err)
		}
		gone, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.List(gone, "acme", c.rt, scim.Query{Filter: f, StartIndex: 1, Count: 10}); !errors.Is(err, context.Canceled) {
			t.Errorf("%s, client gone before: %v", c.filter, err)
		}
		// One resource and its first element are read (or two resources),
		// then the client is gone: with an id eq filter only a check
		// between elements sees it.
		leaving := &cancelAfter{Context: ctx}
		leaving.n.Store(2)
		if _, err := s.List(leaving, "acme", c.rt, scim.Query{Filter: f, StartIndex: 1, Count: 10}); !errors.Is(err, context.Canceled) {
			t.Errorf("%s, client gone during the walk: %v", c.filter, err)
		}
	}
}

// BenchmarkFilteredMemberRemovals is review F3's PATCH: 1,000 removals by a
// filter that names no member, on a group of 20,000, inside the committer.
// The relay refuses it with tooMany once it has read maxExamined members.
func BenchmarkFilteredMemberRemovals(b *testing.B) {
	s := openFastStore(b)
	g, _ := buildGroup(b, s, 20_000)
	ops := repeatOps(1000, func(i int) string {
		return fmt.Sprintf(`{"op":"remove","path":"members[display co \"zz%d\"]"}`, i)
	})
	for b.Loop() {
		if _, err := patch(b, s, "acme", scim.GroupResourceType, g.ID(), ops); err != nil && !errors.Is(err, scim.ErrTooMany) {
			b.Fatal(err)
		}
	}
}

// BenchmarkGroupsFilterTerms is review F4's list: users by 50 terms on their
// groups' display names, 20,000 users in one group (1,000,000 memberships
// read, the limit).
func BenchmarkGroupsFilterTerms(b *testing.B) {
	s := openFastStore(b)
	buildGroup(b, s, 20_000)
	terms := make([]string, 50)
	for i := range terms {
		terms[i] = fmt.Sprintf(`groups.display co "zz%d"`, i)
	}
	f, err := scim.ParseFilter(scim.UserResourceType, strings.Join(terms, " or "))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil && !errors.Is(err, scim.ErrTooMany) {
			b.Fatal(err)
		}
	}
}

// TestRepeatedRemovalsOfAllCountWhatTheRequestNamed: a second removal of
// every member reads again what the request itself named (members it
// added, values it removed that were not members), and counts it: each
// such removal walked every value the request had named, uncounted, so
// 90,000 ids named once and 999 removals of all held the committer for
// 1.5 s at the cost of one request, on an empty group (a review).
func TestRepeatedRemovalsOfAllCountWhatTheRequestNamed(t *testing.T) {
	s := openFastStore(t)
	s.maxExamined = 1000
	g := create(t, s, "acme", group(t, `"displayName":"empty"`))
	var named []string
	for i := range 2000 {
		named = append(named, fmt.Sprintf("%q", fmt.Sprintf("0190a6c4-0000-7000-8000-%012d", i)))
	}
	ops := `{"op":"remove","path":"members","value":[` + strings.Join(named, ",") + `]},` +
		repeatOps(4, func(int) string { return `{"op":"remove","path":"members"}` })
	take := recordCharges(s)
	_, err := patch(t, s, "acme", scim.GroupResourceType, g.ID(), ops)
	wantErr(t, err, scim.ErrTooMany, "more than 1000 memberships")
	if take()["acme"] == 0 {
		t.Errorf("a PATCH refused for walking 6,000 named values was charged nothing")
	}
	// Named once and removed once, as Entra does, it is not counted.
	_, err = patch(t, s, "acme", scim.GroupResourceType, g.ID(),
		`{"op":"remove","path":"members","value":[`+strings.Join(named, ",")+`]},{"op":"remove","path":"members"}`)
	if err != nil {
		t.Errorf("2,000 values named, then one removal of all: %v", err)
	}
}

// TestReaddedMemberTakesTheLastDisplay: a member a PATCH adds, removes
// and adds again (not a member before it) ends as the last add names it,
// the operations applied in order (RFC 7644 §3.5.2); the first add's
// resolution was kept, its display in the stored member and the event (a
// model-based review of memberships).
func TestReaddedMemberTakesTheLastDisplay(t *testing.T) {
	s, _, _ := openStore(t)
	h := scim.NewHandler(s, s, scim.Options{MaxResults: 100, DefaultCount: 100})
	do := scimClient(t, h, "acme", "acme-static-token-0123456789")
	u := do("POST", "/Users", userBody("ann@acme.com"), http.StatusCreated)["id"].(string)
	g := do("POST", "/Groups", `{"schemas":["`+scim.GroupSchema+`"],"displayName":"Staff","members":[]}`, http.StatusCreated)["id"].(string)
	before := mark(t, s)
	req := httptest.NewRequest("PATCH", "/scim/v2/acme/Groups/"+g, strings.NewReader(`{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[
		{"op":"add","path":"members","value":[{"value":"`+u+`"}]},
		{"op":"remove","path":"members[value eq \"`+u+`\"]"},
		{"op":"add","path":"members","value":[{"value":"`+u+`","display":"Ann Lee"}]}]}`))
	req.Header.Set("Authorization", "Bearer acme-static-token-0123456789")
	req.Header.Set("Content-Type", "application/scim+json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", rec.Code, rec.Body)
	}
	got := do("GET", "/Groups/"+g, "", http.StatusOK)["members"].([]any)[0].(map[string]any)["display"]
	var added []string
	for _, e := range eventsAfter(t, s, before) {
		if e.action == events.GroupMemberAdded {
			added = append(added, e.data.Member.Display)
		}
	}
	if got != "Ann Lee" || !slices.Equal(added, []string{"Ann Lee"}) {
		t.Fatalf("member display %q, member_added displays %q; want \"Ann Lee\" (the last add's), once", got, added)
	}
}

// TestWhatTheMembershipBoundDoesNotCount: removing every member of a group
// (a PUT of its members, a remove of them all) is not counted, so that a
// group larger than the bound can still be emptied; a term naming a group
// by value costs a sixteenth of a read, so that `groups eq "<id>"` over
// more users than the bound is answered; and reading a group's name from
// a large record costs a read for each KiB of it (diff review H2, M1, M2).
func TestWhatTheMembershipBoundDoesNotCount(t *testing.T) {
	s := openFastStore(t)
	s.maxExamined = 50
	g, ids := buildGroup(t, s, 100)
	// 100 users in the group: 100 lookups cost 6 reads.
	f, err := scim.ParseFilter(scim.UserResourceType, fmt.Sprintf("groups eq %q", g.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil || page.Total != len(ids) {
		t.Fatalf("groups eq over %d users with a bound of 50: %d, %v", len(ids), page.Total, err)
	}
	// 100 members removed whole with a bound of 50.
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), `{"op":"remove","path":"members"}`)
	if left, err := s.Members(ctx, "acme", g.ID(), "", "", 0); err != nil || len(left) != 0 {
		t.Fatalf("members left after a remove of all: %d, %v", len(left), err)
	}
	// A user in three groups of 20 KiB each: their names cost 60 reads.
	const ext = "urn:ietf:params:scim:schemas:extension:Custom:2.0:Group"
	u := create(t, s, "acme", user(t, `"userName":"in-three"`))
	for i := range 3 {
		r, err := scim.ParseResource(scim.GroupResourceType, []byte(fmt.Sprintf(`{"schemas":[%q,%q],"displayName":"heavy%d",%q:{"blob":%q},"members":[{"value":%q}]}`,
			scim.GroupSchema, ext, i, ext, strings.Repeat("x", 20<<10), u.ID())))
		if err != nil {
			t.Fatal(err)
		}
		create(t, s, "acme", r)
	}
	f, err = scim.ParseFilter(scim.UserResourceType, `userName eq "in-three" and groups.display co "zz"`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10})
	wantErr(t, err, scim.ErrTooMany, "more than 50 memberships")
}

// TestWorkIsChargedToTheTenant: what a request read one by one and the
// events it made are charged to its tenant (ChargeTo), refused or not: a
// membership PATCH's events, a walk a list did, a write refused by the
// membership bound after its walk. Every EventsPerRequest events and
// every MembershipsPerRequest memberships cost one request.
func TestWorkIsChargedToTheTenant(t *testing.T) {
	s := openFastStore(t)
	s.maxExamined = 20 * MembershipsPerRequest
	g, _ := buildGroup(t, s, 2*EventsPerRequest+50)
	take := recordCharges(s)
	// Removing every member: 250 events, 2 requests; nothing read one by one.
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), `{"op":"remove","path":"members"}`)
	if got := take(); got["acme"] != 2 || len(got) != 1 {
		t.Fatalf("removing 250 members charged %v", got)
	}
	g, _ = buildGroup(t, s, 500)
	take()
	// 5 walks of 500 members: 2,500 memberships, 2 requests (no events).
	walk := func(int) string { return `{"op":"remove","path":"members[display co \"zz\"]"}` }
	mustPatch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(5, walk))
	if got := take(); got["acme"] != 2 {
		t.Fatalf("walking 2,500 memberships charged %v", got)
	}
	// Refused by the bound (41 walks of 500 are more than 20,000): the
	// walk up to the bound is charged all the same.
	_, err := patch(t, s, "acme", scim.GroupResourceType, g.ID(), repeatOps(41, walk))
	wantErr(t, err, scim.ErrTooMany, "memberships")
	if got := take(); got["acme"] != 20 {
		t.Fatalf("a write refused by the bound charged %v", got)
	}
	// A list reading 3 × 500 memberships: 1 request.
	f, err := scim.ParseFilter(scim.GroupResourceType, `members.display co "zz" or members.display co "yy" or members.display co "xx"`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx, "acme", scim.GroupResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 10}); err != nil {
		t.Fatal(err)
	}
	if got := take(); got["acme"] != 1 {
		t.Fatalf("a list walking 1,500 memberships charged %v", got)
	}
}

// TestWorkOfAFailedWriteIsNotChargedForEvents: a write whose transaction
// fails after it made events (here its last member's event is too large
// for the bus) stores none of them, and its tenant is not charged for
// them.
func TestWorkOfAFailedWriteIsNotChargedForEvents(t *testing.T) {
	s := openFastStore(t)
	ids := bulkUsers(t, s, 2*EventsPerRequest)
	long := create(t, s, "acme", user(t, `"userName":"long","displayName":"`+strings.Repeat("d", 80<<10)+`"`))
	g := create(t, s, "acme", group(t, `"displayName":"g"`))
	take := recordCharges(s)
	s.LimitEvents(64<<10 + eventHeadroom)
	var members []string
	for _, id := range append(ids, long.ID()) {
		members = append(members, `{"value":"`+id+`"}`)
	}
	_, err := patch(t, s, "acme", scim.GroupResourceType, g.ID(), `{"op":"add","path":"members","value":[`+strings.Join(members, ",")+`]}`)
	wantErr(t, err, scim.ErrPayloadTooLarge, "too large for its event")
	if left, err := s.Members(ctx, "acme", g.ID(), "", "", 0); err != nil || len(left) != 0 {
		t.Fatalf("members after the failed write: %d, %v", len(left), err)
	}
	if charged := take(); len(charged) != 0 {
		t.Fatalf("a write that stored nothing charged %v", charged)
	}
}

// TestMembersNeNullSkipsEmptyGroups: "ne null" means present (scim
// filter.go), so members ne null lists the groups that have members and
// groups ne null the users that are in a group, as emails ne null lists
// the users that have an email.
func TestMembersNeNullSkipsEmptyGroups(t *testing.T) {
	s, _, _ := openStore(t)
	ann := create(t, s, "acme", user(t, `"userName":"ann"`))
	bob := create(t, s, "acme", user(t, `"userName":"bob"`))
	full := create(t, s, "acme", group(t, fmt.Sprintf(`"displayName":"Full","members":[{"value":%q}]`, ann.ID())))
	create(t, s, "acme", group(t, `"displayName":"Empty"`))
	if got := listFilter(t, s, scim.GroupResourceType, `members ne null`); len(got) != 1 || got[0] != full.ID() {
		t.Errorf("members ne null lists %v; want only the group with members, %s", got, full.ID())
	}
	if got := listFilter(t, s, scim.UserResourceType, `groups ne null`); len(got) != 1 || got[0] != ann.ID() {
		t.Errorf("groups ne null lists %v; want only ann, %s (bob %s is in no group)", got, ann.ID(), bob.ID())
	}
}

// listFilter lists the ids of acme's resources of rt that filter matches.
func listFilter(t *testing.T, s *Store, rt *scim.ResourceType, filter string) []string {
	t.Helper()
	f, err := scim.ParseFilter(rt, filter)
	if err != nil {
		t.Fatalf("filter %s: %v", filter, err)
	}
	p, err := s.List(ctx, "acme", rt, scim.Query{Filter: f, Count: 100})
	if err != nil {
		t.Fatalf("list %s: %v", filter, err)
	}
	var ids []string
	for _, r := range p.Resources {
		ids = append(ids, r.ID())
	}
	return ids
}

// TestRenameInManyGroupsIsCharged: renaming a user (or a group) rewrites
// its display in every group it is a member of, one membership at a time,
// inside the committer every tenant's writes wait for. The memberships a
// write reads one by one are charged, one request per
// MembershipsPerRequest (TestWorkIsChargedToTheTenant); a rename's are
// not, so a user in many groups can be renamed again and again, each a
// request of a hundred bytes holding the committer for as long as its
// groups take.
func TestRenameInManyGroupsIsCharged(t *testing.T) {
	s, _, _ := openStore(t)
	take := recordCharges(s)
	u := create(t, s, "acme", user(t, `"userName":"ann","displayName":"Ann"`))
	n := 2000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Create(ctx, "acme", group(t, fmt.Sprintf(`"displayName":"g%d","members":[{"value":"%s"}]`, i, u.ID()))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	take()
	for i := range 3 {
		mustPatch(t, s, "acme", scim.UserResourceType, u.ID(), fmt.Sprintf(`{"op":"replace","path":"displayName","value":"Ann %d"}`, i))
	}
	// Each reads the memberships twice: to rename them, and for its answer.
	if got, want := take()["acme"], 2*3*n/MembershipsPerRequest; got < want {
		t.Errorf("three renames of a user in %d groups, each rewriting %d memberships, charged %d requests, want at least %d", n, n, got, want)
	}
}

// TestGroupsOfAPageAreChargedAndBounded: a user's groups attribute is
// read with it, one membership (and one group card) at a time, and held
// whole: a Get of a user in 100,000 groups allocated 105 MiB and held 80
// MiB, at the cost of one request, and a page of users holds every
// user's groups, whatever MaxPageBytes (4 MiB of records as stored, their
// groups aside). The memberships a read reads one by one are charged
// (MembershipsPerRequest) when a filter reads them; a user's groups are
// not, on a Get, a list page, or a write's answer (read inside the
// committer).
func TestGroupsOfAPageAreChargedAndBounded(t *testing.T) {
	s, _, _ := openStore(t)
	take := recordCharges(s)
	users, groups := 40, 1000 // a page fits 33 of them
	var members []string
	var first string
	for i := range users {
		u := create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%03d"`, i)))
		if i == 0 {
			first = u.ID()
		}
		members = append(members, fmt.Sprintf(`{"value":"%s"}`, u.ID()))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Create(ctx, "acme", group(t, fmt.Sprintf(`"displayName":"g%04d","members":[%s]`, i, strings.Join(members, ",")))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	take()
	if _, err := s.Get(ctx, "acme", scim.UserResourceType, first); err != nil {
		t.Fatal(err)
	}
	if c := take()["acme"]; c < groups/MembershipsPerRequest {
		t.Errorf("a Get reading a user's %d memberships one by one charged %d, want at least %d", groups, c, groups/MembershipsPerRequest)
	}
	for _, stored := range []bool{false, true} {
		page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{StartIndex: 1, Count: users, Stored: stored})
		if err != nil {
			t.Fatal(err)
		}
		held := len(page.Resources) + len(page.Stored)
		if c, want := take()["acme"], held*groups/MembershipsPerRequest; c < want {
			t.Errorf("a page (stored %v) reading %d users' %d memberships one by one charged %d, want at least %d", stored, held, held*groups, c, want)
		}
		// Their groups count towards the page's bytes, about 128 bytes
		// each: the page ends at the user that takes it past the bound.
		if fits := MaxPageBytes/(groups*groupElementBytes) + 1; held > fits {
			t.Errorf("a page (stored %v) held %d users each in %d groups, %d group elements; want at most %d users", stored, held, groups, held*groups, fits)
		}
		// And tell the handler, which counts them while the answer waits
		// for its client.
		if want := held * groups * groupElementBytes; page.Bytes < want {
			t.Errorf("a page (stored %v) of %d users each in %d groups says it holds %d bytes, want at least %d", stored, held, groups, page.Bytes, want)
		}
	}
	mustPatch(t, s, "acme", scim.UserResourceType, first, `{"op":"replace","path":"title","value":"T"}`)
	if c := take()["acme"]; c < groups/MembershipsPerRequest {
		t.Errorf("a PATCH whose answer reads the user's %d memberships one by one in the committer charged %d, want at least %d", groups, c, groups/MembershipsPerRequest)
	}
}

// TestStoredPageIsBoundedByItsBytes: a page an index answers exactly
// (externalId eq, which many users may share; userName eq), read as
// stored without decoding, ends at MaxPageBytes as the other pages do
// (TestListPageIsBoundedByItsBytes): 24 users of 250 KiB sharing an
// externalId were all in one page.
func TestStoredPageIsBoundedByItsBytes(t *testing.T) {
	s, _, _ := openStore(t)
	const n, size = 24, 250 << 10
	for i := range n {
		create(t, s, "acme", user(t, fmt.Sprintf(`"userName":"u%02d","externalId":"same","title":"%s"`, i, strings.Repeat("t", size))))
	}
	f, err := scim.ParseFilter(scim.UserResourceType, `externalId eq "same"`)
	if err != nil {
		t.Fatal(err)
	}
	page, err := s.List(ctx, "acme", scim.UserResourceType, scim.Query{Filter: f, StartIndex: 1, Count: 100, Stored: true})
	if err != nil {
		t.Fatal(err)
	}
	if fits := MaxPageBytes/size + 1; len(page.Stored) != fits || page.Total != n {
		t.Errorf("a page of %d of %d users of %d KiB read as stored, want %d of %d", len(page.Stored), page.Total, size>>10, fits, n)
	}
	if page.Bytes < len(page.Stored)*size {
		t.Errorf("a page of %d users of %d KiB read as stored says it holds %d bytes", len(page.Stored), size>>10, page.Bytes)
	}
}
