// SPDX-License-Identifier: Apache-2.0

package scimtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/scimrelay/scimrelay/scim"
)

// Memory is an in-memory scim.Backend and scim.Authenticator: a second,
// deliberately plain implementation of the Backend contract (the relay's
// bbolt store is the first), for tests of code that serves or calls a
// Backend. It passes RunBackendTests. Everything lives in maps behind one
// mutex; nothing persists and nothing is emitted (WriteResult.EventIDs
// stays empty).
type Memory struct {
	mu      sync.Mutex
	tokens  map[string]string // tenant → its one valid token
	tenants map[string]*memTenant
	nextID  int
}

var (
	_ scim.Backend       = (*Memory)(nil)
	_ scim.Authenticator = (*Memory)(nil)
)

// memTenant is one tenant's resources. Ids are unique across resource
// types, and sort in creation order.
type memTenant struct {
	records map[string]*memRecord
	members map[string]map[string]scim.Member // group id → member value → member
}

type memRecord struct {
	res     *scim.Resource // without members or groups
	version int
}

// NewMemory returns an empty backend serving one tenant per key of tokens,
// each accepting the token it maps to. Users are unique by userName.
func NewMemory(tokens map[string]string) *Memory {
	m := &Memory{tokens: maps.Clone(tokens), tenants: map[string]*memTenant{}}
	for name := range tokens {
		m.tenants[name] = &memTenant{records: map[string]*memRecord{}, members: map[string]map[string]scim.Member{}}
	}
	return m
}

// Authenticate accepts the tenant's token.
func (m *Memory) Authenticate(_ context.Context, tenant, token string) error {
	want, ok := m.tokens[tenant]
	switch {
	case !ok:
		return scim.Errorf(scim.ErrNotFound, "no tenant %q", tenant)
	case token != want:
		return scim.Errorf(scim.ErrUnauthorized, "invalid bearer token")
	}
	return nil
}

// AuthenticateBasic accepts the user "<tenant>-client" with the tenant's
// token as password.
func (m *Memory) AuthenticateBasic(ctx context.Context, tenant, user, password string) error {
	if _, ok := m.tokens[tenant]; ok && user != tenant+"-client" {
		return scim.Errorf(scim.ErrUnauthorized, "invalid client credentials")
	}
	return m.Authenticate(ctx, tenant, password)
}

func (m *Memory) tenant(name string) (*memTenant, error) {
	t, ok := m.tenants[name]
	if !ok {
		return nil, scim.Errorf(scim.ErrNotFound, "no tenant %q", name)
	}
	return t, nil
}

// target returns a tenant and one of its resources, or ErrNotFound.
func (m *Memory) target(tenant string, rt *scim.ResourceType, id string) (*memTenant, *memRecord, error) {
	t, err := m.tenant(tenant)
	if err != nil {
		return nil, nil, err
	}
	rec, err := t.record(rt, id)
	return t, rec, err
}

// record returns a stored resource of type rt, or ErrNotFound.
func (t *memTenant) record(rt *scim.ResourceType, id string) (*memRecord, error) {
	rec, ok := t.records[id]
	if !ok || rec.res.Type != rt {
		return nil, scim.Errorf(scim.ErrNotFound, "%s %s not found", rt.Name, id)
	}
	return rec, nil
}

// Create stores a new resource and its initial members.
func (m *Memory) Create(_ context.Context, tenant string, r *scim.Resource) (scim.WriteResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.tenant(tenant)
	if err != nil {
		return scim.WriteResult{}, err
	}
	res := r.Clone()
	var initial []scim.Member
	if res.Type == scim.GroupResourceType {
		if initial, err = scim.MembersFromValue(res.Attrs["members"]); err != nil {
			return scim.WriteResult{}, err
		}
	}
	delete(res.Attrs, "members")
	delete(res.Attrs, "groups")
	m.nextID++
	id := fmt.Sprintf("%08d-0000-7000-8000-000000000000", m.nextID)
	res.Attrs["id"] = id
	if err := t.check(res); err != nil {
		return scim.WriteResult{}, err
	}
	after, err := t.plan(id, nil, []scim.MemberOp{{Kind: scim.AddMembers, Members: initial}})
	if err != nil {
		return scim.WriteResult{}, err
	}
	now := time.Now()
	res.SetMeta(scim.Meta{Created: now, LastModified: now, Version: version(1)})
	t.records[id] = &memRecord{res: res, version: 1}
	if res.Type == scim.GroupResourceType {
		t.members[id] = after
	}
	return scim.WriteResult{Resource: t.withGroups(res)}, nil
}

func version(n int) string { return fmt.Sprintf(`W/"%d"`, n) }

// check enforces the required name and its uniqueness on a resource about
// to be stored.
func (t *memTenant) check(r *scim.Resource) error {
	attr := "userName"
	if r.Type == scim.GroupResourceType {
		attr = "displayName"
	}
	name := r.String(attr)
	if name == "" {
		return scim.Errorf(scim.ErrInvalidValue, "attribute %s is required", attr)
	}
	for id, o := range t.records {
		if id != r.ID() && o.res.Type == r.Type && strings.EqualFold(o.res.String(attr), name) {
			return scim.Errorf(scim.ErrUniqueness, "%s %q is already taken", attr, name)
		}
	}
	return nil
}

// plan applies membership operations to a copy of a group's members and
// returns the result, checking every member added.
func (t *memTenant) plan(groupID string, cur map[string]scim.Member, ops []scim.MemberOp) (map[string]scim.Member, error) {
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]scim.Member{}
	}
	for _, op := range ops {
		switch op.Kind {
		case scim.AddMembers:
			for _, mb := range op.Members {
				if _, ok := next[mb.Value]; ok {
					continue
				}
				resolved, err := t.resolve(groupID, mb)
				if err != nil {
					return nil, err
				}
				next[mb.Value] = resolved
			}
		case scim.RemoveMembers:
			for _, mb := range op.Members {
				delete(next, mb.Value)
			}
		case scim.RemoveAllMembers:
			clear(next)
		case scim.RemoveMatchingMembers:
			if op.Filter == nil {
				return nil, errors.New("removing matching members: the operation has no filter")
			}
			maps.DeleteFunc(next, func(_ string, mb scim.Member) bool { return op.Filter.MatchValue(memberObject(mb)) })
		default:
			return nil, fmt.Errorf("unknown membership operation %d", op.Kind)
		}
	}
	return next, nil
}

// resolve checks that a member is a User or another Group of the tenant
// and fills in its type, and its name when the client sent none.
func (t *memTenant) resolve(groupID string, mb scim.Member) (scim.Member, error) {
	if mb.Value == groupID {
		return mb, scim.Errorf(scim.ErrInvalidValue, "group %s cannot be a member of itself", groupID)
	}
	rec, ok := t.records[mb.Value]
	if !ok {
		return mb, scim.Errorf(scim.ErrInvalidValue, "member %q is not the id of a User or Group in this tenant", mb.Value)
	}
	mb.Type, mb.Ref = rec.res.Type.Name, ""
	if mb.Display == "" {
		mb.Display = cmp.Or(rec.res.String("displayName"), rec.res.String("userName"))
	}
	return mb, nil
}

func memberObject(mb scim.Member) map[string]any {
	return map[string]any{"value": mb.Value, "display": mb.Display, "type": mb.Type}
}

// Get returns a copy of a resource, a User with its groups.
func (m *Memory) Get(_ context.Context, tenant string, rt *scim.ResourceType, id string) (*scim.Resource, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rec, err := m.target(tenant, rt, id)
	if err != nil {
		return nil, err
	}
	return t.withGroups(rec.res), nil
}

// groupsOf lists the groups memberID is in, in id order.
func (t *memTenant) groupsOf(memberID string) []string {
	var out []string
	for gid, ms := range t.members {
		if _, ok := ms[memberID]; ok {
			out = append(out, gid)
		}
	}
	slices.Sort(out)
	return out
}

func groupObject(t *memTenant, gid string) map[string]any {
	return map[string]any{"value": gid, "display": t.records[gid].res.String("displayName"), "type": "direct"}
}

// withGroups returns a copy of r, a User with its read-only groups attribute.
func (t *memTenant) withGroups(r *scim.Resource) *scim.Resource {
	out := r.Clone()
	if r.Type != scim.UserResourceType {
		return out
	}
	var groups []any
	for _, gid := range t.groupsOf(r.ID()) {
		groups = append(groups, groupObject(t, gid))
	}
	if groups != nil {
		out.Attrs["groups"] = groups
	}
	return out
}

// elements gives a filter the members of a group or the groups of a user.
func (t *memTenant) elements(r *scim.Resource) scim.Elements {
	if r.Type == scim.GroupResourceType {
		ms := t.members[r.ID()]
		return scim.Elements{
			Attr: "members",
			Lookup: func(value string) (map[string]any, error) {
				if mb, ok := ms[value]; ok {
					return memberObject(mb), nil
				}
				return nil, nil
			},
			Each: func(yield func(map[string]any) bool) error {
				for _, mb := range ms {
					if !yield(memberObject(mb)) {
						break
					}
				}
				return nil
			},
		}
	}
	return scim.Elements{
		Attr: "groups",
		Lookup: func(value string) (map[string]any, error) {
			if _, ok := t.members[value][r.ID()]; ok {
				return groupObject(t, value), nil
			}
			return nil, nil
		},
		Each: func(yield func(map[string]any) bool) error {
			for _, gid := range t.groupsOf(r.ID()) {
				if !yield(groupObject(t, gid)) {
					break
				}
			}
			return nil
		},
	}
}

// List filters, sorts and pages the resources of rt, in id order unless
// sorted.
func (m *Memory) List(_ context.Context, tenant string, rt *scim.ResourceType, q scim.Query) (scim.Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.tenant(tenant)
	if err != nil {
		return scim.Page{}, err
	}
	ids := slices.Sorted(maps.Keys(t.records))
	var matches []*scim.Resource
	for _, id := range ids {
		r := t.records[id].res
		if r.Type != rt {
			continue
		}
		ok := q.Filter == nil
		if !ok {
			if ok, err = q.Filter.MatchElements(r, t.elements(r)); err != nil {
				return scim.Page{}, err
			}
		}
		if ok {
			matches = append(matches, r)
		}
	}
	if q.SortBy != nil {
		if q.SortLimit > 0 && len(matches) > q.SortLimit {
			return scim.Page{}, scim.Errorf(scim.ErrTooMany, "%d %ss match; sortBy sorts at most %d", len(matches), rt.Name, q.SortLimit)
		}
		sortResources(matches, *q.SortBy, q.Descending)
	}
	page := scim.Page{Total: len(matches), Resources: []*scim.Resource{}}
	for i := max(q.StartIndex, 1) - 1; i < len(matches) && len(page.Resources) < q.Count; i++ {
		page.Resources = append(page.Resources, t.withGroups(matches[i]))
	}
	return page, nil
}

// sortResources orders resources by the value at p as scim.SortKey
// compares them; ties in id order.
func sortResources(list []*scim.Resource, p scim.AttrPath, descending bool) {
	keys := make(map[*scim.Resource]scim.SortKey, len(list))
	for _, r := range list {
		keys[r] = scim.SortKeyOf(r, p)
	}
	slices.SortStableFunc(list, func(a, b *scim.Resource) int {
		return cmp.Or(keys[a].Compare(keys[b], descending), strings.Compare(a.ID(), b.ID()))
	})
}

// Update applies fn to a stored resource; only a net change bumps the version.
func (m *Memory) Update(_ context.Context, tenant string, rt *scim.ResourceType, id string, fn scim.UpdateFunc) (scim.WriteResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rec, err := m.target(tenant, rt, id)
	if err != nil {
		return scim.WriteResult{}, err
	}
	u, err := fn(rec.res.Clone())
	if err != nil {
		return scim.WriteResult{}, err
	}
	if u == nil || u.Resource == nil || u.Resource.Attrs == nil {
		return scim.WriteResult{}, fmt.Errorf("updating %s %s: the update function returned no resource", rt.Name, id)
	}
	next := &scim.Resource{Type: rt, Attrs: u.Resource.Clone().Attrs}
	next.Attrs["id"], next.Attrs["meta"] = id, rec.res.Attrs["meta"]
	delete(next.Attrs, "members")
	delete(next.Attrs, "groups")
	if len(u.Changes) > 0 {
		if err := t.check(next); err != nil {
			return scim.WriteResult{}, err
		}
	}
	cur := t.members[id]
	after := cur
	if rt == scim.GroupResourceType && len(u.Members) > 0 {
		if after, err = t.plan(id, cur, u.Members); err != nil {
			return scim.WriteResult{}, err
		}
	}
	membersChanged := !maps.EqualFunc(cur, after, func(a, b scim.Member) bool { return true })
	if len(u.Changes) == 0 && !membersChanged {
		return scim.WriteResult{Resource: t.withGroups(rec.res)}, nil
	}
	rec.res = next
	rec.touch()
	if rt == scim.GroupResourceType {
		t.members[id] = after
	}
	return scim.WriteResult{Resource: t.withGroups(rec.res)}, nil
}

// touch bumps a record's version and lastModified.
func (rec *memRecord) touch() {
	rec.version++
	meta := rec.res.Meta()
	meta.LastModified, meta.Version = time.Now(), version(rec.version)
	rec.res.SetMeta(meta)
}

// Delete removes a resource and its memberships in both directions; each
// group it leaves gets a new version.
func (m *Memory) Delete(_ context.Context, tenant string, rt *scim.ResourceType, id string, ifMatch scim.Precondition) (scim.WriteResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, rec, err := m.target(tenant, rt, id)
	if err != nil {
		return scim.WriteResult{}, err
	}
	if err := ifMatch.Check(rec.res); err != nil {
		return scim.WriteResult{}, err
	}
	for _, gid := range t.groupsOf(id) {
		delete(t.members[gid], id)
		t.records[gid].touch()
	}
	delete(t.members, id)
	delete(t.records, id)
	return scim.WriteResult{}, nil
}

// Members pages through a group's members in value order.
func (m *Memory) Members(_ context.Context, tenant, groupID, version, after string, limit int) ([]scim.Member, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.tenant(tenant)
	if err != nil {
		return nil, err
	}
	rec, err := t.record(scim.GroupResourceType, groupID)
	switch {
	case version != "" && (err != nil || rec.res.Meta().Version != version):
		return nil, scim.ErrChanged
	case err != nil:
		return nil, err
	}
	out := []scim.Member{}
	for _, value := range slices.Sorted(maps.Keys(t.members[groupID])) {
		if value <= after && after != "" {
			continue
		}
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, t.members[groupID][value])
	}
	return out, nil
}
