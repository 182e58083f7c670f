// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on filters. Entra's filters are a single comparison; the caps keep a
// hostile filter from costing more than a legitimate one could.
const (
	MaxFilterLength = 4096 // bytes
	MaxFilterTerms  = 100  // comparisons; the and/or joining them are one fewer, not and nesting bounded by depth
	maxFilterDepth  = 32   // nesting of parentheses, not and value paths
)

// Filter is a parsed SCIM filter (RFC 7644 §3.4.2.2), resolved against a
// resource type so that attribute names are canonical and each comparison
// knows its attribute's type and case rule.
type Filter struct {
	root  expr
	src   string
	terms int // comparisons (MaxFilterTerms)
}

// Terms returns the filter's comparisons (at most MaxFilterTerms): what
// testing a resource against it costs, per byte the resource holds.
func (f *Filter) Terms() int { return f.terms }

// String returns the filter as it was given.
func (f *Filter) String() string { return f.src }

// Match reports whether the resource matches the filter.
func (f *Filter) Match(r *Resource) bool { return f.root.match(r.Attrs) }

// MatchValue reports whether one element of a multi-valued complex attribute
// matches a value filter such as the one in members[value eq "x"]; obj is
// the element, keyed by sub-attribute name.
func (f *Filter) MatchValue(obj map[string]any) bool { return f.root.match(obj) }

// Equality is an indexable term that a filter implies: every resource the
// filter matches has an attribute at Path equal to Value (compared with
// the attribute's case rule).
type Equality struct {
	Path  string // "id", "userName", "externalId", "displayName", "emails.value" or "members.value"
	Value string
}

// indexable lists the paths a store may keep an equality index for.
var indexable = map[string]bool{
	"id": true, "userName": true, "externalId": true, "displayName": true,
	"emails.value": true, "members.value": true,
}

// Equalities returns the equality terms the filter implies, so that a store
// can look candidates up in an index and evaluate the whole filter only on
// those. Terms joined by "and" are all implied; nothing under "or" or "not"
// is. An empty result means the filter needs a scan.
func (f *Filter) Equalities() []Equality {
	var out []Equality
	collectEqualities(f.root, "", &out)
	return out
}

// SoleEquality returns the filter's equality when the filter is that one
// comparison and nothing else, such as Entra's userName eq "x": a store
// whose index compares with the attribute's case rule then has its answer
// in the index, with nothing left to test.
func (f *Filter) SoleEquality() (Equality, bool) {
	c, ok := f.root.(*compareExpr)
	if !ok {
		return Equality{}, false
	}
	var out []Equality
	collectEqualities(c, "", &out)
	if len(out) != 1 {
		return Equality{}, false
	}
	return out[0], true
}

func collectEqualities(e expr, prefix string, out *[]Equality) {
	switch e := e.(type) {
	case *logicalExpr:
		if e.and {
			collectEqualities(e.left, prefix, out)
			collectEqualities(e.right, prefix, out)
		}
	case *valuePathExpr:
		collectEqualities(e.filter, e.path.String()+".", out)
	case *compareExpr:
		s, ok := e.value.(string)
		if !ok || e.op != opEq {
			return
		}
		p := prefix + e.path.String()
		if e.path.Sub == "" && e.path.attr != nil && e.path.attr.Type == Complex {
			p += ".value" // members eq "x" compares each member's value
		}
		if indexable[p] {
			*out = append(*out, Equality{Path: p, Value: s})
		}
	}
}

// equalValues returns the values v when the filter is exactly
// `sub eq "v1" or sub eq "v2" ...` on string values; ok is false otherwise.
func (f *Filter) equalValues(sub string) ([]string, bool) {
	var out []string
	var walk func(e expr) bool
	walk = func(e expr) bool {
		switch e := e.(type) {
		case *logicalExpr:
			return !e.and && walk(e.left) && walk(e.right)
		case *compareExpr:
			s, ok := e.value.(string)
			if !ok || e.op != opEq || e.path.Name != sub || e.path.Sub != "" {
				return false
			}
			out = append(out, s)
			return true
		}
		return false
	}
	return out, walk(f.root)
}

// template builds the element a value filter describes when it is made of
// equality terms joined by "and", as type eq "work" is: {"type": "work"}.
func (f *Filter) template() (map[string]any, bool) {
	out := map[string]any{}
	var walk func(e expr) bool
	walk = func(e expr) bool {
		switch e := e.(type) {
		case *logicalExpr:
			return e.and && walk(e.left) && walk(e.right)
		case *compareExpr:
			if e.op != opEq || e.value == nil || e.path.Sub != "" {
				return false
			}
			if _, dup := out[e.path.Name]; dup {
				return false
			}
			out[e.path.Name] = e.value
			return true
		}
		return false
	}
	return out, walk(f.root)
}

// References reports whether the filter reads the named top-level attribute
// (for example "members"), so that a store can load it before matching.
func (f *Filter) References(name string) bool { return references(f.root, name) }

func references(e expr, name string) bool {
	switch e := e.(type) {
	case *logicalExpr:
		return references(e.left, name) || references(e.right, name)
	case *notExpr:
		return references(e.inner, name)
	case *valuePathExpr:
		return strings.EqualFold(e.path.Name, name)
	case *compareExpr:
		return strings.EqualFold(e.path.Name, name)
	case *presentExpr:
		return strings.EqualFold(e.path.Name, name)
	}
	return false
}

// ParseFilter parses a filter for resources of type rt. Beyond the RFC it
// accepts what real clients send: operators and attribute names in any case,
// and unquoted string values (`externalId eq jyoung`, as Entra's docs print
// it). A filter naming an attribute the schemas lack, comparing with an
// operator the attribute's type does not support, or exceeding the length,
// node or nesting limits is an invalidFilter error.
func ParseFilter(rt *ResourceType, s string) (*Filter, error) {
	return parseFilter(rt, s, nil)
}

// ParseValueFilter parses a filter on the sub-attributes of the multi-valued
// complex attribute at parent, as inside members[value eq "x"].
func ParseValueFilter(rt *ResourceType, parent AttrPath, s string) (*Filter, error) {
	return parseFilter(rt, s, &parent)
}

func parseFilter(rt *ResourceType, s string, parent *AttrPath) (*Filter, error) {
	if len(s) > MaxFilterLength {
		return nil, Errorf(ErrInvalidFilter, "filter is %d bytes long; the limit is %d", len(s), MaxFilterLength)
	}
	if !utf8.ValidString(s) {
		return nil, Errorf(ErrInvalidFilter, "filter is not valid UTF-8")
	}
	p := &filterParser{rt: rt, lex: lexer{src: s}, parent: parent}
	root, err := p.parseOr()
	if err == nil && p.lex.peek().kind != tokEOF {
		err = p.errorf("unexpected %s", p.lex.peek())
	}
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, Errorf(ErrInvalidFilter, "filter %q: %v", Truncate(s, 200), err)
	}
	return &Filter{root: root, src: s, terms: p.terms}, nil
}

// --- lexer

type tokKind int

const (
	tokEOF tokKind = iota
	tokWord
	tokString
	tokLParen
	tokRParen
	tokLBracket
	tokRBracket
)

type token struct {
	kind tokKind
	text string // the word, or the decoded string
	pos  int
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of filter"
	case tokString:
		return strconv.Quote(t.text)
	default:
		return fmt.Sprintf("%q", t.text)
	}
}

type lexer struct {
	src       string
	pos       int
	peeked    token
	hasPeeked bool
	err       error
}

func (l *lexer) peek() token {
	if !l.hasPeeked {
		l.peeked, l.hasPeeked = l.scan(), true
	}
	return l.peeked
}

func (l *lexer) next() token {
	t := l.peek()
	l.hasPeeked = false
	return t
}

func (l *lexer) scan() token {
	for l.pos < len(l.src) && (l.src[l.pos] == ' ' || l.src[l.pos] == '\t' || l.src[l.pos] == '\n' || l.src[l.pos] == '\r') {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.src) {
		return token{kind: tokEOF, pos: start}
	}
	switch c := l.src[l.pos]; c {
	case '(':
		l.pos++
		return token{kind: tokLParen, text: "(", pos: start}
	case ')':
		l.pos++
		return token{kind: tokRParen, text: ")", pos: start}
	case '[':
		l.pos++
		return token{kind: tokLBracket, text: "[", pos: start}
	case ']':
		l.pos++
		return token{kind: tokRBracket, text: "]", pos: start}
	case '"':
		return l.scanString()
	}
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '(' || c == ')' || c == '[' || c == ']' || c == '"' {
			break
		}
		l.pos++
	}
	return token{kind: tokWord, text: l.src[start:l.pos], pos: start}
}

// scanString reads a JSON string literal.
func (l *lexer) scanString() token {
	start := l.pos
	i := l.pos + 1
	escaped := false
	for ; i < len(l.src); i++ {
		c := l.src[i]
		if c == '\\' {
			i++
			escaped = true
			continue
		}
		if c == '"' {
			break
		}
	}
	if i >= len(l.src) {
		l.pos = len(l.src)
		l.err = fmt.Errorf("unterminated string starting at offset %d", start)
		return token{kind: tokEOF, pos: start}
	}
	l.pos = i + 1
	raw := l.src[start:l.pos]
	if !escaped {
		return token{kind: tokString, text: raw[1 : len(raw)-1], pos: start}
	}
	var s string
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		l.err = fmt.Errorf("bad string at offset %d: %v", start, err)
		return token{kind: tokEOF, pos: start}
	}
	return token{kind: tokString, text: s, pos: start}
}

// --- parser

type filterParser struct {
	rt     *ResourceType
	lex    lexer
	parent *AttrPath // set when parsing inside attr[...]
	terms  int
	depth  int
}

func (p *filterParser) errorf(format string, args ...any) error {
	if p.lex.err != nil {
		return p.lex.err
	}
	return fmt.Errorf(format, args...)
}

// term counts a comparison (a term): at most MaxFilterTerms. And, or,
// not and a value path's brackets are not terms: a value path's
// comparisons are (60 `emails[type eq "x"]` joined by or were once 120).
func (p *filterParser) term() error {
	p.terms++
	if p.terms > MaxFilterTerms {
		return Errorf(ErrInvalidFilter, "filter has more than %d terms", MaxFilterTerms)
	}
	return nil
}

func (p *filterParser) enter() error {
	p.depth++
	if p.depth > maxFilterDepth {
		return Errorf(ErrInvalidFilter, "filter nests deeper than %d levels", maxFilterDepth)
	}
	return nil
}

func (p *filterParser) keyword(word string) bool {
	t := p.lex.peek()
	return t.kind == tokWord && strings.EqualFold(t.text, word)
}

// parseOr: and-expressions joined by "or" (lowest precedence).
func (p *filterParser) parseOr() (expr, error) {
	left, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		p.lex.next()
		right, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		left = &logicalExpr{left: left, right: right}
	}
	return left, nil
}

// parseAnd: terms joined by "and".
func (p *filterParser) parseAnd() (expr, error) {
	left, err := p.parseTerm()
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		p.lex.next()
		right, err := p.parseTerm()
		if err != nil {
			return nil, err
		}
		left = &logicalExpr{and: true, left: left, right: right}
	}
	return left, nil
}

// parseTerm: not(...), (...), a value path, or a comparison.
func (p *filterParser) parseTerm() (expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()

	t := p.lex.peek()
	switch {
	case t.kind == tokWord && strings.EqualFold(t.text, "not"):
		p.lex.next()
		if p.lex.peek().kind != tokLParen {
			return nil, p.errorf("expected \"(\" after not, got %s", p.lex.peek())
		}
		inner, err := p.parseParen()
		if err != nil {
			return nil, err
		}
		return &notExpr{inner: inner}, nil
	case t.kind == tokLParen:
		return p.parseParen()
	case t.kind == tokWord:
		return p.parseAttrExpr()
	default:
		return nil, p.errorf("expected an attribute, \"not\" or \"(\", got %s", t)
	}
}

func (p *filterParser) parseParen() (expr, error) {
	p.lex.next() // (
	inner, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if t := p.lex.next(); t.kind != tokRParen {
		return nil, p.errorf("expected \")\", got %s", t)
	}
	return inner, nil
}

// parseAttrExpr parses `path pr`, `path op value`, `path[filter]` and the
// `path[filter].sub op value` form that Entra's docs use for matching on the
// work email.
func (p *filterParser) parseAttrExpr() (expr, error) {
	word := p.lex.next()
	if p.parent == nil && namesSchemas(word.text) {
		if !strings.EqualFold(word.text, "schemas") {
			return nil, p.errorf("schemas is a list of URIs; compare it with eq, ne, co, sw, ew or pr")
		}
		return p.parseSchemas()
	}
	path, err := p.resolve(word.text)
	if err != nil {
		return nil, err
	}
	if p.lex.peek().kind == tokLBracket {
		return p.parseValuePath(path) // its comparisons are the terms
	}
	return p.parseComparison(path)
}

func (p *filterParser) parseValuePath(path AttrPath) (expr, error) {
	if p.parent != nil {
		return nil, p.errorf("value paths cannot nest inside %s[...]", p.parent)
	}
	if path.Sub != "" || (path.attr != nil && path.attr.Type != Complex) {
		return nil, p.errorf("%s is not a complex attribute and takes no [filter]", path)
	}
	p.lex.next() // [
	p.parent = &path
	inner, err := p.parseOr()
	p.parent = nil
	if err != nil {
		return nil, err
	}
	if t := p.lex.next(); t.kind != tokRBracket {
		return nil, p.errorf("expected \"]\", got %s", t)
	}
	vp := &valuePathExpr{path: path, filter: inner}
	// emails[type eq "work"].value eq "x": a comparison on one sub-attribute
	// of the elements the bracket selects.
	if t := p.lex.peek(); t.kind == tokWord && strings.HasPrefix(t.text, ".") {
		p.lex.next()
		sub, err := path.elementPath(t.text[1:])
		if err == nil {
			err = p.notALink(path, sub.Name)
		}
		if err != nil {
			return nil, err
		}
		cmp, err := p.parseComparison(sub)
		if err != nil {
			return nil, err
		}
		vp.filter = &logicalExpr{and: true, left: inner, right: cmp}
	}
	return vp, nil
}

func (p *filterParser) parseComparison(path AttrPath) (expr, error) {
	if err := p.term(); err != nil {
		return nil, err
	}
	opTok, op, err := p.operator(path.String())
	if err != nil {
		return nil, err
	}
	leaf := path.Leaf()
	if leaf != nil && leaf.Type == Complex && path.Sub == "" && leaf.Sub("value") == nil && op != opPr {
		return nil, p.errorf("%s is complex; compare one of its sub-attributes", path)
	}
	if op == opPr {
		return &presentExpr{path: path}, nil
	}
	valTok := p.lex.next()
	if valTok.kind != tokWord && valTok.kind != tokString {
		return nil, p.errorf("expected a value after %s %s, got %s", path, opTok.text, valTok)
	}
	cmp := &compareExpr{path: path, op: op, caseExact: path.caseExact()}
	if leaf != nil && leaf.Type == Complex && path.Sub == "" {
		cmp.caseExact = leaf.Sub("value").CaseExact
	}
	if err := cmp.setValue(valTok); err != nil {
		return nil, err
	}
	return cmp, nil
}

// operator reads the operator after the attribute named what.
func (p *filterParser) operator(what string) (token, op, error) {
	t := p.lex.next()
	if t.kind != tokWord {
		return t, 0, p.errorf("expected an operator after %s, got %s", what, t)
	}
	o, ok := operators[strings.ToLower(t.text)]
	if !ok {
		return t, 0, p.errorf("unknown operator %q", t.text)
	}
	return t, o, nil
}

// parseSchemas parses a comparison on the resource's schemas, which RFC
// 7644 §3.4.2.2 filters on in its own example (schemas eq
// "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"). They are
// not stored but follow from the extensions a resource holds
// (Resource.Schemas), and are URIs, compared ignoring case.
func (p *filterParser) parseSchemas() (expr, error) {
	if err := p.term(); err != nil {
		return nil, err
	}
	if t := p.lex.peek(); t.kind == tokLBracket || (t.kind == tokWord && strings.HasPrefix(t.text, ".")) {
		return nil, p.errorf("schemas is a list of URIs; compare it with eq, ne, co, sw, ew or pr")
	}
	opTok, op, err := p.operator("schemas")
	if err != nil {
		return nil, err
	}
	e := &schemasExpr{rt: p.rt, op: op}
	if op == opPr {
		return e, nil
	}
	valTok := p.lex.next()
	switch {
	case valTok.kind != tokWord && valTok.kind != tokString:
		return nil, p.errorf("expected a value after schemas %s, got %s", opTok.text, valTok)
	case valTok.kind == tokWord && strings.EqualFold(valTok.text, "null"):
		if op != opEq && op != opNe {
			return nil, p.errorf("%s cannot compare with null", opName(op))
		}
		e.null = true
	case op != opEq && op != opNe && op != opCo && op != opSw && op != opEw:
		return nil, p.errorf("schemas is a list of URIs; compare it with eq, ne, co, sw, ew or pr, not %s", opName(op))
	}
	e.folded = Fold(valTok.text)
	return e, nil
}

// resolve resolves an attribute path in the filter, relative to the parent
// attribute inside a value path.
func (p *filterParser) resolve(s string) (AttrPath, error) {
	if p.parent != nil {
		path, err := p.parent.elementPath(s)
		if err == nil {
			err = p.notALink(*p.parent, path.Name)
		}
		return path, err
	}
	path, err := p.rt.ParsePath(s)
	if err != nil && hasPrefixFold(s, "urn:") && !errors.Is(err, errUnknownAttribute) {
		if schema, _ := p.rt.splitURN(s); schema == nil {
			// Where the URN of an extension a resource listed in schemas
			// ends is known from that resource (parsePathIn); a filter is
			// read before any.
			return AttrPath{}, fmt.Errorf("%w; a filter, read before any resource, names such an extension only by a URN ending with :%s", err, p.rt.Name)
		}
	}
	if err == nil && path.Name == "" {
		// A path may name a whole extension (PATCH takes one); a filter
		// compares attributes, and would match nothing.
		return AttrPath{}, p.errorf("%s names a whole extension; filter on one of its attributes", s)
	}
	if err == nil {
		err = p.notALink(path, path.Sub)
	}
	return path, err
}

// notALink refuses a comparison of the sub-attribute sub of path that is
// a link an answer adds (addedLink): not stored, it matched nothing, in a
// list and in a PATCH path's filter alike, while every answer showed it.
func (p *filterParser) notALink(path AttrPath, sub string) error {
	if instead := addedLink(path.URN, path.Name, sub); instead != "" {
		return p.errorf("%s.%s is a link the answer makes from the URL the client used, not stored, and no filter matches it; filter on %s", path.Name, sub, instead)
	}
	return nil
}

// --- expressions

type op int

const (
	opEq op = iota
	opNe
	opCo
	opSw
	opEw
	opGt
	opGe
	opLt
	opLe
	opPr
)

var operators = map[string]op{
	"eq": opEq, "ne": opNe, "co": opCo, "sw": opSw, "ew": opEw,
	"gt": opGt, "ge": opGe, "lt": opLt, "le": opLe, "pr": opPr,
}

type expr interface {
	// match evaluates the expression on an object: a resource's attributes,
	// or one element of a multi-valued attribute inside a value path.
	match(obj map[string]any) bool
}

type logicalExpr struct {
	and         bool
	left, right expr
}

func (e *logicalExpr) match(obj map[string]any) bool {
	if e.and {
		return e.left.match(obj) && e.right.match(obj)
	}
	return e.left.match(obj) || e.right.match(obj)
}

type notExpr struct{ inner expr }

func (e *notExpr) match(obj map[string]any) bool { return !e.inner.match(obj) }

type valuePathExpr struct {
	path   AttrPath
	filter expr
}

func (e *valuePathExpr) match(obj map[string]any) bool {
	v := lookupAttr(obj, e.path)
	switch v := v.(type) {
	case []any:
		for _, el := range v {
			if m, ok := el.(map[string]any); ok && e.filter.match(m) {
				return true
			}
		}
	case map[string]any:
		return e.filter.match(v)
	}
	return false
}

// schemasExpr compares the schemas of a resource of type rt: some URI
// compares so (eq, co, sw, ew), none equals the value (ne); every resource
// has schemas (pr, ne null).
type schemasExpr struct {
	rt     *ResourceType
	op     op
	null   bool
	folded string
}

func (e *schemasExpr) match(obj map[string]any) bool {
	if e.op == opPr || e.null {
		return e.op != opEq
	}
	if e.op == opNe {
		return !e.some(obj, opEq)
	}
	return e.some(obj, e.op)
}

func (e *schemasExpr) some(obj map[string]any, o op) bool {
	for _, urn := range (&Resource{Type: e.rt, Attrs: obj}).Schemas() {
		if compareStrings(o, Fold(urn), e.folded) {
			return true
		}
	}
	return false
}

type presentExpr struct{ path AttrPath }

func (e *presentExpr) match(obj map[string]any) bool {
	found := false
	eachValue(obj, e.path, func(v any) bool {
		found = !empty(v)
		return found
	})
	return found
}

type compareExpr struct {
	path      AttrPath
	op        op
	caseExact bool
	value     any    // string, bool, json.Number, or nil for null
	folded    string // Fold(value), for case-insensitive comparisons
	number    float64
	decimal   decimal // the number's text read exactly (readNumber)
	isNumber  bool
	instant   time.Time // a date-time value, parsed
	isTime    bool
}

// setValue types the comparison value by the attribute's type, accepting
// unquoted strings for string attributes.
func (c *compareExpr) setValue(t token) error {
	leaf := c.path.Leaf()
	typ := Type("")
	if leaf != nil {
		typ = leaf.Type
		if typ == Complex {
			typ = leaf.Sub("value").Type
		}
	}
	if t.kind == tokWord {
		switch lw := strings.ToLower(t.text); {
		case lw == "null":
			if c.op != opEq && c.op != opNe {
				return fmt.Errorf("%s cannot compare with null", opName(c.op))
			}
			c.value = nil
			return c.checkOp(typ)
		case (lw == "true" || lw == "false") && (typ == Boolean || typ == ""):
			c.value = lw == "true"
			return c.checkOp(Boolean)
		case typ == Integer || typ == Decimal || typ == "":
			if d, f, ok := readNumber(t.text); ok {
				c.value, c.decimal, c.number, c.isNumber = json.Number(t.text), d, f, true
				return c.checkOp(Decimal)
			}
			if typ != "" {
				return fmt.Errorf("%s is a number; %q is not", c.path, t.text)
			}
		case typ == Boolean:
			return fmt.Errorf("%s is a boolean; %q is not", c.path, t.text)
		}
		// An unquoted string, which Entra's docs print for externalId.
	}
	s := t.text
	switch typ {
	case Boolean:
		switch {
		case strings.EqualFold(s, "true"):
			c.value = true
		case strings.EqualFold(s, "false"):
			c.value = false
		default:
			return fmt.Errorf("%s is a boolean; %q is not", c.path, s)
		}
		return c.checkOp(Boolean)
	case Integer, Decimal:
		d, f, ok := readNumber(s)
		if !ok {
			return fmt.Errorf("%s is a number; %q is not", c.path, s)
		}
		c.value, c.decimal, c.number, c.isNumber = json.Number(s), d, f, true
		return c.checkOp(Decimal)
	case DateTime:
		if c.op == opCo || c.op == opSw || c.op == opEw {
			// co, sw and ew compare the text of the stored form,
			// TimeFormat, with any part of it (sw "2026-12-06": the
			// day); only the operators that compare instants need one.
			break
		}
		tm, err := parseDateTime(s)
		if err != nil {
			return fmt.Errorf("%s is a date-time; %q is not RFC 3339", c.path, s)
		}
		// eq, ne, gt, ge, lt and le compare instants, exactly: a value
		// finer than the stored milliseconds, or in another offset, is
		// neither rounded nor compared as text. co, sw and ew compare the
		// text of the stored form, TimeFormat.
		c.instant, c.isTime = tm, true
		s = tm.UTC().Format(TimeFormat)
	}
	c.value = s
	c.folded = Fold(s)
	return c.checkOp(String)
}

// checkOp rejects operators the value's type does not support.
func (c *compareExpr) checkOp(t Type) error {
	switch {
	case c.value == nil:
		return nil
	case t == Boolean && c.op != opEq && c.op != opNe:
		return fmt.Errorf("%s is a boolean and supports only eq and ne, not %s", c.path, opName(c.op))
	case t == Decimal && (c.op == opCo || c.op == opSw || c.op == opEw):
		return fmt.Errorf("%s cannot apply to the number %s", opName(c.op), c.value)
	case t == String && c.path.Leaf() != nil && c.path.Leaf().Type == Binary && c.op != opEq && c.op != opNe:
		return fmt.Errorf("%s is binary and supports only eq and ne", c.path)
	}
	return nil
}

func opName(o op) string {
	for k, v := range operators {
		if v == o {
			return k
		}
	}
	return "?"
}

func (c *compareExpr) match(obj map[string]any) bool {
	if c.value == nil { // eq null: unassigned; ne null: present
		present := false
		eachValue(obj, c.path, func(v any) bool { present = !empty(v); return present })
		return present == (c.op == opNe)
	}
	if c.op == opNe {
		matched := false
		eachValue(obj, c.path, func(v any) bool { matched = c.test(opEq, v); return matched })
		return !matched
	}
	matched := false
	eachValue(obj, c.path, func(v any) bool { matched = c.test(c.op, v); return matched })
	return matched
}

// test compares one attribute value with the filter's value.
func (c *compareExpr) test(o op, v any) bool {
	if c.path.Leaf() == nil {
		v = asTypeOf(c.value, v)
	}
	switch want := c.value.(type) {
	case string:
		got, ok := v.(string)
		if !ok {
			return false
		}
		if c.isTime && o != opCo && o != opSw && o != opEw {
			t, err := parseDateTime(got)
			return err == nil && compareOrder(o, t.Compare(c.instant))
		}
		if c.caseExact {
			return compareStrings(o, got, want)
		}
		return compareStrings(o, Fold(got), c.folded)
	case bool:
		got, ok := v.(bool)
		return ok && got == want
	case json.Number:
		var got float64
		switch n := v.(type) {
		case json.Number:
			// Exactly, by their decimal text, where both are plain
			// decimals: as float64, 9007199254740993 was 9007199254740992,
			// and a filter naming one selected the other (a PATCH's
			// value filter removed an element it did not name).
			if d, ok := parseDecimal(string(n)); ok {
				return compareOrder(o, d.compare(c.decimal))
			}
			f, err := n.Float64()
			if err != nil {
				return false
			}
			got = f
		case float64:
			got = n
		default:
			return false
		}
		switch o {
		case opEq:
			return got == c.number
		case opGt:
			return got > c.number
		case opGe:
			return got >= c.number
		case opLt:
			return got < c.number
		case opLe:
			return got <= c.number
		}
	}
	return false
}

// asTypeOf reads v, a value of an attribute no schema here defines, as a
// value of want's JSON type where its text is one: the string "98052" as
// the number 98052 or the reverse, "true" as true or the reverse. Such an
// attribute's type is what its client sent, and a filter's is what the
// filter's text reads as (an unquoted 98052 is a number), so without a
// schema the two need not agree: postalCode eq 98052 did not find the
// "98052" Entra stores. The filter's type decides how they compare.
func asTypeOf(want, v any) any {
	switch want.(type) {
	case string:
		switch v := v.(type) {
		case json.Number:
			return string(v)
		case bool:
			return strconv.FormatBool(v)
		}
	case json.Number:
		if s, ok := v.(string); ok {
			if _, _, ok := readNumber(s); ok {
				return json.Number(s)
			}
		}
	case bool:
		if s, ok := v.(string); ok {
			switch {
			case strings.EqualFold(s, "true"):
				return true
			case strings.EqualFold(s, "false"):
				return false
			}
		}
	}
	return v
}

// readNumber reads s as a number when it is a number's text (JSON's
// grammar, a leading '+' too), also one past float64's range, which
// compares exactly by its text (d); f is its nearest
// float64, ±Inf past the range. Go's ParseFloat alone refused 1e400, so
// `x lt 1e400` compared as text and 5 was not below it, and took
// "Infinity", "NaN" and "0x1p4", which no JSON number writes.
func readNumber(s string) (d decimal, f float64, ok bool) {
	if d, ok = parseDecimal(s); !ok {
		return decimal{}, 0, false
	}
	f, _ = strconv.ParseFloat(s, 64)
	return d, f, true
}

// compareOrder reports whether an ordering comparison holds, given
// c, the comparison of the attribute's value with the filter's (-1, 0, +1).
func compareOrder(o op, c int) bool {
	switch o {
	case opEq:
		return c == 0
	case opGt:
		return c > 0
	case opGe:
		return c >= 0
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	}
	return false
}

func compareStrings(o op, got, want string) bool {
	switch o {
	case opEq:
		return got == want
	case opCo:
		return strings.Contains(got, want)
	case opSw:
		return strings.HasPrefix(got, want)
	case opEw:
		return strings.HasSuffix(got, want)
	case opGt:
		return got > want
	case opGe:
		return got >= want
	case opLt:
		return got < want
	case opLe:
		return got <= want
	}
	return false
}

// lookupAttr returns the value of the attribute (not sub-attribute) at p in obj.
func lookupAttr(obj map[string]any, p AttrPath) any {
	if p.URN != "" {
		_, obj = containerFor(obj, p.URN)
		if obj == nil {
			return nil
		}
	}
	if v, ok := obj[p.Name]; ok {
		return v
	}
	if p.attr == nil { // unknown extension: names as sent, any case
		if k := findKeyFold(obj, p.Name); k != "" {
			return obj[k]
		}
	}
	return nil
}

// eachValue calls f with every value at p: the attribute's value, each value
// of a multi-valued one, or the sub-attribute of each element. A complex value
// named without a sub-attribute is its "value" sub-attribute when it has one
// (emails, members), and itself when it has none (name, addresses, meta).
// f returns true to stop.
func eachValue(obj map[string]any, p AttrPath, f func(any) bool) {
	v := lookupAttr(obj, p)
	if v == nil {
		return
	}
	sub := p.Sub
	if sub == "" && p.attr != nil && p.attr.Type == Complex && p.attr.Sub("value") != nil {
		sub = "value"
	}
	visit := func(el any) bool {
		if sub == "" {
			return f(el)
		}
		m, ok := el.(map[string]any)
		if !ok {
			return false
		}
		sv, ok := m[sub]
		if !ok && p.attr == nil {
			if k := findKeyFold(m, sub); k != "" {
				sv, ok = m[k], true
			}
		}
		return ok && f(sv)
	}
	if list, ok := v.([]any); ok {
		for _, el := range list {
			if visit(el) {
				return
			}
		}
		return
	}
	visit(v)
}

// empty reports whether a value counts as unassigned for "pr": nothing, an
// empty string, or a complex value none of whose sub-attributes is
// assigned (RFC 7644 §3.4.2.2: a complex attribute is present when it
// "contains a non-empty node"). A value of an extension this service does
// not know is stored only when it is not empty (normalizeValue).
func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		for _, sv := range v {
			if !empty(sv) {
				return false
			}
		}
		return true
	}
	return false
}
