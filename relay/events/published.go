// SPDX-License-Identifier: Apache-2.0

package events

import (
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotPublished means a message in the event stream is not an event the
// relay's publisher put there.
var ErrNotPublished = errors.New("not published by the relay")

// serverHeaders are the headers nats-server adds to a direct get's answer.
var serverHeaders = []string{jetstream.StreamHeader, jetstream.SequenceHeader, jetstream.SubjectHeader, jetstream.TimeStampHeaer, jetstream.LastSequenceHeader}

// Published reads a message the event stream stored at sequence seq on
// subject, with headers h and data, as the event the relay's publisher put
// there. A message that is not one, nor a copy of one on the subject it was
// published on, is ErrNotPublished; one that is but does not read as an
// event is FromMsg's error.
//
// A client that may not publish on scimrelay.> can still have JetStream
// publish there: NATS checks a request's subject against the client's
// permissions, not its reply subject, and the stream stores the answer
// (a sink worker's user asks the JetStream API, and a direct get of a
// message it wrote to its bucket, or a pull from a consumer of a stream
// it writes to, answers with that message). On an external NATS, where
// such clients are, t holds the keys the relay signs with, and an event
// from the sequence signing began at must carry the signature of one of
// them (Trust). The relay's publisher also sends every event with the
// header Nats-Expected-Stream: SCIMRELAY, which JetStream keeps with it
// and every other stream refuses; with NATS embedded (t nil), where no
// client but the relay may publish into its account, that header is the
// check. A copy of one of the stream's own events, which has both, must
// then be on the subject its event names; on that subject it is a repeat
// of an event, which the sinks deliver at least once anyway.
//
// The header alone is a filter, not a boundary: a header block whose lines
// end in a bare LF, which nats-server does not split there and nats.go
// does, hides it from the stream it is written to and shows it here
// (README, Who can reach what; docs/decisions.md, Delivery).
func (t *Trust) Published(seq uint64, subject string, h nats.Header, data []byte) (event.Event, error) {
	if v := h.Values(jetstream.ExpectedStreamHeader); len(v) != 1 || v[0] != StreamName {
		return event.Event{}, fmt.Errorf("%w: the message on %s has %s %q, not %s alone", ErrNotPublished, subject, jetstream.ExpectedStreamHeader, v, StreamName)
	}
	for _, name := range serverHeaders {
		if len(h.Values(name)) > 1 {
			// One is the server's, of a direct get's answer: the message
			// was stored with its own, which no event of the relay's is.
			return event.Event{}, fmt.Errorf("%w: the message on %s was stored with a header %s of its own", ErrNotPublished, subject, name)
		}
	}
	if t != nil {
		if err := t.verify(seq, time.Time{}, h, data); err != nil {
			return event.Event{}, fmt.Errorf("the message on %s: %w", subject, err)
		}
	}
	e, err := FromMsg(subject, h, data)
	if err != nil {
		return e, err
	}
	a, err := ActionOf(e)
	if err != nil {
		return e, err
	}
	s, err := ParseStoredSubject(subject) // with the partition the stream appended
	if err != nil {
		if subject == layoutBeforePartitions(Tenant(e), a) {
			// Stored by a release before partitions, on the subject it
			// published on: the stream takes no such subject since, so
			// only an event from before the upgrade is on it, and
			// scimrelay sinks replay sends those (the consumer of that
			// layout, removed at the upgrade, had not).
			return e, nil
		}
		return e, fmt.Errorf("%w: %w", ErrNotPublished, err)
	}
	id, err := ResourceID(e)
	if err != nil {
		return e, err
	}
	if tenant := Tenant(e); s.Tenant != tenant || s.Action != a || s.ResourceID != id {
		return e, fmt.Errorf("%w: event %s is stored on %s, and was published on %s", ErrNotPublished, e.ID(), subject, Subject(tenant, a, id))
	}
	return e, nil
}
