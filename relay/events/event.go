// SPDX-License-Identifier: Apache-2.0

package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Data is the payload of every event.
type Data struct {
	Tenant       string `json:"tenant"`
	ResourceType string `json:"resourceType"` // User or Group
	ID           string `json:"id"`
	ExternalID   string `json:"externalId,omitempty"`
	// Resource is the full SCIM resource after the change (before it, for
	// deletes). Groups are sent without members: membership changes come as
	// member events of their own.
	Resource json.RawMessage `json:"resource"`
	// Changes lists what an update changed; only on updates, deactivations
	// and reactivations.
	Changes []Change `json:"changes,omitempty"`
	// Member is the member added or removed; only on member events.
	Member *Member `json:"member,omitempty"`
}

// Change is one changed attribute. Old is absent when the attribute was
// unassigned, New when it was removed.
type Change struct {
	Path string          `json:"path"`
	Old  json.RawMessage `json:"old,omitempty"`
	New  json.RawMessage `json:"new,omitempty"`
}

// Member is a group member in a member event: its id, the name the group
// shows for it and its type, and who it is in a receiver's own terms, read
// from the member's record when the event was written (absent when the
// member has no such attribute).
type Member struct {
	Value   string `json:"value"`
	Display string `json:"display,omitempty"`
	Type    string `json:"type,omitempty"`
	// UserName and Email (the primary, else the work email) are a User's.
	UserName string `json:"userName,omitempty"`
	Email    string `json:"email,omitempty"`
	// DisplayName is a Group's.
	DisplayName string `json:"displayName,omitempty"`
	// ExternalID is the member's externalId, User or Group.
	ExternalID string `json:"externalId,omitempty"`
}

// Meta holds the event attributes that are not in the payload.
type Meta struct {
	Tenant     string
	Action     Action
	ResourceID string
	// Sequence is the tenant's strictly increasing event counter.
	Sequence uint64
	// SubjectSeq counts the events of one resource: 1, 2, 3 … with no gaps,
	// member events counting on their group.
	SubjectSeq uint64
	// Time is when the relay committed the change.
	Time time.Time
	// BaseURL is the relay's public URL (relay.yaml public_url), e.g.
	// https://relay.example.com; when set, source is absolute.
	BaseURL string
	// Extensions are further CloudEvents extension attributes (a trace's
	// traceparent, say: TraceExtensions), each a ce- header of the
	// message.
	Extensions map[string]string
}

// Extension attribute names.
const (
	ExtTenant     = "tenant"
	ExtSequence   = "sequence"
	ExtSubjectSeq = "subjectseq"
)

// seqWidth is the width of zero-padded sequence numbers: enough for any
// uint64, so that lexical order is numeric order.
const seqWidth = 20

// New builds the CloudEvent for a change, as the relay publishes it and a
// subscriber reads it: the message Encode writes, with m's sequence numbers
// set, decoded by FromMsg. So it has Encode's attributes (id a UUIDv7, also
// the Nats-Msg-Id and the webhook-id; source /scim/v2/<tenant>, or
// <BaseURL>/scim/v2/<tenant> when the public URL is known, as CloudEvents
// recommends for uniqueness across deployments; type io.scimrelay.<action>;
// subject Users/<id> or Groups/<id>) and refuses what Encode refuses.
func New(m Meta, d Data) (event.Event, error) {
	if m.Sequence == 0 || m.SubjectSeq == 0 {
		return event.Event{}, errors.New("building event: sequence and subjectseq start at 1")
	}
	dr, err := Encode(m, d)
	if err != nil {
		return event.Event{}, err
	}
	dr.SetSequences(m.Sequence, m.SubjectSeq)
	stored, err := ParseMessage(dr.Row())
	if err != nil {
		return event.Event{}, fmt.Errorf("building event: %w", err)
	}
	msg, err := stored.NATS()
	if err != nil {
		return event.Event{}, fmt.Errorf("building event: %w", err)
	}
	return FromMsg(msg.Subject, msg.Header, msg.Data)
}

func (m Meta) check(d Data) error {
	var errs []error
	if !ValidName(m.Tenant) {
		errs = append(errs, fmt.Errorf("tenant %q is not a valid tenant name", m.Tenant))
	}
	if !m.Action.Valid() {
		errs = append(errs, fmt.Errorf("action %q is not in the catalog", m.Action))
	}
	if m.ResourceID == "" {
		errs = append(errs, errors.New("resource id is empty"))
	} else if !ValidResourceID(m.ResourceID) {
		errs = append(errs, fmt.Errorf("resource id %q is not [A-Za-z0-9_-]{1,128}: it travels in NATS subjects", m.ResourceID))
	}
	if m.Time.IsZero() {
		errs = append(errs, errors.New("time is not set"))
	}
	if m.Action.Valid() && d.ResourceType != m.Action.ResourceType() {
		errs = append(errs, fmt.Errorf("data.resourceType %q does not match %s", d.ResourceType, m.Action))
	}
	if d.Tenant != m.Tenant || d.ID != m.ResourceID {
		errs = append(errs, errors.New("data.tenant and data.id must match the event's tenant and resource"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("building event: %w", errors.Join(errs...))
	}
	return nil
}

func subjectOf(a Action, id string) string {
	if a.Kind() == "group" {
		return "Groups/" + id
	}
	return "Users/" + id
}

// Sequence returns the event's per-tenant sequence number.
func Sequence(e event.Event) (uint64, error) { return seqExtension(e, ExtSequence) }

// SubjectSeq returns the event's per-subject sequence number.
func SubjectSeq(e event.Event) (uint64, error) { return seqExtension(e, ExtSubjectSeq) }

func seqExtension(e event.Event, name string) (uint64, error) {
	v, ok := e.Extensions()[name]
	if !ok {
		return 0, fmt.Errorf("event %s has no %s extension", e.ID(), name)
	}
	s, ok := v.(string)
	if !ok {
		s = fmt.Sprint(v)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("event %s: %s %q is not a number", e.ID(), name, s)
	}
	return n, nil
}

// Tenant returns the event's tenant extension, "" when absent.
func Tenant(e event.Event) string {
	if e.Context == nil {
		return ""
	}
	v, _ := e.Context.GetExtension(ExtTenant) // Extensions() would copy them all
	s, _ := v.(string)
	return s
}

// ActionOf returns the event's action.
func ActionOf(e event.Event) (Action, error) { return ParseType(e.Type()) }

// DataOf decodes the event's payload.
func DataOf(e event.Event) (Data, error) {
	var d Data
	if err := json.Unmarshal(e.Data(), &d); err != nil {
		return Data{}, fmt.Errorf("decoding data of event %s: %w", e.ID(), err)
	}
	return d, nil
}
