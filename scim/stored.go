// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// StoredResource is a resource as a backend holds it, for an answer that
// writes it whole: a list answer need not decode a resource only to encode
// it again (Query.Stored).
type StoredResource struct {
	Type *ResourceType
	ID   string
	// JSON is the resource as Resource.AppendJSON wrote it.
	JSON []byte
	// Groups is a User's groups attribute, as Backend.Get gives it (nil:
	// none).
	Groups []any
}

// Resource decodes s: the resource Backend.Get returns.
func (s StoredResource) Resource() (*Resource, error) {
	r, err := UnmarshalResource(s.Type, s.JSON)
	if err != nil {
		return nil, err
	}
	if s.Groups != nil {
		r.Attrs["groups"] = s.Groups
	}
	return r, nil
}

// appendStored appends the answer for s with the links l, read off s.JSON
// in one pass: what decoding s and writing the resource with appendJSON
// would give, the same bytes when appendJSON wrote s.JSON. It checks the
// JSON's structure as it copies: the attributes in appendJSON's order,
// each complex value's sub-attributes known and in theirs, other objects'
// names sorted, the schemas those the members imply, the id s.ID, no
// meta.location or groups stored, valid UTF-8 and no escaped name. Values
// are copied as written (a string escaped otherwise than appendString
// escapes it keeps its escapes). ok is false when a check fails (a record
// an older release wrote differently, a damaged one) and b is then
// unchanged: the caller decodes the resource instead. A Group's answer
// streams its members, so Groups are never answered here.
func appendStored(b []byte, s StoredResource, l *links) (_ []byte, ok bool) {
	if s.Type == nil || s.Type == GroupResourceType || s.ID == "" || l == nil || l.location == "" {
		return b, false
	}
	dec := decoders.Get().(*jsontext.Decoder)
	defer func() {
		dec.Reset(noInput{})
		decoders.Put(dec)
	}()
	// Valid UTF-8 only: the relay never stores anything else, and the full
	// path would replace what is invalid, which a copy cannot. Duplicate
	// names cannot pass the order checks, so the decoder need not track them.
	dec.Reset(bytes.NewBuffer(s.JSON), jsontext.AllowDuplicateNames(true))
	w := storedWriter{dec: dec, b: b}
	if out, ok := w.resource(s, l); ok {
		return out, true
	}
	return b, false
}

// storedWriter copies a stored resource's JSON into an answer, checking its
// form as it goes; the first check that fails makes the copy fail.
type storedWriter struct {
	dec *jsontext.Decoder
	b   []byte
}

// topLevelMember is one of the members appendJSON writes after schemas;
// topLevelOf lists them in its order: the common attributes, the core
// schema's attributes, then each known extension's object.
type topLevelMember struct {
	name string
	attr *Attribute // nil for an extension
	ext  *Schema    // the extension, for its object
}

// topLevel is a resource type's top-level members, and where among them
// a User's groups go (-1: nowhere).
type topLevel struct {
	members []topLevelMember
	groups  int
}

var topLevels sync.Map // *ResourceType → *topLevel

func topLevelOf(rt *ResourceType) *topLevel {
	if v, ok := topLevels.Load(rt); ok {
		return v.(*topLevel)
	}
	t := &topLevel{groups: -1}
	for _, a := range commonAttributeList {
		t.members = append(t.members, topLevelMember{name: a.Name, attr: a})
	}
	for _, a := range rt.Schema.Attributes {
		if a.Name == "groups" {
			t.groups = len(t.members)
		}
		t.members = append(t.members, topLevelMember{name: a.Name, attr: a})
	}
	for _, e := range rt.Extensions {
		t.members = append(t.members, topLevelMember{name: e.Schema.ID, ext: e.Schema})
	}
	topLevels.Store(rt, t)
	return t
}

func (w *storedWriter) resource(s StoredResource, l *links) ([]byte, bool) {
	if !w.delim('{') {
		return nil, false
	}
	w.b = append(w.b, '{')
	// schemas comes first; it is checked at the end against the members.
	name, ok := w.name()
	if !ok || string(name) != "schemas" || w.dec.PeekKind() != '[' {
		return nil, false
	}
	w.b = append(w.b, `"schemas":`...)
	schemasAt := len(w.b)
	if !w.raw() {
		return nil, false
	}
	schemasEnd := len(w.b)

	layout := topLevelOf(s.Type)
	members, groups := layout.members, layout.groups
	next := 0 // members[next:] may still come
	var schemaIDs [4]string
	schemas := append(schemaIDs[:0], s.Type.Schema.ID) // and the known extensions present, in order
	var unknown []string                               // unknown extensions present, sorted
	sawID := false
	groupsDue := groups >= 0 && s.Groups != nil
	writeGroups := func() {
		w.b = append(w.b, `,"groups":`...)
		w.b = appendAttribute(w.b, members[groups].attr, s.Groups, l)
		groupsDue = false
	}
	for w.dec.PeekKind() != '}' {
		name, ok := w.name()
		if !ok {
			return nil, false
		}
		i := next
		for i < len(members) && members[i].name != string(name) {
			i++
		}
		if i == len(members) {
			// Not a member still to come: an unknown extension, after all
			// known members, its name after the one before it (appendJSON
			// sorts them). Anything else is out of order or unknown.
			n := string(name)
			if !hasPrefixFold(n, "urn:") || s.Type.Extension(n) != nil || (len(unknown) > 0 && n <= unknown[len(unknown)-1]) {
				return nil, false
			}
			if groupsDue {
				writeGroups()
			}
			unknown = append(unknown, n)
			next = len(members)
			w.b = append(w.b, ',')
			w.b = appendString(w.b, n)
			w.b = append(w.b, ':')
			if !w.any() {
				return nil, false
			}
			continue
		}
		m := members[i]
		next = i + 1
		if i == groups || m.attr != nil && m.attr.Returned == ReturnedNever {
			return nil, false // never stored: the full path replaces or drops it
		}
		if groupsDue && i > groups {
			writeGroups()
		}
		w.b = append(w.b, ',')
		w.b = appendName(w.b, m.name)
		w.b = append(w.b, ':')
		switch {
		case m.attr == idAttribute:
			// The answer's location is made of s.ID, the full path's of
			// the id stored: they must be the same.
			var scratch [64]byte
			v, err := w.dec.ReadValue()
			if err != nil || !bytes.Equal(v, appendString(scratch[:0], s.ID)) {
				return nil, false
			}
			w.b = append(w.b, v...)
			sawID = true
		case m.ext != nil:
			if !w.extension(m.ext) {
				return nil, false
			}
			schemas = append(schemas, m.name)
		case m.attr == metaAttribute:
			if !w.meta(l.location) {
				return nil, false
			}
		default:
			if !w.value(m.attr) {
				return nil, false
			}
		}
	}
	if !sawID || !w.delim('}') {
		return nil, false
	}
	if _, err := w.dec.ReadToken(); err != io.EOF {
		return nil, false // data after the object
	}
	if groupsDue {
		writeGroups()
	}
	// The schemas stored must be those appendJSON writes for these members.
	want := appendStrings(w.b, append(schemas, unknown...))
	if !bytes.Equal(w.b[schemasAt:schemasEnd], want[len(w.b):]) {
		return nil, false
	}
	return append(w.b, '}'), true
}

// appendName appends the name of an attribute or schema: ASCII letters,
// digits and punctuation that no JSON string escapes.
func appendName(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"')
}

// name reads an object member's name. A name holding an escape is refused:
// no schema's names need one, and comparing or sorting an escaped name
// would need it decoded.
func (w *storedWriter) name() ([]byte, bool) {
	v, err := w.dec.ReadValue()
	if err != nil || len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// delim reads the next token, which must be the delimiter d.
func (w *storedWriter) delim(d byte) bool {
	tok, err := w.dec.ReadToken()
	return err == nil && byte(tok.Kind()) == d
}

// raw copies the next value as it is.
func (w *storedWriter) raw() bool {
	v, err := w.dec.ReadValue()
	if err != nil {
		return false
	}
	w.b = append(w.b, v...)
	return true
}

// value copies a value of attribute a as appendValue writes it.
func (w *storedWriter) value(a *Attribute) bool {
	switch w.dec.PeekKind() {
	case '[':
		return w.array(func() bool { return w.value(a) })
	case '{':
		if len(a.SubAttributes) == 0 {
			return w.any()
		}
		return w.object(a.SubAttributes, "")
	default:
		return w.raw()
	}
}

// meta copies meta, with the answer's location (not "") in its place.
func (w *storedWriter) meta(location string) bool {
	return w.dec.PeekKind() == '{' && w.object(metaAttribute.SubAttributes, location)
}

// extension copies a known extension's object: its attributes in order.
// appendJSON leaves out one that is not an object.
func (w *storedWriter) extension(e *Schema) bool {
	return w.dec.PeekKind() == '{' && w.object(e.Attributes, "")
}

// object copies an object whose members are some of attrs, in their order,
// none returned never. With location set, the one Reference among attrs
// (meta.location) must not be stored and is written, as location, in its
// place.
func (w *storedWriter) object(attrs []*Attribute, location string) bool {
	w.dec.ReadToken() // '{', peeked
	w.b = append(w.b, '{')
	first := true
	member := func(name string) {
		if !first {
			w.b = append(w.b, ',')
		}
		first = false
		w.b = appendName(w.b, name)
		w.b = append(w.b, ':')
	}
	writeLocation := func() {
		member("location")
		w.b = appendString(w.b, location)
		location = ""
	}
	next := 0 // attrs[next:] may still come
	for w.dec.PeekKind() != '}' {
		name, ok := w.name()
		if !ok {
			return false
		}
		i := next
		for i < len(attrs) && attrs[i].Name != string(name) {
			i++
		}
		if i == len(attrs) || attrs[i].Returned == ReturnedNever {
			return false
		}
		if location != "" {
			if attrs[i].Type == Reference {
				return false // a stored location: the answer's replaces it
			}
			if slices.ContainsFunc(attrs[next:i], func(a *Attribute) bool { return a.Type == Reference }) {
				writeLocation()
			}
		}
		next = i + 1
		member(attrs[i].Name)
		if !w.value(attrs[i]) {
			return false
		}
	}
	if location != "" {
		writeLocation()
	}
	w.dec.ReadToken() // '}', peeked
	w.b = append(w.b, '}')
	return true
}

// any copies a value as appendAny writes it: objects with their names in
// sorted order.
func (w *storedWriter) any() bool {
	switch w.dec.PeekKind() {
	case '[':
		return w.array(w.any)
	case '{':
		w.dec.ReadToken()
		w.b = append(w.b, '{')
		var last []byte // the name before, as read: it holds no escape
		for i := 0; w.dec.PeekKind() != '}'; i++ {
			name, ok := w.name()
			if !ok || (i > 0 && bytes.Compare(name, last) <= 0) {
				return false
			}
			last = append(last[:0], name...)
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = appendString(w.b, string(name))
			w.b = append(w.b, ':')
			if !w.any() {
				return false
			}
		}
		w.dec.ReadToken()
		w.b = append(w.b, '}')
		return true
	default:
		return w.raw()
	}
}

// array copies an array, each element with elem.
func (w *storedWriter) array(elem func() bool) bool {
	w.dec.ReadToken() // '[', peeked
	w.b = append(w.b, '[')
	for i := 0; w.dec.PeekKind() != ']'; i++ {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		if !elem() {
			return false
		}
	}
	w.dec.ReadToken()
	w.b = append(w.b, ']')
	return true
}

// writeStored writes a stored resource as writeResource writes it decoded,
// decoding it only when its JSON is not in the form appendJSON writes.
func (h *Handler) writeStored(ctx context.Context, jw *jsonWriter, c *call, s StoredResource, proj *Projection) error {
	if proj.whole() {
		if b, ok := appendStored(jw.buf, s, &links{location: Location(c.base, s.Type, s.ID), base: c.base}); ok {
			jw.buf = b
			return nil
		}
	}
	res, err := s.Resource()
	if err != nil {
		return err
	}
	return h.writeResource(ctx, jw, c, res, proj)
}
