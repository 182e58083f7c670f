// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// Each subscriber connects into an account of its own. The relay, its
// streams, consumers and buckets stay in the server's global account, as
// they always were (so an existing store is read as before). The relay
// takes a subscriber's requests in the subscriber's account itself, on a
// connection of its own there (its passer, requests.go), subscribed to
// the JetStream subjects of subscriberAPI only, and passes them on to
// JetStream in its account (requests.go), or answers them itself
// (consumer creations: answerCreate); it exports to the subscriber's
// account its inbox, where the answers go.
//
// Why the relay's account imports nothing from the subscribers': every
// subscription in an account is matched by nats-server against each of
// the account's stream imports (addShadowSubscriptions), the internal
// ones of every JetStream consumer included. With seven to eleven imports
// per subscriber in the relay's account, adding the 2,001st subscriber
// took 59 ms and a restart with 2,000 took 33 s, growing with the square
// of their number (BenchmarkManySubscribers); the subscriber's account
// holds one import, its inbox.
//
// Why not one account with permissions: the server checks a client's
// publish subject against its permissions but not its reply subject, and
// JetStream sends API responses and pulled messages to that reply through
// the account's own internal client. In the relay's account that wrote
// into any stream or bucket listening on the reply subject, and made pulled
// messages act as pull requests on other consumers. Now the relay passes a
// request on only with a reply in the subscriber's inbox, which nothing in
// the relay's account listens to. No request comes through a service
// import: the server keeps a response route in the relay's account for
// each one with a reply until it is answered, and a flood of them held
// hundreds of MiB (requests.go).

// accountName is the account of a subscriber. nats-server 2.15 offers no
// way to remove an import or forget an account, so an account depends
// only on what never changes for it: the subscriber's name, and whether
// it is limited to subjects (which takes away the stream's reads).
// A subscriber removed and added again, with a new key or other subjects,
// gets the same account back; at most two per name ever configured.
func accountName(s Subscriber) string {
	if s.Subjects == "" {
		return "SUBSCRIBER_" + s.Name + "_ALL" // names are lower case: no clash
	}
	return "SUBSCRIBER_" + s.Name
}

// subscriberAccount returns the subscriber's account, creating it and its
// imports the first time. e.mu is held.
func (e *Embedded) subscriberAccount(s Subscriber) (*server.Account, error) {
	name := accountName(s)
	if acc := e.accounts[name]; acc != nil {
		return acc, nil
	}
	acc, err := e.srv.RegisterAccount(name)
	if err != nil {
		return nil, fmt.Errorf("creating the NATS account of subscriber %s: %w", s.Name, err)
	}
	relay := e.srv.GlobalAccount()
	inbox := InboxPrefix(s.Name) + ".>"
	if err := relay.AddStreamExport(inbox, []*server.Account{acc}); err != nil {
		return nil, fmt.Errorf("exporting the inbox of subscriber %s: %w", s.Name, err)
	}
	if err := acc.AddStreamImport(relay, inbox, ""); err != nil {
		return nil, fmt.Errorf("importing the inbox of subscriber %s: %w", s.Name, err)
	}
	e.accounts[name] = acc
	e.countInternalSubs(name, acc)
	return acc, nil
}

// infoAnswer is the relay's answer to a subscriber's account info request
// ($JS.API.INFO), in JetStream's place. Clients ask it to learn that
// JetStream is there (nats.js jetstreamManager, the nats CLI); JetStream's
// own answer gives the relay's account's totals, whose storage grows with
// every tenant's events, which a subscriber limited to one tenant must not
// see. The answer says JetStream is there, at this API level, and nothing
// else.
var infoAnswer = func() []byte {
	b, err := json.Marshal(server.JSApiAccountInfoResponse{
		ApiResponse:           server.ApiResponse{Type: server.JSApiAccountInfoResponseType},
		JetStreamAccountStats: &server.JetStreamAccountStats{API: server.JetStreamAPIStats{Level: server.JSApiLevel}},
	})
	if err != nil {
		panic(err)
	}
	return b
}()
