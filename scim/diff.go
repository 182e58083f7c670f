// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"maps"
	"sort"
)

// Change is one attribute whose value a request changed. Old is nil when the
// attribute was unassigned, New is nil when it was removed.
//
// Paths are canonical: "active", "name.givenName" for each sub-attribute of a
// singular complex attribute, the whole attribute for a multi-valued one
// ("emails", whose Old and New are the complete lists), and URN-qualified for
// extensions ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").
type Change struct {
	Path string `json:"path"`
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// Diff lists what differs between two states of a resource, in schema order.
// id, meta, read-only attributes and group members are not compared: the
// first two are the service's own, the others are derived or tracked apart.
func Diff(old, new *Resource) []Change {
	var out []Change
	out = diffAttrs(out, "", []*Attribute{externalIDAttribute}, old.Attrs, new.Attrs)
	out = diffAttrs(out, "", new.Type.Schema.Attributes, old.Attrs, new.Attrs)
	for _, e := range new.Type.Extensions {
		o, _ := old.Attrs[e.Schema.ID].(map[string]any)
		n, _ := new.Attrs[e.Schema.ID].(map[string]any)
		out = diffAttrs(out, e.Schema.ID+":", e.Schema.Attributes, o, n)
	}
	// Names match in any case (RFC 7643 §2.1), those of an extension the
	// relay does not know too: a PUT that spells a URN or an attribute in
	// another case than the one stored changes one attribute, named once,
	// as the PATCH of the same change does.
	for _, urn := range unionFold(old.unknownExtensions(), new.unknownExtensions()) {
		_, o := containerFor(old.Attrs, urn)
		_, n := containerFor(new.Attrs, urn)
		keys := foldedKeys{}
		for _, k := range unionFold(sortedKeys(o), sortedKeys(n)) {
			ov, nv := o[keys.find("old", o, k)], n[keys.find("new", n, k)]
			if !jsonEqualFold(ov, nv) {
				out = append(out, Change{Path: urn + ":" + k, Old: ov, New: nv})
			}
		}
	}
	return out
}

func diffAttrs(out []Change, prefix string, attrs []*Attribute, old, new map[string]any) []Change {
	for _, a := range attrs {
		if a.Mutability == ReadOnly || a.Returned == ReturnedNever || a.Name == "members" {
			continue
		}
		ov, nv := old[a.Name], new[a.Name]
		if jsonEqual(ov, nv) || (a.MultiValued && sameValues(ov, nv)) {
			continue
		}
		if a.Type == Complex && !a.MultiValued {
			om, _ := ov.(map[string]any)
			nm, _ := nv.(map[string]any)
			for _, sa := range a.SubAttributes {
				so, sn := om[sa.Name], nm[sa.Name]
				if !jsonEqual(so, sn) {
					out = append(out, Change{Path: prefix + a.Name + "." + sa.Name, Old: so, New: sn})
				}
			}
			continue
		}
		out = append(out, Change{Path: prefix + a.Name, Old: ov, New: nv})
	}
	return out
}

// unionFold lists the names of a and b, one for each name in any case:
// b's spelling where both have it (the state after a change), in sorted
// order.
func unionFold(a, b []string) []string {
	seen := make(map[string]bool, len(a)+len(b))
	out := make([]string, 0, len(a)+len(b))
	for _, list := range [][]string{b, a} {
		for _, k := range list {
			if f := Fold(k); !seen[f] {
				seen[f] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// sameValues reports whether two lists of a multi-valued attribute hold
// the same values in any order, "primary": false counting as absent (what
// an absent primary means, RFC 7643 §2.4): a PUT repeating the stored
// emails in another order, or spelling out the false, changes nothing a
// client can use, and was a user.updated carrying both lists whole.
// Linear: each value's JSON is counted.
func sameValues(a, b any) bool {
	al, _ := a.([]any)
	bl, _ := b.([]any)
	if len(al) == 0 || len(al) != len(bl) {
		return false
	}
	count := make(map[string]int, len(al))
	for _, v := range al {
		count[valueKey(v)]++
	}
	for _, v := range bl {
		k := valueKey(v)
		if count[k] == 0 {
			return false
		}
		count[k]--
	}
	return true
}

// valueKey is a value of a multi-valued attribute as sameValues compares
// it: its JSON (object keys sorted), without a "primary": false.
func valueKey(v any) string {
	if m, ok := v.(map[string]any); ok && m["primary"] == false {
		m = maps.Clone(m)
		delete(m, "primary")
		v = m
	}
	b, _ := json.Marshal(v)
	return string(b)
}
