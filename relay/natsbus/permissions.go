// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Subscriber is a service that reads events from the embedded NATS with a
// credential of its own.
type Subscriber struct {
	// Name is the subscriber's name, and the name of the one JetStream
	// consumer on SCIMRELAY it reads from, which the relay keeps.
	Name string
	// PublicKey is its user nkey ("U..."); the seed stays with the subscriber.
	PublicKey string
	// Subjects, when set, is the subject pattern it is limited to, e.g.
	// "scimrelay.acme.user.>"; empty reads every event. It is its
	// consumer's filter.
	Subjects string
	// From is where its consumer starts when the relay makes it: FromAll
	// (or empty), every event the stream still holds; FromNew, the events
	// stored from then on. A consumer already there keeps its position.
	From string
}

// Check reports what is wrong with a subscriber, naming the field.
func (s Subscriber) Check() error {
	switch {
	// A subscriber's name is a JetStream consumer name and a subject token
	// (events.ValidName). Names starting with "scimrelay" are the relay's
	// own (its sinks' consumers), so a subscriber cannot take one.
	case !events.ValidName(s.Name):
		return fmt.Errorf("subscriber name %q must match %s", s.Name, events.NameRule)
	case strings.HasPrefix(s.Name, "scimrelay"):
		return fmt.Errorf("subscriber name %q: names starting with scimrelay are the relay's own", s.Name)
	case !nkeys.IsValidPublicUserKey(s.PublicKey):
		return fmt.Errorf("subscriber %s: %q is not a NATS user public key (U...)", s.Name, s.PublicKey)
	case s.From != "" && s.From != FromAll && s.From != FromNew:
		return fmt.Errorf("subscriber %s: from must be %s or %s, not %q", s.Name, FromAll, FromNew, s.From)
	}
	if s.Subjects != "" {
		if err := events.CheckSubjectPattern(s.Subjects); err != nil {
			return fmt.Errorf("subscriber %s: %w", s.Name, err)
		}
	}
	return nil
}

// InboxPrefix is the subscriber's private inbox prefix: replies to its
// requests and the messages it pulls arrive under it, and no other
// subscriber may subscribe there. Clients set it (nats.go
// nats.CustomInboxPrefix, nats.js inboxPrefix, the nats CLI --inbox-prefix).
func InboxPrefix(name string) string { return "_INBOX_" + name }

// SubscriberPermissions returns what a subscriber may do: pull from,
// acknowledge on and read the info of its consumer on the SCIMRELAY stream
// (named as the subscriber, kept by the relay), and ask to create it,
// which the relay answers without creating anything (answerCreate). It may
// not delete a consumer, publish events, touch any stream or key-value
// bucket, or use another consumer (the sinks', or another subscriber's:
// pulling from one would take its deliveries, and an acknowledgement would
// suppress them). With Subjects set, every way of reading the stream
// without its consumer (stream info with subject counts, direct and stored
// message gets) is closed.
//
// These permissions are the second layer: the first is the subscriber's
// own account, which reaches the relay's account only through the
// subjects of subscriberAPI (see accounts.go).
//
// Permissions match whole subject tokens, so a consumer name cannot be
// limited to a prefix: that is why a subscriber has exactly one.
func SubscriberPermissions(s Subscriber) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: subscriberAPI(s),
			// Not allowed anyway; denied by name so that no future allow widens it.
			Deny: []string{events.StreamSubjects, "$KV.>", jsAPI + "STREAM.CREATE.>", jsAPI + "STREAM.UPDATE.>",
				jsAPI + "STREAM.DELETE.>", jsAPI + "STREAM.PURGE.>", jsAPI + "STREAM.MSG.DELETE.>", jsAPI + "CONSUMER.DELETE.>"},
		},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(s.Name) + ".>"}},
	}
}

const jsAPI = "$JS.API."

// subscriberAPI lists the JetStream subjects a subscriber may publish
// to: its permissions allow exactly these, and its account exports these
// to the relay's (accounts.go).
func subscriberAPI(s Subscriber) []string {
	stream, c := events.StreamName, s.Name
	api := []string{
		jsAPI + "INFO", // clients check that JetStream is there; the relay answers
		jsAPI + "CONSUMER.INFO." + stream + "." + c,     // its consumer's state
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + c, // pull messages
		"$JS.ACK." + stream + "." + c + ".>",            // ack, nak, term, in progress
		// Creations of its consumer, by code written for earlier releases,
		// with no, one or several filters, and from older clients: the
		// relay answers them, and creates nothing (answerCreate).
		jsAPI + "CONSUMER.CREATE." + stream + "." + c,
		jsAPI + "CONSUMER.CREATE." + stream + "." + c + ".>",
		jsAPI + "CONSUMER.DURABLE.CREATE." + stream + "." + c,
	}
	if s.Subjects == "" {
		api = append(api,
			jsAPI+"STREAM.INFO."+stream,    // it may see every subject anyway
			jsAPI+"STREAM.MSG.GET."+stream, // read one stored event
			jsAPI+"DIRECT.GET."+stream,
			jsAPI+"DIRECT.GET."+stream+".>",
		)
	}
	return api
}
