// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/scim"
)

// List returns one page of the resources of rt that match q and the exact
// number of matches. Without SortBy the order is id order, which is commit
// order (txWrite.inOrder), so pages are stable while resources are added. A filter implying an
// equality on an indexed attribute is answered from the index that gives the
// fewest candidates, each then tested against the whole filter; any other
// filter scans. Groups come without members. A filter on a group's members
// (or a user's groups) reads the membership keys it needs: one key per
// member value it names, never the whole group. Only the page is held in
// memory, and with SortBy each match's sort key and id, up to q.SortLimit.
func (s *Store) List(ctx context.Context, tenantName string, rt *scim.ResourceType, q scim.Query) (scim.Page, error) {
	if err := checkType(rt); err != nil {
		return scim.Page{}, fmt.Errorf("listing: %w", err)
	}
	start, count := max(q.StartIndex, 1), max(q.Count, 0)
	var page scim.Page
	var examined *budget // the memberships a filter reads, charged to the tenant
	// The memberships read for the page's users' groups, charged as a
	// filter's are but not refused: the page ends at MaxPageBytes with
	// them (groupElementBytes).
	groupsRead := &budget{limit: math.MaxInt}
	err := s.db.View(func(tx *bolt.Tx) error {
		tb, t, err := s.tenantBucket(tx, tenantName)
		if err != nil {
			return err
		}
		view := filterView(t, rt, q.Filter)
		eq, exact := exactEquality(rt, q.Filter)
		switch {
		case exact && q.Stored && q.SortBy == nil:
			page, err = listStored(tb, rt, eq, start, count, groupsRead)
			return err // with their groups, and nothing sorted
		case q.Filter == nil && (q.SortBy == nil || count == 0):
			page, err = listAll(tb, rt, start, count)
		case q.SortBy == nil || count == 0:
			examined = &budget{limit: s.maxExamined}
			page, err = listMatching(ctx, tb, rt, q.Filter, view, examined, start, count)
		default:
			examined = &budget{limit: s.maxExamined}
			page, err = listSorted(ctx, tb, rt, q, view, examined, start, count)
		}
		if err != nil {
			return err
		}
		if q.SortBy != nil && q.SortLimit > 0 && page.Total > q.SortLimit {
			return tooManyToSort(rt, q.SortLimit) // count 0: nothing sorted, the answer is the same
		}
		// A user's groups are held with it, outside its record: they are
		// bounded too, groupElementBytes each, and the page ends at the
		// user whose groups take them past MaxPageBytes (a page of 1,000 users each in 1,000 groups
		// allocated 981 MiB, at the cost of one request: an attack round).
		groupsHeld := 0
		for i, r := range page.Resources {
			if _, err := withGroups(tb, r, groupsRead); err != nil {
				return err
			}
			if g, ok := r.Attrs["groups"].([]any); ok {
				groupsHeld += len(g) * groupElementBytes
			}
			if groupsHeld >= MaxPageBytes {
				page.Resources = page.Resources[:i+1]
				break
			}
		}
		page.Bytes += groupsHeld
		return nil
	})
	read := work{memberships: groupsRead.spent}
	if examined != nil {
		read.memberships += examined.spent
		read.compared = examined.compared
	}
	s.chargeFor(tenantName, read)
	if err != nil {
		return scim.Page{}, err
	}
	return page, nil
}

// MaxPageBytes bounds a list's page by the bytes of the resources it
// holds as stored: a page stops at the first resource that takes it past
// this (RFC 7644 §3.4.2.4 lets a page hold fewer than count; itemsPerPage
// says how many). A resource takes some 18 times its stored size in heap
// decoded, and a page of 1,000 users at MaxResourceBytes about 4.5 GiB,
// for one request (an attack round).
const MaxPageBytes = 4 << 20

// groupElementBytes is what one of a user's groups counts towards
// MaxPageBytes: about its size as answered ({"value","display","$ref",
// "type"}); decoded it takes some 1 KiB of heap.
const groupElementBytes = 128

// listAll pages through every resource without decoding the ones it skips.
func listAll(tb *bolt.Bucket, rt *scim.ResourceType, start, count int) (scim.Page, error) {
	page := scim.Page{Resources: []*scim.Resource{}}
	c := resourceBucket(tb, rt).Cursor()
	i, held := 0, 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		i++
		if i < start || len(page.Resources) >= count || held >= MaxPageBytes {
			continue
		}
		held += len(v)
		rec, err := decodeRecord(rt, v)
		if err != nil {
			return page, fmt.Errorf("reading %s %s: %w", rt.Name, k, err)
		}
		page.Resources = append(page.Resources, rec.res)
	}
	page.Total, page.Bytes = i, held
	return page, nil
}

// exactEquality returns the equality that is the whole of f when an index
// answers it exactly: every key under the value belongs to a resource that
// matches, none other does. The userName index is keyed by the folded
// userName, and two userNames fold alike exactly when strings.EqualFold,
// the filter's test for the case-insensitive userName, says they are equal
// (scim.FuzzFold); the externalId index is keyed by the value
// as is, which the case-exact externalId compares.
func exactEquality(rt *scim.ResourceType, f *scim.Filter) (scim.Equality, bool) {
	if rt != scim.UserResourceType || f == nil {
		return scim.Equality{}, false
	}
	eq, ok := f.SoleEquality()
	return eq, ok && (eq.Path == "userName" || eq.Path == "externalId")
}

// listStored pages through the resources an exact equality finds, in id
// order, without decoding them: each as stored, with its groups. Entra's
// userName eq query before every user it provisions comes this way.
func listStored(tb *bolt.Bucket, rt *scim.ResourceType, eq scim.Equality, start, count int, examined *budget) (scim.Page, error) {
	page := scim.Page{Stored: []scim.StoredResource{}}
	ids, _ := lookupEquality(tb, rt, eq, -1)
	b := resourceBucket(tb, rt)
	held := 0
	for _, id := range ids {
		v := b.Get([]byte(id))
		if v == nil {
			continue
		}
		page.Total++
		if page.Total < start || len(page.Stored) >= count {
			continue
		}
		if len(v) < recordHeader {
			return scim.Page{}, fmt.Errorf("reading %s %s: stored record is %d bytes, shorter than its header", rt.Name, id, len(v))
		}
		if held >= MaxPageBytes {
			continue // the page ends at the user whose groups took it past the bound
		}
		groups, err := groupsOf(tb, id, examined)
		if err != nil {
			return scim.Page{}, err
		}
		held += len(v) + len(groups)*groupElementBytes
		page.Stored = append(page.Stored, scim.StoredResource{
			Type:   rt,
			ID:     id,
			JSON:   bytes.Clone(v[recordHeader:]), // v is the file's, for this transaction only
			Groups: groups,
		})
	}
	page.Bytes = held
	return page, nil
}

// listMatching filters and pages in id order, keeping only the page.
func listMatching(ctx context.Context, tb *bolt.Bucket, rt *scim.ResourceType, f *scim.Filter, view func(*scim.Resource) *scim.Resource, b *budget, start, count int) (scim.Page, error) {
	page := scim.Page{Resources: []*scim.Resource{}}
	held := 0
	err := eachMatch(ctx, tb, rt, f, view, b, func(r *scim.Resource, size int) error {
		page.Total++
		if page.Total >= start && len(page.Resources) < count && held < MaxPageBytes {
			held += size
			page.Resources = append(page.Resources, r)
		}
		return nil
	})
	page.Bytes = held
	return page, err
}

// listSorted filters, sorts and pages. It keeps each match's sort key and
// id, not the match, and refuses with tooMany when more than q.SortLimit
// resources match; the page's resources are read again once the order is
// known.
func listSorted(ctx context.Context, tb *bolt.Bucket, rt *scim.ResourceType, q scim.Query, view func(*scim.Resource) *scim.Resource, b *budget, start, count int) (scim.Page, error) {
	var sorted []sortable
	err := eachMatch(ctx, tb, rt, q.Filter, view, b, func(r *scim.Resource, _ int) error {
		if q.SortLimit > 0 && len(sorted) >= q.SortLimit {
			return tooManyToSort(rt, q.SortLimit)
		}
		sorted = append(sorted, sortable{id: r.ID(), key: scim.SortKeyOf(r, *q.SortBy)})
		return nil
	})
	if err != nil {
		return scim.Page{}, err
	}
	slices.SortFunc(sorted, func(a, b sortable) int {
		if c := a.key.Compare(b.key, q.Descending); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	page := scim.Page{Total: len(sorted), Resources: []*scim.Resource{}}
	held := 0
	for i := start - 1; i < len(sorted) && len(page.Resources) < count && held < MaxPageBytes; i++ {
		rec, err := getRecord(tb, rt, sorted[i].id)
		if err != nil {
			return scim.Page{}, err
		}
		if rec == nil {
			return scim.Page{}, fmt.Errorf("reading %s %s: matched, then gone within one read transaction", rt.Name, sorted[i].id)
		}
		held += rec.size
		page.Resources = append(page.Resources, rec.res)
	}
	page.Bytes = held
	return page, nil
}

func tooManyToSort(rt *scim.ResourceType, limit int) error {
	return scim.Errorf(scim.ErrTooMany, "more than %d %ss match; sortBy sorts at most %d: narrow the filter or leave sortBy out", limit, rt.Name, limit)
}

// filterView returns how a filter of tenant t reads a resource of rt, nil
// for as it is. In a tenant whose work emails are unique, a User none of
// whose emails is typed "work" is read as having its work email typed so
// too (scim.Resource.WithWorkEmailTyped): the email uniqueness holds it to
// is the one Entra's matching filter, emails[type eq "work"].value eq "…",
// then finds. Otherwise that filter finds nobody, the POST that follows is
// refused as a duplicate (409), and Entra, which does not link on a 409,
// tries again every cycle.
func filterView(t *tenant, rt *scim.ResourceType, f *scim.Filter) func(*scim.Resource) *scim.Resource {
	if t == nil || !t.uniqueEmail || rt != scim.UserResourceType || f == nil || !f.References("emails") {
		return nil
	}
	return (*scim.Resource).WithWorkEmailTyped
}

// eachMatch calls fn with every resource of rt matching f (nil: all), in id
// order, until fn returns an error; f reads each as view returns it (nil:
// as it is), fn gets it as stored. The memberships f reads count against
// b, and it stops with ctx's error once ctx is done.
func eachMatch(ctx context.Context, tb *bolt.Bucket, rt *scim.ResourceType, f *scim.Filter, view func(*scim.Resource) *scim.Resource, b *budget, fn func(*scim.Resource, int) error) error {
	var elements func(id string) scim.Elements
	names := map[string]string{}
	switch {
	case f == nil:
	case rt == scim.GroupResourceType && f.References("members"):
		elements = func(id string) scim.Elements { return b.bounded(ctx, memberElements(tb, id)) }
	case rt == scim.UserResourceType && f.References("groups"):
		elements = func(id string) scim.Elements { return b.bounded(ctx, groupElements(tb, id, names, b)) }
	}
	// Without a filter (sortBy) each resource is decoded all the same, for
	// its sort key: one term's worth.
	terms := 1
	if f != nil {
		terms = max(f.Terms(), 1)
	}
	test := func(r *scim.Resource, size int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.compared += size * terms
		ok := f == nil
		read := r
		if !ok && view != nil {
			read = view(r)
		}
		if !ok && elements != nil {
			var err error
			if ok, err = f.MatchElements(read, elements(r.ID())); err != nil {
				return err
			}
		} else if !ok {
			ok = f.Match(read)
		}
		if ok {
			return fn(r, size)
		}
		return nil
	}
	if ids, ok := candidates(tb, rt, f); ok {
		for _, id := range ids {
			rec, err := getRecord(tb, rt, id)
			if err != nil {
				return err
			}
			if rec == nil {
				continue
			}
			if err := test(rec.res, rec.size); err != nil {
				return err
			}
		}
		return nil
	}
	c := resourceBucket(tb, rt).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		rec, err := decodeRecord(rt, v)
		if err != nil {
			return fmt.Errorf("reading %s %s: %w", rt.Name, k, err)
		}
		if err := test(rec.res, len(v)); err != nil {
			return err
		}
	}
	return nil
}

// candidates returns, in id order, the ids that the filter's most selective
// indexed equality allows; ok is false when no equality is indexed. Each
// index is counted only as far as it could still beat the best so far.
func candidates(tb *bolt.Bucket, rt *scim.ResourceType, f *scim.Filter) (ids []string, ok bool) {
	if f == nil {
		return nil, false
	}
	for _, eq := range f.Equalities() {
		limit := -1
		if ok {
			limit = len(ids) // a list as long as the best cannot beat it
		}
		found, indexed := lookupEquality(tb, rt, eq, limit)
		if !indexed || (ok && len(found) >= len(ids)) {
			continue
		}
		ids, ok = found, true
		if len(ids) == 0 {
			break
		}
	}
	return ids, ok
}

// lookupEquality returns up to limit ids (limit < 0: all) having the
// equality, and whether an index answers it for rt.
func lookupEquality(tb *bolt.Bucket, rt *scim.ResourceType, eq scim.Equality, limit int) ([]string, bool) {
	user := rt == scim.UserResourceType
	switch {
	case eq.Path == "id":
		if !validKey(eq.Value) || limit == 0 {
			return nil, true
		}
		return []string{eq.Value}, true
	case eq.Path == "userName" && user:
		return lookupIDs(tb.Bucket(ixUserName), scim.Fold(eq.Value), limit), true
	case eq.Path == "emails.value" && user:
		return lookupIDs(tb.Bucket(ixEmail), scim.Fold(eq.Value), limit), true
	case eq.Path == "externalId" && user:
		return lookupIDs(tb.Bucket(ixUserExt), eq.Value, limit), true
	case eq.Path == "externalId":
		return lookupIDs(tb.Bucket(ixGroupExt), eq.Value, limit), true
	case eq.Path == "displayName" && !user:
		return lookupIDs(tb.Bucket(ixDisplayName), scim.Fold(eq.Value), limit), true
	case eq.Path == "members.value" && !user:
		if !validKey(eq.Value) {
			return nil, true
		}
		return scanIDs(tb.Bucket(bucketMemberOf), memberKey(eq.Value, ""), limit), true
	}
	return nil, false
}

// sortable is a match's id with its sort key.
type sortable struct {
	id  string
	key scim.SortKey
}
