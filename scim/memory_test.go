// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// memBackend is a small in-memory Backend and Authenticator for the handler
// tests. It follows the Backend contract (memberships apart from groups,
// uniqueness of userName and displayName, versions) without persistence.
type memBackend struct {
	mu      sync.Mutex
	tokens  map[string]string // tenant → its one valid token
	tenants map[string]*memTenant
	nextID  int
}

type memTenant struct {
	res     map[string]*Resource // "User/<id>" or "Group/<id>"
	order   []string             // keys in creation order
	members map[string][]Member  // group id → members in insertion order
	version map[string]int
}

var (
	_ Backend       = (*memBackend)(nil)
	_ Authenticator = (*memBackend)(nil)
)

func newMemBackend(tokens map[string]string) *memBackend {
	b := &memBackend{tokens: tokens, tenants: map[string]*memTenant{}}
	for t := range tokens {
		b.tenants[t] = &memTenant{res: map[string]*Resource{}, members: map[string][]Member{}, version: map[string]int{}}
	}
	return b
}

func (b *memBackend) Authenticate(_ context.Context, tenant, token string) error {
	want, ok := b.tokens[tenant]
	if !ok {
		return Errorf(ErrNotFound, "no tenant %s", tenant)
	}
	if token != want {
		return Errorf(ErrUnauthorized, "invalid bearer token")
	}
	return nil
}

// AuthenticateBasic accepts "<tenant>-client" with the tenant's token as password.
func (b *memBackend) AuthenticateBasic(ctx context.Context, tenant, user, password string) error {
	if user != tenant+"-client" {
		if _, ok := b.tokens[tenant]; ok {
			return Errorf(ErrUnauthorized, "invalid client credentials")
		}
	}
	return b.Authenticate(ctx, tenant, password)
}

func (b *memBackend) tenant(name string) (*memTenant, error) {
	t, ok := b.tenants[name]
	if !ok {
		return nil, Errorf(ErrNotFound, "no tenant %s", name)
	}
	return t, nil
}

func key(rt *ResourceType, id string) string { return rt.Name + "/" + id }

func (b *memBackend) Create(_ context.Context, tenant string, r *Resource) (*Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return nil, err
	}
	r = r.Clone()
	members, err := MembersFromValue(r.Attrs["members"])
	if err != nil {
		return nil, err
	}
	delete(r.Attrs, "members")
	if err := t.checkUnique(r, ""); err != nil {
		return nil, err
	}
	if err := t.checkMembers(members); err != nil {
		return nil, err
	}
	b.nextID++
	id := fmt.Sprintf("%08d-0000-7000-8000-000000000000", b.nextID)
	r.Attrs["id"] = id
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.SetMeta(Meta{Created: now, LastModified: now, Version: `W/"1"`})
	k := key(r.Type, id)
	t.res[k], t.version[k] = r, 1
	t.order = append(t.order, k)
	if r.Type == GroupResourceType {
		t.apply(id, []MemberOp{{Kind: AddMembers, Members: members}})
	}
	return r.Clone(), nil
}

func (t *memTenant) checkUnique(r *Resource, self string) error {
	attr := "userName"
	if r.Type == GroupResourceType {
		attr = "displayName"
	}
	for k, o := range t.res {
		if o.Type == r.Type && k != self && strings.EqualFold(o.String(attr), r.String(attr)) {
			return Errorf(ErrUniqueness, "%s %q is already taken", attr, r.String(attr))
		}
	}
	return nil
}

func (t *memTenant) checkMembers(members []Member) error {
	for _, m := range members {
		if t.res[key(UserResourceType, m.Value)] == nil && t.res[key(GroupResourceType, m.Value)] == nil {
			return Errorf(ErrInvalidValue, "member %s is not a User or Group of this tenant", m.Value)
		}
	}
	return nil
}

// apply applies member ops and reports whether membership changed.
func (t *memTenant) apply(groupID string, ops []MemberOp) bool {
	changed := false
	for _, op := range ops {
		cur := t.members[groupID]
		switch op.Kind {
		case AddMembers:
			for _, m := range op.Members {
				if indexMember(cur, m.Value) < 0 {
					m.Type = "User"
					if t.res[key(GroupResourceType, m.Value)] != nil {
						m.Type = "Group"
					}
					cur = append(cur, m)
					changed = true
				}
			}
		case RemoveMembers:
			for _, m := range op.Members {
				if i := indexMember(cur, m.Value); i >= 0 {
					cur = append(cur[:i:i], cur[i+1:]...)
					changed = true
				}
			}
		case RemoveAllMembers:
			changed = changed || len(cur) > 0
			cur = nil
		case RemoveMatchingMembers:
			kept := cur[:0:0]
			for _, m := range cur {
				if op.Filter.MatchValue(map[string]any{"value": m.Value, "display": m.Display, "type": m.Type}) {
					changed = true
					continue
				}
				kept = append(kept, m)
			}
			cur = kept
		}
		t.members[groupID] = cur
	}
	return changed
}

func indexMember(list []Member, value string) int {
	for i, m := range list {
		if m.Value == value {
			return i
		}
	}
	return -1
}

func (b *memBackend) Get(_ context.Context, tenant string, rt *ResourceType, id string) (*Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return nil, err
	}
	r, ok := t.res[key(rt, id)]
	if !ok {
		return nil, Errorf(ErrNotFound, "%s %s not found", rt.Name, id)
	}
	return t.withGroups(r), nil
}

// withGroups returns a copy of a User with its read-only groups attribute.
func (t *memTenant) withGroups(r *Resource) *Resource {
	r = r.Clone()
	if r.Type != UserResourceType {
		return r
	}
	var groups []any
	for _, k := range t.order {
		g := t.res[k]
		if g == nil || g.Type != GroupResourceType {
			continue
		}
		if indexMember(t.members[g.ID()], r.ID()) >= 0 {
			groups = append(groups, map[string]any{"value": g.ID(), "display": g.String("displayName"), "type": "direct"})
		}
	}
	if groups != nil {
		r.Attrs["groups"] = groups
	}
	return r
}

func (b *memBackend) List(_ context.Context, tenant string, rt *ResourceType, q Query) (Page, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return Page{}, err
	}
	var matches []*Resource
	for _, k := range t.order {
		r := t.res[k]
		if r == nil || r.Type != rt {
			continue
		}
		r = t.withGroups(r)
		if q.Filter != nil && q.Filter.References("members") {
			var ms []any
			for _, m := range t.members[r.ID()] {
				ms = append(ms, map[string]any{"value": m.Value, "type": m.Type})
			}
			r.Attrs["members"] = ms
		}
		if q.Filter == nil || q.Filter.Match(r) {
			delete(r.Attrs, "members")
			matches = append(matches, r)
		}
	}
	if q.SortBy != nil {
		sort.SliceStable(matches, func(i, j int) bool {
			a, _ := lookupAttr(matches[i].Attrs, *q.SortBy).(string)
			c, _ := lookupAttr(matches[j].Attrs, *q.SortBy).(string)
			if q.Descending {
				return strings.ToLower(a) > strings.ToLower(c)
			}
			return strings.ToLower(a) < strings.ToLower(c)
		})
	}
	page := Page{Total: len(matches), Resources: []*Resource{}}
	start := q.StartIndex - 1
	for i := start; i < len(matches) && len(page.Resources) < q.Count; i++ {
		page.Resources = append(page.Resources, matches[i])
	}
	return page, nil
}

func (b *memBackend) Update(_ context.Context, tenant string, rt *ResourceType, id string, fn UpdateFunc) (*Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return nil, err
	}
	k := key(rt, id)
	cur, ok := t.res[k]
	if !ok {
		return nil, Errorf(ErrNotFound, "%s %s not found", rt.Name, id)
	}
	u, err := fn(cur.Clone())
	if err != nil {
		return nil, err
	}
	if err := t.checkUnique(u.Resource, k); err != nil {
		return nil, err
	}
	for _, op := range u.Members {
		if op.Kind == AddMembers {
			if err := t.checkMembers(op.Members); err != nil {
				return nil, err
			}
		}
	}
	changed := t.apply(id, u.Members) || len(u.Changes) > 0
	next := u.Resource.Clone()
	if changed {
		t.version[k]++
		m := cur.Meta()
		m.LastModified = m.LastModified.Add(time.Second)
		m.Version = fmt.Sprintf(`W/"%d"`, t.version[k])
		next.SetMeta(m)
		t.res[k] = next
	} else {
		next = cur
	}
	return t.withGroups(next), nil
}

func (b *memBackend) Delete(_ context.Context, tenant string, rt *ResourceType, id, ifMatch string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return err
	}
	k := key(rt, id)
	cur, ok := t.res[k]
	if !ok {
		return Errorf(ErrNotFound, "%s %s not found", rt.Name, id)
	}
	if err := CheckIfMatch(ifMatch, cur); err != nil {
		return err
	}
	delete(t.res, k)
	delete(t.members, id)
	for g := range t.members {
		t.apply(g, []MemberOp{{Kind: RemoveMembers, Members: []Member{{Value: id}}}})
	}
	return nil
}

func (b *memBackend) Members(_ context.Context, tenant, groupID, after string, limit int) ([]Member, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, err := b.tenant(tenant)
	if err != nil {
		return nil, err
	}
	all := t.members[groupID]
	start := 0
	if after != "" {
		start = indexMember(all, after) + 1
	}
	end := min(len(all), start+limit)
	return append([]Member(nil), all[start:end]...), nil
}
