// SPDX-License-Identifier: Apache-2.0

package scim

import (
	"net/http"
	"slices"
	"strings"
)

// Precondition is the version a write requires (RFC 7644 §3.14): an
// If-Match header, read once from all its field lines, or a Bulk
// operation's version. The zero value requires nothing.
type Precondition struct {
	present bool     // a condition was given, even one naming no entity tag
	any     bool     // "*"
	tags    []string // the entity tags, as sent
}

// RequireVersion is the precondition that the stored version is version,
// as an If-Match naming it.
func RequireVersion(version string) Precondition {
	return Precondition{present: true, tags: []string{version}}
}

// Check returns ErrPreconditionFailed unless cur's version meets p: no
// condition, "*", or one of p's entity tags. W/ prefixes are compared
// loosely: SCIM versions are weak validators, and clients differ in
// whether they echo the prefix. A condition naming no entity tag matches
// nothing (RFC 9110 §13.1.1).
func (p Precondition) Check(cur *Resource) error {
	version := cur.Meta().Version
	if !p.present || p.any {
		return nil
	}
	for _, t := range p.tags {
		if strings.TrimPrefix(t, "W/") == strings.TrimPrefix(version, "W/") {
			return nil
		}
	}
	if len(p.tags) == 0 {
		return Errorf(ErrPreconditionFailed, "If-Match names no entity tag, so nothing matches it; the current version is %s", version)
	}
	return Errorf(ErrPreconditionFailed, "If-Match %s does not match the current version %s", Truncate(strings.Join(p.tags, ", "), 64), version)
}

// writePrecondition returns a write's If-Match. A write with
// If-None-Match is refused, not performed: the relay evaluates If-Match
// only, and a condition it would ignore could be one the client needs to
// hold. A create holds If-None-Match: * by its nature (what it makes did
// not exist: the usual "create only"), and refuses If-Match and any other
// If-None-Match: what it creates has no version to compare.
func writePrecondition(r *http.Request) (Precondition, error) {
	ifMatch, err := preconditionOf(r, "If-Match")
	if err != nil {
		return Precondition{}, err
	}
	ifNone, err := preconditionOf(r, "If-None-Match")
	if err != nil {
		return Precondition{}, err
	}
	switch {
	case r.Method == http.MethodPost && ifNone.any && !ifMatch.present:
		return Precondition{}, nil
	case r.Method == http.MethodPost && (ifMatch.present || ifNone.present):
		return Precondition{}, Errorf(ErrNotImplemented, "If-Match and If-None-Match other than * are not supported on a create; nothing was created")
	case ifNone.present:
		return Precondition{}, Errorf(ErrNotImplemented, "If-None-Match is not supported on PUT, PATCH and DELETE; nothing was changed (send If-Match with the version you read)")
	}
	return ifMatch, nil
}

// preconditionOf reads the header name of r as RFC 9110 does: all its
// field lines as one comma-separated list (§5.3), so that an empty first
// line does not hide the next. A header with no member is still present.
func preconditionOf(r *http.Request, name string) (Precondition, error) {
	lines := r.Header.Values(name)
	field := strings.Join(lines, ",")
	p, ok := parsePrecondition(field, len(lines) > 0)
	if !ok {
		return Precondition{}, Errorf(ErrInvalidValue, `%s must be * or a list of entity tags such as W/"3", got %q`, name, Truncate(field, 64))
	}
	return p, nil
}

// parsePrecondition reads list, either "*" alone or entity tags; ok is
// false when it is neither. Its caller refuses such a list with 400
// invalidValue: a condition that cannot be read is not one that holds.
// present is whether the condition was given (a header sent, a Bulk
// version not empty): one given that names no entity tag (",") is
// present, and matches nothing.
func parsePrecondition(list string, present bool) (p Precondition, ok bool) {
	members, ok := entityTags(list)
	if !ok || len(members) > 1 && slices.Contains(members, "*") {
		return Precondition{}, false
	}
	p = Precondition{present: present, any: len(members) == 1 && members[0] == "*"}
	if !p.any {
		p.tags = members
	}
	return p, true
}

// entityTags splits an If-Match or If-None-Match list into its members,
// "*" or entity tags (RFC 9110 §8.8.3: an optional W/, then characters
// other than '"', space and controls between double quotes; a comma
// inside them is the tag's). Empty members are dropped (§5.6.1); ok is
// false when a member is neither.
func entityTags(list string) (members []string, ok bool) {
	for s := list; ; {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return members, true
		}
		n := 1 // "*"
		if s[0] != '*' {
			n = entityTagLen(s)
		}
		if n == 0 {
			return nil, false
		}
		members = append(members, s[:n])
		s = strings.TrimLeft(s[n:], " \t")
		if s != "" && s[0] != ',' {
			return nil, false
		}
	}
}

// entityTagLen returns the length of the entity tag that s starts with, or 0.
func entityTagLen(s string) int {
	start := 0
	if strings.HasPrefix(s, "W/") {
		start = 2
	}
	if len(s) <= start || s[start] != '"' {
		return 0
	}
	for i := start + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return i + 1
		case c <= ' ' || c == 0x7f:
			return 0
		}
	}
	return 0
}
