// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"errors"
	"slices"
	"strings"
)

// Projection is what the attributes and excludedAttributes query parameters
// ask for (RFC 7644 §3.9). The zero value returns every attribute returned
// by default.
type Projection struct {
	include  []AttrPath
	exclude  []AttrPath
	selected bool // attributes named something, known or not
}

// MaxProjectionAttributes is how many different attribute names each of
// attributes and excludedAttributes may give (the core and enterprise
// schemas define fewer than 100 with their sub-attributes). A list of
// thousands cost a second of CPU a page; names repeated count once.
const MaxProjectionAttributes = 200

// ParseProjection parses the two comma-separated parameters. Names the
// schemas lack are ignored: a client asking for an attribute we do not have
// gets the response without it, as it would if the attribute were unset;
// one asking only for such attributes gets only those always returned.
// What is not a name at all (emails[type eq "work"]) is invalidValue: it
// would be ignored too, and the answer hold none of what was asked for. So
// is more than MaxProjectionAttributes names in one.
func ParseProjection(rt *ResourceType, attributes, excluded string) (*Projection, error) {
	if attributes == "" && excluded == "" {
		return wholeResource, nil // most requests: nothing to parse
	}
	include, err := parsePathList(rt, "attributes", attributes)
	if err != nil {
		return nil, err
	}
	exclude, err := parsePathList(rt, "excludedAttributes", excluded)
	if err != nil {
		return nil, err
	}
	return &Projection{
		include:  include,
		exclude:  exclude,
		selected: strings.Trim(attributes, ", \t") != "",
	}, nil
}

// wholeResource is the projection of a request that names no attributes.
// A Projection is never changed once parsed, so one serves them all.
var wholeResource = &Projection{}

// parsePathList parses the names of the parameter param, s, each once.
func parsePathList(rt *ResourceType, param, s string) ([]AttrPath, error) {
	if s == "" {
		return nil, nil // most requests: nothing to split
	}
	var out []AttrPath
	seen := map[string]bool{}
	for rest := s; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, ",")
		part = strings.TrimSpace(part)
		folded := Fold(part)
		if part == "" || seen[folded] {
			continue
		}
		if len(seen) == MaxProjectionAttributes {
			return nil, Errorf(ErrInvalidValue, "%s names more than %d attributes", param, MaxProjectionAttributes)
		}
		seen[folded] = true
		p, err := rt.ParsePath(part)
		switch {
		case err == nil:
			out = append(out, p)
		case errors.Is(err, errNotAName) || errors.Is(err, errNotASubName):
			return nil, Errorf(ErrInvalidValue, "%s: %q is not an attribute name (such as emails or name.givenName); %s takes names, not filters", param, Truncate(part, 128), param)
		}
	}
	return out, nil
}

// whole reports whether the projection keeps a resource whole: neither
// attributes nor excludedAttributes.
func (p *Projection) whole() bool { return !p.selected && len(p.exclude) == 0 }

// Selects reports whether the attributes parameter was given, which changes
// a group PATCH's answer from 204 to 200 with the resource.
func (p *Projection) Selects() bool { return p != nil && p.selected }

// Wants reports whether the projection keeps the top-level core attribute
// name, so that a handler can skip fetching what it would drop (members).
func (p *Projection) Wants(name string) bool {
	for _, e := range p.exclude {
		if e.URN == "" && e.Sub == "" && e.Name == name {
			return false
		}
	}
	if !p.selected {
		return true
	}
	for _, i := range p.include {
		if i.URN == "" && i.Name == name {
			return true
		}
	}
	return false
}

// subFilter returns which of the sub-attributes all of the top-level core
// attribute name to keep: those attributes names (all when it names the
// attribute, or none of it), less those excludedAttributes names; nil for
// all of them.
func (p *Projection) subFilter(name string, all []string) []string {
	keep, whole := []string(nil), !p.selected
	for _, i := range p.include {
		if i.URN == "" && i.Name == name {
			if i.Sub == "" {
				whole = true
			} else {
				keep = append(keep, i.Sub)
			}
		}
	}
	if whole {
		keep = all
	}
	out := keep[:0:0]
	for _, sub := range keep {
		if !slices.ContainsFunc(p.exclude, func(e AttrPath) bool {
			return e.URN == "" && e.Name == name && strings.EqualFold(e.Sub, sub)
		}) {
			out = append(out, sub)
		}
	}
	if whole && len(out) == len(all) {
		return nil
	}
	return out
}

// keeps reports whether the projection keeps the sub-attribute sub of the
// top-level core attribute name (meta.location, groups.$ref: links an
// answer adds, which Apply cannot see).
func (p *Projection) keeps(name, sub string) bool {
	if !p.Wants(name) {
		return false
	}
	kept := p.subFilter(name, []string{sub})
	return kept == nil || slices.ContainsFunc(kept, func(k string) bool { return strings.EqualFold(k, sub) })
}

// Apply returns a copy of r holding only what the projection keeps. Values
// are shared with r, not copied. Attributes returned "always" (id) stay.
func (p *Projection) Apply(r *Resource) *Resource {
	if p.whole() {
		return r
	}
	out := &Resource{Type: r.Type, Attrs: make(map[string]any, len(r.Attrs))}
	if !p.selected {
		for k, v := range r.Attrs {
			out.Attrs[k] = v
		}
	} else {
		// A path inside another one named (name.givenName beside name, an
		// extension's attribute beside the whole extension) is already
		// copied whole: copying it again would write into the values the
		// whole copy shares with r, and keep only part of them.
		for _, i := range p.include {
			if !p.inWholeIncluded(i) {
				copyPath(out.Attrs, r.Attrs, i)
			}
		}
		for _, i := range p.include {
			if i.Sub != "" && !p.inWholeIncluded(i) {
				dropEmptyElements(out.Attrs, i)
			}
		}
		if id, ok := r.Attrs["id"]; ok {
			out.Attrs["id"] = id
		}
	}
	for _, e := range p.exclude {
		if e.attr != nil && e.attr.Returned == ReturnedAlways {
			continue
		}
		removePath(out.Attrs, e)
	}
	// meta.location is added by the answer, not stored: it stays when
	// meta's stored sub-attributes are all left out but it is not.
	if _, ok := out.Attrs["meta"]; !ok && r.Attrs["meta"] != nil && p.keeps("meta", "location") {
		out.Attrs["meta"] = map[string]any{} // for the location the answer adds
	}
	return out
}

// inWholeIncluded reports whether attributes also names something holding
// i whole: i's attribute when i is a sub-attribute, i's extension when i
// is one of its attributes.
func (p *Projection) inWholeIncluded(i AttrPath) bool {
	for _, j := range p.include {
		if !strings.EqualFold(j.URN, i.URN) {
			continue
		}
		if j.Name == "" && i.Name != "" && j.URN != "" {
			return true // the whole extension
		}
		if j.Sub == "" && i.Sub != "" && strings.EqualFold(j.Name, i.Name) {
			return true // the whole attribute
		}
	}
	return false
}

// subKey is the key under which m holds p's sub-attribute: its name as
// the schema spells it, or, in an extension no schema here defines (kept
// as sent), the key that matches it in any case (RFC 7643 §2.1), as a
// PATCH finds it; "" when m has none.
func subKey(m map[string]any, p AttrPath) string {
	if p.attr != nil {
		return p.Sub
	}
	return findKeyFold(m, p.Sub)
}

// namesSub reports whether k, a key of a value at p, is p's sub-attribute:
// in any case in an extension no schema here defines.
func (p AttrPath) namesSub(k string) bool {
	return k == p.Sub || p.attr == nil && strings.EqualFold(k, p.Sub)
}

// copyPath copies the value at p from src into dst, sharing values.
func copyPath(dst, src map[string]any, p AttrPath) {
	if p.URN != "" {
		key, obj := containerFor(src, p.URN)
		if obj == nil {
			return
		}
		if p.Name == "" {
			dst[key] = obj
			return
		}
		inner, _ := dst[key].(map[string]any)
		if inner == nil {
			inner = map[string]any{}
			dst[key] = inner
		}
		copyPath(inner, obj, AttrPath{Name: p.Name, Sub: p.Sub, attr: p.attr, sub: p.sub})
		if len(inner) == 0 {
			delete(dst, key)
		}
		return
	}
	name := p.Name
	if p.attr == nil {
		name = findKeyFold(src, p.Name)
	}
	v, ok := src[name]
	if !ok {
		return
	}
	if p.Sub == "" {
		dst[name] = v
		return
	}
	switch v := v.(type) {
	case map[string]any:
		sub := subKey(v, p)
		sv, ok := v[sub]
		if !ok {
			return
		}
		m, _ := dst[name].(map[string]any)
		if m == nil {
			m = map[string]any{}
			dst[name] = m
		}
		m[sub] = sv
	case []any:
		// emails.value: keep that sub-attribute of every element, merging with
		// sub-attributes already copied for the same elements.
		prev, _ := dst[name].([]any)
		out := make([]any, len(v))
		for i, el := range v {
			m := map[string]any{}
			if i < len(prev) {
				if pm, ok := prev[i].(map[string]any); ok {
					m = pm
				}
			}
			if em, ok := el.(map[string]any); ok {
				sub := subKey(em, p)
				if sv, ok := em[sub]; ok {
					m[sub] = sv
				}
			}
			out[i] = m
		}
		dst[name] = out
	}
}

// dropEmptyElements removes, from the multi-valued attribute at p in obj,
// the elements copyPath left empty because they lack the sub-attribute
// asked for (emails.display of emails without display), and the attribute
// when none is left. Elements stay aligned with the resource's while
// copyPath merges sub-attributes, so they are dropped only afterwards.
func dropEmptyElements(obj map[string]any, p AttrPath) {
	if p.URN != "" {
		key, inner := containerFor(obj, p.URN)
		if inner == nil {
			return
		}
		dropEmptyElements(inner, AttrPath{Name: p.Name, Sub: p.Sub, attr: p.attr, sub: p.sub})
		if len(inner) == 0 {
			delete(obj, key)
		}
		return
	}
	name := p.Name
	if p.attr == nil {
		name = findKeyFold(obj, p.Name)
	}
	list, ok := obj[name].([]any)
	if !ok || !slices.ContainsFunc(list, emptyElement) {
		return
	}
	setList(obj, name, slices.DeleteFunc(slices.Clone(list), emptyElement))
}

func emptyElement(v any) bool {
	m, ok := v.(map[string]any)
	return ok && len(m) == 0
}

// removePath drops the value at p from obj, copying what it changes so that
// shared values are left alone.
func removePath(obj map[string]any, p AttrPath) {
	if p.URN != "" {
		key, inner := containerFor(obj, p.URN)
		if inner == nil {
			return
		}
		if p.Name == "" {
			delete(obj, key)
			return
		}
		c := make(map[string]any, len(inner))
		for k, v := range inner {
			c[k] = v
		}
		removePath(c, AttrPath{Name: p.Name, Sub: p.Sub, attr: p.attr, sub: p.sub})
		if len(c) == 0 {
			delete(obj, key)
		} else {
			obj[key] = c
		}
		return
	}
	name := p.Name
	if p.attr == nil {
		name = findKeyFold(obj, p.Name)
	}
	if p.Sub == "" {
		delete(obj, name)
		return
	}
	switch v := obj[name].(type) {
	case map[string]any:
		c := make(map[string]any, len(v))
		for k, sv := range v {
			if !p.namesSub(k) {
				c[k] = sv
			}
		}
		setOrDelete(obj, name, c)
	case []any:
		out := make([]any, 0, len(v))
		for _, el := range v {
			em, ok := el.(map[string]any)
			if !ok {
				continue
			}
			c := make(map[string]any, len(em))
			for k, sv := range em {
				if !p.namesSub(k) {
					c[k] = sv
				}
			}
			if len(c) > 0 {
				out = append(out, c)
			}
		}
		setList(obj, name, out)
	}
}

func setOrDelete(obj map[string]any, name string, m map[string]any) {
	if len(m) == 0 {
		delete(obj, name)
		return
	}
	obj[name] = m
}
