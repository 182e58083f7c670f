// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
		to := g.subject
		if g.checked {
			to = createProxyPrefix + g.subject
		}
		if err := relay.AddServiceExportWithResponse(to, respType, []*server.Account{acc}); err != nil {
			return nil, fmt.Errorf("exporting %s to subscriber %s: %w", to, s.Name, err)
		}
		if err := acc.AddServiceImport(relay, g.subject, to); err != nil {
			return nil, fmt.Errorf("importing %s for subscriber %s: %w", g.subject, s.Name, err)
		}
	}
	e.accounts[name] = acc
	return acc, nil
}

// createProxyPrefix is where a subscriber's consumer creations arrive in
// the relay's account: createProxy looks at them before JetStream does.
const createProxyPrefix = "$SCIMRELAY.CREATE."

// createProxy passes a subscriber's consumer creation on to JetStream
// unless it asks for a push consumer. A push consumer is delivered in the
// relay's account to a subject its creator names, whatever the creator's
// permissions: named as another consumer's pull subject, every delivery
// pulled from that consumer. Subject permissions cannot see the deliver
// subject (it is in the body), and a subscriber cannot receive push
// deliveries anyway (they stay in the relay's account), so pull consumers
// are all it gets.
func createProxy(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(createProxyPrefix+">", func(m *nats.Msg) {
		var req struct {
			Config struct {
				DeliverSubject string `json:"deliver_subject"`
			} `json:"config"`
		}
		if err := json.Unmarshal(m.Data, &req); err == nil && req.Config.DeliverSubject != "" {
			_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.consumer_create_response","error":{"code":400,"err_code":10999,"description":"scimrelay subscribers may create pull consumers only (no deliver_subject)"}}`))
			return
		}
		// Anything else, malformed bodies included, JetStream judges. The
		// server put the subscriber's client info in a header; the request
		// goes on as the relay's, which is what it now is.
		h := m.Header
		h.Del(server.ClientInfoHdr)
		res, err := nc.RequestMsg(&nats.Msg{Subject: strings.TrimPrefix(m.Subject, createProxyPrefix), Header: h, Data: m.Data}, 10*time.Second)
		if err != nil {
			return // the client times out, as it would with JetStream away
		}
		_ = m.RespondMsg(&nats.Msg{Header: res.Header, Data: res.Data})
	})
}
