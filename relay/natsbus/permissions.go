// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Subscriber is a service that reads events from the embedded NATS with a
// credential of its own.
type Subscriber struct {
	// Name is the subscriber's name, and the name of the one JetStream
	// consumer on SCIMRELAY it may create and use.
	Name string
	// PublicKey is its user nkey ("U..."); the seed stays with the subscriber.
	PublicKey string
	// Subjects, when set, is the subject pattern it is limited to, e.g.
	// "scimrelay.acme.user.>"; empty reads every event.
	Subjects string
}

// subscriberName is the syntax of subscriber names: a JetStream consumer
// name and a subject token. Names starting with "scimrelay" are the relay's
// own (its sinks' consumers), so a subscriber cannot take one.
var subscriberName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Check reports what is wrong with a subscriber, naming the field.
func (s Subscriber) Check() error {
	switch {
	case !subscriberName.MatchString(s.Name):
		return fmt.Errorf("subscriber name %q must match [a-z0-9][a-z0-9_-]* (at most 64 characters)", s.Name)
	case strings.HasPrefix(s.Name, "scimrelay"):
		return fmt.Errorf("subscriber name %q: names starting with scimrelay are the relay's own", s.Name)
	case !nkeys.IsValidPublicUserKey(s.PublicKey):
		return fmt.Errorf("subscriber %s: %q is not a NATS user public key (U...)", s.Name, s.PublicKey)
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

// SubscriberPermissions returns what a subscriber may do: create, read,
// acknowledge and delete its own consumer on the SCIMRELAY stream (named
// as the subscriber), and nothing else. It may not publish events, touch
// any stream or key-value bucket, or use another consumer (the sinks', or
// another subscriber's: pulling from one would take its deliveries, and an
// acknowledgement would suppress them). With Subjects set, the consumer's
// filter must lie within them, and every way of reading the stream without
// a filter (stream info with subject counts, direct and stored message
// gets, unfiltered or multi-filter consumers) is closed.
//
// These permissions are the second layer: the first is the subscriber's
// own account, which reaches the relay's account only through the
// services of subscriberAPI (see accounts.go).
//
// Permissions match whole subject tokens, so a consumer name cannot be
// limited to a prefix: that is why a subscriber has exactly one.
func SubscriberPermissions(s Subscriber) *server.Permissions {
	api := subscriberAPI(s)
	pub := make([]string, len(api))
	for i, g := range api {
		pub[i] = g.subject
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: pub,
			// Not allowed anyway; denied by name so that no future allow widens it.
			Deny: []string{events.StreamSubjects, "$KV.>", jsAPI + "STREAM.CREATE.>", jsAPI + "STREAM.UPDATE.>",
				jsAPI + "STREAM.DELETE.>", jsAPI + "STREAM.PURGE.>", jsAPI + "STREAM.MSG.DELETE.>"},
		},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(s.Name) + ".>"}},
	}
}

const jsAPI = "$JS.API."

// grant is one JetStream subject a subscriber may send requests to.
// checked is set where the relay must look at the body and its sender
// first (consumer creation: see checkCreate). imported, when set, is the
// wider subject the subscriber's account exports for it (see accounts.go).
type grant struct {
	subject  string
	imported string
	checked  bool
}

// importSubject is the subject the subscriber's account imports for g.
func (g grant) importSubject() string {
	if g.imported != "" {
		return g.imported
	}
	return g.subject
}

// subscriberAPI lists the JetStream subjects a subscriber may publish
// to: its permissions allow exactly these, and its account exports these
// to the relay's (accounts.go) or, for a consumer creation with a filter,
// imports every filter (the create check holds the filter to the
// subscriber's Subjects).
func subscriberAPI(s Subscriber) []grant {
	stream, c := events.StreamName, s.Name
	api := []grant{
		{subject: jsAPI + "INFO"},                                  // clients check that JetStream is there; the relay answers
		{subject: jsAPI + "CONSUMER.INFO." + stream + "." + c},     // its consumer's state
		{subject: jsAPI + "CONSUMER.DELETE." + stream + "." + c},   // start over
		{subject: jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + c}, // pull messages
		{subject: "$JS.ACK." + stream + "." + c + ".>"},            // ack, nak, term, in progress
	}
	if s.Subjects == "" {
		api = append(api,
			grant{subject: jsAPI + "CONSUMER.CREATE." + stream + "." + c, checked: true},         // no filter, or several
			grant{subject: jsAPI + "CONSUMER.CREATE." + stream + "." + c + ".>", checked: true},  // one filter
			grant{subject: jsAPI + "CONSUMER.DURABLE.CREATE." + stream + "." + c, checked: true}, // older clients
			grant{subject: jsAPI + "STREAM.INFO." + stream},                                      // it may see every subject anyway
			grant{subject: jsAPI + "STREAM.MSG.GET." + stream},                                   // read one stored event
			grant{subject: jsAPI + "DIRECT.GET." + stream},
			grant{subject: jsAPI + "DIRECT.GET." + stream + ".>"},
		)
	} else {
		// The server refuses a create whose filter differs from the one in
		// the subject, and one carrying several filters: the filter is
		// what the permission matched. The account imports every filter,
		// so that its imports do not change with Subjects.
		api = append(api, grant{
			subject:  jsAPI + "CONSUMER.CREATE." + stream + "." + c + "." + s.Subjects,
			imported: jsAPI + "CONSUMER.CREATE." + stream + "." + c + ".>",
			checked:  true,
		})
	}
	return api
}
