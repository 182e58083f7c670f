// SPDX-License-Identifier: Apache-2.0

package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

// The CloudEvents NATS protocol binding (v1.0.1): in binary content mode each
// context attribute travels as a "ce-" header, datacontenttype as
// "content-type", and the data is the message payload. The sdk's NATS module
// is not reachable from the module proxy, so this is our own small writer and
// reader over nats.Msg.
const (
	headerPrefix      = "ce-"
	headerContentType = "content-type"
	structuredType    = "application/cloudevents+json"
)

// MessageAttribute returns context attribute name (type, tenant,
// traceparent, …) of an event as a NATS message, without decoding it; ""
// when it has none.
func MessageAttribute(h nats.Header, name string) string {
	return h.Get(headerPrefix + name)
}

// ToMsg encodes an event as a NATS message in binary content mode on its
// subject, with Nats-Msg-Id set to the event id so that JetStream drops a
// re-publish within the duplicate window.
func ToMsg(e event.Event) (*nats.Msg, error) {
	a, err := ActionOf(e)
	if err != nil {
		return nil, err
	}
	tenant := Tenant(e)
	if !ValidName(tenant) {
		return nil, fmt.Errorf("event %s has no valid tenant extension", e.ID())
	}
	id, err := ResourceID(e)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(headerPrefix+"specversion", e.SpecVersion())
	h.Set(headerPrefix+"id", e.ID())
	h.Set(headerPrefix+"source", e.Source())
	h.Set(headerPrefix+"type", e.Type())
	if s := e.Subject(); s != "" {
		h.Set(headerPrefix+"subject", s)
	}
	if t := e.Time(); !t.IsZero() {
		h.Set(headerPrefix+"time", t.UTC().Format(time.RFC3339Nano))
	}
	if s := e.DataSchema(); s != "" {
		h.Set(headerPrefix+"dataschema", s)
	}
	for name, v := range e.Extensions() {
		h.Set(headerPrefix+name, fmt.Sprint(v))
	}
	if ct := e.DataContentType(); ct != "" {
		h.Set(headerContentType, ct)
	}
	h.Set(nats.MsgIdHdr, e.ID())
	return &nats.Msg{Subject: Subject(tenant, a, id), Header: h, Data: e.Data()}, nil
}

// FromMsg decodes a NATS message in binary or structured content mode. It
// takes the message's parts so that callers can pass a jetstream.Msg's.
func FromMsg(subject string, h nats.Header, data []byte) (event.Event, error) {
	if ct := headerValue(h, headerContentType); strings.HasPrefix(strings.ToLower(ct), structuredType) {
		var e event.Event
		if err := json.Unmarshal(data, &e); err != nil {
			return event.Event{}, fmt.Errorf("decoding structured event on %s: %w", subject, err)
		}
		if err := e.Validate(); err != nil {
			return event.Event{}, fmt.Errorf("event on %s: %w", subject, err)
		}
		return e, nil
	}
	version := headerValue(h, headerPrefix+"specversion")
	switch version {
	case "":
		return event.Event{}, fmt.Errorf("message on %s is not a CloudEvent: no ce-specversion header", subject)
	case event.CloudEventsVersionV1, event.CloudEventsVersionV03:
	default:
		return event.Event{}, fmt.Errorf("message on %s: CloudEvents spec version %q is not supported", subject, version)
	}
	e := event.New(version)
	for name, values := range h {
		if len(values) == 0 {
			continue
		}
		lower := strings.ToLower(name)
		if !strings.HasPrefix(lower, headerPrefix) {
			continue
		}
		v := values[0]
		switch attr := lower[len(headerPrefix):]; attr {
		case "specversion":
		case "id":
			e.SetID(v)
		case "source":
			e.SetSource(v)
		case "type":
			e.SetType(v)
		case "subject":
			e.SetSubject(v)
		case "dataschema":
			e.SetDataSchema(v)
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return event.Event{}, fmt.Errorf("message on %s: ce-time %q is not RFC 3339", subject, v)
			}
			e.SetTime(t)
		default:
			if err := e.Context.SetExtension(attr, v); err != nil {
				return event.Event{}, fmt.Errorf("message on %s: extension %s: %w", subject, attr, err)
			}
		}
	}
	if len(data) > 0 {
		e.SetDataContentType(headerValue(h, headerContentType))
		e.DataEncoded = append([]byte(nil), data...)
	}
	if err := e.Validate(); err != nil {
		return event.Event{}, fmt.Errorf("event on %s: %w", subject, err)
	}
	return e, nil
}

// headerValue returns the first value of a header, matching its name
// without regard to case: NATS headers keep the case they were sent with.
func headerValue(h nats.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
}

// MarshalStructured encodes an event in structured content mode: one line of
// JSON, what `scimrelay events tail` prints.
func MarshalStructured(e event.Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID(), err)
	}
	return b, nil
}
