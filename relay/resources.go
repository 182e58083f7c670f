// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// tenantBucket returns a tenant's bucket and configuration, or ErrNotFound.
func (s *Store) tenantBucket(tx *bolt.Tx, name string) (*bolt.Bucket, *tenant, error) {
	t, ok := s.tenantMap()[name]
	if !ok {
		return nil, nil, scim.Errorf(scim.ErrNotFound, "no tenant %q", scim.Truncate(name, 64))
	}
	tb := tx.Bucket(bucketTenants).Bucket([]byte(name))
	if tb == nil {
		return nil, nil, fmt.Errorf("tenant %s has no bucket", name)
	}
	return tb, t, nil
}

func notFound(rt *scim.ResourceType, id string) error {
	return scim.Errorf(scim.ErrNotFound, "%s %s not found", rt.Name, scim.Truncate(id, 64))
}

// checkType refuses resource types other than User and Group, whose
// buckets this store has.
func checkType(rt *scim.ResourceType) error {
	if rt != scim.UserResourceType && rt != scim.GroupResourceType {
		name := "<nil>"
		if rt != nil {
			name = rt.Name
		}
		return fmt.Errorf("resource type %s is not stored by the relay", name)
	}
	return nil
}

// Create stores a new resource with a fresh UUIDv7 id and emits its events:
// user.created, or group.created followed by one group.member_added per
// initial member (given in r.Attrs["members"], stored as membership keys).
//
// Everything that does not need the stored state is done before the write
// transaction, in parallel with other requests (prepareCreate): the
// record, its index keys, the required attributes and the event, encoded
// once. The transaction checks uniqueness, writes, and numbers the event.
func (s *Store) Create(ctx context.Context, tenantName string, in *scim.Resource) (scim.WriteResult, error) {
	if in == nil {
		return scim.WriteResult{}, errors.New("creating a resource: no resource given")
	}
	if err := checkType(in.Type); err != nil {
		return scim.WriteResult{}, fmt.Errorf("creating a resource: %w", err)
	}
	t, ok := s.tenantMap()[tenantName]
	if !ok {
		return scim.WriteResult{}, scim.Errorf(scim.ErrNotFound, "no tenant %q", scim.Truncate(tenantName, 64))
	}
	id, err := uuid.NewV7()
	if err != nil {
		return scim.WriteResult{}, fmt.Errorf("generating an id: %w", err)
	}
	res := in.Clone()
	var members []scim.Member
	if res.Type == scim.GroupResourceType {
		if members, err = scim.MembersFromValue(res.Attrs["members"]); err != nil {
			return scim.WriteResult{}, err
		}
	}
	delete(res.Attrs, "members")
	delete(res.Attrs, "groups")
	res.Attrs["id"] = id.String()
	p, err := s.prepareCreate(t, res, members, s.now(), s.eventExtensions(ctx))
	if err != nil {
		return scim.WriteResult{}, err
	}
	return s.write(ctx, t.name, func(tx *bolt.Tx, w *txWrite) error {
		return w.create(tx, p)
	})
}

// preparedCreate is a create worked out before its transaction.
type preparedCreate struct {
	t       *tenant
	res     *scim.Resource // with id and meta
	entries []indexEntry
	members []scim.Member
	value   []byte // the stored record (its subjectseq set when stored: putEncoded)
	// resource is res as its events carry it (eventResource): the created
	// event's, and the initial members' events'.
	resource json.RawMessage
	created  *events.Draft
	now      time.Time // the change's time: its meta and every event's
}

// prepareCreate does the part of a create that needs no stored state. res
// has its id; it becomes the stored resource. A refusal (a value too long
// to index, a required attribute missing) is returned as the error.
func (s *Store) prepareCreate(t *tenant, res *scim.Resource, members []scim.Member, now time.Time, ext map[string]string) (*preparedCreate, error) {
	res.SetMeta(scim.Meta{Created: now, LastModified: now, Version: versionTag(1)})
	p := &preparedCreate{t: t, res: res, members: members, now: now}
	var err error
	if p.entries, err = indexEntries(res); err != nil {
		return nil, err
	}
	if err := checkRequired(t, nil, res, false); err != nil {
		return nil, err
	}
	p.value = encodeRecord(&record{version: 1, subjectSeq: 1, res: res})
	if err := checkSize(res.Type, len(p.value), 0); err != nil {
		return nil, err
	}
	p.resource = s.eventResource(t.name, res, p.value[recordHeader:])
	action := events.UserCreated
	if res.Type == scim.GroupResourceType {
		action = events.GroupCreated
	}
	if p.created, err = s.encodeEvent(t.name, res, p.resource, action, now, ext, nil, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// create stores a prepared resource in one transaction.
func (w *txWrite) create(tx *bolt.Tx, p *preparedCreate) error {
	w.now = p.now // the initial members' events carry the create's time
	tb, t, err := w.store.tenantBucket(tx, p.t.name)
	if err != nil {
		return w.refuse(err)
	}
	if p, err = w.inOrder(tb, t, p); err != nil {
		return w.refuse(err)
	}
	res := p.res
	if t != p.t {
		// The tenant was reloaded since the create was prepared: its
		// required attributes are checked as they are now, as uniqueness is.
		if err := checkRequired(t, nil, res, false); err != nil {
			return w.refuse(err)
		}
	}
	if err := checkUnique(tb, t, res); err != nil {
		return w.refuse(err)
	}
	if resourceBucket(tb, res.Type).Get([]byte(res.ID())) != nil {
		return fmt.Errorf("creating %s %s: the id is taken", res.Type.Name, res.ID())
	}
	var changes []memberChange
	if len(p.members) > 0 {
		plan := newMemberPlan(tb, res.ID(), &w.examined)
		if err := plan.apply([]scim.MemberOp{{Kind: scim.AddMembers, Members: p.members}}); err != nil {
			return w.refuse(err)
		}
		changes = plan.changes()
		if err := plan.write(changes); err != nil {
			return err
		}
	}
	w.bytes += len(p.value)
	// Validation is over; from here on an error aborts the transaction.
	if err := reindex(tb, nil, p.entries); err != nil {
		return err
	}
	rec := &record{version: 1, subjectSeq: 1, res: res}
	if err := w.appendEvent(tx, tb, p.created, rec.subjectSeq); err != nil {
		return err
	}
	if err := w.emitMembers(tx, tb, t, rec, changes); err != nil {
		return err
	}
	if err := putEncoded(tb, rec, p.value); err != nil {
		return err
	}
	w.result = res
	return nil
}

// inOrder keeps ids in the order their creates commit. An id is drawn
// before its transaction, in parallel with other requests, so a create can
// come to commit after one that drew a later id (about one in 200 at
// concurrency 24). Lists without sortBy are in id order, and a client
// paging by startIndex while resources are added would never see such a
// resource: it lands on a page already read. It gets an id drawn now,
// later than every id drawn before, and everything made of the id is
// prepared again. Once only, and only when the new id does sort last:
// after a clock stepped back across a restart no id drawn now does, and
// the create goes on with the id it has.
func (w *txWrite) inOrder(tb *bolt.Bucket, t *tenant, p *preparedCreate) (*preparedCreate, error) {
	last, _ := resourceBucket(tb, p.res.Type).Cursor().Last()
	if last == nil || string(last) < p.res.ID() {
		return p, nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("generating an id: %w", err)
	}
	if string(last) >= id.String() {
		return p, nil // no id drawn now sorts last: not worth preparing again
	}
	res := p.res.Clone()
	res.Attrs["id"] = id.String()
	return w.store.prepareCreate(t, res, p.members, p.now, w.ext)
}

// checkResource enforces the tenant's required attributes and uniqueness
// on a resource about to replace cur (by a PATCH when patch is set).
func checkResource(tb *bolt.Bucket, t *tenant, cur, r *scim.Resource, patch bool) error {
	if err := checkRequired(t, cur, r, patch); err != nil {
		return err
	}
	return checkUnique(tb, t, r)
}

// checkRequired enforces what needs no stored state on r, about to replace
// cur (nil for a create): the identifying attribute and the tenant's
// required attributes. A required attribute cur already lacked (stored
// before the tenant required it: `required` and `unique` change on a
// reload) does not hold up r's other changes, or Entra could not
// deactivate such a user; a change may not remove one: a PATCH (patch)
// that does is refused with "mutability", as RFC 7644 §3.5.2.2 says.
func checkRequired(t *tenant, cur, r *scim.Resource, patch bool) error {
	if r.Type == scim.GroupResourceType {
		if r.String("displayName") == "" {
			return scim.Errorf(scim.ErrInvalidValue, "attribute displayName is required")
		}
		return nil
	}
	if r.String("userName") == "" {
		return scim.Errorf(scim.ErrInvalidValue, "attribute userName is required")
	}
	code, removing := scim.ErrInvalidValue, ""
	if cur != nil && patch {
		code, removing = scim.ErrMutability, ": a PATCH may not remove it"
	}
	for _, req := range t.required {
		if !req.present.Match(r) && (cur == nil || req.present.Match(cur)) {
			return scim.Errorf(code, "attribute %s is required in tenant %s%s", req.path.String(), t.name, removing)
		}
	}
	if t.uniqueEmail && r.WorkEmail() == "" && (cur == nil || cur.WorkEmail() != "") {
		return scim.Errorf(code, "a User needs an email in tenant %s, which tells users apart by their work email%s", t.name, removing)
	}
	return nil
}

// checkUnique enforces the tenant's uniqueness (checkRequired has passed).
func checkUnique(tb *bolt.Bucket, t *tenant, r *scim.Resource) error {
	id := r.ID()
	taken := func(b []byte, value string) bool {
		for _, other := range lookupIDs(tb.Bucket(b), value, 2) {
			if other != id {
				return true
			}
		}
		return false
	}
	if r.Type == scim.GroupResourceType {
		name := r.String("displayName")
		if taken(ixDisplayName, scim.Fold(name)) {
			return scim.Errorf(scim.ErrUniqueness, "displayName %q is already taken by another Group", scim.Truncate(name, 256))
		}
		return nil
	}
	if t.uniqueEmail {
		// Every work email: a client matching on emails[type eq "work"].value
		// finds a user by any of them.
		for _, we := range r.WorkEmails() {
			if taken(ixWorkEmail, scim.Fold(we)) {
				return scim.Errorf(scim.ErrUniqueness, "email %q is already taken", scim.Truncate(we, 256))
			}
		}
		return nil
	}
	name := r.String("userName")
	if taken(ixUserName, scim.Fold(name)) {
		return scim.Errorf(scim.ErrUniqueness, "userName %q is already taken", scim.Truncate(name, 256))
	}
	return nil
}

// Get returns a resource: a User with its read-only groups attribute, a
// Group without members.
func (s *Store) Get(_ context.Context, tenantName string, rt *scim.ResourceType, id string) (*scim.Resource, error) {
	if err := checkType(rt); err != nil {
		return nil, fmt.Errorf("getting %s: %w", scim.Truncate(id, 64), err)
	}
	var out *scim.Resource
	// A user's groups are read one membership (and group card) at a
	// time, and charged as a filter's reads are; never refused, so that
	// a user in any number of groups can be read.
	read := &budget{limit: math.MaxInt}
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
		out, err = withGroups(tb, rec.res, read)
		return err
	})
	s.chargeFor(tenantName, work{memberships: read.spent})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// withGroups adds a User's read-only groups attribute from its memberships
// (direct ones only: nesting is not expanded).
func withGroups(tb *bolt.Bucket, r *scim.Resource, b *budget) (*scim.Resource, error) {
	if r.Type != scim.UserResourceType {
		return r, nil
	}
	groups, err := groupsOf(tb, r.ID(), b)
	if err != nil {
		return nil, err
	}
	if groups != nil {
		r.Attrs["groups"] = groups
	}
	return r, nil
}

// groupsOf lists the groups a member belongs to as groups attribute
// values. Each one counts in b as a membership read one by one (and its
// group's card past its first KiB, as groupElements counts it): a user in
// 1,000 groups is 1,000 maps in the heap, and a page of 100 such users
// allocated 98 MiB at the cost of one request (an attack round).
func groupsOf(tb *bolt.Bucket, memberID string, b *budget) ([]any, error) {
	var groups []any
	var refused error
	err := groupElements(tb, memberID, nil, b).Each(func(g map[string]any) bool {
		if refused = b.spend(); refused != nil {
			return false
		}
		groups = append(groups, g)
		return true
	})
	if err == nil {
		err = refused
	}
	return groups, err
}

// Update applies fn to a stored resource in one transaction. Uniqueness and
// required attributes are checked on the new state; member operations apply
// in order and only their net effect counts; the version, lastModified and
// events change only when something did.
func (s *Store) Update(ctx context.Context, tenantName string, rt *scim.ResourceType, id string, fn scim.UpdateFunc) (scim.WriteResult, error) {
	if err := checkType(rt); err != nil {
		return scim.WriteResult{}, fmt.Errorf("updating %s: %w", scim.Truncate(id, 64), err)
	}
	if fn == nil {
		return scim.WriteResult{}, fmt.Errorf("updating %s %s: no update function", rt.Name, scim.Truncate(id, 64))
	}
	return s.write(ctx, tenantName, func(tx *bolt.Tx, w *txWrite) error {
		return w.update(tx, tenantName, rt, id, fn)
	})
}

// target loads the resource a write is about. When the tenant or the
// resource does not exist it records the refusal and returns a nil record.
func (w *txWrite) target(tx *bolt.Tx, tenantName string, rt *scim.ResourceType, id string) (*bolt.Bucket, *tenant, *record, error) {
	tb, t, err := w.store.tenantBucket(tx, tenantName)
	if err != nil {
		return nil, nil, nil, w.refuse(err)
	}
	rec, err := getRecord(tb, rt, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if rec == nil {
		return nil, nil, nil, w.refuse(notFound(rt, id))
	}
	return tb, t, rec, nil
}

func (w *txWrite) update(tx *bolt.Tx, tenantName string, rt *scim.ResourceType, id string, fn scim.UpdateFunc) error {
	tb, t, rec, err := w.target(tx, tenantName, rt, id)
	if rec == nil {
		return err
	}
	w.bytes += rec.size // decoded, and copied for fn
	cur := rec.res
	u, err := fn(cur.Clone())
	if err != nil {
		return w.refuse(err)
	}
	if u == nil || u.Resource == nil || u.Resource.Attrs == nil {
		return w.refuse(fmt.Errorf("updating %s %s: the update function returned no resource", rt.Name, id))
	}
	next := &scim.Resource{Type: rt, Attrs: u.Resource.Attrs}
	next.Attrs["id"] = cur.ID()
	next.Attrs["meta"] = cur.Attrs["meta"]
	delete(next.Attrs, "groups")
	delete(next.Attrs, "members")
	var oldEntries, newEntries []indexEntry
	if len(u.Changes) > 0 {
		if newEntries, err = indexEntries(next); err != nil {
			return w.refuse(err)
		}
		if err := checkResource(tb, t, cur, next, u.Patch); err != nil {
			return w.refuse(err)
		}
		// The stored state was indexed when it was written, so it cannot be too long.
		oldEntries, _ = indexEntries(cur)
	}
	var changes []memberChange
	var plan *memberPlan
	if rt == scim.GroupResourceType && len(u.Members) > 0 {
		plan = newMemberPlan(tb, id, &w.examined)
		if err := plan.apply(u.Members); err != nil {
			return w.refuse(err)
		}
		changes = plan.changes()
	}
	if len(u.Changes) == 0 && len(changes) == 0 {
		w.result, err = withGroups(tb, cur, &w.answered)
		return err
	}
	was := rec.size
	rec.res = next
	w.touch(rec)
	// The resource as stored and as its events carry it, encoded once.
	value := encodeRecord(rec)
	w.bytes += len(value)
	if err := checkSize(rt, len(value), was); err != nil {
		return w.refuse(err)
	}
	// Validation is over; from here on an error aborts the transaction.
	if plan != nil {
		if err := plan.write(changes); err != nil {
			return err
		}
	}
	resource := w.store.eventResource(t.name, rec.res, value[recordHeader:])
	if len(u.Changes) > 0 {
		if err := reindex(tb, oldEntries, newEntries); err != nil {
			return err
		}
		if d := memberDisplay(next); d != memberDisplay(cur) {
			if err := renameInGroups(tb, id, d, &w.examined); err != nil {
				return err
			}
		}
		if err := w.emitAs(tx, tb, t, rec, resource, updateAction(cur, next), u.Changes, nil); err != nil {
			return err
		}
	}
	if err := w.emitMembers(tx, tb, t, rec, changes); err != nil {
		return err
	}
	if err := putEncoded(tb, rec, value); err != nil {
		return err
	}
	w.result, err = withGroups(tb, rec.res, &w.answered)
	return err
}

// touch bumps a resource's version and lastModified.
func (w *txWrite) touch(rec *record) {
	rec.version++
	m := rec.res.Meta()
	m.LastModified, m.Version, m.Location = w.now, versionTag(rec.version), ""
	rec.res.SetMeta(m)
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

// Delete removes a resource and its index keys. A User leaves every group
// it is in, each emitting group.member_removed (on the group) before
// user.deleted. A Group's own memberships go without per-member events:
// group.deleted says it all, and a group of 100,000 members would otherwise
// flood every consumer; a Group nested in others leaves them with
// group.member_removed like a User.
func (s *Store) Delete(ctx context.Context, tenantName string, rt *scim.ResourceType, id string, ifMatch scim.Precondition) (scim.WriteResult, error) {
	if err := checkType(rt); err != nil {
		return scim.WriteResult{}, fmt.Errorf("deleting %s: %w", scim.Truncate(id, 64), err)
	}
	return s.write(ctx, tenantName, func(tx *bolt.Tx, w *txWrite) error {
		tb, t, rec, err := w.target(tx, tenantName, rt, id)
		if rec == nil {
			return err
		}
		w.deleted = rec.res // its name and email for the provisioning log, refused or not
		if err := ifMatch.Check(rec.res); err != nil {
			return w.refuse(err)
		}
		if rt == scim.GroupResourceType {
			if err := deleteAllMembers(tb, id); err != nil {
				return err
			}
		}
		if err := w.leaveAllGroups(tx, tb, t, id); err != nil {
			return err
		}
		entries, _ := indexEntries(rec.res)
		if err := reindex(tb, entries, nil); err != nil {
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
}

// Members pages through a group's members in id order, after the member
// whose value is after; limit <= 0 returns all. A non-empty version must
// be the group's (else scim.ErrChanged): each page is read in a
// transaction of its own.
func (s *Store) Members(_ context.Context, tenantName, groupID, version, after string, limit int) ([]scim.Member, error) {
	var out []scim.Member
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, _, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return err
		}
		var v []byte
		if validKey(groupID) {
			v = tb.Bucket(bucketGroups).Get([]byte(groupID))
		}
		switch {
		case version != "" && (v == nil || versionTag(recordVersion(v)) != version):
			return scim.ErrChanged
		case v == nil:
			return notFound(scim.GroupResourceType, groupID)
		}
		out, err = pageMembers(tb, groupID, after, limit)
		return err
	})
	return out, err
}
