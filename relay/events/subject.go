// SPDX-License-Identifier: Apache-2.0

package events

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
)

// The subject catalog: every rule about NATS subjects lives here, once.
//
// The relay publishes an event on
//
//	scimrelay.<tenant>.<kind>.<action>.<resource id>
//
// and the stream stores it with the resource's partition appended,
//
//	scimrelay.<tenant>.<kind>.<action>.<resource id>.<partition>
//
// by a subject transform, {{partition(P,1,2,4)}}: JetStream hashes tenant,
// kind and resource id, so that every event of one resource lands in the
// same partition whatever its action. Subscribers select with wildcards as
// before (scimrelay.acme.user.>, scimrelay.acme.*.deactivated.>); the sinks
// give each partition to one worker at a time, and read one resource's
// events back from the stream by subject (ResourceSubjects).
const (
	StreamName = "SCIMRELAY"
	// StreamSubjects matches every event subject, for permissions.
	StreamSubjects = "scimrelay.>"
	subjectPrefix  = "scimrelay."
	// publishSubjects is what the stream takes: exactly five tokens, so that
	// a message on any other subject is refused rather than stored
	// unpartitioned.
	publishSubjects = "scimrelay.*.*.*.*"
	// DefaultPartitions is the stream's partition count unless configured.
	DefaultPartitions = 16
	// MaxPartitions bounds the partition count: each partition is a
	// JetStream consumer per sink.
	MaxPartitions = 256
)

// ValidResourceID reports whether id can be a resource id in a subject and
// a key-value key: [A-Za-z0-9_-]{1,128} (the relay's ids are UUIDs).
func ValidResourceID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// Subject returns the subject an event is published on, e.g.
// "scimrelay.acme.user.created.0198f3c2-…".
func Subject(tenant string, a Action, resourceID string) string {
	return subjectPrefix + tenant + "." + string(a) + "." + resourceID
}

// TenantSubjects returns the subject filter for every event of a tenant.
func TenantSubjects(tenant string) string { return subjectPrefix + tenant + ".>" }

// layoutBeforePartitions is the subject a release before partitions
// published and stored a's events of tenant on (the resource's id was not
// in it); the stream takes only five tokens since.
func layoutBeforePartitions(tenant string, a Action) string {
	return subjectPrefix + tenant + "." + string(a)
}

// PatternTenant returns the tenant a subject pattern is limited to, its
// second token ("acme" of scimrelay.acme.user.>), or "" when the pattern
// takes every tenant: a wildcard there (scimrelay.*.user.>, scimrelay.>),
// or no pattern. A pattern CheckSubjectPattern refuses names none.
func PatternTenant(pattern string) string {
	rest, ok := strings.CutPrefix(pattern, subjectPrefix)
	tenant, _, _ := strings.Cut(rest, ".")
	if !ok || tenant == "*" || tenant == ">" {
		return ""
	}
	return tenant
}

// PartitionSubjects returns the subject filter of one partition's events:
// of one tenant, or of every tenant when tenant is "".
func PartitionSubjects(tenant string, partition int) string {
	if tenant == "" {
		tenant = "*"
	}
	return subjectPrefix + tenant + ".*.*.*." + strconv.Itoa(partition)
}

// ResourceSubjects returns the subject filter of every stored event of one
// resource (kind "user" or "group"), whatever its action.
func ResourceSubjects(tenant, kind, resourceID string) string {
	return subjectPrefix + tenant + "." + kind + ".*." + resourceID + ".*"
}

// StoredSubject is a stored event's subject, taken apart.
type StoredSubject struct {
	Tenant     string
	Kind       string // user or group
	Action     Action
	ResourceID string
	Partition  int
}

// ErrNotEventSubject means a subject is not a stored scimrelay event's.
var ErrNotEventSubject = errors.New("not a scimrelay event subject")

// ParseStoredSubject takes apart the subject of an event as the stream
// stores it (with its partition).
func ParseStoredSubject(subject string) (StoredSubject, error) {
	rest, ok := strings.CutPrefix(subject, subjectPrefix)
	tokens := strings.Split(rest, ".")
	if !ok || len(tokens) != 5 {
		return StoredSubject{}, fmt.Errorf("%w: %q", ErrNotEventSubject, subject)
	}
	a := Action(tokens[1] + "." + tokens[2])
	p, err := strconv.Atoi(tokens[4])
	if !ValidName(tokens[0]) || !a.Valid() || !ValidResourceID(tokens[3]) || err != nil || p < 0 || p >= MaxPartitions {
		return StoredSubject{}, fmt.Errorf("%w: %q", ErrNotEventSubject, subject)
	}
	return StoredSubject{Tenant: tokens[0], Kind: tokens[1], Action: a, ResourceID: tokens[3], Partition: p}, nil
}

// Key names the resource in a key-value key or a map: tenant.kind.id.
func (s StoredSubject) Key() string { return s.Tenant + "." + s.Kind + "." + s.ResourceID }

// ResourceSubjects returns the filter of every stored event of the subject's resource.
func (s StoredSubject) ResourceSubjects() string {
	return ResourceSubjects(s.Tenant, s.Kind, s.ResourceID)
}

// partitionTransform is the stream's subject transform for p partitions.
func partitionTransform(p int) string {
	return subjectPrefix + "{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}.{{partition(" + strconv.Itoa(p) + ",1,2,4)}}"
}

var transformPattern = regexp.MustCompile(`^scimrelay\.\{\{wildcard\(1\)\}\}\.\{\{wildcard\(2\)\}\}\.\{\{wildcard\(3\)\}\}\.\{\{wildcard\(4\)\}\}\.\{\{partition\((\d+),1,2,4\)\}\}$`)

// PartitionsOf returns the partition count of a stream's configuration,
// from its subject transform, so that workers read it from the stream
// rather than trusting their own configuration to agree.
func PartitionsOf(cfg jetstream.StreamConfig) (int, error) {
	if cfg.SubjectTransform == nil {
		return 0, fmt.Errorf("stream %s does not partition its subjects; the relay that owns it sets that up", StreamName)
	}
	m := transformPattern.FindStringSubmatch(cfg.SubjectTransform.Destination)
	if m == nil {
		return 0, fmt.Errorf("stream %s does not partition its subjects (transform %q); the relay that owns it sets that up", StreamName, cfg.SubjectTransform.Destination)
	}
	return strconv.Atoi(m[1])
}

// ResourceID returns the id of the resource an event is about, from its
// subject attribute (Users/<id> or Groups/<id>).
func ResourceID(e event.Event) (string, error) {
	s := e.Subject()
	_, id, ok := strings.Cut(s, "/")
	if !ok || (!strings.HasPrefix(s, "Users/") && !strings.HasPrefix(s, "Groups/")) || !ValidResourceID(id) {
		return "", fmt.Errorf("event %s: subject %q is not Users/<id> or Groups/<id>", e.ID(), s)
	}
	return id, nil
}
