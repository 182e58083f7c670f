// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sort"
	"strings"
	"time"
)

// Resource is a SCIM resource in canonical form: Attrs holds its JSON object
// with attribute names in their schema's case, values of the schema's types
// (strings, bools, json.Number, map[string]any for complex values, []any for
// multi-valued ones) and no nulls or empty arrays. Attributes of an extension
// live in a nested object under the extension's URN, as on the wire.
// "schemas" is not stored: it is derived from what the resource carries.
type Resource struct {
	Type  *ResourceType
	Attrs map[string]any
}

// Meta is a resource's metadata (RFC 7643 §3.1).
type Meta struct {
	Created      time.Time
	LastModified time.Time
	Version      string // weak ETag, e.g. W/"3"
	Location     string
}

// TimeFormat is how dateTime values are written: RFC 3339 in UTC with
// milliseconds, so that they also sort as strings.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// parseDateTime reads an RFC 3339 date-time, in which "T" and "Z" may be
// written in lower case (RFC 3339 §5.6), as Go's time.RFC3339 does not.
func parseDateTime(s string) (time.Time, error) {
	if strings.ContainsAny(s, "tz") {
		s = strings.ToUpper(s)
	}
	return time.Parse(time.RFC3339Nano, s)
}

// ID returns the resource's id.
func (r *Resource) ID() string { s, _ := r.Attrs["id"].(string); return s }

// ExternalID returns the resource's externalId, "" when it has none.
func (r *Resource) ExternalID() string { s, _ := r.Attrs["externalId"].(string); return s }

// String returns the top-level string attribute name (canonical case), "" when absent.
func (r *Resource) String(name string) string { s, _ := r.Attrs[name].(string); return s }

// Active reports the User's active attribute and whether it is set.
func (r *Resource) Active() (active, set bool) {
	b, ok := r.Attrs["active"].(bool)
	return b, ok
}

// Emails returns the value of every email of a User, in order.
func (r *Resource) Emails() []string {
	list, _ := r.Attrs["emails"].([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			if v, ok := m["value"].(string); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// PrimaryEmail returns the User's email marked primary, else the one typed
// "work"; "" when it has neither.
func (r *Resource) PrimaryEmail() string {
	list, _ := r.Attrs["emails"].([]any)
	work := ""
	for _, e := range list {
		m, _ := e.(map[string]any)
		v, _ := m["value"].(string)
		if v == "" {
			continue
		}
		if p, _ := m["primary"].(bool); p {
			return v
		}
		if t, _ := m["type"].(string); work == "" && strings.EqualFold(t, "work") {
			work = v
		}
	}
	return work
}

// WorkEmail returns the User's first work email (WorkEmails); "" when the
// User has no email.
func (r *Resource) WorkEmail() string {
	if list := r.WorkEmails(); len(list) > 0 {
		return list[0]
	}
	return ""
}

// WithWorkEmailTyped returns r with, when none of its emails is typed
// "work", its work email (WorkEmails: the primary one, else the first)
// once more, typed "work", as the last of its emails: how a tenant that
// holds work emails unique filters its users. r itself when it has an
// email typed "work", or none. The copy shares all but its emails list.
func (r *Resource) WithWorkEmailTyped() *Resource {
	work := r.WorkEmails()
	if len(work) == 0 {
		return r
	}
	list, _ := r.Attrs["emails"].([]any)
	var fallback map[string]any
	for _, e := range list {
		m, _ := e.(map[string]any)
		v, _ := m["value"].(string)
		if t, _ := m["type"].(string); v != "" && strings.EqualFold(t, "work") {
			return r // WorkEmails are the ones typed so
		}
		if v == work[0] && fallback == nil {
			fallback = m
		}
	}
	if fallback == nil {
		return r
	}
	typed := maps.Clone(fallback)
	typed["type"] = "work"
	attrs := maps.Clone(r.Attrs)
	attrs["emails"] = append(append(make([]any, 0, len(list)+1), list...), typed)
	return &Resource{Type: r.Type, Attrs: attrs}
}

// WorkEmails returns the User's work emails: every one typed "work" (in any
// case), in order; when none is, the primary one alone, else the first
// alone. Nil when the User has no email. Values are as stored: two that
// differ only in case are both returned.
func (r *Resource) WorkEmails() []string {
	list, _ := r.Attrs["emails"].([]any)
	var work []string
	var primary, first string
	for _, e := range list {
		m, _ := e.(map[string]any)
		v, _ := m["value"].(string)
		if v == "" {
			continue
		}
		if t, _ := m["type"].(string); strings.EqualFold(t, "work") {
			work = append(work, v)
		}
		if p, _ := m["primary"].(bool); p && primary == "" {
			primary = v
		}
		if first == "" {
			first = v
		}
	}
	switch {
	case work != nil:
		return work
	case primary != "":
		return []string{primary}
	case first != "":
		return []string{first}
	}
	return nil
}

// Meta returns the resource's metadata.
func (r *Resource) Meta() Meta {
	m, _ := r.Attrs["meta"].(map[string]any)
	var out Meta
	if s, ok := m["created"].(string); ok {
		out.Created, _ = time.Parse(time.RFC3339Nano, s)
	}
	if s, ok := m["lastModified"].(string); ok {
		out.LastModified, _ = time.Parse(time.RFC3339Nano, s)
	}
	out.Version, _ = m["version"].(string)
	out.Location, _ = m["location"].(string)
	return out
}

// SetMeta replaces the resource's metadata; resourceType comes from r.Type.
func (r *Resource) SetMeta(m Meta) {
	meta := map[string]any{"resourceType": r.Type.Name}
	if !m.Created.IsZero() {
		meta["created"] = m.Created.UTC().Format(TimeFormat)
	}
	if !m.LastModified.IsZero() {
		meta["lastModified"] = m.LastModified.UTC().Format(TimeFormat)
	}
	if m.Version != "" {
		meta["version"] = m.Version
	}
	if m.Location != "" {
		meta["location"] = m.Location
	}
	r.Attrs["meta"] = meta
}

// Clone returns a deep copy of r.
func (r *Resource) Clone() *Resource {
	return &Resource{Type: r.Type, Attrs: cloneObject(r.Attrs)}
}

func cloneObject(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneObject(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	default:
		return v
	}
}

// Schemas returns the schema URNs the resource carries: its core schema and
// every extension it holds attributes of.
func (r *Resource) Schemas() []string { return r.schemas(r.unknownExtensions()) }

// schemas is Schemas with the resource's unknownExtensions.
func (r *Resource) schemas(unknown []string) []string {
	out := make([]string, 1, 2+len(unknown))
	out[0] = r.Type.Schema.ID
	for _, e := range r.Type.Extensions {
		if _, ok := r.Attrs[e.Schema.ID]; ok {
			out = append(out, e.Schema.ID)
		}
	}
	return append(out, unknown...)
}

// jsonEqual reports whether two decoded JSON values are equal; it is
// reflect.DeepEqual for the types decoding and normalization produce, without
// reflection on the PATCH path.
func jsonEqual(a, b any) bool { return jsonEquals(a, b, false) }

// jsonEqualFold is jsonEqual with the keys of objects matched in any case:
// for the values of an extension the relay does not know, kept as sent,
// whose names match in any case as every attribute name does.
func jsonEqualFold(a, b any) bool { return jsonEquals(a, b, true) }

func jsonEquals(a, b any, fold bool) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case json.Number:
		bn, ok := b.(json.Number)
		return ok && a == bn
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		var keys foldedKeys
		if fold {
			keys = foldedKeys{}
		}
		for k, v := range a {
			if fold {
				k = keys.find("b", bm, k)
			}
			bv, ok := bm[k]
			if !ok || !jsonEquals(v, bv, fold) {
				return false
			}
		}
		return true
	case []any:
		bl, ok := b.([]any)
		if !ok || len(a) != len(bl) {
			return false
		}
		for i := range a {
			if !jsonEquals(a[i], bl[i], fold) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(a, b)
	}
}

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// unknownExtensions returns the URN keys of extensions this service has no
// schema for, sorted.
func (r *Resource) unknownExtensions() []string {
	var out []string
	for k := range r.Attrs {
		if hasPrefixFold(k, "urn:") && r.Type.Extension(k) == nil {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// ParseResource decodes a resource of type rt from a POST or PUT body into
// canonical form. It accepts what real clients send: attribute names in any
// case, extension attributes nested under their URN or URN-qualified at the top
// level, enterprise attributes unqualified, "True"/"False" for booleans, a bare
// string or a one-element array for a single complex value such as manager,
// nulls and empty strings (treated as unassigned). Read-only attributes (id,
// meta, groups) are ignored as RFC 7644 §3.5.1 asks; password is accepted and
// discarded, because a relay must never store or forward credentials.
// Attributes of extension schemas it does not know are kept as sent;
// attributes and sub-attributes a known schema does not define are dropped
// (ParseResourceNoting names them). Values of a multi-valued attribute that
// repeat a {value, type} pair are merged into one, and more than one value
// marked primary is refused (RFC 7643 §2.4). Anything else it rejects with a
// SCIM error naming the attribute.
func ParseResource(rt *ResourceType, data []byte) (*Resource, error) {
	r, _, err := ParseResourceNoting(rt, data)
	return r, err
}

// ParseResourceNoting is ParseResource that also returns the attributes it
// dropped because their schema does not define them, sorted, for the
// provisioning log.
func ParseResourceNoting(rt *ResourceType, data []byte) (*Resource, []string, error) {
	raw, err := decodeObject(data, "request body")
	if err != nil {
		return nil, nil, err
	}
	if err := checkSchemas(rt, raw); err != nil {
		return nil, nil, err
	}
	in := &input{rt: rt, keys: foldedKeys{}}
	held, declared := declaredExtensions(rt, raw)
	attrs := make(map[string]any, len(raw))
	for k, v := range raw {
		if strings.EqualFold(k, "schemas") || v == nil {
			continue
		}
		var p AttrPath
		var err error
		if _, isObject := v.(map[string]any); isObject && declared[Fold(k)] {
			// The whole of an extension the body lists in schemas, under
			// exactly the URN sent, whatever its form: Okta's custom
			// namespaces need not end with :User, and one with ":user:"
			// inside ("urn:okta:app:1.0:user:custom") is not to be cut
			// there.
			p = AttrPath{URN: k}
		} else {
			// An attribute of such an extension may be named by a key
			// its URN qualifies ("urn:okta:app:1.0:user:custom:badge");
			// until 2026-12-04 only a URN ending with :User was read there.
			p, err = rt.parsePathIn(k, held)
		}
		if err != nil {
			if errors.Is(err, errUnknownAttribute) {
				in.ignore(k)
				continue
			}
			return nil, nil, Errorf(ErrInvalidValue, "attribute %s: %v", k, err)
		}
		if err := in.set(attrs, p, v); err != nil {
			return nil, nil, err
		}
	}
	r := &Resource{Type: rt, Attrs: attrs}
	if err := r.check(); err != nil {
		return nil, nil, err
	}
	if err := r.checkMultiValued(); err != nil {
		return nil, nil, err
	}
	sort.Strings(in.ignored)
	return r, in.ignored, nil
}

// input carries what parsing one POST, PUT or PATCH body needs besides the
// value at hand: the resource type, and the attributes it dropped.
type input struct {
	rt      *ResourceType
	ignored []string
	// For a PATCH being applied (applying), held lists the URNs of the
	// extensions this service does not know that the resource holds;
	// before that, paths into such extensions are deferred (patchPath).
	held     []string
	applying bool
	// keys indexes the objects of unknown extensions being built (set).
	keys foldedKeys
	// ignoredFolded holds the ignored names folded, so that noting one
	// reads no list (a body may name thousands).
	ignoredFolded map[string]bool
}

// ignore notes an attribute the schema does not define, once.
func (in *input) ignore(name string) {
	f := Fold(name)
	if in.ignoredFolded[f] {
		return
	}
	if in.ignoredFolded == nil {
		in.ignoredFolded = map[string]bool{}
	}
	in.ignoredFolded[f] = true
	in.ignored = append(in.ignored, name)
}

// UnmarshalResource decodes a resource that AppendJSON wrote, for a store
// reading back what it saved. Unlike ParseResource it applies no input rules
// (id and meta are kept): the data is trusted to be canonical already.
func UnmarshalResource(rt *ResourceType, data []byte) (*Resource, error) {
	attrs, err := decodeObject(data, "stored record")
	if err != nil {
		return nil, fmt.Errorf("decoding stored %s: %w", rt.Name, err)
	}
	delete(attrs, "schemas")
	return &Resource{Type: rt, Attrs: attrs}, nil
}

// declaredExtensions returns the URNs a body's schemas lists (RFC 7643 §3:
// the schemas the resource uses) that neither are nor start with the URN
// of a schema this service knows, core or extension: those of extensions
// it keeps as sent; as sent, and folded (Fold).
func declaredExtensions(rt *ResourceType, raw map[string]any) (urns []string, folded map[string]bool) {
	folded = map[string]bool{}
	for k, v := range raw {
		if !strings.EqualFold(k, "schemas") {
			continue
		}
		list, _ := v.([]any)
		for _, e := range list {
			if urn, ok := e.(string); ok && hasPrefixFold(urn, "urn:") {
				if schema, _ := rt.splitURN(urn); schema == nil {
					urns = append(urns, urn)
					folded[Fold(urn)] = true
				}
			}
		}
	}
	return urns, folded
}

// checkSchemas requires the schemas attribute to list the resource type's core schema.
func checkSchemas(rt *ResourceType, raw map[string]any) error {
	for k, v := range raw {
		if !strings.EqualFold(k, "schemas") {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return Errorf(ErrInvalidSyntax, "schemas must be an array of schema URNs")
		}
		found := false
		for i, s := range list {
			// RFC 7643 §3: "an array of Strings containing URIs".
			u, ok := s.(string)
			if !ok {
				return Errorf(ErrInvalidSyntax, "schemas[%d] must be a schema URN (a string), got %s", i, quoteOrKind(s))
			}
			found = found || strings.EqualFold(u, rt.Schema.ID)
		}
		if found {
			return nil
		}
		return Errorf(ErrInvalidSyntax, "schemas must include %s", rt.Schema.ID)
	}
	return Errorf(ErrInvalidSyntax, "request body has no schemas attribute; a %s needs [%q]", rt.Name, rt.Schema.ID)
}

// set stores one input attribute at p, skipping read-only and write-only ones.
func (in *input) set(attrs map[string]any, p AttrPath, v any) error {
	rt := in.rt
	if p.Name == "" { // a whole extension object
		obj, ok := v.(map[string]any)
		if !ok {
			return Errorf(ErrInvalidValue, "extension %s must be a JSON object", p.URN)
		}
		ext := rt.Extension(p.URN)
		if ext == nil {
			return in.mergeUnknown(attrs, p.URN, obj)
		}
		for k, sv := range obj {
			if sv == nil {
				continue
			}
			sp, err := rt.ParsePath(ext.ID + ":" + k)
			if err != nil {
				if errors.Is(err, errUnknownAttribute) {
					in.ignore(ext.ID + ":" + k)
					continue
				}
				return Errorf(ErrInvalidValue, "attribute %s:%s: %v", ext.ID, k, err)
			}
			if err := in.set(attrs, sp, sv); err != nil {
				return err
			}
		}
		return nil
	}
	if a := p.Leaf(); a != nil && (a.Mutability == ReadOnly || a.Mutability == WriteOnly) {
		return nil
	}
	if a := p.attr; a != nil && a.Mutability == ReadOnly {
		return nil
	}
	nv, err := normalizeValue(p, v, in)
	if err != nil {
		return err
	}
	if nv == nil {
		return nil
	}
	return setNew(attrs, p, nv, in.keys)
}

// mergeUnknown keeps an unknown extension's object as sent, without its
// unassigned values (empty, as a filter's "pr" reads them: Entra clears a
// custom attribute with "").
func (in *input) mergeUnknown(attrs map[string]any, urn string, obj map[string]any) error {
	key, container, err := openContainer(attrs, urn)
	if err != nil {
		return err
	}
	for k, v := range obj {
		if empty(v) {
			continue
		}
		if existing := in.keys.find(key, container, k); existing != "" {
			return Errorf(ErrInvalidValue, "attribute %s:%s is given twice", urn, k)
		}
		if twice := spelledTwice(v); twice != "" {
			return Errorf(ErrInvalidValue, "attribute %s:%s.%s is given twice", urn, k, twice)
		}
		container[k] = v
		in.keys.note(key, container, k)
	}
	if len(container) == 0 {
		delete(attrs, key)
	}
	return nil
}

// setNew stores a normalized value at p, refusing to overwrite one already set
// (the same attribute given twice under different spellings). keys
// indexes the objects of unknown extensions.
func setNew(attrs map[string]any, p AttrPath, v any, keys foldedKeys) error {
	obj, at := attrs, ""
	if p.URN != "" {
		var err error
		if at, obj, err = openContainer(attrs, p.URN); err != nil {
			return err
		}
	}
	name := p.Name
	if p.attr == nil {
		if k := keys.find(at, obj, name); k != "" {
			name = k
		}
		defer keys.note(at, obj, name)
	}
	if p.Sub == "" {
		if existing, ok := obj[name]; ok {
			if m, ok := existing.(map[string]any); ok {
				if add, ok := v.(map[string]any); ok && !overlaps(m, add) {
					for k, sv := range add {
						m[k] = sv
					}
					return nil
				}
			}
			return Errorf(ErrInvalidValue, "attribute %s is given twice", p)
		}
		obj[name] = v
		return nil
	}
	parent, _ := obj[name].(map[string]any)
	if parent == nil {
		if _, ok := obj[name]; ok || (p.attr != nil && p.attr.MultiValued) {
			return Errorf(ErrInvalidValue, "attribute %s cannot be set through %s", p.Name, p)
		}
		parent = map[string]any{}
		obj[name] = parent
	}
	if _, ok := parent[p.Sub]; ok {
		return Errorf(ErrInvalidValue, "attribute %s is given twice", p)
	}
	parent[p.Sub] = v
	return nil
}

func overlaps(a, b map[string]any) bool {
	for k := range b {
		if _, ok := a[k]; ok {
			return true
		}
	}
	return false
}

// containerFor returns the object holding an extension's attributes and the
// key it lives under, matching the URN case-insensitively; create makes it.
func containerFor(attrs map[string]any, urn string) (string, map[string]any) {
	key := urn
	if k := findKeyFold(attrs, urn); k != "" {
		key = k
	}
	m, _ := attrs[key].(map[string]any)
	return key, m
}

// maxTopLevel bounds a resource's top-level attributes, extension objects
// included. Each extension object is found by reading every top-level key
// (findKeyFold), so a body naming thousands of extension schemas made its
// parse quadratic in them (5,000 took 0.3 s, a 4 MiB body of them would
// take hours); Entra sends one or two, and a User has some 25 core
// attributes.
const maxTopLevel = 256

// openContainer is containerFor that makes the extension's object when the
// resource has none, refusing one past maxTopLevel.
func openContainer(attrs map[string]any, urn string) (string, map[string]any, error) {
	key, m := containerFor(attrs, urn)
	if m != nil {
		return key, m, nil
	}
	if _, held := attrs[key]; !held && len(attrs) >= maxTopLevel {
		return "", nil, Errorf(ErrInvalidValue, "a resource holds at most %d top-level attributes and extension schemas; %s would be one more", maxTopLevel, Truncate(urn, 64))
	}
	m = map[string]any{}
	attrs[key] = m
	return key, m, nil
}

// findKeyFold returns the key of m equal to k ignoring case, "" when none.
// It reads every key of m: objects of many keys go through foldedKeys.
func findKeyFold(m map[string]any, k string) string {
	if _, ok := m[k]; ok {
		return k
	}
	if readingAllKeys != nil {
		readingAllKeys(len(m))
	}
	for mk := range m {
		if strings.EqualFold(mk, k) {
			return mk
		}
	}
	return ""
}

// readingAllKeys, set by a test, is told how many keys each findKeyFold
// that finds no exact match reads.
var readingAllKeys func(n int)

// normalizeValue checks and converts an input value for the attribute at p.
// It returns nil for a value that amounts to unassigned (null, "", [], {}).
// With in set (a POST or PUT body), sub-attributes the schema does not define
// are dropped and noted; with in nil (the value of a PATCH operation) they
// are refused: a PATCH leaves out unknown paths and path-less keys
// (ParsePatchNoting), not what is inside a value.
func normalizeValue(p AttrPath, v any, in *input) (any, error) {
	if p.attr == nil { // unknown extension: as sent, unless unassigned (empty)
		if empty(v) {
			return nil, nil
		}
		if twice := spelledTwice(v); twice != "" {
			return nil, Errorf(ErrInvalidValue, "attribute %s.%s is given twice", p, twice)
		}
		return v, nil
	}
	if p.Sub != "" {
		return normalizeSingle(p.sub, p.String(), v, in)
	}
	return normalizeAttr(p.attr, p.String(), v, in)
}

// normalizeAttr normalizes a value for attribute a, multi-valued or not.
func normalizeAttr(a *Attribute, name string, v any, in *input) (any, error) {
	if v == nil {
		return nil, nil
	}
	if !a.MultiValued {
		if list, ok := v.([]any); ok && a.Type == Complex {
			// Entra sends manager as [{"value": ..., "$ref": ...}].
			switch len(list) {
			case 0:
				return nil, nil
			case 1:
				v = list[0]
			default:
				return nil, Errorf(ErrInvalidValue, "attribute %s is single-valued but got %d values", name, len(list))
			}
		}
		return normalizeSingle(a, name, v, in)
	}
	list, ok := v.([]any)
	if !ok {
		list = []any{v}
	}
	out := make([]any, 0, len(list))
	for _, e := range list {
		ne, err := normalizeSingle(a, name, e, in)
		if err != nil {
			return nil, err
		}
		if el, ok := ne.(map[string]any); ok && a.Name != "members" && lacksValue(a, el) {
			// An email of no address ({"type":"work","primary":true}, or a
			// value of "", which is unassigned) says nothing, as one whose
			// address a PATCH removes, which is removed whole. A member
			// without its id is refused instead (MembersFromValue).
			continue
		}
		if ne != nil {
			out = append(out, ne)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// normalizeSingle normalizes one value of attribute a (an element, for multi-valued ones).
func normalizeSingle(a *Attribute, name string, v any, in *input) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch a.Type {
	case Complex:
		switch v := v.(type) {
		case map[string]any:
			return normalizeComplex(a, name, v, in)
		case string:
			// A bare string for a complex value with a "value" sub-attribute:
			// Entra sends manager this way.
			if a.Sub("value") != nil {
				if v == "" {
					return nil, nil
				}
				return map[string]any{"value": v}, nil
			}
		}
		return nil, Errorf(ErrInvalidValue, "attribute %s must be a JSON object, got %s", name, jsonKind(v))
	case Boolean:
		switch v := v.(type) {
		case bool:
			return v, nil
		case string:
			// Entra without aadOptscim062020 sends "True" and "False".
			switch {
			case strings.EqualFold(v, "true"):
				return true, nil
			case strings.EqualFold(v, "false"):
				return false, nil
			}
		}
		return nil, Errorf(ErrInvalidValue, "attribute %s must be a boolean, got %s", name, jsonKind(v))
	case Integer, Decimal:
		n, ok := v.(json.Number)
		if !ok {
			return nil, Errorf(ErrInvalidValue, "attribute %s must be a number, got %s", name, jsonKind(v))
		}
		if a.Type == Integer {
			if _, err := n.Int64(); err != nil {
				return nil, Errorf(ErrInvalidValue, "attribute %s must be an integer, got %s", name, n)
			}
		} else if _, err := n.Float64(); err != nil {
			return nil, Errorf(ErrInvalidValue, "attribute %s must be a decimal, got %s", name, n)
		}
		return n, nil
	default: // string, reference, dateTime, binary
		s, ok := v.(string)
		if !ok {
			return nil, Errorf(ErrInvalidValue, "attribute %s must be a string, got %s", name, jsonKind(v))
		}
		if s == "" {
			// An empty string carries nothing: it is unassigned, as null is
			// (RFC 7643 §2.5). Okta sends "" for every profile field it has
			// no value for, and a PUT that repeats what is stored must not
			// count as a change.
			return nil, nil
		}
		switch a.Type {
		case DateTime:
			t, err := parseDateTime(s)
			if err != nil {
				return nil, Errorf(ErrInvalidValue, "attribute %s must be an RFC 3339 date-time, got %q", name, s)
			}
			return t.UTC().Format(TimeFormat), nil
		case Binary:
			if _, err := base64.StdEncoding.DecodeString(s); err != nil {
				return nil, Errorf(ErrInvalidValue, "attribute %s must be base64-encoded", name)
			}
		}
		return s, nil
	}
}

// normalizeComplex normalizes the sub-attributes of a complex value.
func normalizeComplex(a *Attribute, name string, obj map[string]any, in *input) (any, error) {
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		if v == nil {
			continue
		}
		sa := a.Sub(k)
		if sa == nil {
			if in != nil {
				in.ignore(name + "." + k)
				continue
			}
			return nil, Errorf(ErrInvalidValue, "attribute %s has no sub-attribute %q", name, k)
		}
		if sa.Mutability == ReadOnly && a.Mutability != ReadOnly {
			continue // e.g. manager.displayName: the service provider's to set
		}
		nv, err := normalizeSingle(sa, name+"."+sa.Name, v, in)
		if err != nil {
			return nil, err
		}
		if nv == nil {
			continue
		}
		if _, dup := out[sa.Name]; dup {
			return nil, Errorf(ErrInvalidValue, "attribute %s.%s is given twice", name, sa.Name)
		}
		out[sa.Name] = nv
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// check enforces what every stored resource must satisfy: the schema's
// required attributes, and identifiers free of control characters.
func (r *Resource) check() error {
	if err := r.checkRequired(); err != nil {
		return err
	}
	return r.checkIdentifiers()
}

// identifierAttributes are the names clients match resources by; a NUL or
// another C0 control character in one is never a real name, and would
// show up in logs, events and receivers' databases.
var identifierAttributes = []string{"userName", "displayName", "externalId"}

// checkIdentifiers refuses control characters (U+0000–U+001F) in the
// identifier attributes.
func (r *Resource) checkIdentifiers() error {
	for _, name := range identifierAttributes {
		s, _ := r.Attrs[name].(string)
		for i, c := range s {
			if c < 0x20 {
				return Errorf(ErrInvalidValue, "attribute %s has the control character U+%04X at byte %d; names may not contain control characters", name, c, i)
			}
		}
	}
	return nil
}

// checkRequired enforces the schema's required attributes (userName, displayName).
func (r *Resource) checkRequired() error {
	for _, a := range r.Type.Schema.Attributes {
		if !a.Required {
			continue
		}
		v, ok := r.Attrs[a.Name]
		if s, isString := v.(string); !ok || (isString && strings.TrimSpace(s) == "") {
			return Errorf(ErrInvalidValue, "attribute %s is required", a.Name)
		}
	}
	return nil
}

// lacksRequired reports whether a required attribute of r's schema is
// absent (unassigned), not merely blank.
func (r *Resource) lacksRequired() bool {
	for _, a := range r.Type.Schema.Attributes {
		if _, ok := r.Attrs[a.Name]; a.Required && !ok {
			return true
		}
	}
	return false
}

// checkMultiValued merges the values of each multi-valued complex attribute
// that repeat a {value, type} pair (as a PATCH add does) and refuses more than
// one value marked primary: RFC 7643 §2.4 says the primary value "MUST appear
// no more than once", and in a whole resource there is no telling which of two
// the client meant. (A PATCH that sets a new primary clears the others, as
// RFC 7644 §3.5.2 asks; see enforceSinglePrimary.)
func (r *Resource) checkMultiValued() error {
	check := func(attrs []*Attribute, obj map[string]any, prefix string) error {
		for _, a := range attrs {
			list, ok := obj[a.Name].([]any)
			if !ok || !a.MultiValued || a.Type != Complex {
				continue
			}
			list = dedupeValues(a, list)
			obj[a.Name] = list
			primaries := 0
			for _, el := range list {
				if isPrimary(el) {
					primaries++
				}
			}
			if primaries > 1 {
				return Errorf(ErrInvalidValue, "attribute %s%s has %d values marked primary; RFC 7643 §2.4 allows one", prefix, a.Name, primaries)
			}
		}
		return nil
	}
	if err := check(r.Type.Schema.Attributes, r.Attrs, ""); err != nil {
		return err
	}
	for _, e := range r.Type.Extensions {
		if obj, ok := r.Attrs[e.Schema.ID].(map[string]any); ok {
			if err := check(e.Schema.Attributes, obj, e.Schema.ID+":"); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonKind names the JSON type of a decoded value for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// spelledTwice returns the name of a member that an object inside v, a
// value of an extension the relay does not know, gives in two spellings
// ("level" and "Level"), "" when none does: names match in any case, so
// which of the two counted would depend on the reader.
func spelledTwice(v any) string {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if twice := spelledTwice(e); twice != "" {
				return twice
			}
		}
	case map[string]any:
		var seen map[string]bool
		if len(v) > 1 {
			seen = make(map[string]bool, len(v))
		}
		for k, e := range v {
			if seen != nil {
				f := Fold(k)
				if seen[f] {
					return k
				}
				seen[f] = true
			}
			if twice := spelledTwice(e); twice != "" {
				return k + "." + twice
			}
		}
	}
	return ""
}
