// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// MaxPatchOperations caps the operations of one PATCH request. Entra sends a
// handful; membership batches put their many members in one operation.
const MaxPatchOperations = 1000

type patchKind int

const (
	patchAdd patchKind = iota + 1
	patchReplace
	patchRemove
)

func (k patchKind) String() string {
	switch k {
	case patchAdd:
		return "add"
	case patchReplace:
		return "replace"
	}
	return "remove"
}

// Patch is a parsed PATCH request (RFC 7644 §3.5.2) for one resource type.
// It speaks Entra's dialect as well as the RFC: ops in any case, "True" and
// "False" for booleans, path-less replace with dotted ("name.givenName") and
// URN-qualified keys, manager as an object, an array or a bare string, and
// member removal by value array or by filter path, with or without the
// aadOptscim062020 flag.
type Patch struct {
	rt  *ResourceType
	ops []patchOp
}

// patchOp is one operation to apply. A path-less operation becomes one
// patchOp per key of its value (expandValue), so path is never nil.
type patchOp struct {
	kind  patchKind
	path  *patchPath
	value any  // as decoded, numbers as json.Number; nil when absent
	index int  // position in Operations, for error messages
	key   bool // a key of a path-less value: see unchangedReadOnly
	// deferred marks an operation whose path or key names an extension
	// this service does not know: where its URN ends may depend on the
	// extensions the resource holds, so Apply parses it (applyDeferred).
	// Until then path holds only the text, and raw the operation as sent
	// (nil for a key). A deferred key keeps what the other keys of its
	// value set (given) and the key of the extension object it came from
	// (origin), so that Apply refuses one attribute given twice among
	// them as ParsePatch does among the known keys.
	deferred bool
	raw      any
	given    *valueTargets
	origin   string
}

// patchPath is attrPath, attrPath[filter] or attrPath[filter].sub.
type patchPath struct {
	attr   AttrPath // without sub when filter is set
	filter *Filter
	sub    AttrPath // element-relative sub-attribute after the filter; Name "" when none
	text   string
}

// ParsePatch decodes and checks a PATCH body for resources of type rt. It
// rejects, with the scimType the RFC gives, a body that is not JSON or lacks
// the PatchOp schema (invalidSyntax), an unknown op (invalidSyntax), a path
// that does not parse (invalidPath), and a remove without a path
// (noTarget). An operation whose path names an attribute or sub-attribute
// no known schema defines, and such a key of a path-less operation's value,
// are left out, as ParseResource leaves such attributes out of a body
// (ParsePatchNoting names them); attributes of extension schemas it does
// not know are kept.
func ParsePatch(rt *ResourceType, data []byte) (*Patch, error) {
	p, _, err := ParsePatchNoting(rt, data)
	return p, err
}

// ParsePatchNoting is ParsePatch that also returns the paths and value keys
// it left out because no known schema defines what they name, sorted, for
// the provisioning log.
func ParsePatchNoting(rt *ResourceType, data []byte) (*Patch, []string, error) {
	raw, err := decodeObject(data, "request body")
	if err != nil {
		return nil, nil, err
	}
	m, twice := lowerKeys(raw)
	if twice != "" {
		return nil, nil, givenTwice("the PATCH body", twice)
	}
	schemas, operations := m["schemas"], m["operations"]
	if !listsSchema(schemas, PatchOpSchema) {
		return nil, nil, Errorf(ErrInvalidSyntax, "a PATCH body needs \"schemas\": [%q]", PatchOpSchema)
	}
	list, ok := operations.([]any)
	if !ok || len(list) == 0 {
		return nil, nil, Errorf(ErrInvalidSyntax, "a PATCH body needs a non-empty Operations array")
	}
	if len(list) > MaxPatchOperations {
		return nil, nil, Errorf(ErrTooMany, "a PATCH body may carry at most %d operations, got %d", MaxPatchOperations, len(list))
	}
	in := &input{rt: rt}
	p := &Patch{rt: rt, ops: make([]patchOp, 0, len(list))}
	for i, o := range list {
		ops, err := parseOp(in, i, o)
		if err != nil {
			return nil, nil, err
		}
		p.ops = append(p.ops, ops...)
	}
	sort.Strings(in.ignored)
	return p, in.ignored, nil
}

// lowerKeys returns obj keyed by its names in lower case, for the members
// of request messages, which clients write in any case. A name given in
// two spellings is returned as twice (and out is nil): which of the two
// would count is map order, so the caller refuses it (givenTwice).
func lowerKeys(obj map[string]any) (out map[string]any, twice string) {
	out = make(map[string]any, len(obj))
	for k, v := range obj {
		lk := strings.ToLower(k)
		if _, ok := out[lk]; ok {
			return nil, lk
		}
		out[lk] = v
	}
	return out, ""
}

// givenTwice is the error for a name of message what given in two spellings.
func givenTwice(what, name string) *Error {
	return Errorf(ErrInvalidSyntax, "%s gives %q twice, in two spellings (names are case-insensitive)", what, name)
}

func listsSchema(v any, urn string) bool {
	list, _ := v.([]any)
	for _, s := range list {
		if s, ok := s.(string); ok && strings.EqualFold(s, urn) {
			return true
		}
	}
	return false
}

// parseOp parses Operations[i]: none, one or (for a path-less value with
// several keys) several operations to apply. What no known schema defines
// is noted in in and left out.
func parseOp(in *input, i int, o any) ([]patchOp, error) {
	obj, ok := o.(map[string]any)
	if !ok {
		return nil, Errorf(ErrInvalidSyntax, "Operations[%d] must be an object", i)
	}
	op := patchOp{index: i}
	// Members besides op, path and value are ignored: clients add their own
	// (a "name" such as "addMember"), and they change nothing RFC 7644
	// §3.5.2 defines.
	f, twice := lowerKeys(obj)
	if twice != "" {
		return nil, givenTwice(fmt.Sprintf("Operations[%d]", i), twice)
	}
	kind, path := f["op"], f["path"]
	var hasValue bool
	op.value, hasValue = f["value"]
	s, _ := kind.(string)
	switch strings.ToLower(s) {
	case "add":
		op.kind = patchAdd
	case "replace":
		op.kind = patchReplace
	case "remove":
		op.kind = patchRemove
	default:
		return nil, Errorf(ErrInvalidSyntax, "Operations[%d]: op must be add, replace or remove, got %s", i, quoteOrKind(kind))
	}
	unknown := ""
	if path != nil {
		ps, ok := path.(string)
		if !ok {
			return nil, Errorf(ErrInvalidPath, "Operations[%d]: path must be a string", i)
		}
		if namesSchemas(ps) {
			if op.kind != patchRemove && strings.EqualFold(strings.TrimSpace(ps), "schemas") && onlySchemasOf(in.rt, op.value) {
				// Some clients send the schemas they mean beside an
				// extension's attributes: they follow from those, so
				// naming the type's own asks for nothing.
				return nil, nil
			}
			return nil, Errorf(ErrMutability, "Operations[%d]: %s cannot be changed: a resource's schemas are those of the extensions it holds; add or remove an extension's attributes instead", i, ps)
		}
		if strings.TrimSpace(ps) != "" {
			pp, deferred, err := in.patchPath(ps)
			switch {
			case errors.Is(err, errUnknownAttribute):
				unknown = ps
			case err != nil:
				return nil, err
			}
			op.path = pp
			if deferred {
				op.deferred, op.raw = true, o
			}
		}
	}
	switch {
	case op.path == nil && unknown == "" && op.kind == patchRemove:
		return nil, Errorf(ErrNoTarget, "Operations[%d]: remove needs a path", i)
	case op.path == nil && unknown == "":
		obj, ok := op.value.(map[string]any)
		if !ok {
			return nil, Errorf(ErrInvalidValue, "Operations[%d]: %s without a path needs an object value", i, op.kind)
		}
		return expandValue(in, op, obj, "", &valueTargets{}, "")
	case op.kind != patchRemove && !hasValue:
		return nil, Errorf(ErrInvalidValue, "Operations[%d]: %s needs a value", i, op.kind)
	case unknown != "":
		// An attribute an admin mapped that the schema lacks (Entra's
		// mailNickname): the POST dropped it, and refusing the PATCH would
		// fail the rest of it too, on every cycle.
		in.ignore(unknown)
		return nil, nil
	case op.deferred:
		return []patchOp{op}, nil
	case op.path.attr.Name == "" && op.kind != patchRemove:
		// A whole extension: each of its attributes is a path of its own.
		obj, ok := op.value.(map[string]any)
		if !ok {
			return nil, Errorf(ErrInvalidValue, "Operations[%d]: %s must be an object", i, op.path.attr.URN)
		}
		return expandValue(in, op, obj, op.path.attr.URN+":", &valueTargets{}, "")
	}
	return []patchOp{op}, nil
}

// namesSchemas reports whether a PATCH path or a filter's attribute names
// the resource's schemas (schemas, schemas[…], schemas.x): not stored but
// derived from the extensions held, as Resource.Schemas lists them, so
// read-only, and filtered on as a list of URIs. Left to the path parser,
// it was an unknown attribute: a PATCH op on it was dropped with a 200.
func namesSchemas(path string) bool {
	path = strings.TrimSpace(path)
	if !hasPrefixFold(path, "schemas") {
		return false
	}
	rest := path[len("schemas"):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}

// onlySchemasOf reports whether v is a list of URNs of rt's schema and
// extensions, and nothing else.
func onlySchemasOf(rt *ResourceType, v any) bool {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	for _, u := range list {
		s, _ := u.(string)
		if !strings.EqualFold(s, rt.Schema.ID) && !slices.ContainsFunc(rt.Extensions, func(e Extension) bool { return strings.EqualFold(s, e.Schema.ID) }) {
			return false
		}
	}
	return true
}

// expandValue turns the object value of a path-less add or replace (or of
// one naming a whole extension, when prefix is its URN and ":") into one
// operation per key: each key is a path of its own, which is how Entra
// sends "name.givenName" and URN-qualified keys. A key naming a whole
// extension adds one operation per key of its object. Keys naming what no
// known schema defines are noted in in and left out. Keys go in the order
// of valueKeyOrder, so that "name" comes before "name.givenName" whatever
// the map's order. One attribute set by two keys is refused (valueTargets);
// origin is the key of the extension whose object obj is, "" at the top.
func expandValue(in *input, op patchOp, obj map[string]any, prefix string, given *valueTargets, origin string) ([]patchOp, error) {
	ops := make([]patchOp, 0, len(obj))
	spelled := make(map[string]string, len(obj)) // Fold(key) → key
	for _, k := range valueKeyOrder(obj) {
		// One attribute in two spellings: which value won would be the
		// order of the keys, so it is refused, as in a POST.
		if other, twice := spelled[Fold(k)]; twice {
			return nil, Errorf(ErrInvalidValue, "Operations[%d]: value key %s is given twice (as %q and %q)", op.index, prefix+k, other, k)
		}
		spelled[Fold(k)] = k
		key, v := prefix+k, obj[k]
		pp, deferred, err := in.patchPath(key)
		if errors.Is(err, errUnknownAttribute) {
			in.ignore(key)
			continue
		}
		if err != nil {
			return nil, Errorf(ErrInvalidValue, "Operations[%d]: value key %q: %v", op.index, key, err.(*Error).Detail)
		}
		if deferred {
			ops = append(ops, patchOp{kind: op.kind, path: pp, value: v, index: op.index, key: true, deferred: true, given: given, origin: origin})
			continue
		}
		if pp.attr.Name == "" {
			ext, ok := v.(map[string]any)
			if !ok {
				return nil, Errorf(ErrInvalidValue, "Operations[%d]: %s must be an object", op.index, key)
			}
			more, err := expandValue(in, op, ext, pp.attr.URN+":", given, cmp.Or(origin, key))
			if err != nil {
				return nil, err
			}
			ops = append(ops, more...)
			continue
		}
		if err := given.claim(op, cmp.Or(origin, key), pp, v); err != nil {
			return nil, err
		}
		ops = append(ops, patchOp{kind: op.kind, path: pp, value: v, index: op.index, key: true})
	}
	return ops, nil
}

// valueKeyOrder returns the keys of a path-less value sorted, except that
// the key setting the value of the elements a filter selects
// (emails[type eq "work"].value) goes before the keys setting their other
// sub-attributes (…].primary, …].display): it makes the element they then
// find. In plain sorted order they came first, found no element, could not
// make one without a value, and failed the PATCH (noTarget), though the
// value described the element whole (a conformance review).
func valueKeyOrder(obj map[string]any) []string {
	keys := sortedKeys(obj)
	rank := func(k string) string {
		if i := strings.LastIndex(k, "]."); i >= 0 && strings.EqualFold(k[i+2:], "value") {
			return k[:i+2]
		}
		return k
	}
	slices.SortStableFunc(keys, func(a, b string) int { return strings.Compare(rank(a), rank(b)) })
	return keys
}

// valueTargets is what the keys of one path-less value set, so that one
// attribute given by two keys, in two forms, is refused as a POST giving it
// twice is: name and name.givenName, an extension's object and its
// URN-prefixed attribute, emails and emails[type eq "work"].value. Which
// value would win is the order the keys are applied in, so the PATCH would
// silently keep one. Keys setting distinct parts of one attribute
// (name.givenName and name.familyName, as Entra sends them;
// phoneNumbers[type eq "work"].value and phoneNumbers[type eq
// "mobile"].value) are not a clash.
type valueTargets struct {
	set   map[string]string // target → the key giving it
	under map[string]string // a proper prefix of a target → the key giving it
}

// claim records what the key of op's value sets, pp and v, or refuses it
// when another key sets the same attribute, a part of it or a whole it is
// part of. A target is the attribute's canonical path, folded, then the
// filter's text, then the sub-attribute; a singular complex attribute
// given as an object sets each sub-attribute it gives.
func (t *valueTargets) claim(op patchOp, key string, pp *patchPath, v any) error {
	base := AttrPath{URN: pp.attr.URN, Name: pp.attr.Name, attr: pp.attr.attr}
	levels := []string{Fold(base.String())}
	switch {
	case pp.filter != nil:
		levels = append(levels, "["+Fold(pp.filter.String())+"]")
		if pp.sub.Name != "" {
			levels = append(levels, Fold(pp.sub.Name))
		}
	case pp.attr.Sub != "":
		levels = append(levels, Fold(pp.attr.Sub))
	}
	obj, isObj := v.(map[string]any)
	if a := pp.attr.attr; len(levels) == 1 && isObj && a != nil && a.Type == Complex && !a.MultiValued {
		for _, k := range sortedKeys(obj) {
			if err := t.claimLevels(op, key, base, append(levels, Fold(k))); err != nil {
				return err
			}
		}
		return nil
	}
	return t.claimLevels(op, key, base, levels)
}

// clone returns a copy of t that claims apart from it.
func (t *valueTargets) clone() *valueTargets {
	return &valueTargets{set: maps.Clone(t.set), under: maps.Clone(t.under)}
}

func (t *valueTargets) claimLevels(op patchOp, key string, base AttrPath, levels []string) error {
	if t.set == nil {
		t.set, t.under = make(map[string]string), make(map[string]string)
	}
	target := strings.Join(levels, "\x00")
	other, clash := t.set[target]
	if !clash {
		other, clash = t.under[target]
	}
	for j := 1; j < len(levels) && !clash; j++ {
		other, clash = t.set[strings.Join(levels[:j], "\x00")]
	}
	switch {
	case clash && other == key:
		return Errorf(ErrInvalidValue, "Operations[%d]: value key %q sets attribute %s twice; give it once", op.index, key, base)
	case clash:
		return Errorf(ErrInvalidValue, "Operations[%d]: value keys %q and %q both set attribute %s; give it once", op.index, other, key, base)
	}
	t.set[target] = key
	for j := 1; j < len(levels); j++ {
		t.under[strings.Join(levels[:j], "\x00")] = key
	}
	return nil
}

func quoteOrKind(v any) string {
	if s, ok := v.(string); ok {
		return `"` + s + `"`
	}
	return jsonKind(v)
}

// patchPath parses a PATCH path or value key, or defers it: one into an
// extension this service does not know waits for Apply, which knows the
// resource and so where the URNs of the extensions it holds end
// (splitUnknownURN); in.held lists them once in.applying.
func (in *input) patchPath(s string) (pp *patchPath, deferred bool, err error) {
	if !in.applying && hasPrefixFold(s, "urn:") {
		if schema, _ := in.rt.splitURN(s); schema == nil {
			return &patchPath{text: s}, true, nil
		}
	}
	pp, err = parsePatchPath(in.rt, s, in.held)
	return pp, false, err
}

// parsePatchPath parses attrPath, attrPath[valFilter] and attrPath[valFilter].subAttr,
// where held lists the unknown extensions the resource holds (parsePathIn).
// Its errors are *Error invalidPath, but for a well-formed path naming an
// attribute or sub-attribute no known schema defines: that error wraps
// errUnknownAttribute (and is no *Error), and the caller leaves the path out.
func parsePatchPath(rt *ResourceType, s string, held []string) (*patchPath, error) {
	pp := &patchPath{text: s}
	open := strings.IndexByte(s, '[')
	if open < 0 {
		ap, err := rt.parsePathIn(s, held)
		if errors.Is(err, errUnknownAttribute) {
			return nil, err
		}
		if err != nil {
			return nil, Errorf(ErrInvalidPath, "path %q: %v", s, trimPathPrefix(err, s))
		}
		pp.attr = ap
		return pp, nil
	}
	end := closingBracket(s, open)
	if end < 0 {
		return nil, Errorf(ErrInvalidPath, "path %q: unbalanced [", s)
	}
	ap, err := rt.parsePathIn(s[:open], held)
	if err != nil && !errors.Is(err, errUnknownAttribute) {
		return nil, Errorf(ErrInvalidPath, "path %q: %v", s, trimPathPrefix(err, s[:open]))
	}
	// An attribute no known schema defines is read on without its
	// definition, as an unknown extension's is, so that the rest of the
	// path is checked too; that it is unknown is returned at the end.
	unknown := err
	if ap.Sub != "" || ap.Name == "" || (ap.attr != nil && (ap.attr.Type != Complex || !ap.attr.MultiValued)) {
		return nil, Errorf(ErrInvalidPath, "path %q: only a multi-valued complex attribute takes a [filter]", s)
	}
	f, err := ParseValueFilter(rt, ap, s[open+1:end])
	if err != nil {
		return nil, Errorf(ErrInvalidPath, "path %q: %v", s, err)
	}
	pp.attr, pp.filter = ap, f
	rest := s[end+1:]
	switch {
	case rest == "":
	case rest[0] == '.':
		sub, err := ap.elementPath(rest[1:])
		if errors.Is(err, errUnknownAttribute) {
			return nil, fmt.Errorf("path %q: %w", s, err)
		}
		if err != nil {
			return nil, Errorf(ErrInvalidPath, "path %q: %v", s, err)
		}
		pp.sub = sub
	default:
		return nil, Errorf(ErrInvalidPath, "path %q: unexpected %q after the filter", s, rest)
	}
	if unknown != nil {
		return nil, unknown
	}
	return pp, nil
}

// closingBracket finds the ] matching the [ at open, skipping quoted strings.
func closingBracket(s string, open int) int {
	inString := false
	for i := open + 1; i < len(s); i++ {
		switch c := s[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && c == ']':
			return i
		}
	}
	return -1
}

// trimPathPrefix keeps ParsePath's explanation without repeating the path.
func trimPathPrefix(err error, path string) string {
	return strings.TrimPrefix(err.Error(), "path \""+path+"\": ")
}

// Apply applies the patch to r and returns the new state with the list of
// changes. It never modifies r. For a Group, operations on members become
// MemberOps for the backend (which holds memberships apart from the group) and
// the rest apply to the group's attributes. A patch that changes nothing
// returns an Update with no changes.
func (p *Patch) Apply(r *Resource) (*Update, error) {
	next := r.Clone()
	u := &Update{Resource: next, Patch: true}
	a := &applying{u: u, keys: foldedKeys{}}
	for _, op := range p.ops {
		if err := p.applyOp(next, op, a); err != nil {
			return nil, err
		}
	}
	// Values the ops left repeating one another (a replace of emails
	// with the same one twice, a filtered replace that made two work
	// emails alike) are merged, as a POST's and a PUT's are.
	if err := next.checkMultiValued(); err != nil {
		return nil, err
	}
	if err := next.checkRequired(); err != nil && r.checkRequired() == nil {
		// RFC 7644 §3.5.2.2: "If an attribute is removed or becomes
		// unassigned and is defined as a required attribute ..., the
		// server SHALL return ... a "scimType" error code of
		// "mutability"". A resource stored without it (none should be)
		// is refused as before.
		// One given a blank value was not removed: that value is
		// invalid, as in a PUT.
		var se *Error
		if errors.As(err, &se) && next.lacksRequired() {
			return nil, Errorf(ErrMutability, "%s: a PATCH may not remove it", se.Detail)
		}
		return nil, err
	}
	if err := next.check(); err != nil {
		return nil, err
	}
	u.Changes = Diff(r, next)
	return u, nil
}

// applying is what one Apply keeps while it applies a PATCH's operations.
type applying struct {
	u *Update // what the operations do to members is noted in it
	// keys indexes the objects of unknown extensions.
	keys foldedKeys
	// given holds, for the targets of a path-less value some of whose
	// keys were deferred, a copy that this Apply's deferred keys claim
	// in: the Patch is not changed, and may be applied again (to a
	// resource read again).
	given map[*valueTargets]*valueTargets
	// walked counts the values of the lists the operations after the
	// first changed (maxPatchWalk); ops counts the operations.
	walked, ops int
	// compared counts the bytes the operations' filters compare
	// (maxPatchFilterBytes), the first operation's too.
	compared int
}

// maxPatchFilterBytes bounds the bytes a PATCH's value filters compare,
// summed over its operations, the first one included: each comparison
// of a filter reads (and, case-insensitive, folds anew) every value of
// the list the operation changes, inside the backend's write. The values
// bound (maxPatchWalk) does not see their length: one operation whose
// 100-term filter ran over a 1 MiB phone number held every tenant's
// writes for two seconds. A filter of a few terms over a list as large
// as limits.max_body (4 MiB) passes.
const maxPatchFilterBytes = 16 << 20

// filterWork counts what the filter of pp will compare in r's list, its
// terms times the bytes of the list's strings, against maxPatchFilterBytes.
func (a *applying) filterWork(r *Resource, pp *patchPath) error {
	list, _ := a.target(r, pp).([]any)
	n := 0
	for _, el := range list {
		n += stringBytes(el)
	}
	if a.compared += n * max(pp.filter.terms, 1); a.compared > maxPatchFilterBytes {
		return Errorf(ErrTooMany, "the operations' filters compare more than %d bytes of the lists they change (%s holds %d bytes, its filter has %d terms); send filters of fewer terms", maxPatchFilterBytes, pp.attr.Name, n, pp.filter.terms)
	}
	return nil
}

// stringBytes is the length of the strings (values and keys) in v.
func stringBytes(v any) int {
	switch v := v.(type) {
	case string:
		return len(v)
	case map[string]any:
		n := 0
		for k, e := range v {
			n += len(k) + stringBytes(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += stringBytes(e)
		}
		return n
	}
	return 8
}

// maxPatchWalk bounds the values of the lists a PATCH's operations change,
// summed over its operations after the first: each operation reads (and
// copies) the whole list it changes, inside the backend's write (the
// relay's single writer, which every tenant's writes wait for), and 1,000
// operations each adding one email to a user holding 10,000 held it for
// seconds while costing their tenant one request. The first operation is
// free, as a PUT of the resource is: a list of any size can be changed.
// It is about the values a body of limits.max_body can hold; a group's
// members are the backend's to bound.
const maxPatchWalk = 100_000

// walk counts the list at pp in r, which the operation about to be
// applied reads, against maxPatchWalk.
func (a *applying) walk(r *Resource, pp *patchPath) error {
	if a.ops++; a.ops == 1 {
		return nil
	}
	// A list is read and copied whole, and so is an object whose member
	// an operation sets (setSubAttributes): 100 operations on members of
	// an extension's object of 100,000 held the writer for seconds.
	n := 0
	switch v := a.target(r, pp).(type) {
	case []any:
		n = len(v)
	case map[string]any:
		n = len(v)
	}
	if a.walked += n; a.walked > maxPatchWalk {
		return Errorf(ErrTooMany, "the operations after the first read more than %d values of the lists and objects they change (%s has %d); send fewer operations, or the attribute whole in one replace", maxPatchWalk, pp.attr.Name, n)
	}
	return nil
}

// target returns the value at pp's attribute in r, which the operation
// about to be applied reads (nil when r has none).
func (a *applying) target(r *Resource, pp *patchPath) any {
	obj, at := r.Attrs, ""
	if pp.attr.URN != "" {
		at, obj = containerFor(r.Attrs, pp.attr.URN)
	}
	name := pp.attr.Name // a known attribute's is as stored
	if pp.attr.attr == nil {
		name = a.keys.find(at, obj, name) // by the index, not key by key
	}
	return obj[name]
}

// applyOp applies op to r.
func (p *Patch) applyOp(r *Resource, op patchOp, a *applying) error {
	if op.deferred {
		return p.applyDeferred(r, op, a)
	}
	pp := op.path
	if op.key && unchangedReadOnly(r, pp, op.value) {
		// Okta's rename repeats the group's id beside displayName;
		// a read-only attribute given its current value changes nothing.
		return nil
	}
	if pp.attr.Name == "" {
		// A remove of a whole extension, e.g. of
		// "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"; an
		// add or replace of one was expanded into its attributes (parseOp).
		if k := findKeyFold(r.Attrs, pp.attr.URN); k != "" {
			delete(r.Attrs, k)
			a.keys.drop(k)
		}
		return nil
	}
	if err := checkWritable(op, pp); err != nil {
		return err
	}
	if r.Type == GroupResourceType && pp.attr.Name == "members" {
		return applyMembers(op, a.u)
	}
	if err := a.walk(r, pp); err != nil {
		return err
	}
	if pp.filter != nil {
		if err := a.filterWork(r, pp); err != nil {
			return err
		}
		return applyFiltered(r, op, a.keys)
	}
	return applyPlain(r, op, a.keys)
}

// applyDeferred parses an operation on an extension this service does not
// know, now that the extensions r holds are known, as ParsePatch parses the
// others, and applies what it comes to. A URN r holds names that extension
// whatever its form (a POST or PUT listed it in schemas); any other must
// end with the resource type's name, as in a body.
func (p *Patch) applyDeferred(r *Resource, op patchOp, a *applying) error {
	in := &input{rt: p.rt, held: r.unknownExtensions(), applying: true}
	var ops []patchOp
	var err error
	if op.key {
		given := a.given[op.given]
		if given == nil {
			given = op.given.clone()
			if a.given == nil {
				a.given = make(map[*valueTargets]*valueTargets)
			}
			a.given[op.given] = given
		}
		ops, err = expandValue(in, op, map[string]any{op.path.text: op.value}, "", given, op.origin)
	} else {
		ops, err = parseOp(in, op.index, op.raw)
	}
	if err != nil {
		return err
	}
	for _, o := range ops {
		if err := p.applyOp(r, o, a); err != nil {
			return err
		}
	}
	return nil
}

// unchangedReadOnly reports whether a key of a path-less value names a
// read-only attribute (id, meta) and repeats its current value.
func unchangedReadOnly(r *Resource, pp *patchPath, v any) bool {
	a := pp.attr.attr
	if a == nil || a.Mutability != ReadOnly || pp.filter != nil || pp.attr.URN != "" {
		return false
	}
	cur := r.Attrs[a.Name]
	if pp.attr.Sub != "" {
		m, _ := cur.(map[string]any)
		cur = m[pp.attr.Sub]
	}
	return cur != nil && jsonEqual(cur, v)
}

// checkWritable refuses changes to read-only attributes (id, meta, groups)
// and to immutable ones.
func checkWritable(op patchOp, pp *patchPath) error {
	a := pp.attr.Leaf()
	if pp.sub.attr != nil {
		a = pp.sub.attr
	}
	if a == nil {
		return nil
	}
	if pp.attr.attr != nil && pp.attr.attr.Mutability == ReadOnly || a.Mutability == ReadOnly {
		return Errorf(ErrMutability, "Operations[%d]: %s is read-only", op.index, pp.text)
	}
	if a.Mutability == WriteOnly {
		// The password: a POST or PUT may carry one (it is discarded), but a
		// PATCH of it asks for a password change, which ServiceProviderConfig
		// says is not supported.
		return Errorf(ErrMutability, "Operations[%d]: changing %s is not supported (changePassword.supported is false): scimrelay keeps no credentials", op.index, pp.text)
	}
	if a.Mutability == Immutable && pp.attr.Name != "members" {
		return Errorf(ErrMutability, "Operations[%d]: %s is immutable", op.index, pp.text)
	}
	return nil
}

// opContainer is the extension object an op at urn works in, made unless
// the op removes (nil then when the resource has none).
func opContainer(attrs map[string]any, urn string, kind patchKind) (string, map[string]any, error) {
	if kind == patchRemove {
		at, obj := containerFor(attrs, urn)
		return at, obj, nil
	}
	return openContainer(attrs, urn)
}

// applyPlain applies an op whose path has no filter: attr, attr.sub or an
// extension attribute.
func applyPlain(r *Resource, op patchOp, keys foldedKeys) error {
	ap := op.path.attr
	obj, at := r.Attrs, ""
	if ap.URN != "" {
		var err error
		if at, obj, err = opContainer(r.Attrs, ap.URN, op.kind); err != nil {
			return err
		}
		if obj == nil {
			return nil // removing from an extension the resource lacks
		}
		defer dropEmptyContainer(r.Attrs, ap.URN)
	}
	name := ap.Name
	if ap.attr == nil {
		if k := keys.find(at, obj, name); k != "" {
			name = k
		}
		defer keys.note(at, obj, name)
		// Its sub-attribute too is the one held in any spelling.
		if parent, _ := obj[name].(map[string]any); ap.Sub != "" && parent != nil {
			if k := findKeyFold(parent, ap.Sub); k != "" {
				ap.Sub = k
			}
		}
	}
	if op.kind == patchRemove {
		return removePlain(obj, name, ap, op)
	}
	value, err := normalizeValue(ap, op.value, nil)
	if err != nil {
		return opError(op, err)
	}
	a := ap.attr
	if ap.Sub != "" && a != nil && a.MultiValued {
		return Errorf(ErrInvalidPath, "Operations[%d]: %s is multi-valued; select values with %s[filter]", op.index, ap, ap.Name)
	}
	if raw := givenObject(op.value); raw != nil && op.kind == patchReplace && ap.Sub == "" && a != nil && a.Type == Complex && !a.MultiValued {
		// The sub-attributes given are set, those given null or "" cleared
		// and the others kept (RFC 7644 §3.5.2.3). An object that amounts
		// to nothing ({"givenName":null}, a manager's read-only
		// displayName alone) took the whole attribute away.
		given, _ := value.(map[string]any) // nil when nothing given is kept
		replaceSubAttributes(obj, name, a, given, clearedSubAttributes(a, raw))
		return nil
	}
	if value == nil {
		// Replacing with null, "" for a complex value, or [] unassigns
		// (RFC 7643 §2.5); Entra clears a manager this way. An add of
		// nothing adds nothing, to an attribute or a sub-attribute alike.
		if op.kind == patchReplace {
			op.value = nil
			return removePlain(obj, name, ap, op)
		}
		return nil
	}
	switch {
	case ap.Sub != "":
		// manager.value is the manager with that sub-attribute given:
		// the same merge, and the same rule for a new value.
		parent, _ := obj[name].(map[string]any)
		obj[name] = setSubAttributes(a, parent, map[string]any{ap.Sub: value})
	case a != nil && a.MultiValued:
		if err := checkGiven(r.Type, ap, value.([]any)); err != nil {
			return opError(op, err)
		}
		if op.kind == patchAdd {
			obj[name] = mergeValues(a, obj[name], value.([]any))
		} else {
			obj[name] = value
		}
	case a != nil && a.Type == Complex:
		// add and replace of a complex value both set the given sub-attributes
		// and leave the others (RFC 7644 §3.5.2.1, §3.5.2.3).
		cur, _ := obj[name].(map[string]any)
		obj[name] = setSubAttributes(a, cur, value.(map[string]any))
	case a == nil && op.kind == patchAdd:
		obj[name] = addUnknown(obj[name], value)
	default:
		obj[name] = value
	}
	return nil
}

// checkGiven refuses a value given for the whole of a multi-valued complex
// attribute (a replace or add of emails) that marks two values primary, as
// a POST or PUT is refused, with its message (checkMultiValued): which one
// the client meant cannot be told. One new primary beside the values held
// is another case: it clears theirs (mergeValues, RFC 7644 §3.5.2).
func checkGiven(rt *ResourceType, ap AttrPath, list []any) error {
	given := map[string]any{ap.Name: list}
	if ap.URN != "" {
		given = map[string]any{ap.URN: given}
	}
	return (&Resource{Type: rt, Attrs: given}).checkMultiValued()
}

// describesValue lists the sub-attributes that describe the resource a
// complex value's "value" names (a manager's): they go with it.
var describesValue = []string{"$ref", "display", "displayName"}

// setSubAttributes returns the value of the singular complex attribute a
// (nil for one no schema here defines) with the given sub-attributes set
// and the others kept. A new value names another resource (Entra replaces
// a manager by its id alone, as manager or manager.value): what described
// the old one goes with it, unless given anew.
func setSubAttributes(a *Attribute, cur, given map[string]any) map[string]any {
	merged := make(map[string]any, len(cur)+len(given))
	maps.Copy(merged, cur)
	maps.Copy(merged, given)
	if v, ok := given["value"]; ok && a != nil && cur != nil && !jsonEqual(cur["value"], v) {
		forgetDescription(merged, given)
	}
	return merged
}

// forgetDescription deletes from m what described the resource its value
// named (describesValue), but what given gives anew.
func forgetDescription(m, given map[string]any) {
	for _, derived := range describesValue {
		if _, anew := given[derived]; !anew {
			delete(m, derived)
		}
	}
}

// givenObject returns v, a PATCH operation's value, when it is an object
// with members (Entra sends manager as a list of one), else nil.
func givenObject(v any) map[string]any {
	if list, ok := v.([]any); ok && len(list) == 1 {
		v = list[0]
	}
	if m, ok := v.(map[string]any); ok && len(m) > 0 {
		return m
	}
	return nil
}

// clearedSubAttributes returns the sub-attributes of the singular complex
// attribute a that m, a replace's value, gives as null or "": unassigned
// (RFC 7643 §2.5).
func clearedSubAttributes(a *Attribute, m map[string]any) []string {
	var cleared []string
	for k, sv := range m {
		if sa := a.Sub(k); sa != nil && (sv == nil || sv == "") {
			cleared = append(cleared, sa.Name)
		}
	}
	return cleared
}

// replaceSubAttributes sets obj[name], a singular complex attribute, to
// its value with the given sub-attributes set, the cleared ones removed
// and the others kept, and removes it when nothing is left. A cleared
// value takes what described it along (setSubAttributes), unless given.
func replaceSubAttributes(obj map[string]any, name string, a *Attribute, given map[string]any, cleared []string) {
	cur, _ := obj[name].(map[string]any)
	next := setSubAttributes(a, cur, given)
	for _, sub := range cleared {
		delete(next, sub)
		if sub == "value" {
			forgetDescription(next, given)
		}
	}
	if len(next) == 0 {
		delete(obj, name)
		return
	}
	obj[name] = next
}

// addUnknown is what an add of value makes of cur, an attribute no schema
// here defines (of an extension kept as sent), read by its shape as RFC
// 7644 §3.5.2.1 reads an add by the attribute's definition: to an array,
// the values not already there are appended; to an object, the given
// members are set and the others kept; anything else is replaced.
func addUnknown(cur, value any) any {
	switch c := cur.(type) {
	case []any:
		add, ok := value.([]any)
		if !ok {
			add = []any{value}
		}
		x := newRepeatIndex(nil, append(make([]any, 0, len(c)+len(add)), c...))
		for _, v := range add {
			if x.find(v) < 0 {
				x.add(v)
			}
		}
		return x.list
	case map[string]any:
		given, ok := value.(map[string]any)
		if !ok {
			return value
		}
		merged := make(map[string]any, len(c)+len(given))
		maps.Copy(merged, c)
		for k, v := range given {
			// A member held in another spelling is that member (names
			// match in any case), and keeps the spelling it has.
			if held := findKeyFold(c, k); held != "" {
				k = held
			}
			merged[k] = v
		}
		return merged
	}
	return value
}

func removePlain(obj map[string]any, name string, ap AttrPath, op patchOp) error {
	if ap.Sub != "" {
		parent, _ := obj[name].(map[string]any)
		if ap.attr != nil && ap.attr.MultiValued {
			// remove emails.value: the sub-attribute of every element.
			removeSubFromEach(obj, name, ap)
			return nil
		}
		delete(parent, ap.Sub)
		if parent != nil && len(parent) == 0 {
			delete(obj, name)
		}
		return nil
	}
	if ap.attr != nil && ap.attr.MultiValued && op.value != nil {
		// Entra's dialect for multi-valued attributes: remove these values.
		values, err := normalizeAttr(ap.attr, ap.String(), op.value, nil)
		if err != nil {
			return opError(op, err)
		}
		removeElements(obj, name, removedBy(ap.attr, values))
		return nil
	}
	if _, held := obj[name].([]any); held && ap.attr == nil && op.value != nil {
		// The same dialect for an array of an extension no schema here
		// defines: remove these elements (it compared the whole array
		// with them, and answered 200 having removed nothing).
		values, ok := op.value.([]any)
		if !ok {
			values = []any{op.value}
		}
		given := newRepeatIndex(nil, values)
		removeElements(obj, name, func(el any) bool { return given.find(el) >= 0 })
		return nil
	}
	if op.value != nil && !namesHeld(ap.attr, obj[name], op.value) {
		// The same dialect for a single value: remove this one. A remove
		// of the manager sent when it was X does not clear Y.
		return nil
	}
	delete(obj, name)
	return nil
}

// removeElements removes from the list obj[name] the elements removed
// says, and the list when none is left (setList).
func removeElements(obj map[string]any, name string, removed func(el any) bool) {
	list, _ := obj[name].([]any)
	kept := list[:0:0]
	for _, el := range list {
		if !removed(el) {
			kept = append(kept, el)
		}
	}
	setList(obj, name, kept)
}

// namesHeld reports whether given, the value of a remove, names held, the
// value of the single-valued attribute a: equal to it, or for a complex
// attribute (the manager) its value sub-attribute, given as a string or
// as an object holding it, alone or as the one element of an array.
func namesHeld(a *Attribute, held, given any) bool {
	if list, ok := given.([]any); ok && len(list) == 1 {
		given = list[0]
	}
	if a == nil || a.Type != Complex {
		if _, ok := held.(string); ok {
			return sameString(a, held, given)
		}
		return jsonEqual(held, given)
	}
	if a.Sub("value") == nil {
		return true // a complex value without a value (name) is named by its path alone, as before
	}
	value := func(v any) any {
		if m, ok := v.(map[string]any); ok {
			return m[findKeyFold(m, "value")]
		}
		return v
	}
	h := value(held)
	return h != nil && sameString(a.Sub("value"), h, value(given))
}

// removeSubFromEach removes the sub-attribute of ap (emails.value) from
// every element of obj[name], as a filtered remove removes it from the
// elements it selects (withoutSub).
func removeSubFromEach(obj map[string]any, name string, ap AttrPath) {
	list, _ := obj[name].([]any)
	out := make([]any, 0, len(list))
	for _, el := range list {
		m, ok := el.(map[string]any)
		if !ok {
			continue
		}
		if c, kept := withoutSub(ap, m, ap.Sub); kept {
			out = append(out, c)
		}
	}
	setList(obj, name, out)
}

// withoutSub returns el, an element of the multi-valued attribute ap,
// without its sub-attribute sub, and whether it is kept: one left with
// nothing, or without the value its schema gives elements (lacksValue: an
// email of no address, which may still say it is primary), is removed
// whole.
func withoutSub(ap AttrPath, el map[string]any, sub string) (map[string]any, bool) {
	c := cloneObject(el)
	delete(c, sub)
	return c, len(c) > 0 && !lacksValue(ap.attr, c)
}

// applyFiltered applies an op whose path selects elements of a multi-valued
// attribute: attr[filter] or attr[filter].sub.
func applyFiltered(r *Resource, op patchOp, keys foldedKeys) error {
	pp := op.path
	ap := pp.attr
	obj, at := r.Attrs, ""
	if ap.URN != "" {
		var err error
		if at, obj, err = opContainer(r.Attrs, ap.URN, op.kind); err != nil {
			return err
		}
		if obj == nil {
			return nil
		}
		defer dropEmptyContainer(r.Attrs, ap.URN)
	}
	name := ap.Name
	if ap.attr == nil {
		if k := keys.find(at, obj, name); k != "" {
			name = k
		}
		defer keys.note(at, obj, name)
	}
	list, _ := obj[name].([]any)
	out := make([]any, 0, len(list)+1)
	matched := -1
	madePrimary := 0 // elements this op marks primary
	for _, el := range list {
		m, ok := el.(map[string]any)
		if !ok || !pp.filter.MatchValue(m) {
			out = append(out, el)
			continue
		}
		matched = len(out)
		switch {
		case op.kind == patchRemove && pp.sub.Name == "":
			matched = -2 // dropped
			continue
		case op.kind == patchRemove:
			if c, kept := withoutSub(ap, m, pp.sub.Name); kept {
				out = append(out, c)
			} else {
				matched = -2 // dropped
			}
		case pp.sub.Name != "":
			v, err := normalizeSub(pp, op.value)
			if err != nil {
				return opError(op, err)
			}
			c := cloneObject(m)
			if v == nil {
				delete(c, pp.sub.Name)
			} else {
				c[pp.sub.Name] = v
			}
			if lacksValue(ap.attr, c) {
				matched = -2 // dropped
				continue
			}
			if strings.EqualFold(pp.sub.Name, "primary") && isPrimary(c) {
				madePrimary++
			}
			out = append(out, c)
		default:
			v, err := normalizeElement(ap, op.value)
			if err != nil {
				return opError(op, err)
			}
			// A replace, as an add, sets the given sub-attributes and
			// leaves the others (RFC 7644 §3.5.2.3: "Sub-attributes that
			// are not specified in the value parameter are left
			// unchanged"), so the element keeps the type its filter
			// found it by, and its primary.
			c := cloneObject(m)
			maps.Copy(c, v)
			if isPrimary(v) {
				madePrimary++
			}
			out = append(out, c)
		}
	}
	if madePrimary > 1 {
		// Which of them the client meant cannot be told, as for a POST
		// or PUT marking two (RFC 7643 §2.4).
		return Errorf(ErrInvalidValue, "Operations[%d]: %s selects %d values of %s and marks each primary; at most one value may be primary", op.index, pp.text, madePrimary, ap)
	}
	if matched == -1 && op.kind != patchRemove {
		// No element matched. Entra replaces emails[type eq "work"].value on
		// users that have no work email yet and expects one to appear, so
		// build the element from the filter's equality terms.
		el, ok := pp.filter.template()
		if !ok {
			return Errorf(ErrNoTarget, "Operations[%d]: no value of %s matches %s", op.index, ap, pp.text)
		}
		if pp.sub.Name != "" {
			v, err := normalizeSub(pp, op.value)
			if err != nil {
				return opError(op, err)
			}
			if v == nil {
				return nil
			}
			el[pp.sub.Name] = v
		} else {
			v, err := normalizeElement(ap, op.value)
			if err != nil {
				return opError(op, err)
			}
			for k, sv := range v {
				el[k] = sv
			}
		}
		if !pp.filter.MatchValue(el) {
			// The value given changes what the filter selects by:
			// replacing emails[value eq "a"].value with "b" on a user
			// without "a" (as a retry of the PATCH finds it) would add "b"
			// beside, or a second copy of it.
			return Errorf(ErrNoTarget, "Operations[%d]: no value of %s matches %s", op.index, ap, pp.text)
		}
		if lacksValue(ap.attr, el) {
			// emails[type eq "work"].primary on a user without a work
			// email would make an email of no address.
			return Errorf(ErrNoTarget, "Operations[%d]: no value of %s matches %s, and the element it would make has no value", op.index, ap, pp.text)
		}
		if i := untypedOf(ap, out, el); i >= 0 {
			// An element of no type holds the very value: it takes the
			// type rather than a copy of its value beside it. (A user whose
			// only email has no type, which Entra links by that email,
			// would otherwise have it twice after Entra's first PATCH.)
			c := cloneObject(out[i].(map[string]any))
			maps.Copy(c, el)
			out[i] = c
			matched = i
		} else {
			out = append(out, el)
			matched = len(out) - 1
		}
	}
	if matched >= 0 {
		out = enforceSinglePrimary(out, matched)
	}
	setList(obj, name, out)
	return nil
}

// untypedOf returns the index of the element of list, a value of the
// multi-valued attribute ap, that has no type and the value of el, which
// has a type (a filter's template with its value set); -1 when there is
// none. Values compare as ap's value sub-attribute says (an email's in any
// case).
func untypedOf(ap AttrPath, list []any, el map[string]any) int {
	sub := ap.attr.Sub("value")
	v, _ := el["value"].(string)
	if t, _ := el["type"].(string); sub == nil || t == "" || v == "" {
		return -1
	}
	for i, e := range list {
		m, _ := e.(map[string]any)
		if t, _ := m["type"].(string); t != "" {
			continue
		}
		if mv, _ := m["value"].(string); mv == v || !sub.CaseExact && strings.EqualFold(mv, v) {
			return i
		}
	}
	return -1
}

// lacksValue reports whether el, an element of the multi-valued attribute
// a, has no value where its schema gives elements one (an email, a phone
// number), or, where the schema gives them none (an address, whose parts
// are its value), holds nothing but its type and whether it is primary.
// Such an element says nothing: a PATCH does not make one, one whose
// value or last part it removes is removed, and one given in a POST, a PUT
// or a PATCH's value is left out (normalizeAttr).
func lacksValue(a *Attribute, el map[string]any) bool {
	if a.Sub("value") == nil {
		for k, v := range el {
			if v != nil && !strings.EqualFold(k, "type") && !strings.EqualFold(k, "primary") {
				return false
			}
		}
		return true
	}
	k := findKeyFold(el, "value")
	return k == "" || el[k] == nil
}

// normalizeSub normalizes a value for the sub-attribute after a filter.
func normalizeSub(pp *patchPath, v any) (any, error) {
	if pp.sub.attr == nil {
		return v, nil
	}
	return normalizeSingle(pp.sub.attr, pp.attr.String()+"."+pp.sub.Name, v, nil)
}

// normalizeElement normalizes an object value for one element of a
// multi-valued complex attribute.
func normalizeElement(ap AttrPath, v any) (map[string]any, error) {
	if ap.attr == nil {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, Errorf(ErrInvalidValue, "a value of %s must be an object", ap)
		}
		return m, nil
	}
	nv, err := normalizeSingle(ap.attr, ap.String(), v, nil)
	if err != nil {
		return nil, err
	}
	m, _ := nv.(map[string]any)
	if m == nil {
		return nil, Errorf(ErrInvalidValue, "a value of %s must be a non-empty object", ap)
	}
	return m, nil
}

// applyMembers turns an op on a Group's members into MemberOps.
func applyMembers(op patchOp, u *Update) error {
	pp := op.path
	if pp.sub.Name != "" || pp.attr.Sub != "" {
		// members.display, members[value eq "x"].type: a member's
		// sub-attributes are not changed one by one. Read as the whole
		// members, a remove of members.display would remove every member.
		return Errorf(ErrInvalidPath, "Operations[%d]: members are added and removed whole; %s cannot be changed", op.index, pp.text)
	}
	switch {
	case op.kind == patchRemove && pp.filter != nil:
		if values, ok := pp.filter.equalValues("value"); ok {
			// members[value eq "id"], Entra's form with aadOptscim062020: a
			// direct removal the backend can do without reading other members.
			members := make([]Member, len(values))
			for i, v := range values {
				members[i] = Member{Value: v}
			}
			u.Members = append(u.Members, MemberOp{Kind: RemoveMembers, Members: members})
		} else {
			u.Members = append(u.Members, MemberOp{Kind: RemoveMatchingMembers, Filter: pp.filter})
		}
		return nil
	case op.kind == patchRemove && op.value == nil:
		u.Members = append(u.Members, MemberOp{Kind: RemoveAllMembers})
		return nil
	case pp.filter != nil:
		return Errorf(ErrInvalidPath, "Operations[%d]: %s of %s is not supported; remove the member and add the new one", op.index, op.kind, pp.text)
	}
	members, err := parseMembers(op)
	if err != nil {
		return err
	}
	switch op.kind {
	case patchRemove:
		// Entra without aadOptscim062020: path "members" with the members to remove.
		u.Members = append(u.Members, MemberOp{Kind: RemoveMembers, Members: members})
	case patchReplace:
		u.Members = append(u.Members, MemberOp{Kind: RemoveAllMembers})
		if len(members) > 0 {
			u.Members = append(u.Members, MemberOp{Kind: AddMembers, Members: members})
		}
	default:
		if len(members) > 0 {
			u.Members = append(u.Members, MemberOp{Kind: AddMembers, Members: members})
		}
	}
	return nil
}

// parseMembers reads member values: an array of {"value": id, ...}, a single
// such object, or bare id strings.
func parseMembers(op patchOp) ([]Member, error) {
	members, err := MembersFromValue(op.value)
	if err != nil {
		return nil, opError(op, err)
	}
	return members, nil
}

// MembersFromValue reads the members attribute of a Group as a client sent
// it: an array of {"value": id, "display": ..., "$ref": ..., "type": ...}
// (nulls allowed), a single such object, or bare id strings.
func MembersFromValue(v any) ([]Member, error) {
	list, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil, nil
		}
		list = []any{v}
	}
	out := make([]Member, 0, len(list))
	for i, el := range list {
		var m Member
		switch el := el.(type) {
		case nil:
			continue
		case string:
			m.Value = el
		case map[string]any:
			for k, sv := range el {
				var field *string
				switch strings.ToLower(k) {
				case "value":
					field = &m.Value
				case "display":
					field = &m.Display
				case "type":
					field = &m.Type
				case "$ref":
					field = &m.Ref
				default:
					// A sub-attribute members do not have (a "displayName", an
					// "operation") is ignored: it changes nothing about the member.
					continue
				}
				if sv == nil {
					continue
				}
				s, ok := sv.(string)
				if !ok {
					return nil, Errorf(ErrInvalidValue, "members[%d].%s must be a string, got %s", i, k, jsonKind(sv))
				}
				*field = s
			}
		default:
			return nil, Errorf(ErrInvalidValue, "members[%d] must be an object with a value, got %s", i, jsonKind(el))
		}
		if strings.TrimSpace(m.Value) == "" {
			return nil, Errorf(ErrInvalidValue, "members[%d] has no value (the member's id)", i)
		}
		out = append(out, m)
	}
	return out, nil
}

// mergeValues adds values to a multi-valued attribute, updating an element
// that already has the same value and type instead of duplicating it. The
// last value added as primary stays the only primary (RFC 7644 §3.5.2).
func mergeValues(a *Attribute, cur any, add []any) []any {
	list, _ := cur.([]any)
	out, last := mergeInto(repeatsBy(a), append(make([]any, 0, len(list)+len(add)), list...), add)
	if last >= 0 {
		return enforceSinglePrimary(out, last)
	}
	return out
}

// dedupeValues merges the elements of list that repeat one another's value
// and type, keeping the first one's place. An attribute without a value
// sub-attribute (addresses) only loses exact repeats: two work addresses are
// two addresses.
func dedupeValues(a *Attribute, list []any) []any {
	out, _ := mergeInto(repeatsBy(a), make([]any, 0, len(list)), list)
	return out
}

// repeatsBy is the attribute by which two elements of a repeat one
// another (repeats): a itself where its elements have a value, nil (exact
// repeats only) where they have none (addresses): two work addresses are
// two addresses, in a POST or PUT, and in a PATCH add (it merged the new
// one into the old) or remove by value (it removed both) alike.
func repeatsBy(a *Attribute) *Attribute {
	if a.Sub("value") == nil {
		return nil
	}
	return a
}

// mergeInto appends each of add to out, or merges it into the element of out
// it repeats (repeats); it returns out and the index of the last element a
// value given as primary landed on (-1 when none).
func mergeInto(a *Attribute, out, add []any) ([]any, int) {
	x := newRepeatIndex(a, out)
	last := -1
	for _, v := range add {
		i := x.find(v)
		if i < 0 {
			x.add(v)
			i = len(x.list) - 1
		} else if m, ok := v.(map[string]any); ok {
			c := cloneObject(x.list[i].(map[string]any))
			for k, sv := range m {
				c[k] = sv
			}
			x.set(i, c)
		}
		// Only a value given as primary makes its element the primary
		// one: a repeat of the element that is primary now, given without
		// "primary", must not take it back from a new primary given
		// before it in the same value.
		if isPrimary(v) && isPrimary(x.list[i]) {
			last = i
		}
	}
	return x.list, last
}

// removedBy returns what a remove with values (Entra's dialect for
// multi-valued attributes) removes of the attribute a's elements: those
// that one of values repeats, and those whose value one of values names
// alone (Entra sends {"value": id}).
func removedBy(a *Attribute, values any) func(el any) bool {
	list, _ := values.([]any)
	x := newRepeatIndex(repeatsBy(a), list)
	named := make(map[string]bool)
	for _, v := range list {
		if m, ok := v.(map[string]any); ok && len(m) == 1 {
			if k, has, ok := caseKey(a.Sub("value"), m["value"]); ok && has {
				named[k] = true
			}
		}
	}
	return func(el any) bool {
		if x.find(el) >= 0 {
			return true
		}
		em, ok := el.(map[string]any)
		if !ok {
			return false
		}
		k, has, ok := caseKey(a.Sub("value"), em["value"])
		return ok && has && named[k]
	}
}

func sameString(a *Attribute, x, y any) bool {
	xs, xok := x.(string)
	ys, yok := y.(string)
	if !xok || !yok {
		return x == nil && y == nil
	}
	if a != nil && a.CaseExact {
		return xs == ys
	}
	return strings.EqualFold(xs, ys)
}

func isPrimary(v any) bool {
	m, _ := v.(map[string]any)
	p, _ := m["primary"].(bool)
	return p
}

// enforceSinglePrimary keeps "primary": true on at most one element (RFC 7643
// §2.4): the one at keep when it is primary, else the last primary one.
func enforceSinglePrimary(list []any, keep int) []any {
	if keep < 0 || keep >= len(list) || !isPrimary(list[keep]) {
		keep = -1
		for i := len(list) - 1; i >= 0; i-- {
			if isPrimary(list[i]) {
				keep = i
				break
			}
		}
	}
	if keep < 0 {
		return list
	}
	for i, el := range list {
		if i != keep && isPrimary(el) {
			c := cloneObject(el.(map[string]any))
			c["primary"] = false
			list[i] = c
		}
	}
	return list
}

func setList(obj map[string]any, name string, list []any) {
	if len(list) == 0 {
		delete(obj, name)
		return
	}
	obj[name] = list
}

func dropEmptyContainer(attrs map[string]any, urn string) {
	if k, m := containerFor(attrs, urn); m != nil && len(m) == 0 {
		delete(attrs, k)
	}
}

// opError prefixes a value error with the operation it came from.
func opError(op patchOp, err error) error {
	se, ok := err.(*Error)
	if !ok {
		return err
	}
	return &Error{Status: se.Status, Type: se.Type, Detail: "Operations[" + strconv.Itoa(op.index) + "]: " + se.Detail}
}
