// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

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
		to := createProxyPrefix + s.Name + "." + from
		if err := relay.AddServiceExportWithResponse(to, server.Singleton, []*server.Account{acc}); err != nil {
			return nil, fmt.Errorf("exporting %s to subscriber %s: %w", to, s.Name, err)
		}
		// After each AddServiceExportWithResponse, which sets the default
		// again. passCreate answers within createTimeout.
		if err := relay.SetServiceExportResponseThreshold(to, createTimeout+2*time.Second); err != nil {
			return nil, fmt.Errorf("limiting the responses to %s for subscriber %s: %w", to, s.Name, err)
		}
		if err := acc.AddServiceImport(relay, from, to); err != nil {
			return nil, fmt.Errorf("importing %s for subscriber %s: %w", from, s.Name, err)
		}
		// The create check learns from the request's client info which
		// account and key sent it.
		if err := acc.SetServiceImportSharing(relay, to, true); err != nil {
			return nil, fmt.Errorf("sharing client info on %s for subscriber %s: %w", from, s.Name, err)
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
	// in the relay's account, followed by its name: passCreate looks at
	// them before JetStream does.
	createProxyPrefix = "$SCIMRELAY.CREATE."
	// maxCreateBody is the largest creation request passed on; a
	// consumer's configuration is a few hundred bytes.
	maxCreateBody = 64 << 10
	// createTimeout bounds how long JetStream may take to answer a
	// creation, and so how long a change of subscribers waits for one.
	createTimeout = 3 * time.Second
	// maxPullExpires is the longest a subscriber's pull request may wait:
	// the max_expires of every consumer it creates. Clients that set no
	// expiry would otherwise hold the request in the consumer for ever.
	maxPullExpires = 110 * time.Second
)

// watchCreates subscribes, for the subscriber of this name, to its
// consumer creations. Each subscriber has its own subscription, handled
// apart from the others': one that floods creations delays, and past the
// pending limits loses, only its own. lim is how many it may make a
// second, with its other requests: one beyond is refused.
func (e *Embedded) watchCreates(name string, lim *rate.Limiter) (*nats.Subscription, error) {
	prefix := createProxyPrefix + name + "."
	sub, err := e.proxy.Subscribe(prefix+">", func(m *nats.Msg) {
		if !lim.Allow() {
			if m.Reply != "" {
				_ = m.Respond(createRefusal(fmt.Errorf("too many requests: a subscriber may send %d a second", SubscriberRequestsPerSecond)))
			}
			return
		}
		e.passCreate(name, strings.TrimPrefix(m.Subject, prefix), m)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing for the consumer creations of subscriber %s: %w", name, err)
	}
	if err := sub.SetPendingLimits(256, 32<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribing for the consumer creations of subscriber %s: %w", name, err)
	}
	return sub, nil
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

// passCreate passes a consumer creation of the subscriber of this name on
// to JetStream, as subject, if it comes from that subscriber as now
// configured (its account and key) and checkCreate accepts it. The
// request goes on as the relay's, re-encoded from what was checked.
//
// e.gate is held for reading until JetStream has answered: SetSubscribers
// waits for creations under way, so that once it returns none made under
// the old configuration can still land (a removed subscriber's consumer
// is deleted after it, and must stay deleted).
func (e *Embedded) passCreate(name, subject string, m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	refuse := func(err error) { _ = m.Respond(createRefusal(err)) }
	if len(m.Data) > maxCreateBody {
		refuse(fmt.Errorf("a consumer creation may be at most %d bytes", maxCreateBody))
		return
	}
	var ci server.ClientInfo
	if err := json.Unmarshal([]byte(m.Header.Get(server.ClientInfoHdr)), &ci); err != nil {
		refuse(errors.New("the creation does not say who sent it"))
		return
	}
	e.gate.RLock()
	defer e.gate.RUnlock()
	sub, ok := e.current[name]
	if !ok || ci.Account != accountName(sub) || ci.User != sub.PublicKey {
		refuse(fmt.Errorf("subscriber %s is not configured with this key and subjects", name))
		return
	}
	body, err := checkCreate(sub, m.Data)
	if err != nil {
		refuse(err)
		return
	}
	res, err := e.proxy.Request(subject, body, createTimeout)
	if err != nil {
		refuse(fmt.Errorf("passing the consumer creation to JetStream: %w", err))
		return
	}
	_ = m.RespondMsg(&nats.Msg{Header: res.Header, Data: res.Data})
}

// checkCreate reads a consumer creation as JetStream would and returns it
// re-encoded, or says why a subscriber may not make it.
//
// It is strict where JetStream is lenient: JetStream decodes every JSON
// value of a body in turn (a second one overrides the first) and, failing
// that, decodes again without refusing unknown fields; what it read and
// what a lenient check read could differ. Here a body is one JSON value
// with known fields only, and only what was checked goes on.
//
// A push consumer delivers in the relay's account to a subject its creator
// names, whatever the creator's permissions: named as another consumer's
// pull or reset subject, every delivery acts on that consumer. A
// subscriber cannot receive push deliveries anyway (they stay in the
// relay's account), so pull consumers are all it gets.
func checkCreate(s Subscriber, data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req server.CreateConsumerRequest
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("reading the consumer creation: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("reading the consumer creation: more than one JSON value")
	}
	c := &req.Config
	for _, push := range []struct {
		set  bool
		what string
	}{
		{c.DeliverSubject != "", "deliver_subject"},
		{c.DeliverGroup != "", "deliver_group"},
		{c.FlowControl, "flow_control"},
		{c.Heartbeat != 0, "idle_heartbeat"},
		{c.RateLimit != 0, "rate_limit_bps"},
		{c.Direct, "direct"},
		{c.Sourcing, "sourcing"},
		{c.SampleFrequency != "", "sample_freq"},
	} {
		if push.set {
			return nil, fmt.Errorf("scimrelay subscribers may create pull consumers only (no %s)", push.what)
		}
	}
	if c.Durable != "" && c.Durable != s.Name || c.Name != "" && c.Name != s.Name {
		return nil, fmt.Errorf("subscriber %s may create only the consumer %s", s.Name, s.Name)
	}
	if req.Stream != events.StreamName {
		return nil, fmt.Errorf("subscriber %s may create consumers only on %s", s.Name, events.StreamName)
	}
	if err := readsWithin(c, s); err != nil {
		return nil, err
	}
	switch {
	case c.MaxRequestExpires == 0:
		c.MaxRequestExpires = maxPullExpires
	case c.MaxRequestExpires > maxPullExpires:
		return nil, fmt.Errorf("max_expires may be at most %v (pulls waiting longer lose their messages)", maxPullExpires)
	}
	return json.Marshal(req)
}

// readsWithin says what a consumer reads that the subscriber may not.
func readsWithin(c *server.ConsumerConfig, s Subscriber) error {
	if s.Subjects == "" {
		return nil
	}
	filters := c.FilterSubjects
	if c.FilterSubject != "" {
		filters = append([]string{c.FilterSubject}, filters...)
	}
	if len(filters) == 0 {
		return fmt.Errorf("subscriber %s must filter on %s", s.Name, s.Subjects)
	}
	for _, f := range filters {
		if !subjectWithin(f, s.Subjects) {
			return fmt.Errorf("subscriber %s may read %s only, not %s", s.Name, s.Subjects, f)
		}
	}
	return nil
}

// subjectWithin reports whether every event subject the filter matches
// matches the pattern too. As the subscriber's permissions do, it lets a
// final ">" of the filter stand for a final "*" of the pattern: a pattern
// without ">" has as many tokens as every event subject
// (events.CheckSubjectPattern), so that reads nothing more.
func subjectWithin(filter, pattern string) bool {
	f, p := strings.Split(filter, "."), strings.Split(pattern, ".")
	for i, pt := range p {
		if pt == ">" {
			return i < len(f)
		}
		if pt == "*" && i == len(p)-1 && len(f) == len(p) {
			return true
		}
		if i >= len(f) || f[i] == ">" || pt != "*" && f[i] != pt {
			return false
		}
	}
	return len(f) == len(p)
}

// createRefusal is JetStream's answer to a refused consumer creation.
func createRefusal(err error) []byte {
	b, _ := json.Marshal(server.ApiResponse{
		Type:  server.JSApiConsumerCreateResponseType,
		Error: &server.ApiError{Code: 400, ErrCode: 10999, Description: err.Error()},
	})
	return b
}

// dropWiderConsumer deletes the consumer of the subscriber's name when it
// reads more than the subscriber may: made before the subscriber was
// narrowed, or by an earlier subscriber of that name. A push consumer
// goes too. A consumer is found only where the stream exists.
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
	if info.Config.DeliverSubject == "" && readsWithin(info.Config, s) == nil {
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
