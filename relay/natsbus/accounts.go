// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// Each subscriber connects into an account of its own. The relay, its
// streams, consumers and buckets stay in the server's global account, as
// they always were (so an existing store is read as before), and that
// account exports to each subscriber, as services, only the JetStream
// subjects of subscriberAPI, which the subscriber's account imports.
//
// Why not one account with permissions: the server checks a client's
// publish subject against its permissions but not its reply subject, and
// JetStream sends API responses and pulled messages to that reply through
// the account's own internal client. In the relay's account that wrote
// into any stream or bucket listening on the reply subject, and made pulled
// messages act as pull requests on other consumers. Through an import the
// reply is rewritten to a response subject of the relay's account, and the
// answer is delivered in the subscriber's account on the reply it named,
// where no stream listens and no JetStream answers: the account has none.

// accountName is the account of a subscriber with this name, key and
// subjects. A changed subscriber gets a new account, so that an account's
// imports never need to change; the old one is left with no user that can
// reach it.
func accountName(s Subscriber) string {
	sum := sha256.Sum256([]byte(s.PublicKey + "\n" + s.Subjects))
	return "SUBSCRIBER_" + s.Name + "_" + hex.EncodeToString(sum[:6])
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
	for _, g := range subscriberAPI(s) {
		respType := server.Singleton
		if g.streamed {
			respType = server.Streamed
		}
		if err := relay.AddServiceExportWithResponse(g.subject, respType, []*server.Account{acc}); err != nil {
			return nil, fmt.Errorf("exporting %s to subscriber %s: %w", g.subject, s.Name, err)
		}
		if err := acc.AddServiceImport(relay, g.subject, g.subject); err != nil {
			return nil, fmt.Errorf("importing %s for subscriber %s: %w", g.subject, s.Name, err)
		}
	}
	e.accounts[name] = acc
	return acc, nil
}
