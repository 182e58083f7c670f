package relay

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// tenantBucket returns a tenant's bucket and configuration, or ErrNotFound.
func (s *Store) tenantBucket(tx *bolt.Tx, name string) (*bolt.Bucket, *tenant, error) {
	t, ok := s.tenants[name]
	if !ok {
		return nil, nil, scim.Errorf(scim.ErrNotFound, "no tenant %q", name)
	}
	tb := tx.Bucket(bucketTenants).Bucket([]byte(name))
	if tb == nil {
		return nil, nil, fmt.Errorf("tenant %s has no bucket", name)
	}
	return tb, t, nil
}

func notFound(rt *scim.ResourceType, id string) error {
	return scim.Errorf(scim.ErrNotFound, "%s %s not found", rt.Name, id)
}

// Create stores a new resource with a fresh id and emits its events.
func (s *Store) Create(ctx context.Context, tenantName string, in *scim.Resource) (*scim.Resource, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("generating an id: %w", err)
	}
	res := in.Clone()
	members, err := scim.MembersFromValue(res.Attrs["members"])
	if err != nil {
		return nil, err
	}
	delete(res.Attrs, "members")
	delete(res.Attrs, "groups")
	res.Attrs["id"] = id.String()
	w, err := s.write(ctx, func(tx *bolt.Tx, w *txWrite) error {
		tb, t, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return w.refuse(err)
		}
		now := s.now()
		rec := &record{version: 1, res: res.Clone()}
		rec.res.SetMeta(scim.Meta{Created: now, LastModified: now, Version: versionTag(1)})
		if err := s.checkResource(tb, t, rec.res); err != nil {
			return w.refuse(err)
		}
		resolved, err := resolveMembers(tb, rec.res.ID(), members)
		if err != nil {
			return w.refuse(err)
		}
		if err := reindex(tb, nil, indexEntries(rec.res)); err != nil {
			return err
		}
		if rec.res.Type == scim.GroupResourceType {
			if err := w.emit(tx, tb, t, rec, events.GroupCreated, nil, nil); err != nil {
				return err
			}
			for _, m := range resolved {
				if err := putMember(tb, rec.res.ID(), m); err != nil {
					return err
				}
				if err := w.emit(tx, tb, t, rec, events.GroupMemberAdded, nil, &m); err != nil {
					return err
				}
			}
		} else if err := w.emit(tx, tb, t, rec, events.UserCreated, nil, nil); err != nil {
			return err
		}
		if err := putRecord(tb, rec); err != nil {
			return err
		}
		w.result = rec.res
		return nil
	})
	if err != nil {
		return nil, err
	}
	return w.result, nil
}

// checkResource enforces the tenant's uniqueness and required attributes on
// a resource about to be stored.
func (s *Store) checkResource(tb *bolt.Bucket, t *tenant, r *scim.Resource) error {
	id := r.ID()
	taken := func(b []byte, value string) bool {
		for _, other := range lookupIDs(tb.Bucket(b), value) {
			if other != id {
				return true
			}
		}
		return false
	}
	if r.Type == scim.GroupResourceType {
		name := r.String("displayName")
		if taken(ixDisplayName, strings.ToLower(name)) {
			return scim.Errorf(scim.ErrUniqueness, "a Group with displayName %q already exists", name)
		}
		return nil
	}
	for _, req := range t.required {
		if !req.present.Match(r) {
			return scim.Errorf(scim.ErrInvalidValue, "attribute %s is required in tenant %s", req.path, t.name)
		}
	}
	if t.uniqueEmail {
		we := r.WorkEmail()
		if we == "" {
			return scim.Errorf(scim.ErrInvalidValue, "a User needs an email in tenant %s, which matches users by email", t.name)
		}
		if taken(ixWorkEmail, strings.ToLower(we)) {
			return scim.Errorf(scim.ErrUniqueness, "a User with email %q already exists", we)
		}
		return nil
	}
	name := r.String("userName")
	if taken(ixUserName, strings.ToLower(name)) {
		return scim.Errorf(scim.ErrUniqueness, "userName %q is already taken", name)
	}
	return nil
}

// Get returns a resource; a User with its groups, a Group without members.
func (s *Store) Get(_ context.Context, tenantName string, rt *scim.ResourceType, id string) (*scim.Resource, error) {
	var out *scim.Resource
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, _, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return err
		}
		rec, err := getRecord(tb, rt, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return notFound(rt, id)
		}
		out, err = withGroups(tb, rec.res)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// withGroups adds a User's read-only groups attribute from its memberships.
func withGroups(tb *bolt.Bucket, r *scim.Resource) (*scim.Resource, error) {
	if r.Type != scim.UserResourceType {
		return r, nil
	}
	prefix := memberKey(r.ID(), "")
	var groups []any
	c := tb.Bucket(bucketMemberOf).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		gid := string(k[len(prefix):])
		g, err := getRecord(tb, scim.GroupResourceType, gid)
		if err != nil {
			return nil, err
		}
		entry := map[string]any{"value": gid, "type": "direct"}
		if g != nil {
			entry["display"] = g.res.String("displayName")
		}
		groups = append(groups, entry)
	}
	if groups != nil {
		r.Attrs["groups"] = groups
	}
	return r, nil
}

// List returns one page of matching resources. Equality filters on indexed
// attributes are answered from the indexes; anything else scans in id order.
func (s *Store) List(_ context.Context, tenantName string, rt *scim.ResourceType, q scim.Query) (scim.Page, error) {
	var page scim.Page
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, _, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return err
		}
		if q.Filter == nil && q.SortBy == nil {
			page, err = listAll(tb, rt, q)
			return err
		}
		matches, err := s.matching(tb, rt, q.Filter)
		if err != nil {
			return err
		}
		if q.SortBy != nil {
			sortResources(matches, *q.SortBy, q.Descending)
		}
		page.Total = len(matches)
		page.Resources = []*scim.Resource{}
		for i := q.StartIndex - 1; i >= 0 && i < len(matches) && len(page.Resources) < q.Count; i++ {
			r, err := withGroups(tb, matches[i])
			if err != nil {
				return err
			}
			page.Resources = append(page.Resources, r)
		}
		return nil
	})
	return page, err
}

// listAll pages through every resource without decoding the ones it skips.
func listAll(tb *bolt.Bucket, rt *scim.ResourceType, q scim.Query) (scim.Page, error) {
	page := scim.Page{Resources: []*scim.Resource{}}
	c := resourceBucket(tb, rt).Cursor()
	i := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		i++
		if i < q.StartIndex || len(page.Resources) >= q.Count {
			continue
		}
		rec, err := decodeRecord(rt, v)
		if err != nil {
			return page, err
		}
		r, err := withGroups(tb, rec.res)
		if err != nil {
			return page, err
		}
		page.Resources = append(page.Resources, r)
	}
	page.Total = i
	return page, nil
}

// matching returns every resource matching f, in id order.
func (s *Store) matching(tb *bolt.Bucket, rt *scim.ResourceType, f *scim.Filter) ([]*scim.Resource, error) {
	withMembers := f != nil && rt == scim.GroupResourceType && f.References("members")
	test := func(r *scim.Resource) (bool, error) {
		if f == nil {
			return true, nil
		}
		if withMembers {
			members, err := allMembers(tb, r.ID())
			if err != nil {
				return false, err
			}
			list := make([]any, len(members))
			for i, m := range members {
				list[i] = map[string]any{"value": m.Value, "display": m.Display, "type": m.Type}
			}
			if len(list) > 0 {
				r.Attrs["members"] = list
			}
			defer delete(r.Attrs, "members")
		}
		return f.Match(r), nil
	}
	var out []*scim.Resource
	if ids, ok := candidates(tb, rt, f); ok {
		for _, id := range ids {
			rec, err := getRecord(tb, rt, id)
			if err != nil {
				return nil, err
			}
			if rec == nil {
				continue
			}
			ok, err := test(rec.res)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, rec.res)
			}
		}
		return out, nil
	}
	c := resourceBucket(tb, rt).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rec, err := decodeRecord(rt, v)
		if err != nil {
			return nil, err
		}
		ok, err := test(rec.res)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, rec.res)
		}
	}
	return out, nil
}

// indexOrder is the order in which equality terms are tried, most selective first.
var indexOrder = []string{"id", "userName", "displayName", "externalId", "emails.value", "members.value"}

// candidates returns the ids an index gives for the filter's most selective
// equality term, sorted and deduplicated; ok is false when no term is indexed.
func candidates(tb *bolt.Bucket, rt *scim.ResourceType, f *scim.Filter) ([]string, bool) {
	if f == nil {
		return nil, false
	}
	eqs := f.Equalities()
	for _, path := range indexOrder {
		for _, eq := range eqs {
			if eq.Path != path {
				continue
			}
			var ids []string
			switch {
			case path == "id":
				ids = []string{eq.Value}
			case path == "userName" && rt == scim.UserResourceType:
				ids = lookupIDs(tb.Bucket(ixUserName), strings.ToLower(eq.Value))
			case path == "displayName" && rt == scim.GroupResourceType:
				ids = lookupIDs(tb.Bucket(ixDisplayName), strings.ToLower(eq.Value))
			case path == "externalId" && rt == scim.UserResourceType:
				ids = lookupIDs(tb.Bucket(ixUserExt), eq.Value)
			case path == "externalId" && rt == scim.GroupResourceType:
				ids = lookupIDs(tb.Bucket(ixGroupExt), eq.Value)
			case path == "emails.value" && rt == scim.UserResourceType:
				ids = lookupIDs(tb.Bucket(ixEmail), strings.ToLower(eq.Value))
			case path == "members.value" && rt == scim.GroupResourceType:
				prefix := memberKey(eq.Value, "")
				c := tb.Bucket(bucketMemberOf).Cursor()
				for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
					ids = append(ids, string(k[len(prefix):]))
				}
			default:
				continue
			}
			sort.Strings(ids)
			return compact(ids), true
		}
	}
	return nil, false
}

func compact(ids []string) []string {
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}

// sortResources orders by the value at path (case-insensitively unless the
// attribute is caseExact), resources without a value last, ties by id.
func sortResources(list []*scim.Resource, path scim.AttrPath, desc bool) {
	exact := path.Leaf() != nil && path.Leaf().CaseExact
	key := func(r *scim.Resource) (string, bool) {
		f, err := scim.ParseFilter(r.Type, path.String()+" pr")
		if err != nil || !f.Match(r) {
			return "", false
		}
		v := sortValue(r, path)
		if !exact {
			v = strings.ToLower(v)
		}
		return v, true
	}
	type keyed struct {
		r   *scim.Resource
		k   string
		has bool
	}
	ks := make([]keyed, len(list))
	for i, r := range list {
		k, has := key(r)
		ks[i] = keyed{r, k, has}
	}
	sort.SliceStable(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.has != b.has {
			return a.has
		}
		if a.k != b.k {
			return (a.k < b.k) != desc
		}
		return a.r.ID() < b.r.ID()
	})
	for i := range ks {
		list[i] = ks[i].r
	}
}

// sortValue returns the string form of the first value at path.
func sortValue(r *scim.Resource, path scim.AttrPath) string {
	obj := r.Attrs
	if path.URN != "" {
		m, _ := obj[path.URN].(map[string]any)
		obj = m
	}
	v := obj[path.Name]
	if list, ok := v.([]any); ok && len(list) > 0 {
		v = list[0]
	}
	if m, ok := v.(map[string]any); ok {
		sub := path.Sub
		if sub == "" {
			sub = "value"
		}
		v = m[sub]
	}
	return fmt.Sprint(v)
}

// Update applies fn to a stored resource in one transaction.
func (s *Store) Update(ctx context.Context, tenantName string, rt *scim.ResourceType, id string, fn scim.UpdateFunc) (*scim.Resource, error) {
	w, err := s.write(ctx, func(tx *bolt.Tx, w *txWrite) error {
		tb, t, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return w.refuse(err)
		}
		rec, err := getRecord(tb, rt, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return w.refuse(notFound(rt, id))
		}
		cur := rec.res
		u, err := fn(cur.Clone())
		if err != nil {
			return w.refuse(err)
		}
		next := u.Resource
		next.Attrs["id"] = cur.ID()
		next.Attrs["meta"] = cur.Attrs["meta"]
		delete(next.Attrs, "groups")
		delete(next.Attrs, "members")
		if len(u.Changes) > 0 {
			if err := s.checkResource(tb, t, next); err != nil {
				return w.refuse(err)
			}
		}
		if rt == scim.GroupResourceType {
			if err := checkMemberOps(tb, id, u.Members); err != nil {
				return w.refuse(err)
			}
		}
		// Validation is over; from here on an error aborts the transaction.
		var memberChanges []memberChange
		if rt == scim.GroupResourceType {
			if memberChanges, err = applyMemberOps(tb, id, u.Members); err != nil {
				return err
			}
		}
		if len(u.Changes) == 0 && len(memberChanges) == 0 {
			w.result, err = withGroups(tb, cur)
			return err
		}
		rec.version++
		m := next.Meta()
		m.LastModified, m.Version = s.now(), versionTag(rec.version)
		next.SetMeta(m)
		rec.res = next
		if len(u.Changes) > 0 {
			if err := reindex(tb, indexEntries(cur), indexEntries(next)); err != nil {
				return err
			}
			if err := w.emit(tx, tb, t, rec, updateAction(cur, next), u.Changes, nil); err != nil {
				return err
			}
		}
		for _, mc := range memberChanges {
			action := events.GroupMemberAdded
			if !mc.added {
				action = events.GroupMemberRemoved
			}
			if err := w.emit(tx, tb, t, rec, action, nil, &mc.member); err != nil {
				return err
			}
		}
		if err := putRecord(tb, rec); err != nil {
			return err
		}
		out, err := withGroups(tb, rec.res)
		w.result = out
		return err
	})
	if err != nil {
		return nil, err
	}
	return w.result, nil
}

// updateAction names an update: a User's active going true → false is a
// deactivation and false → true a reactivation (unset counts as true).
func updateAction(old, new *scim.Resource) events.Action {
	if old.Type == scim.GroupResourceType {
		return events.GroupUpdated
	}
	was, wasSet := old.Active()
	is, isSet := new.Active()
	wasActive, isActive := !wasSet || was, !isSet || is
	switch {
	case wasActive && !isActive:
		return events.UserDeactivated
	case !wasActive && isActive:
		return events.UserReactivated
	}
	return events.UserUpdated
}

// Delete removes a resource. A User's memberships go with it, each emitting
// group.member_removed before user.deleted. A Group's memberships go
// without per-member events: group.deleted says it all, and a group of
// 100,000 members would otherwise flood every consumer.
func (s *Store) Delete(ctx context.Context, tenantName string, rt *scim.ResourceType, id, ifMatch string) error {
	_, err := s.write(ctx, func(tx *bolt.Tx, w *txWrite) error {
		tb, t, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return w.refuse(err)
		}
		rec, err := getRecord(tb, rt, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return w.refuse(notFound(rt, id))
		}
		if err := scim.CheckIfMatch(ifMatch, rec.res); err != nil {
			return w.refuse(err)
		}
		if rt == scim.GroupResourceType {
			if _, err := applyMemberOps(tb, id, []scim.MemberOp{{Kind: scim.RemoveAllMembers}}); err != nil {
				return err
			}
		}
		// Users, and groups nested in others, leave every group they are in.
		if err := w.leaveAllGroups(tx, tb, t, id); err != nil {
			return err
		}
		if err := reindex(tb, indexEntries(rec.res), nil); err != nil {
			return err
		}
		action := events.UserDeleted
		if rt == scim.GroupResourceType {
			action = events.GroupDeleted
		}
		if err := w.emit(tx, tb, t, rec, action, nil, nil); err != nil {
			return err
		}
		return resourceBucket(tb, rt).Delete([]byte(id))
	})
	return err
}

// Members pages through a group's members in id order.
func (s *Store) Members(_ context.Context, tenantName, groupID, after string, limit int) ([]scim.Member, error) {
	var out []scim.Member
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, _, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return err
		}
		if resourceBucket(tb, scim.GroupResourceType).Get([]byte(groupID)) == nil {
			return notFound(scim.GroupResourceType, groupID)
		}
		out, err = pageMembers(tb, groupID, after, limit)
		return err
	})
	return out, err
}
