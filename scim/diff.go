// SPDX-License-Identifier: Apache-2.0

package scim

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
	for _, urn := range unionKeys(old.unknownExtensions(), new.unknownExtensions()) {
		_, o := containerFor(old.Attrs, urn)
		_, n := containerFor(new.Attrs, urn)
		for _, k := range unionKeys(sortedKeys(o), sortedKeys(n)) {
			ov, nv := o[k], n[k]
			if !jsonEqual(ov, nv) {
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
		if jsonEqual(ov, nv) {
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

// unionKeys merges two sorted string lists, dropping duplicates.
func unionKeys(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i >= len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}
