// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/events"
)

// Each subscriber connects into an account of its own. The relay, its
// streams, consumers and buckets stay in the server's global account, as
// they always were (so an existing store is read as before). The relay's
// account imports from the subscriber's, under requestPrefix, the
// JetStream subjects of subscriberAPI, and passes what arrives there on to
// JetStream (requests.go); it exports to the subscriber's account its
// inbox, where the answers go. Consumer creations go through a service
// import instead, for the relay to check who sent them (passCreate).
//
// Why not one account with permissions: the server checks a client's
// publish subject against its permissions but not its reply subject, and
// JetStream sends API responses and pulled messages to that reply through
// the account's own internal client. In the relay's account that wrote
// into any stream or bucket listening on the reply subject, and made pulled
// messages act as pull requests on other consumers. Now the relay passes a
// request on only with a reply in the subscriber's inbox, which nothing in
// the relay's account listens to; through a service import the reply is
// rewritten to a response subject of the relay's account, answered in the
// subscriber's account, where no stream listens and no JetStream answers:
// the account has none.

// accountName is the account of a subscriber. nats-server 2.15 offers no
// way to remove an import or forget an account, so an account's imports
// depend only on what never changes for it: the subscriber's name, and
// whether it is limited to subjects (which takes away the stream's reads).
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
	for _, g := range subscriberAPI(s) {
		from := g.importSubject()
		if !g.checked {
			if err := acc.AddStreamExport(from, []*server.Account{relay}); err != nil {
				return nil, fmt.Errorf("exporting %s of subscriber %s: %w", from, s.Name, err)
			}
			if err := relay.AddStreamImport(acc, from, requestPrefix(name)); err != nil {
				return nil, fmt.Errorf("importing %s of subscriber %s: %w", from, s.Name, err)
			}
			continue
		}
		to := createProxyPrefix + name + "." + from
		if err := relay.AddServiceExportWithResponse(to, server.Singleton, []*server.Account{acc}); err != nil {
			return nil, fmt.Errorf("exporting %s to subscriber %s: %w", to, s.Name, err)
		}
		// After each AddServiceExportWithResponse, which sets the default
		// again. A creation is answered within changeWait (its pacing)
		// and createTimeout (JetStream).
		if err := relay.SetServiceExportResponseThreshold(to, changeWait+createTimeout+2*time.Second); err != nil {
			return nil, fmt.Errorf("limiting the responses to %s for subscriber %s: %w", to, s.Name, err)
		}
		if err := acc.AddServiceImport(relay, from, to); err != nil {
			return nil, fmt.Errorf("importing %s for subscriber %s: %w", from, s.Name, err)
		}
	}
	inbox := InboxPrefix(s.Name) + ".>"
	if err := relay.AddStreamExport(inbox, []*server.Account{acc}); err != nil {
		return nil, fmt.Errorf("exporting the inbox of subscriber %s: %w", s.Name, err)
	}
	if err := acc.AddStreamImport(relay, inbox, ""); err != nil {
		return nil, fmt.Errorf("importing the inbox of subscriber %s: %w", s.Name, err)
	}
	e.accounts[name] = acc
	return acc, nil
}

const (
	// createProxyPrefix is where a subscriber's consumer creations arrive
	// in the relay's account, followed by its account's name (which the
	// import sets, and the sender cannot): passCreate looks at them before
	// JetStream does.
	createProxyPrefix = "$SCIMRELAY.CREATE."
	// maxCreateBody is the largest creation request passed on; a
	// consumer's configuration is a few hundred bytes.
	maxCreateBody = 64 << 10
	// createTimeout bounds how long the subscriber waits for the answer
	// to a creation (its route lasts 2 s more); createSettle, how long a
	// change of subscribers waits for JetStream to have done one.
	createTimeout = 3 * time.Second
	createSettle  = time.Minute
)

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

// passCreate passes a consumer creation that the subscriber s sent (its
// account's import names it) on to JetStream, as subject, if s is the
// subscriber as now configured and checkCreate accepts it. The request
// goes on as the relay's, re-encoded from what was checked, without its
// headers.
//
// Who sent it is never read from a header: the client-info header the
// server adds can be preceded by one the sender wrote, which nats.go
// reads first (nats.go ends a header block at a bare newline, nats-server
// replaces only a header following a CRLF). The passer that calls this
// is started for one configuration of the subscriber and closed when it
// changes, and the connections of a changed key are closed before the
// new passer starts (SetSubscribers).
//
// e.gate is held for reading until JetStream has answered: SetSubscribers
// waits for creations under way, so that once it returns none made under
// the old configuration can still land (a removed subscriber's consumer
// is deleted after it, and must stay deleted).
func (e *Embedded) passCreate(s Subscriber, subject string, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	refuse := func(err error) { _ = m.Respond(createRefusal(err)) }
	if len(m.Data) > maxCreateBody {
		refuse(fmt.Errorf("a consumer creation may be at most %d bytes", maxCreateBody))
		return
	}
	e.gate.RLock()
	defer e.gate.RUnlock()
	if e.current[s.Name] != s {
		refuse(fmt.Errorf("subscriber %s is not configured with this key and subjects", s.Name))
		return
	}
	body, err := checkCreate(s, m.Data)
	if err != nil {
		refuse(err)
		return
	}
	// The subscriber is answered within createTimeout, its route's time;
	// the gate is held until JetStream has done the creation (at most
	// createSettle). A creation JetStream had queued and did after the
	// relay stopped waiting used to land after a change of subscribers
	// had returned: a narrowed or removed subscriber's wide consumer came
	// back.
	done := make(chan *nats.Msg, 1)
	go func() {
		res, err := e.proxy.Request(subject, body, createSettle)
		if err != nil {
			e.log.Warn("embedded NATS: JetStream did not answer a subscriber's consumer creation; a change of subscribers no longer waits for it",
				"subscriber", s.Name, "waited", createSettle, "err", err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		if res == nil {
			refuse(errors.New("passing the consumer creation to JetStream failed"))
			return
		}
		_ = m.RespondMsg(&nats.Msg{Header: res.Header, Data: res.Data})
	case <-time.After(createTimeout):
		refuse(fmt.Errorf("JetStream did not answer the consumer creation within %v; it may still be made", createTimeout))
		<-done
	}
}

// dropWiderConsumer deletes the consumer of the subscriber's name when it
// reads more than the subscriber may (made before the subscriber was
// narrowed, or by an earlier subscriber of that name), or has any setting
// a creation could not have now (checkConsumer: a push consumer, one made
// by an earlier release that checked less). A consumer is found only where the stream exists.
func (e *Embedded) dropWiderConsumer(s Subscriber) error {
	res, err := e.proxy.Request(jsAPI+"CONSUMER.INFO."+events.StreamName+"."+s.Name, nil, createTimeout)
	if err != nil {
		return fmt.Errorf("looking up the consumer of subscriber %s: %w", s.Name, err)
	}
	var info server.JSApiConsumerInfoResponse
	if err := json.Unmarshal(res.Data, &info); err != nil {
		return fmt.Errorf("looking up the consumer of subscriber %s: %w", s.Name, err)
	}
	switch {
	case info.Error != nil && info.Error.Code == 404:
		return nil
	case info.Error != nil:
		return fmt.Errorf("looking up the consumer of subscriber %s: %s", s.Name, info.Error.Description)
	case info.ConsumerInfo == nil || info.Config == nil:
		return fmt.Errorf("looking up the consumer of subscriber %s: an empty answer", s.Name)
	}
	if existing := *info.Config; checkConsumer(&existing, s) == nil {
		return nil
	}
	res, err = e.proxy.Request(jsAPI+"CONSUMER.DELETE."+events.StreamName+"."+s.Name, nil, createTimeout)
	if err != nil {
		return fmt.Errorf("deleting the consumer of subscriber %s, which reads beyond %q: %w", s.Name, s.Subjects, err)
	}
	var del server.JSApiConsumerDeleteResponse
	if err := json.Unmarshal(res.Data, &del); err != nil {
		return fmt.Errorf("deleting the consumer of subscriber %s: %w", s.Name, err)
	}
	if del.Error != nil && del.Error.Code != 404 {
		return fmt.Errorf("deleting the consumer of subscriber %s, which reads beyond %q: %s", s.Name, s.Subjects, del.Error.Description)
	}
	return nil
}
