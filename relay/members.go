// SPDX-License-Identifier: Apache-2.0

package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// memberChange is one membership a request actually changed.
type memberChange struct {
	added  bool
	member events.Member
}

// memberPlan works out the net effect of a request's membership operations
// on one group before anything is written. Only the members the operations
// name are read, so that adding one member to a group of 100,000 reads and
// writes a handful of keys; emptying a group has to read them all.
//
// The effect is net: a PUT that replaces the members with the same members
// (remove all, then add each) changes nothing and emits nothing, and adding
// then removing a member in one request leaves no trace.
type memberPlan struct {
	tb      *bolt.Bucket
	groupID string
	state   map[string]*memberState
	step    int
	// walked counts the members that removals by filter read one by one:
	// the plan is worked out inside the committer, which every tenant's
	// writes wait for. It is the write's (txWrite.examined).
	walked *budget
	// removedAll is set once the plan has removed every member: another
	// such removal is counted (removeWhere).
	removedAll bool
	// fresh lists the values the request named that were not members
	// before it, in the order first named: removeWhere walks them.
	fresh []string
}

// memberState is one member's presence before the request and after the
// operations so far.
type memberState struct {
	before, after bool
	stored        events.Member // as stored, when before
	added         events.Member // as resolved, when added by this request
	last          int           // the step that last changed after: event order
}

// newMemberPlan plans changes to a group's members; its removals by filter
// read members one by one within b (maxMembershipsExamined).
func newMemberPlan(tb *bolt.Bucket, groupID string, b *budget) *memberPlan {
	return &memberPlan{tb: tb, groupID: groupID, state: map[string]*memberState{}, walked: b}
}

// lookup returns a member's state, reading its key on first use.
func (p *memberPlan) lookup(value string) (*memberState, error) {
	if st, ok := p.state[value]; ok {
		return st, nil
	}
	st := &memberState{}
	if validKey(value) {
		m, present, err := getMember(p.tb, p.groupID, value)
		if err != nil {
			return nil, err
		}
		st.before, st.after, st.stored = present, present, m
	}
	if !st.before {
		p.fresh = append(p.fresh, value)
	}
	p.state[value] = st
	return st, nil
}

// current is the member as it now stands in the plan.
func (st *memberState) current() events.Member {
	if st.before {
		return st.stored
	}
	return st.added
}

// apply runs the operations in order. Its errors are SCIM errors naming the
// member at fault, or errors reading the file.
func (p *memberPlan) apply(ops []scim.MemberOp) error {
	for _, op := range ops {
		switch op.Kind {
		case scim.AddMembers:
			for _, m := range op.Members {
				if err := p.add(m); err != nil {
					return err
				}
			}
		case scim.RemoveMembers:
			for _, m := range op.Members {
				st, err := p.lookup(m.Value)
				if err != nil {
					return err
				}
				p.set(st, false)
			}
		case scim.RemoveAllMembers:
			if err := p.removeWhere(nil); err != nil {
				return err
			}
		case scim.RemoveMatchingMembers:
			if op.Filter == nil {
				return fmt.Errorf("removing matching members of group %s: the operation has no filter", p.groupID)
			}
			var err error
			if values, named := op.Filter.ElementValues(); named {
				err = p.removeNamed(op.Filter, values)
			} else {
				err = p.removeWhere(op.Filter)
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("changing members of group %s: unknown membership operation %d", p.groupID, op.Kind)
		}
	}
	return nil
}

func (p *memberPlan) set(st *memberState, present bool) {
	if st.after != present {
		st.after = present
		p.step++
		st.last = p.step
	}
}

func (p *memberPlan) add(m scim.Member) error {
	st, err := p.lookup(m.Value)
	if err != nil {
		return err
	}
	if st.after {
		return nil // already a member: adding it again changes nothing
	}
	if !st.before {
		// resolved again on each add: the last one names the member
		if st.added, err = resolveMember(p.tb, p.groupID, m); err != nil {
			return err
		}
	}
	p.set(st, true)
	return nil
}

// removeWhere removes every current member that f matches (all when f is
// nil): the stored ones in id order, then those this request added. The
// members a filter walks are counted (walked); the first removal of every
// member is not: it reads each member once, whatever the request says,
// and a group too large for the bound could otherwise never be emptied.
// A second one in the same request is, the values the request named
// included: 999 of them walked a group of 10,000 members 999 times inside
// the committer, uncounted, and 90,000 values named once were walked on
// each of them (fresh).
func (p *memberPlan) removeWhere(f *scim.Filter) error {
	match := func(m events.Member) bool {
		return f == nil || f.MatchValue(memberObject(m))
	}
	counted := f != nil || p.removedAll
	p.removedAll = p.removedAll || f == nil
	spend := func() error {
		if !counted {
			return nil
		}
		return p.walked.spend()
	}
	prefix := memberKey(p.groupID, "")
	c := p.tb.Bucket(bucketMembers).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := spend(); err != nil {
			return err
		}
		value := string(k[len(prefix):])
		st, ok := p.state[value]
		if !ok {
			m, err := decodeMember(p.groupID, value, v)
			if err != nil {
				return err
			}
			st = &memberState{before: true, after: true, stored: m}
			p.state[value] = st
		}
		if st.after && match(st.current()) {
			p.set(st, false)
		}
	}
	var added []string
	for _, value := range p.fresh {
		if err := spend(); err != nil {
			return err
		}
		if p.state[value].after {
			added = append(added, value)
		}
	}
	slices.Sort(added)
	for _, value := range added {
		if st := p.state[value]; match(st.added) {
			p.set(st, false)
		}
	}
	return nil
}

// removeNamed removes the current members that f matches when f can only
// match members whose value is one of values (members[value eq "a" and
// type eq "User"], members[value eq "a" or value eq "b"]): it reads those
// members' keys alone. It removes them in id order, as removeWhere does the
// stored ones; the order among members this request added does not show,
// since removing them leaves no change.
func (p *memberPlan) removeNamed(f *scim.Filter, values []string) error {
	values = slices.Clone(values)
	slices.Sort(values)
	for _, value := range slices.Compact(values) {
		st, err := p.lookup(value)
		if err != nil {
			return err
		}
		if st.after && f.MatchValue(memberObject(st.current())) {
			p.set(st, false)
		}
	}
	return nil
}

// changes returns the net membership changes in the order the operations
// made them.
func (p *memberPlan) changes() []memberChange {
	var changed []*memberState
	for _, st := range p.state {
		if st.before != st.after {
			changed = append(changed, st)
		}
	}
	slices.SortFunc(changed, func(a, b *memberState) int { return a.last - b.last })
	out := make([]memberChange, len(changed))
	for i, st := range changed {
		out[i] = memberChange{added: st.after, member: st.current()}
	}
	return out
}

// write stores the planned changes.
func (p *memberPlan) write(changes []memberChange) error {
	for _, c := range changes {
		var err error
		if c.added {
			err = putMember(p.tb, p.groupID, c.member)
		} else {
			err = deleteMember(p.tb, p.groupID, c.member.Value)
		}
		if err != nil {
			return fmt.Errorf("writing a membership of group %s: %w", p.groupID, err)
		}
	}
	return nil
}

// resolveMember checks that a member exists in the tenant and fills in its
// type, and its display name (the member's displayName, else its userName)
// when the client sent none.
func resolveMember(tb *bolt.Bucket, groupID string, m scim.Member) (events.Member, error) {
	if m.Value == groupID {
		return events.Member{}, scim.Errorf(scim.ErrInvalidValue, "group %s cannot be a member of itself", groupID)
	}
	out := events.Member{Value: m.Value, Display: m.Display}
	for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
		c, ok, err := getCard(tb, rt, m.Value)
		if err != nil {
			return out, err
		}
		if !ok {
			continue
		}
		out.Type = rt.Name
		if out.Display == "" {
			out.Display = c.display()
		}
		return c.describe(out), nil
	}
	return out, scim.Errorf(scim.ErrInvalidValue, "member %q is not the id of a User or Group in this tenant", scim.Truncate(m.Value, 64))
}

// describeMember fills in who a member is (userName, email and externalId
// of a User; displayName and externalId of a Group) from its record: one
// key read, whatever the size of the group. A member whose record is gone
// keeps what the membership holds.
func describeMember(tb *bolt.Bucket, m events.Member) (events.Member, error) {
	rt := scim.UserResourceType
	if m.Type == scim.GroupResourceType.Name {
		rt = scim.GroupResourceType
	}
	c, ok, err := getCard(tb, rt, m.Value)
	if err != nil || !ok {
		return m, err
	}
	return c.describe(m), nil
}

// memberCard is who a member is, as its groups and its member events name
// it.
type memberCard struct {
	group                                    bool
	displayName, userName, externalID, email string
}

// cardOf is the card of a decoded resource.
func cardOf(r *scim.Resource) memberCard {
	return memberCard{
		group:       r.Type == scim.GroupResourceType,
		displayName: r.String("displayName"),
		userName:    r.String("userName"),
		externalID:  r.ExternalID(),
		email:       r.PrimaryEmail(),
	}
}

// getCard reads the card of the resource of type rt with id from its
// stored record, without decoding the record: a member PATCH names every
// member it adds, and decoding each whole record was 43% of a 100-member
// PATCH's transaction (BenchmarkMemberAdd100). It reads what cardOf
// reads, the same way (TestCardMatchesDecodedRecord).
func getCard(tb *bolt.Bucket, rt *scim.ResourceType, id string) (memberCard, bool, error) {
	c, _, ok, err := getCardSized(tb, rt, id)
	return c, ok, err
}

// getCardSized is getCard that also says how many bytes the record it
// read holds (0 when there is none): reading a card reads the whole record.
func getCardSized(tb *bolt.Bucket, rt *scim.ResourceType, id string) (memberCard, int, bool, error) {
	if !validKey(id) {
		return memberCard{}, 0, false, nil
	}
	v := resourceBucket(tb, rt).Get([]byte(id))
	if v == nil {
		return memberCard{}, 0, false, nil
	}
	if len(v) < recordHeader {
		return memberCard{}, len(v), false, fmt.Errorf("reading %s %s: the record is %d bytes, shorter than its header", rt.Name, id, len(v))
	}
	c, err := readCard(rt, v[recordHeader:])
	if err != nil {
		return memberCard{}, len(v), false, fmt.Errorf("reading %s %s: %w", rt.Name, id, err)
	}
	return c, len(v), true, nil
}

// readCard reads a card from a stored resource's JSON, in one pass over
// its top-level attributes. As encoding/json would, a repeated key's last
// value counts and a value of the wrong type counts as absent. JSON that is
// not valid UTF-8 (which the relay does not write) is decoded instead, so
// that its strings read as encoding/json reads them; invalid JSON is
// refused.
func readCard(rt *scim.ResourceType, data []byte) (memberCard, error) {
	if !utf8.Valid(data) || !gjson.ValidBytes(data) {
		res, err := scim.UnmarshalResource(rt, data)
		if err != nil {
			return memberCard{}, err
		}
		return cardOf(res), nil
	}
	c := memberCard{group: rt == scim.GroupResourceType}
	str := func(v gjson.Result) string {
		if v.Type == gjson.String {
			return v.Str
		}
		return ""
	}
	gjson.ParseBytes(data).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "displayName":
			c.displayName = str(v)
		case "userName":
			c.userName = str(v)
		case "externalId":
			c.externalID = str(v)
		case "emails":
			c.email = primaryEmail(v)
		}
		return true
	})
	return c, nil
}

// primaryEmail is scim.Resource.PrimaryEmail over the JSON of emails: the
// value marked primary, else the first typed work.
func primaryEmail(emails gjson.Result) string {
	if !emails.IsArray() {
		return ""
	}
	var primary, work string
	found := false
	emails.ForEach(func(_, e gjson.Result) bool {
		if !e.IsObject() {
			return true
		}
		var value, typ string
		isPrimary := false
		e.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "value":
				value = ""
				if v.Type == gjson.String {
					value = v.Str
				}
			case "primary":
				isPrimary = v.Type == gjson.True
			case "type":
				typ = ""
				if v.Type == gjson.String {
					typ = v.Str
				}
			}
			return true
		})
		if value == "" {
			return true
		}
		if isPrimary {
			primary, found = value, true
			return false
		}
		if work == "" && strings.EqualFold(typ, "work") {
			work = value
		}
		return true
	})
	if found {
		return primary
	}
	return work
}

// describe fills in m's names from the card.
func (c memberCard) describe(m events.Member) events.Member {
	m.ExternalID = c.externalID
	if c.group {
		m.DisplayName = c.displayName
	} else {
		m.UserName, m.Email = c.userName, c.email
	}
	return m
}

// display is the name a group shows for the member.
func (c memberCard) display() string { return displayOf(c.displayName, c.userName) }

// memberDisplay is the name a group shows for r as a member.
func memberDisplay(r *scim.Resource) string {
	return displayOf(r.String("displayName"), r.String("userName"))
}

// displayOf is the name a group shows for a member: its displayName, else
// its userName.
func displayOf(displayName, userName string) string {
	if displayName != "" {
		return displayName
	}
	return userName
}

// renameInGroups sets the display name of memberID in every group it
// belongs to, so that a renamed member does not keep its old name in its
// groups. It touches one key per group of the member, never a group's other
// members.
//
// Each membership it rewrites counts in examined, which the write's tenant
// is charged for (MembershipsPerRequest), but never refuses the rename: a
// user in 100,000 groups held the committer 1-2 s a rename, at the cost
// of one request of a hundred bytes (an attack round).
func renameInGroups(tb *bolt.Bucket, memberID, display string, examined *budget) error {
	for _, gid := range scanIDs(tb.Bucket(bucketMemberOf), memberKey(memberID, ""), -1) {
		examined.spent++
		m, present, err := getMember(tb, gid, memberID)
		if err != nil {
			return err
		}
		if !present || m.Display == display {
			continue
		}
		m.Display = display
		if err := putMember(tb, gid, m); err != nil {
			return err
		}
	}
	return nil
}

func putMember(tb *bolt.Bucket, groupID string, m events.Member) error {
	v, err := json.Marshal(memberRecord{Display: m.Display, Type: m.Type})
	if err != nil {
		return err
	}
	if err := tb.Bucket(bucketMembers).Put(memberKey(groupID, m.Value), v); err != nil {
		return err
	}
	return tb.Bucket(bucketMemberOf).Put(memberKey(m.Value, groupID), nil)
}

func deleteMember(tb *bolt.Bucket, groupID, memberID string) error {
	if err := tb.Bucket(bucketMembers).Delete(memberKey(groupID, memberID)); err != nil {
		return err
	}
	return tb.Bucket(bucketMemberOf).Delete(memberKey(memberID, groupID))
}

// getMember returns a membership, present false when there is none.
func getMember(tb *bolt.Bucket, groupID, memberID string) (m events.Member, present bool, err error) {
	v := tb.Bucket(bucketMembers).Get(memberKey(groupID, memberID))
	if v == nil {
		return events.Member{}, false, nil
	}
	m, err = decodeMember(groupID, memberID, v)
	return m, err == nil, err
}

func decodeMember(groupID, memberID string, v []byte) (events.Member, error) {
	var rec memberRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return events.Member{}, fmt.Errorf("decoding membership of %s in group %s: %w", memberID, groupID, err)
	}
	return events.Member{Value: memberID, Display: rec.Display, Type: rec.Type}, nil
}

// deleteAllMembers removes every membership of a group, in both directions,
// without reading the membership records.
func deleteAllMembers(tb *bolt.Bucket, groupID string) error {
	members := tb.Bucket(bucketMembers)
	ids := scanIDs(members, memberKey(groupID, ""), -1)
	for _, id := range ids {
		if err := members.Delete(memberKey(groupID, id)); err != nil {
			return err
		}
		if err := tb.Bucket(bucketMemberOf).Delete(memberKey(id, groupID)); err != nil {
			return err
		}
	}
	return nil
}

// leaveAllGroups removes a member from every group it belongs to, emitting
// group.member_removed on each group and bumping its version.
func (w *txWrite) leaveAllGroups(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, memberID string) error {
	for _, gid := range scanIDs(tb.Bucket(bucketMemberOf), memberKey(memberID, ""), -1) {
		m, _, err := getMember(tb, gid, memberID)
		if err != nil {
			return err
		}
		if err := deleteMember(tb, gid, memberID); err != nil {
			return err
		}
		rec, err := getRecord(tb, scim.GroupResourceType, gid)
		if err != nil {
			return err
		}
		if rec == nil {
			continue // a dangling membership of a deleted group: nothing to tell
		}
		w.touch(rec)
		if err := w.emitMembers(tx, tb, t, rec, []memberChange{{member: m}}); err != nil {
			return err
		}
		if err := putRecord(tb, rec); err != nil {
			return err
		}
	}
	return nil
}

// memberElements gives a filter the members of a group one key at a time
// (scim.Filter.MatchElements), so that asking whether a group of 100,000
// holds one user reads one key.
func memberElements(tb *bolt.Bucket, groupID string) scim.Elements {
	return scim.Elements{
		Attr: "members",
		Lookup: func(value string) (map[string]any, error) {
			if !validKey(value) {
				return nil, nil
			}
			m, present, err := getMember(tb, groupID, value)
			if err != nil || !present {
				return nil, err
			}
			return memberObject(m), nil
		},
		Each: func(yield func(map[string]any) bool) error {
			prefix := memberKey(groupID, "")
			c := tb.Bucket(bucketMembers).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				m, err := decodeMember(groupID, string(k[len(prefix):]), v)
				if err != nil {
					return err
				}
				if !yield(memberObject(m)) {
					return nil
				}
			}
			return nil
		},
	}
}

// memberObject is a member as a filter on members sees it.
func memberObject(m events.Member) map[string]any {
	return map[string]any{"value": m.Value, "display": m.Display, "type": m.Type}
}

// groupElements gives a filter the groups of a member one key at a time.
// A group's display name is read from its card, not its decoded record,
// and kept in names (nil: not kept) while it holds fewer than
// maxNamesKept: a filter on groups may read it for every membership of the
// tenant, once per term. b (nil: none) is charged for the bytes of the
// records read beyond the first KiB of each (a group may carry an
// extension of megabytes, read whole for its name).
func groupElements(tb *bolt.Bucket, memberID string, names map[string]string, b *budget) scim.Elements {
	object := func(groupID string) (map[string]any, error) {
		entry := map[string]any{"value": groupID, "type": "direct"}
		if display, ok := names[groupID]; ok {
			entry["display"] = display
			return entry, nil
		}
		c, size, ok, err := getCardSized(tb, scim.GroupResourceType, groupID)
		if b != nil && err == nil {
			err = b.spendBytes(size)
		}
		if ok {
			entry["display"] = c.displayName
			if names != nil && len(names) < maxNamesKept {
				names[groupID] = c.displayName
			}
		}
		return entry, err
	}
	return scim.Elements{
		Attr: "groups",
		Lookup: func(value string) (map[string]any, error) {
			if !validKey(value) || tb.Bucket(bucketMemberOf).Get(memberKey(memberID, value)) == nil {
				return nil, nil
			}
			return object(value)
		},
		Each: func(yield func(map[string]any) bool) error {
			prefix := memberKey(memberID, "")
			c := tb.Bucket(bucketMemberOf).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				entry, err := object(string(k[len(prefix):]))
				if err != nil {
					return err
				}
				if !yield(entry) {
					return nil
				}
			}
			return nil
		},
	}
}

// maxMembershipsExamined bounds the memberships one request may read one by
// one: those a filter on members (or a user's groups) reads in a List,
// summed over every term and resource, and the members a PATCH's removals
// by a filter that does not name them walk, summed over its operations.
// Past it the request is refused with tooMany, so that no request holds
// the committer (every tenant's writes wait for it) or a core for long:
// a member or group named by value costs a sixteenth of a read
// (lookupsPerRead), and a group's name read from a large record a read per
// KiB (cardBytesPerRead); removing every member once costs nothing
// (removeWhere).
const maxMembershipsExamined = 1_000_000

// maxNamesKept bounds the group names one List keeps (groupElements).
const maxNamesKept = 10_000

// budget counts what one request reads, up to limit.
type budget struct {
	spent, looked, limit int
	// compared counts the bytes of stored resources a list's filter
	// tested, times its terms (ComparedBytesPerRequest).
	compared int
}

// spend counts one membership read, refusing the request past the limit.
func (b *budget) spend() error { return b.spendN(1) }

// spendN counts n membership reads' worth.
func (b *budget) spendN(n int) error {
	b.spent += n
	if b.spent > b.limit {
		return scim.Errorf(scim.ErrTooMany, "the request reads more than %d memberships; name members by value (members[value eq \"<id>\"]) or send fewer filter terms or operations", b.limit)
	}
	return nil
}

// lookupsPerRead is how many key lookups (a term naming a member or a
// group by value, tested on each resource) count as one membership read: a
// lookup reads one key, and `groups eq "<id>"` over a million users is a
// cheap query that a read each would refuse.
const lookupsPerRead = 16

// lookedUp counts one key lookup.
func (b *budget) lookedUp() error {
	if b.looked++; b.looked%lookupsPerRead == 0 {
		return b.spend()
	}
	return nil
}

// cardBytesPerRead is how many bytes of a record read for a group's name
// count as one membership read, beyond the first ones.
const cardBytesPerRead = 1024

// spendBytes counts reading a record of size bytes.
func (b *budget) spendBytes(size int) error {
	if size < cardBytesPerRead {
		return nil
	}
	return b.spendN(size / cardBytesPerRead)
}

// bounded wraps el so that every element it reads counts against b, and a
// walk stops once ctx is done (the client is gone).
func (b *budget) bounded(ctx context.Context, el scim.Elements) scim.Elements {
	lookup, each := el.Lookup, el.Each
	el.Lookup = func(value string) (map[string]any, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := b.lookedUp(); err != nil {
			return nil, err
		}
		return lookup(value)
	}
	el.Each = func(yield func(map[string]any) bool) error {
		var stop error
		err := each(func(e map[string]any) bool {
			if stop = ctx.Err(); stop == nil {
				stop = b.spend()
			}
			return stop == nil && yield(e)
		})
		if stop != nil {
			return stop
		}
		return err
	}
	return el
}

// pageMembers returns up to limit members of a group after the member id
// after, in id order; limit <= 0 returns all.
func pageMembers(tb *bolt.Bucket, groupID, after string, limit int) ([]scim.Member, error) {
	prefix := memberKey(groupID, "")
	out := []scim.Member{}
	c := tb.Bucket(bucketMembers).Cursor()
	start := memberKey(groupID, after)
	k, v := c.Seek(start)
	if after != "" && k != nil && bytes.Equal(k, start) {
		k, v = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		m, err := decodeMember(groupID, string(k[len(prefix):]), v)
		if err != nil {
			return nil, err
		}
		out = append(out, scim.Member{Value: m.Value, Display: m.Display, Type: m.Type})
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}
