// SPDX-License-Identifier: Apache-2.0

package scimtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/scimrelay/scimrelay/scim"
)

// Tenants every backend under RunBackendTests serves.
const (
	Tenant      = "acme"
	OtherTenant = "globex"
)

// RunBackendTests checks that a scim.Backend keeps the contract the SCIM
// handlers rely on: create, get, replace and patch (through Update),
// delete, uniqueness, filters, pagination and sorting, memberships,
// versions, and the error each refusal must be (matched by status and
// scimType, with errors.Is against the scim sentinels). newBackend returns
// an empty backend serving Tenant and OtherTenant, whose users are unique
// by userName and need no attributes besides it; each subtest gets its own.
func RunBackendTests(t *testing.T, newBackend func(t *testing.T) scim.Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b scim.Backend)
	}{
		{"CreateGet", testCreateGet},
		{"Uniqueness", testUniqueness},
		{"Update", testUpdate},
		{"Replace", testReplace},
		{"Delete", testDelete},
		{"Memberships", testMemberships},
		{"MembersPaging", testMembersPaging},
		{"MembersOfAVersion", testMembersOfAVersion},
		{"Filters", testFilters},
		{"Pagination", testPagination},
		{"Sort", testSort},
		{"SortOrder", testSortOrder},
		{"FilterFolding", testFilterFolding},
		{"FilterDateTimes", testFilterDateTimes},
		{"Tenants", testTenants},
		{"Concurrency", testConcurrency},
		{"EventIDs", testEventIDs},
		{"StoredPages", testStoredPages},
		{"ListedExtensions", testListedExtensions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newBackend(t)) })
	}
}

var ctx = context.Background()

// User parses a User from the members of its JSON object, without the
// braces and schemas: User(t, `"userName":"ann"`).
func User(t testing.TB, body string) *scim.Resource {
	t.Helper()
	return parse(t, scim.UserResourceType, scim.UserSchema, body)
}

// Group parses a Group the way User parses a User.
func Group(t testing.TB, body string) *scim.Resource {
	t.Helper()
	return parse(t, scim.GroupResourceType, scim.GroupSchema, body)
}

func parse(t testing.TB, rt *scim.ResourceType, schema, body string) *scim.Resource {
	t.Helper()
	r, err := scim.ParseResource(rt, []byte(`{"schemas":["`+schema+`"],`+body+`}`))
	if err != nil {
		t.Fatalf("parsing %s %s: %v", rt.Name, body, err)
	}
	return r
}

func create(t *testing.T, b scim.Backend, r *scim.Resource) *scim.Resource {
	t.Helper()
	res, err := b.Create(ctx, Tenant, r)
	if err != nil {
		t.Fatalf("Create %s: %v", r.AppendJSON(nil), err)
	}
	if res.Resource == nil {
		t.Fatalf("Create %s returned no resource", r.AppendJSON(nil))
	}
	return res.Resource
}

func get(t *testing.T, b scim.Backend, rt *scim.ResourceType, id string) *scim.Resource {
	t.Helper()
	r, err := b.Get(ctx, Tenant, rt, id)
	if err != nil {
		t.Fatalf("Get %s %s: %v", rt.Name, id, err)
	}
	return r
}

// patch applies a SCIM PATCH body's operations through Update, as the
// handler does.
func patch(b scim.Backend, rt *scim.ResourceType, id, ops string) (scim.WriteResult, error) {
	p, err := scim.ParsePatch(rt, []byte(`{"schemas":["`+scim.PatchOpSchema+`"],"Operations":[`+ops+`]}`))
	if err != nil {
		return scim.WriteResult{}, err
	}
	return b.Update(ctx, Tenant, rt, id, func(cur *scim.Resource) (*scim.Update, error) { return p.Apply(cur) })
}

func mustPatch(t *testing.T, b scim.Backend, rt *scim.ResourceType, id, ops string) *scim.Resource {
	t.Helper()
	res, err := patch(b, rt, id, ops)
	if err != nil {
		t.Fatalf("PATCH %s %s: %v", rt.Name, ops, err)
	}
	return res.Resource
}

// members changes a group's membership through Update.
func members(b scim.Backend, gid string, ops ...scim.MemberOp) (scim.WriteResult, error) {
	return b.Update(ctx, Tenant, scim.GroupResourceType, gid, func(cur *scim.Resource) (*scim.Update, error) {
		return &scim.Update{Resource: cur, Members: ops}, nil
	})
}

func memberList(values ...string) []scim.Member {
	out := make([]scim.Member, len(values))
	for i, v := range values {
		out[i] = scim.Member{Value: v}
	}
	return out
}

// allMembers reads a group's members in pages of 2, checking the pages
// fit together.
func allMembers(t *testing.T, b scim.Backend, gid string) []scim.Member {
	t.Helper()
	var out []scim.Member
	after := ""
	for range 1000 {
		page, err := b.Members(ctx, Tenant, gid, "", after, 2)
		if err != nil {
			t.Fatalf("Members %s after %q: %v", gid, after, err)
		}
		if len(page) > 2 {
			t.Fatalf("Members with limit 2 returned %d", len(page))
		}
		out = append(out, page...)
		if len(page) < 2 {
			return out
		}
		after = page[len(page)-1].Value
	}
	t.Fatal("Members never came to an end")
	return nil
}

func values(list []scim.Member) []string {
	out := make([]string, len(list))
	for i, m := range list {
		out[i] = m.Value
	}
	slices.Sort(out)
	return out
}

func sorted(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func wantErr(t *testing.T, err error, kind *scim.Error, what string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("%s: got %v, want an error of status %d scimType %q", what, err, kind.Status, kind.Type)
	}
}

func groupIDs(r *scim.Resource) []string {
	var out []string
	list, _ := r.Attrs["groups"].([]any)
	for _, g := range list {
		m, _ := g.(map[string]any)
		v, _ := m["value"].(string)
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func testCreateGet(t *testing.T, b scim.Backend) {
	in := User(t, `"userName":"ann@example.com","externalId":"e-1","name":{"givenName":"Ann"},"emails":[{"value":"ann@example.com","type":"work"}]`)
	u := create(t, b, in)
	meta := u.Meta()
	if u.ID() == "" || meta.Version == "" || meta.Created.IsZero() || !meta.LastModified.Equal(meta.Created) {
		t.Fatalf("created user lacks id or meta: %s", u.AppendJSON(nil))
	}
	if meta.Location != "" {
		t.Errorf("Create returned meta.location %q; the handler sets it", meta.Location)
	}
	if in.ID() != "" {
		t.Errorf("Create changed its input: %s", in.AppendJSON(nil))
	}
	got := get(t, b, scim.UserResourceType, u.ID())
	if string(got.AppendJSON(nil)) != string(u.AppendJSON(nil)) {
		t.Errorf("Get differs from what Create returned:\n%s\n%s", got.AppendJSON(nil), u.AppendJSON(nil))
	}
	if got.String("userName") != "ann@example.com" || got.ExternalID() != "e-1" || got.WorkEmail() != "ann@example.com" {
		t.Errorf("Get: %s", got.AppendJSON(nil))
	}
	// Ids are the backend's: another create gets another.
	if other := create(t, b, User(t, `"userName":"bob"`)); other.ID() == u.ID() {
		t.Fatal("two creates got one id")
	}
	// A group comes back without members, whatever it was created with.
	g := create(t, b, Group(t, fmt.Sprintf(`"displayName":"Sales","members":[{"value":%q}]`, u.ID())))
	if g.Attrs["members"] != nil || get(t, b, scim.GroupResourceType, g.ID()).Attrs["members"] != nil {
		t.Errorf("group returned with members: %s", g.AppendJSON(nil))
	}
	// Unknown ids, the wrong type and unknown tenants are not found.
	_, err := b.Get(ctx, Tenant, scim.UserResourceType, "no-such-id")
	wantErr(t, err, scim.ErrNotFound, "Get of an unknown id")
	_, err = b.Get(ctx, Tenant, scim.GroupResourceType, u.ID())
	wantErr(t, err, scim.ErrNotFound, "Get of a User as a Group")
	_, err = b.Get(ctx, "no-such-tenant", scim.UserResourceType, u.ID())
	wantErr(t, err, scim.ErrNotFound, "Get in an unknown tenant")
	_, err = b.Create(ctx, "no-such-tenant", User(t, `"userName":"x"`))
	wantErr(t, err, scim.ErrNotFound, "Create in an unknown tenant")
}

func testUniqueness(t *testing.T, b scim.Backend) {
	ann := create(t, b, User(t, `"userName":"ann@example.com"`))
	_, err := b.Create(ctx, Tenant, User(t, `"userName":"ANN@Example.com"`))
	wantErr(t, err, scim.ErrUniqueness, "Create of a userName taken in another case")
	create(t, b, Group(t, `"displayName":"Sales"`))
	_, err = b.Create(ctx, Tenant, Group(t, `"displayName":"sales"`))
	wantErr(t, err, scim.ErrUniqueness, "Create of a Group displayName taken")
	// A user and a group may share a name; users may share a displayName.
	create(t, b, Group(t, `"displayName":"ann@example.com"`))
	create(t, b, User(t, `"userName":"x1","displayName":"Same"`))
	create(t, b, User(t, `"userName":"x2","displayName":"Same"`))
	// Renaming onto a taken name is refused and changes nothing.
	bob := create(t, b, User(t, `"userName":"bob"`))
	_, err = patch(b, scim.UserResourceType, bob.ID(), `{"op":"replace","path":"userName","value":"Ann@example.com"}`)
	wantErr(t, err, scim.ErrUniqueness, "rename onto a taken userName")
	if got := get(t, b, scim.UserResourceType, bob.ID()); got.String("userName") != "bob" || got.Meta().Version != bob.Meta().Version {
		t.Fatalf("refused rename changed the user: %s", got.AppendJSON(nil))
	}
	// Renaming a resource in its own name's case is no conflict with itself.
	mustPatch(t, b, scim.UserResourceType, ann.ID(), `{"op":"replace","path":"userName","value":"Ann@Example.com"}`)
	// A deleted user's name is free again.
	if _, err := b.Delete(ctx, Tenant, scim.UserResourceType, ann.ID(), scim.Precondition{}); err != nil {
		t.Fatal(err)
	}
	create(t, b, User(t, `"userName":"ann@example.com"`))
}

func testUpdate(t *testing.T, b scim.Backend) {
	u := create(t, b, User(t, `"userName":"ann","title":"Engineer","active":true`))
	p := mustPatch(t, b, scim.UserResourceType, u.ID(), `{"op":"replace","path":"title","value":"Boss"},{"op":"replace","path":"active","value":false}`)
	if p.String("title") != "Boss" || p.ID() != u.ID() {
		t.Fatalf("PATCH result: %s", p.AppendJSON(nil))
	}
	if active, _ := p.Active(); active {
		t.Fatal("PATCH of active to false did not stick")
	}
	if p.Meta().Version == u.Meta().Version || !p.Meta().Created.Equal(u.Meta().Created) || p.Meta().LastModified.Before(u.Meta().LastModified) {
		t.Fatalf("meta after a change: %+v, before %+v", p.Meta(), u.Meta())
	}
	if p.Meta().Location != "" {
		t.Errorf("Update returned meta.location %q", p.Meta().Location)
	}
	got := get(t, b, scim.UserResourceType, u.ID())
	if string(got.AppendJSON(nil)) != string(p.AppendJSON(nil)) {
		t.Fatalf("Get after Update differs:\n%s\n%s", got.AppendJSON(nil), p.AppendJSON(nil))
	}
	// The stored version is what If-Match compares with.
	if err := scim.RequireVersion(p.Meta().Version).Check(got); err != nil {
		t.Fatal(err)
	}
	// A PATCH that changes nothing keeps the version and produces nothing.
	res, err := patch(b, scim.UserResourceType, u.ID(), `{"op":"replace","path":"title","value":"Boss"}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resource.Meta().Version != p.Meta().Version || len(res.EventIDs) != 0 {
		t.Fatalf("no-op PATCH: version %s (was %s), events %v", res.Resource.Meta().Version, p.Meta().Version, res.EventIDs)
	}
	// fn gets the stored state without derived attributes, and its error
	// comes back as is, changing nothing.
	g := create(t, b, Group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.ID())))
	mine := errors.New("refused by the update function")
	_, err = b.Update(ctx, Tenant, scim.UserResourceType, u.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		if cur.Attrs["groups"] != nil || cur.String("title") != "Boss" {
			t.Errorf("fn got %s", cur.AppendJSON(nil))
		}
		return nil, mine
	})
	if !errors.Is(err, mine) {
		t.Fatalf("the update function's error came back as %v", err)
	}
	_, err = b.Update(ctx, Tenant, scim.GroupResourceType, g.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		if cur.Attrs["members"] != nil {
			t.Errorf("fn got a group with members: %s", cur.AppendJSON(nil))
		}
		return nil, scim.RequireVersion(`W/"no-such-version"`).Check(cur)
	})
	wantErr(t, err, scim.ErrPreconditionFailed, "an If-Match refusal from the update function")
	if got := get(t, b, scim.UserResourceType, u.ID()); got.Meta().Version != p.Meta().Version {
		t.Fatal("a refused update changed the version")
	}
	// Unknown ids and tenants.
	_, err = patch(b, scim.UserResourceType, "no-such-id", `{"op":"replace","path":"title","value":"x"}`)
	wantErr(t, err, scim.ErrNotFound, "Update of an unknown id")
	_, err = b.Update(ctx, "no-such-tenant", scim.UserResourceType, u.ID(), func(cur *scim.Resource) (*scim.Update, error) { return nil, mine })
	wantErr(t, err, scim.ErrNotFound, "Update in an unknown tenant")
	_, err = patch(b, scim.GroupResourceType, u.ID(), `{"op":"replace","path":"displayName","value":"x"}`)
	wantErr(t, err, scim.ErrNotFound, "Update of a User as a Group")
}

// testReplace replaces resources whole, as PUT does through Update.
func testReplace(t *testing.T, b scim.Backend) {
	u := create(t, b, User(t, `"userName":"ann","title":"Boss","nickName":"A"`))
	in := User(t, `"userName":"ann","title":"Chief"`)
	res, err := b.Update(ctx, Tenant, scim.UserResourceType, u.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		next := in.Clone()
		next.Attrs["id"], next.Attrs["meta"] = cur.Attrs["id"], cur.Attrs["meta"]
		return &scim.Update{Resource: next, Changes: scim.Diff(cur, next)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := get(t, b, scim.UserResourceType, u.ID())
	if res.Resource.String("title") != "Chief" || got.String("nickName") != "" || got.String("title") != "Chief" || !got.Meta().Created.Equal(u.Meta().Created) {
		t.Fatalf("after replace: %s", got.AppendJSON(nil))
	}
	// A group replaced with the members it has keeps its version.
	g := create(t, b, Group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.ID())))
	same, err := members(b, g.ID(), scim.MemberOp{Kind: scim.RemoveAllMembers}, scim.MemberOp{Kind: scim.AddMembers, Members: memberList(u.ID())})
	if err != nil {
		t.Fatal(err)
	}
	if same.Resource.Meta().Version != g.Meta().Version || len(same.EventIDs) != 0 {
		t.Fatalf("replacing the members with themselves: version %s (was %s), events %v", same.Resource.Meta().Version, g.Meta().Version, same.EventIDs)
	}
	if got := values(allMembers(t, b, g.ID())); !slices.Equal(got, []string{u.ID()}) {
		t.Fatalf("members after replacing them with themselves: %v", got)
	}
}

func testDelete(t *testing.T, b scim.Backend) {
	u := create(t, b, User(t, `"userName":"ann"`))
	_, err := b.Delete(ctx, Tenant, scim.UserResourceType, u.ID(), scim.RequireVersion(`W/"no-such-version"`))
	wantErr(t, err, scim.ErrPreconditionFailed, "Delete with a stale If-Match")
	get(t, b, scim.UserResourceType, u.ID())
	_, err = b.Delete(ctx, Tenant, scim.GroupResourceType, u.ID(), scim.Precondition{})
	wantErr(t, err, scim.ErrNotFound, "Delete of a User as a Group")
	res, err := b.Delete(ctx, Tenant, scim.UserResourceType, u.ID(), scim.RequireVersion(u.Meta().Version))
	if err != nil || res.Resource != nil {
		t.Fatalf("Delete: %+v, %v", res, err)
	}
	_, err = b.Get(ctx, Tenant, scim.UserResourceType, u.ID())
	wantErr(t, err, scim.ErrNotFound, "Get after Delete")
	_, err = b.Delete(ctx, Tenant, scim.UserResourceType, u.ID(), scim.Precondition{})
	wantErr(t, err, scim.ErrNotFound, "second Delete")
	_, err = b.Delete(ctx, "no-such-tenant", scim.UserResourceType, u.ID(), scim.Precondition{})
	wantErr(t, err, scim.ErrNotFound, "Delete in an unknown tenant")
	if page, err := b.List(ctx, Tenant, scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10}); err != nil || page.Total != 0 {
		t.Fatalf("List after Delete: %d, %v", page.Total, err)
	}
}

func testMemberships(t *testing.T, b scim.Backend) {
	ann := create(t, b, User(t, `"userName":"ann","displayName":"Ann Lee"`))
	bob := create(t, b, User(t, `"userName":"bob"`))
	g := create(t, b, Group(t, fmt.Sprintf(`"displayName":"Sales","members":[{"value":%q}]`, ann.ID())))
	ms := allMembers(t, b, g.ID())
	if len(ms) != 1 || ms[0].Value != ann.ID() || ms[0].Type != "User" || ms[0].Display != "Ann Lee" {
		t.Fatalf("initial members: %+v", ms)
	}
	// A user shows its groups.
	if got := groupIDs(get(t, b, scim.UserResourceType, ann.ID())); !slices.Equal(got, []string{g.ID()}) {
		t.Fatalf("ann's groups: %v", got)
	}
	groups, _ := get(t, b, scim.UserResourceType, ann.ID()).Attrs["groups"].([]any)
	if entry, _ := groups[0].(map[string]any); entry["display"] != "Sales" {
		t.Errorf("groups entry: %v", entry)
	}
	// Adding a present member and removing an absent one change nothing.
	v := g.Meta().Version
	for _, op := range []scim.MemberOp{
		{Kind: scim.AddMembers, Members: memberList(ann.ID())},
		{Kind: scim.RemoveMembers, Members: memberList(bob.ID())},
	} {
		res, err := members(b, g.ID(), op)
		if err != nil {
			t.Fatal(err)
		}
		if res.Resource.Meta().Version != v || len(res.EventIDs) != 0 {
			t.Fatalf("no-op membership change %d: version %s (was %s), events %v", op.Kind, res.Resource.Meta().Version, v, res.EventIDs)
		}
	}
	// A change bumps the group's version; members are added once.
	res, err := members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(bob.ID(), bob.ID())})
	if err != nil {
		t.Fatal(err)
	}
	if res.Resource.Meta().Version == v {
		t.Fatalf("adding bob kept the version %s", v)
	}
	if got := values(allMembers(t, b, g.ID())); !slices.Equal(got, sorted(ann.ID(), bob.ID())) {
		t.Fatalf("members after adding bob: %v", got)
	}
	// Refusals: unknown members, a group in itself; nothing changes.
	_, err = members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList("no-such-user")})
	wantErr(t, err, scim.ErrInvalidValue, "adding an unknown member")
	_, err = members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(g.ID())})
	wantErr(t, err, scim.ErrInvalidValue, "adding a group to itself")
	_, err = b.Create(ctx, Tenant, Group(t, `"displayName":"ghosts","members":[{"value":"no-such-user"}]`))
	wantErr(t, err, scim.ErrInvalidValue, "creating a group with an unknown member")
	// Groups nest.
	parent := create(t, b, Group(t, fmt.Sprintf(`"displayName":"Parent","members":[{"value":%q}]`, g.ID())))
	if ms := allMembers(t, b, parent.ID()); len(ms) != 1 || ms[0].Type != "Group" {
		t.Fatalf("nested group member: %+v", ms)
	}
	// Removal by filter, as Entra's members[value eq "x"] path does.
	f, err := scim.ParseValueFilter(scim.GroupResourceType, mustPath(t, "members"), fmt.Sprintf(`value eq %q`, bob.ID()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := members(b, g.ID(), scim.MemberOp{Kind: scim.RemoveMatchingMembers, Filter: f}); err != nil {
		t.Fatal(err)
	}
	if got := values(allMembers(t, b, g.ID())); !slices.Equal(got, []string{ann.ID()}) {
		t.Fatalf("members after removing bob by filter: %v", got)
	}
	// Deleting a user takes it out of its groups and changes their versions.
	before := get(t, b, scim.GroupResourceType, g.ID()).Meta().Version
	if _, err := b.Delete(ctx, Tenant, scim.UserResourceType, ann.ID(), scim.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if ms := allMembers(t, b, g.ID()); len(ms) != 0 {
		t.Fatalf("deleted user still a member: %+v", ms)
	}
	if after := get(t, b, scim.GroupResourceType, g.ID()).Meta().Version; after == before {
		t.Error("a group that lost a member kept its version")
	}
	// Deleting a group takes it out of its parents; emptying one works.
	if _, err := b.Delete(ctx, Tenant, scim.GroupResourceType, g.ID(), scim.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if ms := allMembers(t, b, parent.ID()); len(ms) != 0 {
		t.Fatalf("deleted group still a member: %+v", ms)
	}
	_, err = b.Members(ctx, Tenant, g.ID(), "", "", 10)
	wantErr(t, err, scim.ErrNotFound, "Members of a deleted group")
	if _, err := members(b, parent.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(bob.ID())}, scim.MemberOp{Kind: scim.RemoveAllMembers}); err != nil {
		t.Fatal(err)
	}
	if ms := allMembers(t, b, parent.ID()); len(ms) != 0 {
		t.Fatalf("members after removing all: %+v", ms)
	}
	if got := groupIDs(get(t, b, scim.UserResourceType, bob.ID())); got != nil {
		t.Fatalf("bob's groups after removing all: %v", got)
	}
}

func mustPath(t *testing.T, s string) scim.AttrPath {
	t.Helper()
	p, err := scim.GroupResourceType.ParsePath(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testMembersPaging(t *testing.T, b scim.Backend) {
	var ids []string
	var list strings.Builder
	for i := range 7 {
		u := create(t, b, User(t, fmt.Sprintf(`"userName":"u%d"`, i)))
		ids = append(ids, u.ID())
		if i > 0 {
			list.WriteByte(',')
		}
		fmt.Fprintf(&list, `{"value":%q}`, u.ID())
	}
	g := create(t, b, Group(t, `"displayName":"g","members":[`+list.String()+`]`))
	got := allMembers(t, b, g.ID())
	if vs := values(got); !slices.Equal(vs, sorted(ids...)) {
		t.Fatalf("paged members %v, want %v", vs, sorted(ids...))
	}
	// The order is stable: reading again gives the same sequence.
	again := allMembers(t, b, g.ID())
	for i := range got {
		if got[i].Value != again[i].Value {
			t.Fatalf("member order changed between reads: %v / %v", got, again)
		}
	}
	if page, err := b.Members(ctx, Tenant, g.ID(), "", got[len(got)-1].Value, 10); err != nil || len(page) != 0 {
		t.Fatalf("after the last member: %+v, %v", page, err)
	}
	_, err := b.Members(ctx, Tenant, "no-such-group", "", "", 10)
	wantErr(t, err, scim.ErrNotFound, "Members of an unknown group")
}

// testMembersOfAVersion checks that Members given the version a group was
// read at answers only while the group still has it: an answer's ETag and
// its members must be of one version.
func testMembersOfAVersion(t *testing.T, b scim.Backend) {
	ann := create(t, b, User(t, `"userName":"ann"`))
	bob := create(t, b, User(t, `"userName":"bob"`))
	g := create(t, b, Group(t, `"displayName":"g","members":[{"value":"`+ann.ID()+`"}]`))
	read, err := b.Get(ctx, Tenant, scim.GroupResourceType, g.ID())
	if err != nil {
		t.Fatal(err)
	}
	v1 := read.Meta().Version
	if got, err := b.Members(ctx, Tenant, g.ID(), v1, "", 10); err != nil || !slices.Equal(values(got), []string{ann.ID()}) {
		t.Fatalf("Members at the version read: %+v, %v; want ann", got, err)
	}
	if _, err := members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(bob.ID())}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Members(ctx, Tenant, g.ID(), v1, "", 10); !errors.Is(err, scim.ErrChanged) {
		t.Fatalf("Members at the version before a member was added: %+v, %v; want ErrChanged", got, err)
	}
	if got, err := b.Members(ctx, Tenant, g.ID(), "", "", 10); err != nil || len(got) != 2 {
		t.Fatalf("Members without a version after the add: %+v, %v; want both", got, err)
	}
	now, err := b.Get(ctx, Tenant, scim.GroupResourceType, g.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Delete(ctx, Tenant, scim.GroupResourceType, g.ID(), scim.Precondition{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Members(ctx, Tenant, g.ID(), now.Meta().Version, "", 10); !errors.Is(err, scim.ErrChanged) {
		t.Fatalf("Members of a group deleted since it was read: %v; want ErrChanged", err)
	}
	_, err = b.Members(ctx, Tenant, g.ID(), "", "", 10)
	wantErr(t, err, scim.ErrNotFound, "Members of a deleted group, no version given")
}

// testFilters checks filters against a small tenant whose answers are
// written out by hand.
func testFilters(t *testing.T, b scim.Backend) {
	var u []string // u[i] is user i's id
	for i := range 6 {
		r := create(t, b, User(t, fmt.Sprintf(`"userName":"user%d@x.com","externalId":"ext%d","title":"t%d","active":%v,
			"emails":[{"value":"User%d@X.com","type":"work"},{"value":"home%d@y.com","type":"home"}]`, i, i%3, i%2, i != 4, i, i)))
		u = append(u, r.ID())
	}
	sales := create(t, b, Group(t, fmt.Sprintf(`"displayName":"Sales","externalId":"g1","members":[{"value":%q},{"value":%q}]`, u[0], u[1])))
	ops := create(t, b, Group(t, fmt.Sprintf(`"displayName":"Ops","members":[{"value":%q},{"value":%q}]`, u[1], sales.ID())))
	empty := create(t, b, Group(t, `"displayName":"Empty"`))
	tests := []struct {
		rt     *scim.ResourceType
		filter string
		want   []string
	}{
		{scim.UserResourceType, `userName eq "USER3@x.com"`, []string{u[3]}},
		{scim.UserResourceType, `userName eq "nobody"`, nil},
		{scim.UserResourceType, `externalId eq "ext1"`, []string{u[1], u[4]}},
		{scim.UserResourceType, `externalId eq "EXT1"`, nil}, // externalId is caseExact
		{scim.UserResourceType, `externalId eq ext2`, []string{u[2], u[5]}},
		{scim.UserResourceType, `emails[type eq "work"].value eq "user2@x.COM"`, []string{u[2]}},
		{scim.UserResourceType, `emails[type eq "work"].value eq "home2@y.com"`, nil},
		{scim.UserResourceType, `emails.value eq "home2@y.com"`, []string{u[2]}},
		{scim.UserResourceType, `emails eq "HOME2@y.com"`, []string{u[2]}},
		{scim.UserResourceType, `externalId eq "ext1" and active eq false`, []string{u[4]}},
		{scim.UserResourceType, `userName eq "user0@x.com" or userName eq "user5@x.com"`, []string{u[0], u[5]}},
		{scim.UserResourceType, `title eq "t1"`, []string{u[1], u[3], u[5]}},
		{scim.UserResourceType, `userName sw "USER1" or userName ew "5@x.com"`, []string{u[1], u[5]}},
		{scim.UserResourceType, `not (active eq true)`, []string{u[4]}},
		{scim.UserResourceType, fmt.Sprintf(`id eq %q`, u[2]), []string{u[2]}},
		{scim.UserResourceType, `id eq "no-such-id"`, nil},
		{scim.UserResourceType, `nickName pr`, nil},
		{scim.UserResourceType, fmt.Sprintf(`groups.value eq %q`, sales.ID()), []string{u[0], u[1]}},
		{scim.UserResourceType, fmt.Sprintf(`groups eq %q and title eq "t1"`, sales.ID()), []string{u[1]}},
		{scim.UserResourceType, `groups[display eq "ops"]`, []string{u[1]}},
		{scim.UserResourceType, `not (groups pr)`, []string{u[2], u[3], u[4], u[5]}},
		{scim.GroupResourceType, `displayName eq "sales"`, []string{sales.ID()}},
		{scim.GroupResourceType, `externalId eq "g1"`, []string{sales.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members eq %q`, u[1]), []string{sales.ID(), ops.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members.value eq %q`, u[0]), []string{sales.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members[value eq %q]`, u[3]), nil},
		{scim.GroupResourceType, fmt.Sprintf(`id eq %q and members eq %q`, sales.ID(), u[1]), []string{sales.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`id eq %q and members eq %q`, ops.ID(), u[0]), nil},
		{scim.GroupResourceType, fmt.Sprintf(`members.value eq %q and members.value eq %q`, u[0], u[1]), []string{sales.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members[value eq %q and type eq "Group"]`, sales.ID()), []string{ops.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members[value eq %q and type eq "Group"]`, u[1]), nil},
		{scim.GroupResourceType, fmt.Sprintf(`members[value eq %q or value eq %q]`, u[0], sales.ID()), []string{sales.ID(), ops.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`members.value ne %q`, u[0]), []string{ops.ID(), empty.ID()}},
		{scim.GroupResourceType, fmt.Sprintf(`not (members eq %q) and displayName sw "s"`, u[1]), nil},
		{scim.GroupResourceType, `members[type eq "Group"]`, []string{ops.ID()}},
		{scim.GroupResourceType, `members.display eq "SALES"`, []string{ops.ID()}},
		{scim.GroupResourceType, `members pr`, []string{sales.ID(), ops.ID()}},
		{scim.GroupResourceType, `members eq null`, []string{empty.ID()}},
		{scim.GroupResourceType, `displayName co "e"`, []string{sales.ID(), empty.ID()}},
	}
	if upper := strings.ToUpper(u[0]); upper != u[0] { // member values are caseExact
		tests = append(tests, struct {
			rt     *scim.ResourceType
			filter string
			want   []string
		}{scim.GroupResourceType, fmt.Sprintf(`members eq %q`, upper), nil})
	}
	for _, tt := range tests {
		f, err := scim.ParseFilter(tt.rt, tt.filter)
		if err != nil {
			t.Fatalf("%s: %v", tt.filter, err)
		}
		page, err := b.List(ctx, Tenant, tt.rt, scim.Query{Filter: f, StartIndex: 1, Count: 100})
		if err != nil {
			t.Errorf("%s %s: %v", tt.rt.Name, tt.filter, err)
			continue
		}
		var got []string
		for _, r := range page.Resources {
			got = append(got, r.ID())
			if r.Type == scim.GroupResourceType && r.Attrs["members"] != nil {
				t.Errorf("%s: List returned a group with members", tt.filter)
			}
		}
		if page.Total != len(tt.want) || !slices.Equal(got, tt.want) {
			t.Errorf("%s %s: total %d, %v; want %v", tt.rt.Name, tt.filter, page.Total, got, tt.want)
		}
	}
}

func testPagination(t *testing.T, b scim.Backend) {
	var ids []string
	for i := range 12 {
		ids = append(ids, create(t, b, User(t, fmt.Sprintf(`"userName":"u%02d","title":"t%d"`, i, i%2))).ID())
	}
	list := func(start, count int, filter string) ([]string, int) {
		t.Helper()
		q := scim.Query{StartIndex: start, Count: count}
		if filter != "" {
			f, err := scim.ParseFilter(scim.UserResourceType, filter)
			if err != nil {
				t.Fatal(err)
			}
			q.Filter = f
		}
		page, err := b.List(ctx, Tenant, scim.UserResourceType, q)
		if err != nil {
			t.Fatalf("List %+v: %v", q, err)
		}
		if page.Resources == nil {
			t.Fatalf("List %+v: Resources is nil, want an empty list", q)
		}
		out := []string{}
		for _, r := range page.Resources {
			out = append(out, r.ID())
		}
		return out, page.Total
	}
	// Without sortBy the order is stable: the pages fit together and hold
	// every resource once.
	var all []string
	for start := 1; start <= 12; start += 5 {
		page, total := list(start, 5, "")
		if total != 12 {
			t.Fatalf("total %d, want 12", total)
		}
		all = append(all, page...)
	}
	if !slices.Equal(sorted(all...), sorted(ids...)) {
		t.Fatalf("pages hold %v, want each of %v once", all, ids)
	}
	if again, _ := list(1, 12, ""); !slices.Equal(again, all) {
		t.Fatalf("one page %v differs from the pages %v", again, all)
	}
	if page, total := list(1, 0, ""); len(page) != 0 || total != 12 {
		t.Fatalf("count 0: %d resources, total %d; want the total only", len(page), total)
	}
	if page, total := list(13, 5, ""); len(page) != 0 || total != 12 {
		t.Fatalf("start past the end: %v, total %d", page, total)
	}
	if page, total := list(0, 2, ""); len(page) != 2 || total != 12 || page[0] != all[0] {
		t.Fatalf("start 0 counts as 1: %v, total %d", page, total)
	}
	odd, total := list(2, 3, `title eq "t1"`)
	if total != 6 || len(odd) != 3 {
		t.Fatalf("filtered page: %v, total %d", odd, total)
	}
	// Creating more keeps earlier pages as they were.
	create(t, b, User(t, `"userName":"later"`))
	if first, _ := list(1, 5, ""); !slices.Equal(first, all[:5]) {
		t.Fatalf("a create moved the first page: %v, was %v", first, all[:5])
	}
}

func testSort(t *testing.T, b scim.Backend) {
	names := []string{"delta", "Alpha", "charlie", "", "bravo"}
	byName := map[string]string{}
	for i, n := range names {
		body := fmt.Sprintf(`"userName":"u%d"`, i)
		if n != "" {
			body += fmt.Sprintf(`,"displayName":%q`, n)
		}
		byName[n] = create(t, b, User(t, body)).ID()
	}
	sortBy, err := scim.UserResourceType.ParsePath("displayName")
	if err != nil {
		t.Fatal(err)
	}
	sortList := func(desc bool, start, count, limit int) ([]string, error) {
		page, err := b.List(ctx, Tenant, scim.UserResourceType, scim.Query{SortBy: &sortBy, Descending: desc, StartIndex: start, Count: count, SortLimit: limit})
		var out []string
		for _, r := range page.Resources {
			out = append(out, r.ID())
		}
		return out, err
	}
	want := func(ns ...string) []string {
		var out []string
		for _, n := range ns {
			out = append(out, byName[n])
		}
		return out
	}
	// Case-insensitive; missing values last ascending, first descending
	// (RFC 7644 §3.4.2.3).
	if got, err := sortList(false, 1, 10, 0); err != nil || !slices.Equal(got, want("Alpha", "bravo", "charlie", "delta", "")) {
		t.Fatalf("ascending: %v, %v", got, err)
	}
	if got, err := sortList(true, 1, 10, 0); err != nil || !slices.Equal(got, want("", "delta", "charlie", "bravo", "Alpha")) {
		t.Fatalf("descending: %v, %v", got, err)
	}
	if got, err := sortList(false, 2, 2, 0); err != nil || !slices.Equal(got, want("bravo", "charlie")) {
		t.Fatalf("ascending, second page: %v, %v", got, err)
	}
	// More matches than SortLimit: tooMany; exactly SortLimit: sorted.
	if got, err := sortList(false, 1, 1, 5); err != nil || !slices.Equal(got, want("Alpha")) {
		t.Fatalf("at the sort limit: %v, %v", got, err)
	}
	_, err = sortList(false, 1, 1, 4)
	wantErr(t, err, scim.ErrTooMany, "sorting more matches than the limit")
	_, err = sortList(false, 1, 0, 4)
	wantErr(t, err, scim.ErrTooMany, "counting, with sortBy, more matches than the limit")
	f, err := scim.ParseFilter(scim.UserResourceType, `displayName pr`)
	if err != nil {
		t.Fatal(err)
	}
	page, err := b.List(ctx, Tenant, scim.UserResourceType, scim.Query{Filter: f, SortBy: &sortBy, Descending: true, StartIndex: 1, Count: 10, SortLimit: 4})
	if err != nil || page.Total != 4 || page.Resources[0].ID() != byName["delta"] {
		t.Fatalf("a filter that keeps the matches within the limit: %+v, %v", page, err)
	}
}

func testTenants(t *testing.T, b scim.Backend) {
	u := create(t, b, User(t, `"userName":"ann"`))
	// The same name is free in another tenant, and ids do not cross.
	other, err := b.Create(ctx, OtherTenant, User(t, `"userName":"ann"`))
	if err != nil {
		t.Fatalf("the same userName in another tenant: %v", err)
	}
	_, err = b.Get(ctx, OtherTenant, scim.UserResourceType, u.ID())
	wantErr(t, err, scim.ErrNotFound, "Get of another tenant's user")
	_, err = b.Delete(ctx, OtherTenant, scim.UserResourceType, u.ID(), scim.Precondition{})
	wantErr(t, err, scim.ErrNotFound, "Delete of another tenant's user")
	_, err = b.Create(ctx, OtherTenant, Group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.ID())))
	wantErr(t, err, scim.ErrInvalidValue, "a member from another tenant")
	page, err := b.List(ctx, OtherTenant, scim.UserResourceType, scim.Query{StartIndex: 1, Count: 10})
	if err != nil || page.Total != 1 || page.Resources[0].ID() != other.Resource.ID() {
		t.Fatalf("the other tenant's list: %+v, %v", page, err)
	}
}

func testConcurrency(t *testing.T, b scim.Backend) {
	// Twenty parallel creates of one userName: one wins.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		u := User(t, `"userName":"same@x.com"`) // on the test goroutine: User may call t.Fatal
		wg.Go(func() {
			_, errs[i] = b.Create(ctx, Tenant, u)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, scim.ErrUniqueness):
			t.Fatalf("a losing create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of 20 parallel creates of one userName succeeded", won)
	}
	// Ten parallel member additions to one group: none is lost.
	g := create(t, b, Group(t, `"displayName":"g"`))
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = create(t, b, User(t, fmt.Sprintf(`"userName":"m%d"`, i))).ID()
	}
	for _, id := range ids {
		wg.Go(func() {
			if _, err := members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(id)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := values(allMembers(t, b, g.ID())); !slices.Equal(got, sorted(ids...)) {
		t.Fatalf("after parallel additions: %v", got)
	}
}

// testEventIDs: what a backend reports as produced is unique per write,
// and a write that changes nothing produces nothing.
func testEventIDs(t *testing.T, b scim.Backend) {
	seen := map[string]bool{}
	record := func(res scim.WriteResult, err error) scim.WriteResult {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range res.EventIDs {
			if id == "" || seen[id] {
				t.Fatalf("event id %q reported twice or empty", id)
			}
			seen[id] = true
		}
		return res
	}
	u := record(b.Create(ctx, Tenant, User(t, `"userName":"ann"`))).Resource
	g := record(b.Create(ctx, Tenant, Group(t, fmt.Sprintf(`"displayName":"g","members":[{"value":%q}]`, u.ID())))).Resource
	record(patch(b, scim.UserResourceType, u.ID(), `{"op":"replace","path":"title","value":"x"}`))
	if res := record(patch(b, scim.UserResourceType, u.ID(), `{"op":"replace","path":"title","value":"x"}`)); len(res.EventIDs) != 0 {
		t.Fatalf("a no-op update reported %v", res.EventIDs)
	}
	if res := record(members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(u.ID())})); len(res.EventIDs) != 0 {
		t.Fatalf("adding a present member reported %v", res.EventIDs)
	}
	record(b.Delete(ctx, Tenant, scim.UserResourceType, u.ID(), scim.Precondition{}))
	record(b.Delete(ctx, Tenant, scim.GroupResourceType, g.ID(), scim.Precondition{}))
}

// testStoredPages: a page a backend gives as stored resources (when the
// query lets it) holds what the page of decoded resources holds, in the
// same order and with the same total, whatever the backend chose.
func testStoredPages(t *testing.T, b scim.Backend) {
	ann := create(t, b, User(t, `"userName":"Ann@Example.com","externalId":"e-1","name":{"givenName":"Ann"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales"},"urn:example:custom:2.0:User":{"z":[1,{"b":true,"a":null}]}`))
	create(t, b, User(t, `"userName":"bob","externalId":"E-1"`))
	g := create(t, b, Group(t, `"displayName":"Sales"`))
	if _, err := members(b, g.ID(), scim.MemberOp{Kind: scim.AddMembers, Members: memberList(ann.ID())}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter       string
		start, count int
	}{
		{`userName eq "ann@example.com"`, 1, 10},
		{`userName eq "ANN@EXAMPLE.COM"`, 1, 10},
		{`externalId eq "e-1"`, 1, 10},
		{`externalId eq "E-1"`, 1, 10},
		{`userName eq "nobody"`, 1, 10},
		{`userName eq "ann@example.com"`, 1, 0},
		{`userName eq "ann@example.com"`, 2, 10},
		{`userName eq "ann@example.com" and active pr`, 1, 10},
		{`userName sw "ann"`, 1, 10},
	} {
		f, err := scim.ParseFilter(scim.UserResourceType, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		q := scim.Query{Filter: f, StartIndex: tc.start, Count: tc.count}
		plain, err := b.List(ctx, Tenant, scim.UserResourceType, q)
		if err != nil {
			t.Fatal(err)
		}
		q.Stored = true
		stored, err := b.List(ctx, Tenant, scim.UserResourceType, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(stored.Resources) > 0 && len(stored.Stored) > 0 {
			t.Errorf("%s: a page of both decoded and stored resources", tc.filter)
		}
		var got []string
		for _, r := range stored.Resources {
			got = append(got, string(r.AppendJSON(nil)))
		}
		for _, s := range stored.Stored {
			r, err := s.Resource()
			if err != nil {
				t.Fatalf("%s: %v", tc.filter, err)
			}
			if s.ID != r.ID() || s.Type != scim.UserResourceType {
				t.Errorf("%s: stored %s %q holds %q", tc.filter, s.Type.Name, s.ID, r.ID())
			}
			got = append(got, string(r.AppendJSON(nil)))
		}
		var want []string
		for _, r := range plain.Resources {
			want = append(want, string(r.AppendJSON(nil)))
		}
		if stored.Total != plain.Total || !slices.Equal(got, want) {
			t.Errorf("%s (start %d, count %d): total %d\n%s\nwant total %d\n%s", tc.filter, tc.start, tc.count, stored.Total, got, plain.Total, want)
		}
	}
}

// testListedExtensions stores a user whose body lists in schemas
// extensions this service does not know, in namespaces Okta lets an admin
// choose: each is kept under exactly the URN sent ("…:user:custom" is not
// cut at ":user:"), a PATCH names it by that URN, and a replace changes it.
func testListedExtensions(t *testing.T, b scim.Backend) {
	const (
		space = "urn:ietf:params:scim:schemas:custom:Space"
		okta  = "urn:okta:app:1.0:user:custom"
	)
	body := func(custom1, favColor string) *scim.Resource {
		r, err := scim.ParseResource(scim.UserResourceType, []byte(`{"schemas":["`+scim.UserSchema+`","`+space+`","`+okta+`"],"userName":"ann",`+
			`"`+space+`":{"custom1":"`+custom1+`"},"`+okta+`":{"favColor":"`+favColor+`"}}`))
		if err != nil {
			t.Fatalf("parsing a user with listed extensions: %v", err)
		}
		return r
	}
	check := func(what string, r *scim.Resource, custom1, favColor string) {
		t.Helper()
		want := `"` + space + `":{"custom1":"` + custom1 + `"},"` + okta + `":{"favColor":"` + favColor + `"}}`
		if got := string(r.AppendJSON(nil)); !strings.HasSuffix(got, want) || !strings.Contains(got, `"schemas":["`+scim.UserSchema+`","`+space+`","`+okta+`"]`) {
			t.Fatalf("%s: %s, want it to end %s", what, got, want)
		}
	}
	u := create(t, b, body("v", "blue"))
	check("Create", u, "v", "blue")
	check("Get", get(t, b, scim.UserResourceType, u.ID()), "v", "blue")
	p := mustPatch(t, b, scim.UserResourceType, u.ID(), `{"op":"replace","path":"`+okta+`:favColor","value":"red"},{"op":"replace","value":{"`+space+`:custom1":"w"}}`)
	check("PATCH", p, "w", "red")
	in := body("x", "green")
	if _, err := b.Update(ctx, Tenant, scim.UserResourceType, u.ID(), func(cur *scim.Resource) (*scim.Update, error) {
		next := in.Clone()
		next.Attrs["id"], next.Attrs["meta"] = cur.Attrs["id"], cur.Attrs["meta"]
		return &scim.Update{Resource: next, Changes: scim.Diff(cur, next)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	check("Get after a replace", get(t, b, scim.UserResourceType, u.ID()), "x", "green")
}
