// SPDX-License-Identifier: Apache-2.0

// Package events is the contract between the relay, which publishes, and
// the sinks and any other subscriber, which consume: the event catalog, the
// payload, building CloudEvents, the CloudEvents NATS binding and the
// JetStream stream that carries them. It knows nothing of SCIM internals or
// storage, so that a delivery worker runs without the relay's bbolt file.
package events

import (
	"fmt"
	"strconv"
	"strings"
)

// Action is what happened to a resource, e.g. "user.created".
type Action string

// The catalog: every kind of change the relay reports. Adding an action is
// a change of the public contract; removing or renaming one breaks
// subscribers.
const (
	UserCreated        Action = "user.created"
	UserUpdated        Action = "user.updated"
	UserDeactivated    Action = "user.deactivated" // active true → false
	UserReactivated    Action = "user.reactivated" // active false → true
	UserDeleted        Action = "user.deleted"
	GroupCreated       Action = "group.created"
	GroupUpdated       Action = "group.updated"
	GroupDeleted       Action = "group.deleted"
	GroupMemberAdded   Action = "group.member_added"
	GroupMemberRemoved Action = "group.member_removed"
)

// Catalog lists every action, users first.
var Catalog = []Action{
	UserCreated, UserUpdated, UserDeactivated, UserReactivated, UserDeleted,
	GroupCreated, GroupUpdated, GroupDeleted, GroupMemberAdded, GroupMemberRemoved,
}

// TypePrefix prefixes an action to make the CloudEvents type.
const TypePrefix = "io.scimrelay."

// Valid reports whether a is in the catalog.
func (a Action) Valid() bool {
	for _, c := range Catalog {
		if c == a {
			return true
		}
	}
	return false
}

// Type returns the CloudEvents type, e.g. "io.scimrelay.user.created".
func (a Action) Type() string { return TypePrefix + string(a) }

// Kind returns "user" or "group".
func (a Action) Kind() string {
	kind, _, _ := strings.Cut(string(a), ".")
	return kind
}

// ResourceType returns the SCIM resource type the action is about: "User" or "Group".
func (a Action) ResourceType() string {
	if a.Kind() == "group" {
		return "Group"
	}
	return "User"
}

// ParseType returns the action of a CloudEvents type such as "io.scimrelay.user.created".
func ParseType(ceType string) (Action, error) {
	a := Action(strings.TrimPrefix(ceType, TypePrefix))
	if !strings.HasPrefix(ceType, TypePrefix) || !a.Valid() {
		return "", fmt.Errorf("event type %q is not in the scimrelay catalog", ceType)
	}
	return a, nil
}

// Names the relay puts in subjects and JetStream names (tenants, sinks,
// subscribers) share one syntax, owned here with the subjects: a safe NATS
// token, JetStream name and URL segment. Tenant names are part of every
// subject and of the SCIM base path /scim/v2/<tenant>; a sink's or a
// subscriber's name part of its consumers and subjects. The relay refuses
// to configure one with another name, and readers refuse events that carry
// such a tenant. Names are checked on every request, so by a loop rather
// than the regular expression ^[a-z0-9][a-z0-9_-]{0,63}$ they amount to.

// NameRule describes valid names, for messages.
const NameRule = "[a-z0-9][a-z0-9_-]* (at most 64 characters)"

// ValidName reports whether name is a valid name of a tenant, sink or
// subscriber (NameRule).
func ValidName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && (i == 0 || c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// Pattern selects actions: "*", "user.*" or "group.member_added"; the full
// type form "io.scimrelay.user.*" is accepted too.
type Pattern struct {
	kind   string // "" = any
	action Action // "" = any of kind
}

// ParsePattern parses an event pattern, refusing anything outside the catalog.
func ParsePattern(s string) (Pattern, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), TypePrefix)
	if t == "*" {
		return Pattern{}, nil
	}
	kind, rest, ok := strings.Cut(t, ".")
	if !ok || (kind != "user" && kind != "group") {
		return Pattern{}, fmt.Errorf("event pattern %q: want \"*\", \"user.*\", \"group.*\" or an action such as \"user.created\"", s)
	}
	if rest == "*" {
		return Pattern{kind: kind}, nil
	}
	a := Action(t)
	if !a.Valid() {
		return Pattern{}, fmt.Errorf("event pattern %q: no such event; the catalog is %s", s, catalogList())
	}
	return Pattern{kind: kind, action: a}, nil
}

func catalogList() string {
	names := make([]string, len(Catalog))
	for i, a := range Catalog {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

// Match reports whether the pattern selects a.
func (p Pattern) Match(a Action) bool {
	switch {
	case p.action != "":
		return p.action == a
	case p.kind != "":
		return p.kind == a.Kind()
	}
	return true
}

// String returns the pattern as written in relay.yaml.
func (p Pattern) String() string {
	switch {
	case p.action != "":
		return string(p.action)
	case p.kind != "":
		return p.kind + ".*"
	}
	return "*"
}

// Patterns selects the actions any of its patterns selects; empty selects all.
type Patterns []Pattern

// Match reports whether any pattern selects a; an empty list selects all.
func (ps Patterns) Match(a Action) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Match(a) {
			return true
		}
	}
	return false
}

// subjectTokens is how many tokens every stored event subject has:
// scimrelay.<tenant>.<kind>.<action>.<resource id>.<partition>.
const subjectTokens = 6

// CheckSubjectPattern checks a subject pattern a subscriber may be limited
// to: a NATS subject filter under scimrelay. that can match an event
// subject, so that a typo ("scimrelay.acme.users.>") is refused rather than
// matching nothing. A pattern of fewer tokens ending in "*" is refused too:
// it matches nothing, and a client could write ">" in its place (NATS
// permissions let a permitted "*" stand for a literal ">" token), which a
// pattern of the full length cannot widen, since every event subject has
// the same number of tokens.
func CheckSubjectPattern(p string) error {
	tokens := strings.Split(p, ".")
	bad := func(why string) error {
		return fmt.Errorf("subject pattern %q %s; event subjects are scimrelay.<tenant>.<kind>.<action>.<resource id>.<partition>, e.g. scimrelay.acme.user.> or scimrelay.*.group.member_added.>", p, why)
	}
	if tokens[0] != "scimrelay" {
		return bad("must start with scimrelay.")
	}
	for i, t := range tokens {
		switch {
		case t == "":
			return bad("has an empty token")
		case t == ">" && i != len(tokens)-1:
			return bad("has > before its last token")
		case strings.ContainsAny(t, " \t\r\n") || (len(t) > 1 && strings.ContainsAny(t, "*>")):
			return bad(fmt.Sprintf("has an invalid token %q", t))
		}
	}
	last := tokens[len(tokens)-1]
	switch {
	case len(tokens) < 2:
		return bad("names no events")
	case last == ">" && len(tokens) > subjectTokens:
		return bad("is longer than any event subject")
	case last != ">" && len(tokens) != subjectTokens:
		return bad(fmt.Sprintf("has %d tokens; without > it needs %d", len(tokens), subjectTokens))
	}
	if len(tokens) > 1 && tokens[1] != "*" && tokens[1] != ">" && !ValidName(tokens[1]) {
		return bad(fmt.Sprintf("names %q, which is not a valid tenant name", tokens[1]))
	}
	kind := ""
	if len(tokens) > 2 && tokens[2] != "*" && tokens[2] != ">" {
		if kind = tokens[2]; kind != "user" && kind != "group" {
			return bad("has a kind other than user or group")
		}
	}
	if len(tokens) > 3 && tokens[3] != "*" && tokens[3] != ">" {
		found := false
		for _, a := range Catalog {
			_, action, _ := strings.Cut(string(a), ".")
			found = found || action == tokens[3] && (kind == "" || a.Kind() == kind)
		}
		if !found {
			return bad(fmt.Sprintf("names %q, which is no event's action", tokens[3]))
		}
	}
	if len(tokens) > 4 && tokens[4] != "*" && tokens[4] != ">" && !ValidResourceID(tokens[4]) {
		return bad(fmt.Sprintf("names %q, which is not a resource id", tokens[4]))
	}
	if len(tokens) > 5 && tokens[5] != "*" && tokens[5] != ">" {
		if n, err := strconv.Atoi(tokens[5]); err != nil || n < 0 || n >= MaxPartitions || strconv.Itoa(n) != tokens[5] {
			return bad(fmt.Sprintf("names %q, which is not a partition", tokens[5]))
		}
	}
	return nil
}
