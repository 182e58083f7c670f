// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"errors"
	"fmt"
	"strings"
)

// AttrPath names an attribute of a resource type: [schemaURN:]attr[.subAttr]
// (RFC 7644 §3.10). Resolved paths use canonical case; an attribute of an
// extension schema this service does not know keeps the names it was given.
type AttrPath struct {
	// URN is the extension schema holding the attribute, "" for core and common attributes.
	URN string
	// Name is the attribute name; empty when the path names a whole extension.
	Name string
	// Sub is the sub-attribute name, "" when none.
	Sub string

	attr *Attribute // nil when URN is an unknown extension or Name is empty
	sub  *Attribute
}

// String returns the path in canonical form, URN-qualified for extension attributes.
func (p AttrPath) String() string {
	var b strings.Builder
	if p.URN != "" {
		b.WriteString(p.URN)
		if p.Name != "" {
			b.WriteByte(':')
		}
	}
	b.WriteString(p.Name)
	if p.Sub != "" {
		b.WriteByte('.')
		b.WriteString(p.Sub)
	}
	return b.String()
}

// Attribute returns the definition of the named attribute, nil when its schema is unknown.
func (p AttrPath) Attribute() *Attribute { return p.attr }

// addedLink returns, where the sub-attribute sub of the core attribute
// name is a link an answer adds (meta.location, a member's or a group's
// $ref: made from the URL the client used, not stored), the attribute to
// compare instead; "" for anything else.
func addedLink(urn, name, sub string) string {
	if urn != "" {
		return ""
	}
	switch {
	case strings.EqualFold(name, "meta") && strings.EqualFold(sub, "location"):
		return "id"
	case strings.EqualFold(sub, "$ref") && (strings.EqualFold(name, "members") || strings.EqualFold(name, "groups")):
		return strings.ToLower(name) + ".value"
	}
	return ""
}

// Leaf returns the definition of what the path ends at: the sub-attribute if
// there is one, else the attribute. Nil when the schema is unknown.
func (p AttrPath) Leaf() *Attribute {
	if p.Sub != "" {
		return p.sub
	}
	return p.attr
}

// caseExact reports whether values at the path compare case-sensitively.
// Values of unknown extensions compare case-insensitively, the RFC's default.
func (p AttrPath) caseExact() bool {
	if l := p.Leaf(); l != nil {
		return l.CaseExact
	}
	return false
}

// errUnknownAttribute is wrapped by path errors that name an attribute the schema lacks.
var errUnknownAttribute = errors.New("unknown attribute")

// errNotAName and errNotASubName are wrapped by path errors of syntax: a
// name that is no ATTRNAME, where errUnknownAttribute is a well-formed one.
var (
	errNotAName    = errors.New("not an attribute name")
	errNotASubName = errors.New("not a sub-attribute name")
)

// ParsePath resolves an attribute path such as "name.givenName", "emails.value"
// or "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"
// against the resource type. Attribute names match case-insensitively.
// Unqualified names are looked up in the common attributes, the core schema and
// then each known extension, so Entra's bare "manager" finds the enterprise one.
func (rt *ResourceType) ParsePath(s string) (AttrPath, error) { return rt.parsePathIn(s, nil) }

// parsePathIn is ParsePath where held lists URNs of extensions this service
// does not know that the resource at hand holds: a path equal to one of them
// or continuing it with ":" names that extension or one of its attributes,
// whether or not the URN ends with the resource type's name (splitUnknownURN).
func (rt *ResourceType) parsePathIn(s string, held []string) (AttrPath, error) {
	var p AttrPath
	rest := s
	var schema *Schema
	qualified := false
	if hasPrefixFold(s, "urn:") {
		qualified = true
		schema, rest = rt.splitURN(s)
		switch {
		case schema == nil:
			urn, tail, err := rt.splitUnknownURN(s, held)
			if err != nil {
				return p, err
			}
			if tail == "" {
				// The whole of an unknown extension, e.g. "urn:...:CustomExtensionName:2.0:User".
				return AttrPath{URN: urn}, nil
			}
			p.URN, rest = urn, tail
		case schema != rt.Schema:
			p.URN = schema.ID
			if rest == "" {
				return p, nil // the whole of a known extension
			}
		}
		if rest == "" {
			return p, fmt.Errorf("path %q names no attribute", s)
		}
	}
	name, sub, hasSub := strings.Cut(rest, ".")
	if !validAttrName(name) {
		return p, fmt.Errorf("path %q: %q is %w", s, name, errNotAName)
	}
	if hasSub && !validAttrName(sub) {
		return p, fmt.Errorf("path %q: %q is %w", s, sub, errNotASubName)
	}
	p.Name, p.Sub = name, sub
	if qualified && schema == nil {
		return p, nil // unknown extension: keep the names as given
	}
	a, ext := rt.lookup(schema, qualified, name)
	if a == nil {
		return p, fmt.Errorf("path %q: %w %q", s, errUnknownAttribute, name)
	}
	p.attr, p.Name = a, a.Name
	if ext != nil {
		p.URN = ext.ID
	}
	if hasSub {
		if a.Type != Complex {
			return p, fmt.Errorf("path %q: %s has no sub-attributes", s, a.Name)
		}
		sa := a.Sub(sub)
		if sa == nil {
			return p, fmt.Errorf("path %q: %w %q of %s", s, errUnknownAttribute, sub, a.Name)
		}
		p.sub, p.Sub = sa, sa.Name
	}
	return p, nil
}

// lookup finds an attribute by name: in schema when the path was qualified,
// else in the common attributes, the core schema and the extensions in turn.
// It returns the extension schema holding the attribute, nil for core ones.
func (rt *ResourceType) lookup(schema *Schema, qualified bool, name string) (*Attribute, *Schema) {
	if qualified && schema != rt.Schema {
		return schema.Attribute(name), schema
	}
	if a, _ := lookupLower(commonAttributes, name); a != nil {
		return a, nil
	}
	if a := rt.Schema.Attribute(name); a != nil {
		return a, nil
	}
	if qualified {
		return nil, nil
	}
	for _, e := range rt.Extensions {
		if a := e.Schema.Attribute(name); a != nil {
			return a, e.Schema
		}
	}
	return nil, nil
}

// splitUnknownURN splits a path into an extension schema URN this service
// does not know and the attribute path after it. The URN is the longest of
// held that the path starts with (followed by ":" or nothing): a resource's
// body lists its extensions in schemas (RFC 7643 §3), so once it is stored
// where each ends is known, whatever its form (Okta lets an admin name a
// namespace freely: "urn:ietf:params:scim:schemas:custom:Space",
// "urn:okta:app:1.0:user:custom"). Otherwise the URN must end with the
// resource type's name, as extension URNs do by convention
// ("urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"):
// without that anchor "urn:a:b:c" could be a schema "urn:a:b" with an
// attribute "c" or a schema of its own.
func (rt *ResourceType) splitUnknownURN(s string, held []string) (urn, rest string, err error) {
	n := 0
	for _, h := range held {
		if len(h) > n && hasPrefixFold(s, h) && (len(s) == len(h) || s[len(h)] == ':') {
			n = len(h)
		}
	}
	switch {
	case n == len(s):
		return s, "", nil
	case n > 0:
		return s[:n], s[n+1:], nil
	}
	suffix := ":" + rt.Name
	if len(s) > len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix) {
		return s, "", nil
	}
	i := indexFold(s, suffix+":")
	if i < 0 {
		return "", "", fmt.Errorf("path %q: unknown schema: an extension this service does not know is named by a URN ending with :%s, or by one the resource lists in schemas", s, rt.Name)
	}
	return s[:i+len(suffix)], s[i+len(suffix)+1:], nil
}

// indexFold is strings.Index ignoring ASCII case.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// splitURN finds the known schema (core or extension) that prefixes s and
// returns it with the remainder after the separator. The separator is ":",
// or "." as Entra jobs without the 2018 fix (customappsso, no
// aadOptscim062020) write it: "…:enterprise:2.0:User.department". Only a
// known URN is read that way: for an unknown one there is no telling where
// the URN ends (splitUnknownURN).
func (rt *ResourceType) splitURN(s string) (*Schema, string) {
	try := func(sc *Schema) (string, bool) {
		n := len(sc.ID)
		if len(s) < n || !strings.EqualFold(s[:n], sc.ID) {
			return "", false
		}
		if len(s) == n {
			return "", true
		}
		if s[n] != ':' && s[n] != '.' {
			return "", false
		}
		return s[n+1:], true
	}
	if rest, ok := try(rt.Schema); ok {
		return rt.Schema, rest
	}
	for _, e := range rt.Extensions {
		if rest, ok := try(e.Schema); ok {
			return e.Schema, rest
		}
	}
	return nil, s
}

// elementPath resolves a sub-attribute name relative to one element of the
// complex attribute at p, as in the filter inside emails[type eq "work"]:
// the result addresses the sub-attribute as a top-level name of the element.
func (p AttrPath) elementPath(name string) (AttrPath, error) {
	if !validAttrName(name) {
		return AttrPath{}, fmt.Errorf("%q is not a sub-attribute name", name)
	}
	if p.attr == nil {
		return AttrPath{Name: name}, nil
	}
	sa := p.attr.Sub(name)
	if sa == nil {
		return AttrPath{}, fmt.Errorf("%w %q of %s", errUnknownAttribute, name, p.attr.Name)
	}
	return AttrPath{Name: sa.Name, attr: sa}, nil
}

// validAttrName reports whether s is an ATTRNAME (RFC 7644 §3.10: ALPHA then
// ALPHA, DIGIT, "-" or "_"), or "$ref" in any case (RFC 7643 §2.1).
func validAttrName(s string) bool {
	if strings.EqualFold(s, "$ref") {
		return true
	}
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
