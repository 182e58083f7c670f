// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"errors"
	"testing"
)

// elementsGroup is a group whose members a backend keeps outside it.
func elementsGroup() (*Resource, []any) {
	members := []any{
		map[string]any{"value": "u1", "display": "Ann", "type": "User"},
		map[string]any{"value": "u2", "display": "Bob", "type": "User"},
		map[string]any{"value": "g9", "display": "Ops", "type": "Group"},
	}
	r := &Resource{Type: GroupResourceType, Attrs: map[string]any{"id": "g1", "displayName": "Sales"}}
	return r, members
}

// countingElements serves members from a list and counts how it is asked.
type countingElements struct {
	list            []any
	lookups, walked int
}

func (c *countingElements) elements() Elements {
	return Elements{
		Attr: "members",
		Lookup: func(value string) (map[string]any, error) {
			c.lookups++
			for _, m := range c.list {
				if m.(map[string]any)["value"] == value {
					return m.(map[string]any), nil
				}
			}
			return nil, nil
		},
		Each: func(yield func(map[string]any) bool) error {
			for _, m := range c.list {
				c.walked++
				if !yield(m.(map[string]any)) {
					return nil
				}
			}
			return nil
		},
	}
}

// TestMatchElements: MatchElements answers what Match answers on the
// resource holding all its members, and an equality on the members' value
// is looked up, never walked.
func TestMatchElements(t *testing.T) {
	tests := []struct {
		filter  string
		lookups int // -1: any number, members walked
	}{
		{`members eq "u1"`, 1},
		{`members eq "U1"`, 1}, // value is caseExact
		{`members eq "nobody"`, 1},
		{`members.value eq "u2"`, 1},
		{`members.value ne "u2"`, 1},
		{`members.value ne "nobody"`, 1},
		{`not (members eq "u1")`, 1},
		{`members[value eq "g9"]`, 1},
		{`members[value eq "g9" and type eq "User"]`, 1},
		{`members[type eq "Group" and value eq "g9"]`, 1},
		{`members[value eq "u1" or value eq "g9"]`, 1}, // u1 settles it
		{`members[value eq "nobody" or value eq "g9"]`, 2},
		{`members eq "u1" and members eq "u2"`, 2},
		{`members eq "nobody" and members eq "u2"`, 1}, // "and" stops at the first false
		{`displayName eq "Sales" and members eq "u1"`, 1},
		{`displayName eq "Other" and members eq "u1"`, 0},
		{`members eq "u1" or displayName eq "Other"`, 1},
		{`members pr`, -1},
		{`members eq null`, -1},
		{`members ne null`, -1},
		{`members.display co "o"`, -1},
		{`members[type eq "Group"]`, -1},
		{`members[value eq "u1" or type eq "Group"]`, -1},
		{`not (members.type eq "User")`, -1},
		{`members.value sw "u"`, -1},
	}
	r, list := elementsGroup()
	full := r.Clone()
	full.Attrs["members"] = list
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(GroupResourceType, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			c := &countingElements{list: list}
			got, err := f.MatchElements(r, c.elements())
			if err != nil {
				t.Fatal(err)
			}
			if want := f.Match(full); got != want {
				t.Errorf("MatchElements %v, Match on the whole group %v", got, want)
			}
			switch {
			case tt.lookups >= 0 && (c.lookups != tt.lookups || c.walked != 0):
				t.Errorf("%d lookups and %d members walked; want %d lookups and none walked", c.lookups, c.walked, tt.lookups)
			case tt.lookups < 0 && c.lookups != 0:
				t.Errorf("%d lookups for a term that is not an equality on value", c.lookups)
			}
			if r.Attrs["members"] != nil {
				t.Fatal("MatchElements put members into the resource")
			}
		})
	}
}

func TestMatchElementsErrors(t *testing.T) {
	r, _ := elementsGroup()
	r.Attrs["displayName"] = "Other"
	broken := errors.New("disk on fire")
	el := Elements{
		Attr:   "members",
		Lookup: func(string) (map[string]any, error) { return nil, broken },
		Each:   func(func(map[string]any) bool) error { return broken },
	}
	for _, fs := range []string{`members eq "u1"`, `members pr`, `not (members eq "u1")`, `displayName eq "Sales" or members pr`} {
		f, err := ParseFilter(GroupResourceType, fs)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := f.MatchElements(r, el); !errors.Is(err, broken) || ok {
			t.Errorf("%s: %v, %v; want the backend's error", fs, ok, err)
		}
	}
	// A filter answered before the members are read needs no backend.
	f, _ := ParseFilter(GroupResourceType, `displayName eq "Sales" or members pr`)
	r.Attrs["displayName"] = "Sales"
	if ok, err := f.MatchElements(r, el); err != nil || !ok {
		t.Errorf("short-circuited filter: %v, %v", ok, err)
	}
}

// FuzzMatchElements: for any filter, matching through Elements gives what
// matching the group with its members in place gives.
func FuzzMatchElements(f *testing.F) {
	for _, s := range []string{`members eq "u1"`, `members[value eq "g9" and type eq "User"]`, `not (members.value ne "u2") or members pr`,
		`members[value eq "u1" or value eq "x"] and displayName sw "S"`, `members.display co "o" and members eq null`} {
		f.Add(s)
	}
	r, list := elementsGroup()
	full := r.Clone()
	full.Attrs["members"] = list
	f.Fuzz(func(t *testing.T, s string) {
		filter, err := ParseFilter(GroupResourceType, s)
		if err != nil {
			return
		}
		c := &countingElements{list: list}
		got, err := filter.MatchElements(r, c.elements())
		if err != nil {
			t.Fatal(err)
		}
		if want := filter.Match(full); got != want {
			t.Fatalf("%s: MatchElements %v, Match %v", s, got, want)
		}
	})
}

// TestMatchElementsOnAnEmptyGroup: on a group without members,
// MatchElements answers what Match answers on the group as it is (no
// members attribute): "ne null" means present, so an empty group does not
// match members ne null, as it does not match members pr.
func TestMatchElementsOnAnEmptyGroup(t *testing.T) {
	r := &Resource{Type: GroupResourceType, Attrs: map[string]any{"id": "g1", "displayName": "Empty"}}
	for _, filter := range []string{
		`members ne null`,
		`members.value ne null`,
		`members.display ne null`,
		`members eq null`,
		`members pr`,
		`members.value ne "u1"`,
	} {
		t.Run(filter, func(t *testing.T) {
			f, err := ParseFilter(GroupResourceType, filter)
			if err != nil {
				t.Fatal(err)
			}
			c := &countingElements{}
			got, err := f.MatchElements(r, c.elements())
			if err != nil {
				t.Fatal(err)
			}
			if want := f.Match(r); got != want {
				t.Errorf("MatchElements %v, Match on the group without members %v", got, want)
			}
		})
	}
}
