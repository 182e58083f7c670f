// SPDX-License-Identifier: Apache-2.0

package scim

import "strings"

// Elements gives a filter the elements of a multi-valued complex attribute
// that a backend keeps outside the resource, such as a Group's members or a
// User's groups, so that matching never holds the whole attribute: a group
// of 100,000 members is asked about one member at a time.
type Elements struct {
	// Attr is the attribute's name as the schema spells it ("members").
	Attr string
	// Lookup returns the element whose value sub-attribute is exactly
	// value, nil when there is none. Elements are objects keyed by
	// sub-attribute name ("value", "display", "type").
	Lookup func(value string) (map[string]any, error)
	// Each calls yield with every element, in any order, until yield
	// returns false.
	Each func(yield func(map[string]any) bool) error
}

// MatchElements reports whether r matches the filter, reading the attribute
// el.Attr through el instead of from r. A term that compares the elements'
// value for equality (members eq "x", members.value ne "x", members[value
// eq "x" and type eq "User"]) costs one Lookup per value it names; any
// other term on the attribute (members pr, members.display co "x") walks
// Each until its answer is known. Terms on other attributes read r.
func (f *Filter) MatchElements(r *Resource, el Elements) (bool, error) {
	m := elementMatcher{el: el, attrs: r.Attrs}
	ok := m.eval(f.root)
	if m.err != nil {
		return false, m.err
	}
	return ok, nil
}

type elementMatcher struct {
	el    Elements
	attrs map[string]any
	err   error
}

func (m *elementMatcher) eval(e expr) bool {
	if m.err != nil {
		return false
	}
	var path AttrPath
	switch e := e.(type) {
	case *logicalExpr:
		left := m.eval(e.left)
		if left != e.and { // true or …, false and …
			return left
		}
		return m.eval(e.right)
	case *notExpr:
		return !m.eval(e.inner)
	case *compareExpr:
		path = e.path
	case *presentExpr:
		path = e.path
	case *valuePathExpr:
		path = e.path
	}
	if path.URN != "" || !strings.EqualFold(path.Name, m.el.Attr) {
		return e.match(m.attrs)
	}
	return m.term(e, path.Name)
}

// term evaluates one term on the external attribute. A term on a
// multi-valued attribute is either "some element passes" (eq, co, pr, ne
// null, value paths …) or "every element passes" (ne a value, eq null):
// "ne null" is "present", which no element of an empty group is. An element
// passes when the term, evaluated on a resource holding that element
// alone, is true. Only the elements the term can be about are read.
func (m *elementMatcher) term(e expr, name string) bool {
	every := false
	if c, ok := e.(*compareExpr); ok {
		every = (c.op == opNe && c.value != nil) || (c.op == opEq && c.value == nil)
	}
	passes := func(el map[string]any) bool {
		return e.match(map[string]any{name: []any{el}})
	}
	// With "every", the answer is false as soon as one element fails;
	// with "some", true as soon as one passes.
	decisive := !every
	if values, ok := keyedValues(e); ok {
		for _, v := range values {
			el, err := m.el.Lookup(v)
			if err != nil {
				m.err = err
				return false
			}
			if el != nil && passes(el) == decisive {
				return decisive
			}
		}
		return !decisive
	}
	found := false
	err := m.el.Each(func(el map[string]any) bool {
		found = passes(el) == decisive
		return !found
	})
	if err != nil {
		m.err = err
		return false
	}
	if found {
		return decisive
	}
	return !decisive
}

// keyedValues returns the element values a term on a multi-valued complex
// attribute can depend on, when it names them: the term's answer depends
// only on the elements whose value sub-attribute is one of them. ok is
// false when the term may depend on any element.
func keyedValues(e expr) ([]string, bool) {
	switch e := e.(type) {
	case *compareExpr:
		// members eq "x" and members.value eq "x" (or ne) compare the value.
		onValue := e.path.Sub == "value" || (e.path.Sub == "" && e.path.attr != nil && e.path.attr.Type == Complex)
		if s, isString := e.value.(string); isString && onValue && e.caseExact && (e.op == opEq || e.op == opNe) {
			return []string{s}, true
		}
	case *valuePathExpr:
		return elementValues(e.filter)
	}
	return nil, false
}

// ElementValues returns the values of the elements f, a filter on the
// sub-attributes of a multi-valued complex attribute (the filter of
// members[...]), can match, when it pins them down: value eq "x", joined
// with anything by "and", or such filters joined by "or". ok is false when
// f may match an element whatever its value.
func (f *Filter) ElementValues() (values []string, ok bool) { return elementValues(f.root) }

// elementValues returns the values of the elements a filter inside a value
// path can match, when the filter pins them down: value eq "x", joined with
// anything by "and", or such filters joined by "or".
func elementValues(e expr) ([]string, bool) {
	switch e := e.(type) {
	case *logicalExpr:
		left, lok := elementValues(e.left)
		right, rok := elementValues(e.right)
		switch {
		case e.and && lok && (!rok || len(left) <= len(right)):
			return left, true
		case e.and && rok:
			return right, true
		case !e.and && lok && rok:
			return append(left, right...), true
		}
	case *compareExpr:
		if s, isString := e.value.(string); isString && e.op == opEq && e.caseExact && e.path.Name == "value" && e.path.Sub == "" {
			return []string{s}, true
		}
	}
	return nil, false
}
