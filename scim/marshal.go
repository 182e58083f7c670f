// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// MarshalJSON writes the resource with "schemas" first, then the common
// attributes, then the core attributes in schema order and the extensions,
// the order in which the RFC's examples print them. Attributes returned
// "never" (password) are never written.
func (r *Resource) MarshalJSON() ([]byte, error) {
	return r.AppendJSON(make([]byte, 0, 512)), nil
}

// AppendJSON appends the resource's JSON to b.
func (r *Resource) AppendJSON(b []byte) []byte { return r.appendJSON(b, nil) }

// links are the URLs an answer adds to a resource: its meta.location and
// its groups' $ref, which depend on the URL the client used and are not
// stored. A Group's members are left out (the handler streams them).
type links struct {
	location string // meta.location; "" for none (excludedAttributes)
	base     string // the tenant's URL, for the groups' $ref; "" for none
}

// appendJSON appends the resource's JSON to b, with the links l (nil: as
// stored).
func (r *Resource) appendJSON(b []byte, l *links) []byte {
	unknown := r.unknownExtensions() // once: in schemas and as members
	b = append(b, `{"schemas":`...)
	b = appendStrings(b, r.schemas(unknown))
	b = appendMembers(b, commonAttributeList, r.Attrs, true, l)
	b = appendMembers(b, r.Type.Schema.Attributes, r.Attrs, true, l)
	for _, e := range r.Type.Extensions {
		obj, ok := r.Attrs[e.Schema.ID].(map[string]any)
		if !ok {
			continue
		}
		b = append(b, ',')
		b = appendString(b, e.Schema.ID)
		b = append(b, ':', '{')
		b = appendMembers(b, e.Schema.Attributes, obj, false, nil)
		b = append(b, '}')
	}
	for _, k := range unknown {
		b = append(b, ',')
		b = appendString(b, k)
		b = append(b, ':')
		b = appendAny(b, r.Attrs[k])
	}
	return append(b, '}')
}

// appendStrings appends list as a JSON array of strings.
func appendStrings(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// commonAttributeList is the order in which the common attributes are written.
var commonAttributeList = []*Attribute{idAttribute, externalIDAttribute, metaAttribute}

// appendMembers appends `"name":value` for each of attrs that obj holds, in
// order; comma says whether a member was written before them. With links,
// meta gets its location, each group its $ref, and members are left out.
func appendMembers(b []byte, attrs []*Attribute, obj map[string]any, comma bool, l *links) []byte {
	for _, a := range attrs {
		v, ok := obj[a.Name]
		if !ok || a.Returned == ReturnedNever || (l != nil && a.Name == "members") {
			continue
		}
		if comma {
			b = append(b, ',')
		}
		comma = true
		b = appendString(b, a.Name)
		b = append(b, ':')
		b = appendAttribute(b, a, v, l)
	}
	return b
}

// appendAttribute appends the value v of the top-level attribute a, with
// the links l (nil: as stored).
func appendAttribute(b []byte, a *Attribute, v any, l *links) []byte {
	switch {
	case l == nil:
		return appendValue(b, a, v)
	case a == metaAttribute:
		return appendLinked(b, a, v, func(map[string]any) string { return l.location })
	case a.Name == "groups":
		return appendLinked(b, a, v, func(g map[string]any) string {
			if id, ok := g["value"].(string); ok && l.base != "" {
				return Location(l.base, GroupResourceType, id)
			}
			return ""
		})
	default:
		return appendValue(b, a, v)
	}
}

// appendValue appends a value of attribute a, ordering complex sub-attributes
// as the schema does.
func appendValue(b []byte, a *Attribute, v any) []byte { return appendLinked(b, a, v, nil) }

// appendLinked is appendValue where each object of a complex attribute gets
// the reference link returns (if not ""): in place of its location or $ref
// sub-attribute, whichever a has.
func appendLinked(b []byte, a *Attribute, v any, link func(obj map[string]any) string) []byte {
	switch v := v.(type) {
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendLinked(b, a, e, link)
		}
		return append(b, ']')
	case map[string]any:
		if a == nil || len(a.SubAttributes) == 0 {
			return appendAny(b, v)
		}
		b = append(b, '{')
		first := true
		for _, sa := range a.SubAttributes {
			sv, ok := v[sa.Name]
			if link != nil && sa.Type == Reference {
				if ref := link(v); ref != "" {
					sv, ok = ref, true
				}
			}
			if !ok {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, sa.Name)
			b = append(b, ':')
			b = appendValue(b, sa, sv)
		}
		return append(b, '}')
	default:
		return appendAny(b, v)
	}
}

// AppendValue appends v, a value as decoding or normalization holds it
// (Change.Old and Change.New), as AppendJSON writes the values of a
// resource: numbers with their text, object keys sorted, &, < and > as
// they are.
func AppendValue(b []byte, v any) []byte { return appendAny(b, v) }

// appendAny appends any decoded JSON value; object keys are sorted.
func appendAny(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, v)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		return append(b, v...)
	case float64:
		return strconv.AppendFloat(b, v, 'g', -1, 64)
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAny(b, e)
		}
		return append(b, ']')
	case map[string]any:
		keys := sortedKeys(v)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendAny(b, v[k])
		}
		return append(b, '}')
	default:
		// Not produced by decoding or normalization; fall back to encoding/json.
		enc, err := json.Marshal(v)
		if err != nil {
			return append(b, "null"...)
		}
		return append(b, enc...)
	}
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, and
// U+2028/U+2029 are escaped so the output is also safe inside JavaScript.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
