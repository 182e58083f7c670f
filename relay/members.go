package relay

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/scimrelay/scimrelay/relay/events"
	"github.com/scimrelay/scimrelay/scim"
)

// Memberships live in their own keys (group ‖ member and member ‖ group),
// never in the group's record, so that changing one member of a group of
// 100,000 touches a handful of keys.

// memberChange is one membership a request actually changed.
type memberChange struct {
	added  bool
	member events.Member
}

// resolveMember checks that a member exists in the tenant and fills in its
// type, and its display name when the client sent none.
func resolveMember(tb *bolt.Bucket, groupID string, m scim.Member) (events.Member, error) {
	if m.Value == groupID {
		return events.Member{}, scim.Errorf(scim.ErrInvalidValue, "group %s cannot be a member of itself", groupID)
	}
	out := events.Member{Value: m.Value, Display: m.Display}
	for _, rt := range []*scim.ResourceType{scim.UserResourceType, scim.GroupResourceType} {
		v := resourceBucket(tb, rt).Get([]byte(m.Value))
		if v == nil {
			continue
		}
		out.Type = rt.Name
		if out.Display == "" {
			rec, err := decodeRecord(rt, v)
			if err != nil {
				return out, err
			}
			out.Display = rec.res.String("displayName")
			if out.Display == "" && rt == scim.UserResourceType {
				out.Display = rec.res.String("userName")
			}
		}
		return out, nil
	}
	return out, scim.Errorf(scim.ErrInvalidValue, "member %q is not the id of a User or Group in this tenant", m.Value)
}

// resolveMembers resolves the members of a group being created, dropping
// repeats.
func resolveMembers(tb *bolt.Bucket, groupID string, members []scim.Member) ([]events.Member, error) {
	seen := map[string]bool{}
	out := make([]events.Member, 0, len(members))
	for _, m := range members {
		if seen[m.Value] {
			continue
		}
		seen[m.Value] = true
		r, err := resolveMember(tb, groupID, m)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// checkMemberOps validates membership operations before anything is written.
func checkMemberOps(tb *bolt.Bucket, groupID string, ops []scim.MemberOp) error {
	for _, op := range ops {
		if op.Kind != scim.AddMembers {
			continue
		}
		for _, m := range op.Members {
			if _, err := resolveMember(tb, groupID, m); err != nil {
				return err
			}
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

// getMember returns a membership, ok false when there is none.
func getMember(tb *bolt.Bucket, groupID, memberID string) (events.Member, bool, error) {
	v := tb.Bucket(bucketMembers).Get(memberKey(groupID, memberID))
	if v == nil {
		return events.Member{}, false, nil
	}
	var rec memberRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return events.Member{}, false, fmt.Errorf("decoding membership %s in group %s: %w", memberID, groupID, err)
	}
	return events.Member{Value: memberID, Display: rec.Display, Type: rec.Type}, true, nil
}

// applyMemberOps applies membership operations in order and returns the
// changes they made: adding a present member or removing an absent one
// changes nothing.
func applyMemberOps(tb *bolt.Bucket, groupID string, ops []scim.MemberOp) ([]memberChange, error) {
	var changes []memberChange
	remove := func(m events.Member) error {
		if err := deleteMember(tb, groupID, m.Value); err != nil {
			return err
		}
		changes = append(changes, memberChange{added: false, member: m})
		return nil
	}
	for _, op := range ops {
		switch op.Kind {
		case scim.AddMembers:
			for _, sm := range op.Members {
				if _, present, err := getMember(tb, groupID, sm.Value); err != nil || present {
					if err != nil {
						return nil, err
					}
					continue
				}
				m, err := resolveMember(tb, groupID, sm)
				if err != nil {
					return nil, err
				}
				if err := putMember(tb, groupID, m); err != nil {
					return nil, err
				}
				changes = append(changes, memberChange{added: true, member: m})
			}
		case scim.RemoveMembers:
			for _, sm := range op.Members {
				m, present, err := getMember(tb, groupID, sm.Value)
				if err != nil {
					return nil, err
				}
				if present {
					if err := remove(m); err != nil {
						return nil, err
					}
				}
			}
		case scim.RemoveAllMembers, scim.RemoveMatchingMembers:
			all, err := allMembers(tb, groupID)
			if err != nil {
				return nil, err
			}
			for _, sm := range all {
				m := events.Member{Value: sm.Value, Display: sm.Display, Type: sm.Type}
				if op.Kind == scim.RemoveMatchingMembers && !op.Filter.MatchValue(map[string]any{"value": m.Value, "display": m.Display, "type": m.Type}) {
					continue
				}
				if err := remove(m); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("unknown membership operation %d", op.Kind)
		}
	}
	return changes, nil
}

// leaveAllGroups removes a member from every group it belongs to, emitting
// group.member_removed on each group and bumping its version.
func (w *txWrite) leaveAllGroups(tx *bolt.Tx, tb *bolt.Bucket, t *tenant, memberID string) error {
	prefix := memberKey(memberID, "")
	var groups []string
	c := tb.Bucket(bucketMemberOf).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		groups = append(groups, string(k[len(prefix):]))
	}
	now := w.store.now()
	for _, gid := range groups {
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
		rec.version++
		meta := rec.res.Meta()
		meta.LastModified, meta.Version = now, versionTag(rec.version)
		rec.res.SetMeta(meta)
		if err := w.emit(tx, tb, t, rec, events.GroupMemberRemoved, nil, &m); err != nil {
			return err
		}
		if err := putRecord(tb, rec); err != nil {
			return err
		}
	}
	return nil
}

// pageMembers returns up to limit members of a group after the member id
// after, in id order; limit <= 0 returns all.
func pageMembers(tb *bolt.Bucket, groupID, after string, limit int) ([]scim.Member, error) {
	prefix := memberKey(groupID, "")
	out := []scim.Member{}
	c := tb.Bucket(bucketMembers).Cursor()
	k, v := c.Seek(memberKey(groupID, after))
	if after != "" && k != nil && bytes.Equal(k, memberKey(groupID, after)) {
		k, v = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var rec memberRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return nil, fmt.Errorf("decoding a membership of group %s: %w", groupID, err)
		}
		out = append(out, scim.Member{Value: string(k[len(prefix):]), Display: rec.Display, Type: rec.Type})
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	return out, nil
}

func allMembers(tb *bolt.Bucket, groupID string) ([]scim.Member, error) {
	return pageMembers(tb, groupID, "", 0)
}
