// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/time/rate"
)

// A subscriber's JetStream requests reach the relay in the subscriber's
// own account, where the relay's passer of that subscriber takes them on
// a connection of its own, subscribed there, and passes on those to the
// subjects of subscriberAPI only; it passes them on to JetStream in the
// relay's account, at a bounded rate, with the subscriber's reply, on the
// passer's own connection there (passOn), or answers them (consumer
// creations: answerCreate). The answers, and the messages a pull is
// given, come back through the relay account's stream export of the
// subscriber's inbox, which the subscriber's account imports. Nothing in
// between is kept per request.
//
// Why not service imports: each request with a reply through a service
// import leaves a route in the relay's account until it is answered, which
// JetStream never does for some (an acknowledgement with a reply), and a
// pull's route must outlast the pull's wait. A flood of requests, all
// within the subscriber's permissions, held hundreds of MiB of routes
// (consumer creations, the last to come through one, left 623,000 after
// 15 s of one connection's flood: those their queue dropped unanswered);
// and JetStream's API queue, which the relay's own requests share, took
// every one of them. Here a request costs nothing once it is passed on; a
// subscriber gets SubscriberRequestsPerSecond of them passed a second
// (and SubscriberAcksPerSecond acknowledgements), beyond which they wait
// in its own queue and, past that queue, are dropped.
//
// Why not stream imports of the subscriber's subjects into the relay's
// account, passed on from there: accounts.go.

const (
	// SubscriberRequestsPerSecond is how many JetStream requests of one
	// subscriber the relay passes on or answers a second, pulls and
	// consumer creations included, with a second's worth at once (a
	// client consuming thousands of events a second pulls some tens of
	// times a second).
	SubscriberRequestsPerSecond = 500
	// SubscriberAcksPerSecond is how many of its acknowledgements it
	// passes on a second, with a second's worth at once: one per event,
	// several times what the relay publishes; a subscriber reading a
	// backlog of more events reads it at this rate.
	SubscriberAcksPerSecond = 50000
	// requestQueue and ackQueue are how many of a subscriber's requests
	// wait to be passed on before the next is dropped.
	requestQueue = 1024
	ackQueue     = 8192
	// maxReply is the longest reply subject passed on (nats.go's and
	// nats.js's are under 100 bytes): each pull JetStream keeps waiting
	// holds its reply.
	maxReply = 256
)

// passRates is how many requests and acknowledgements of one subscriber
// a passer passes on a second, each with a second's worth at once:
// SubscriberRequestsPerSecond and SubscriberAcksPerSecond (a test sets
// lower ones, which any machine outruns).
type passRates struct{ requests, acks int }

// passOn is a passer's connection in the relay's account, on which it
// passes its subscriber's requests on to JetStream, at its subscriber's
// rates: one per passer, so that what one subscriber's requests cost the
// server to read (a direct get reads up to maxDirectBatch events where
// it is read) holds up only its own, and a line the server refuses cuts
// only its own. Its connCtx ends when it drops: an answer due on a
// connection the server cut never comes.
type passOn struct {
	conn *nats.Conn

	mu       sync.Mutex
	connCtx  context.Context    // ends when the connection drops, under mu
	connDone context.CancelFunc // ends connCtx, under mu
}

// connectPassOn connects a passer's connection in the relay's account;
// its connCtx ends with ctx, the passer's, too.
func (e *Embedded) connectPassOn(ctx context.Context, name string) (*passOn, error) {
	own, err := e.connectOptions()
	if err != nil {
		return nil, err
	}
	po := &passOn{}
	po.connCtx, po.connDone = context.WithCancel(ctx)
	onDisconnect := nats.DisconnectErrHandler(func(*nats.Conn, error) {
		po.mu.Lock()
		po.connDone()
		po.connCtx, po.connDone = context.WithCancel(ctx)
		po.mu.Unlock()
	})
	if po.conn, err = nats.Connect("", append(own, nats.Name("scimrelay passes on the requests of subscriber "+name), onDisconnect, nats.MaxReconnects(-1))...); err != nil {
		return nil, fmt.Errorf("connecting to pass on the requests of subscriber %s: %w", name, err)
	}
	return po, nil
}

// close closes the passer's connection in the relay's account.
func (po *passOn) close() {
	po.conn.Close()
	po.mu.Lock()
	po.connDone()
	po.mu.Unlock()
}

// passerSubscriptions is how many subscriptions a passer holds in its
// subscriber's account, which the subscriber's own count leaves out
// (subscriptions.go).
const passerSubscriptions = 2

// passer passes one subscriber's requests on to JetStream, on a connection
// of its own: a flood that the connection cannot take cuts it off, and not
// the relay's other work.
type passer struct {
	sub     Subscriber // as configured when it started
	account string     // the subscriber's account, whose requests it takes
	inbox   string     // the subscriber's inbox prefix, with its final "."
	api     []string   // subscriberAPI(sub): the subjects it passes on
	conn    *nats.Conn // in the subscriber's account: its requests, and answers to them
	out     *passOn    // in the relay's account: requests passed on
	stop    context.CancelFunc
	ctx     context.Context
	apiSlot chan struct{} // the subscribers' one place in JetStream's API queue
	key     nkeys.KeyPair // its own, in the subscriber's account
	forget  func()        // stops admitting key

	dropped atomic.Bool // a drop was logged in the last minute
}

// startPasser connects into the account of s, acc, and subscribes for
// its requests, consumer creations included. It connects with a key of
// its own, generated in memory and admitted in-process only, allowed to
// take the subscriber's JetStream requests and to answer into its inbox,
// nothing else. A subscriber that changes (its key, its subjects) gets a
// new passer: what it queued before is dropped with the old one. e.mu is
// held.
func (e *Embedded) startPasser(s Subscriber, acc *server.Account) (*passer, error) {
	key, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("generating the NATS credential for the requests of subscriber %s: %w", s.Name, err)
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	e.auth.addInternal(&server.NkeyUser{Nkey: pub, Account: acc, Permissions: &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{InboxPrefix(s.Name) + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{jsAPI + ">", "$JS.ACK.>"}},
	}})
	ctx, stop := context.WithCancel(context.Background())
	rates := e.rates
	p := &passer{sub: s, account: accountName(s), inbox: InboxPrefix(s.Name) + ".", api: subscriberAPI(s),
		ctx: ctx, stop: stop, apiSlot: e.apiSlot, key: key, forget: func() { e.auth.removeInternal(pub) }}
	requests := rate.NewLimiter(rate.Limit(rates.requests), rates.requests)
	acks := rate.NewLimiter(rate.Limit(rates.acks), rates.acks)
	log := e.log.With("subscriber", s.Name)
	onError := nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if !p.dropped.Swap(true) {
			log.Warn("embedded NATS: a subscriber's requests were dropped: it sends more than the relay passes on",
				"requests_per_second", rates.requests, "acks_per_second", rates.acks, "err", err)
			time.AfterFunc(time.Minute, func() { p.dropped.Store(false) })
		}
	})
	if p.out, err = e.connectPassOn(ctx, s.Name); err != nil {
		p.close()
		return nil, err
	}
	// A flood the connection cannot take makes the server cut it; it
	// comes back, for as long as the subscriber is configured.
	if p.conn, err = nats.Connect("", nats.InProcessServer(e.srv), nats.Nkey(pub, key.Sign),
		nats.Name("scimrelay requests of subscriber "+s.Name), onError, nats.MaxReconnects(-1)); err != nil {
		p.close()
		return nil, fmt.Errorf("connecting for the requests of subscriber %s: %w", s.Name, err)
	}
	for _, q := range []struct {
		subject       string
		handle        nats.MsgHandler
		queue, octets int
	}{ // passerSubscriptions of them
		{jsAPI + ">", func(m *nats.Msg) { p.pass(m.Subject, m, requests) }, requestQueue, 1 << 20},
		{"$JS.ACK.>", func(m *nats.Msg) { p.pass(m.Subject, m, acks) }, ackQueue, 1 << 20},
	} {
		sub, err := p.conn.Subscribe(q.subject, q.handle)
		if err == nil {
			err = sub.SetPendingLimits(q.queue, q.octets)
		}
		if err != nil {
			p.close()
			return nil, fmt.Errorf("subscribing for the requests of subscriber %s: %w", s.Name, err)
		}
	}
	if err := p.conn.Flush(); err != nil {
		p.close()
		return nil, fmt.Errorf("subscribing for the requests of subscriber %s: %w", s.Name, err)
	}
	return p, nil
}

// pass passes a request the subscriber sent to subject on to JetStream,
// once lim allows, unless its reply is outside the subscriber's inbox: in
// the relay's account a reply elsewhere could be a stream's subject, a
// bucket's or another consumer's API, and JetStream would write its
// answer there.
func (p *passer) pass(subject string, m *nats.Msg, lim *rate.Limiter) {
	if len(m.Reply) > maxReply || m.Reply != "" && !strings.HasPrefix(m.Reply, p.inbox) {
		return
	}
	// Only the subjects of subscriberAPI, which its permissions allow,
	// should they ever allow more.
	if !slices.ContainsFunc(p.api, func(allowed string) bool { return server.SubjectMatchesFilter(subject, allowed) }) {
		return
	}
	if lim.Wait(p.ctx) != nil {
		return // the subscriber is gone
	}
	if creation(subject) {
		p.answerCreate(subject, m) // which reads the body as a creation
		return
	}
	body, err := checkRequest(subject, m.Data)
	if err != nil {
		if m.Reply != "" {
			// As JetStream refuses a malformed pull: nats.go and nats.js
			// end the fetch or consume with the description.
			_ = p.conn.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Status": {"400"}, "Description": {err.Error()}}})
		}
		return
	}
	// The line passOn writes must fit the server's bound on one, or the
	// server cuts passOn, and the subscriber's other requests with it: a body
	// re-encoded longer (encoding/json writes a direct get's & as \u0026)
	// takes a line the subscriber sent at the bound over it.
	if answeredInPlace(subject) && pubLine(subject, m.Reply, len(body)) > server.MAX_CONTROL_LINE_SIZE {
		if m.Reply != "" {
			_ = p.conn.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{"Status": {"400"}, "Description": {"a scimrelay subscriber's request is too long"}}})
		}
		return
	}
	switch {
	case subject == jsAPI+"INFO":
		if m.Reply != "" {
			_ = p.conn.Publish(m.Reply, infoAnswer)
		}
	case answeredInPlace(subject):
		// The subscriber's headers stay behind: JetStream's requests
		// need none, and it reads some as the server's own.
		_ = p.out.conn.PublishMsg(&nats.Msg{Subject: subject, Reply: m.Reply, Data: body})
	case m.Reply != "":
		// The server answers JetStream's API through its own account,
		// and does not pass such an answer on through a stream export:
		// the relay asks, and passes the answer on.
		if res, err := p.ask(p.ctx, subject, body); err == nil {
			err = p.conn.PublishMsg(&nats.Msg{Subject: m.Reply, Header: res.Header, Data: res.Data})
			if errors.Is(err, nats.ErrMaxPayload) {
				// JetStream's answer (a message get's event, in base64
				// in JSON) is longer than a message may be: say so
				// rather than leave the client waiting.
				b, _ := json.Marshal(server.ApiResponse{Error: &server.ApiError{Code: 413, ErrCode: refusedCode,
					Description: "JetStream's answer is longer than a NATS message may be; read the event with a direct get"}})
				_ = p.conn.PublishMsg(&nats.Msg{Subject: m.Reply, Data: b})
			}
		}
	}
}

// ask asks JetStream's API as the relay, once the subscribers' one place
// in its API queue is free (or ctx ends), and holds that place until
// JetStream answers (request): the queue has two workers, which the
// relay's own requests share.
func (p *passer) ask(ctx context.Context, subject string, body []byte) (*nats.Msg, error) {
	select {
	case p.apiSlot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.apiSlot }()
	return p.request(subject, body)
}

// request asks JetStream on the passer's connection and waits for the
// answer at most apiTimeout, and no longer than the connection lasts: an
// answer due on a connection the server cut never comes, and the
// subscribers' one place in the API queue must not wait for it (a cut
// passer held it a minute, and every other subscriber's API requests
// failed meanwhile).
func (p *passer) request(subject string, body []byte) (*nats.Msg, error) {
	p.out.mu.Lock()
	conn := p.out.connCtx
	p.out.mu.Unlock()
	ctx, cancel := context.WithTimeout(conn, apiTimeout)
	defer cancel()
	return p.out.conn.RequestWithContext(ctx, subject, body)
}

// pubLine is the length of the arguments of the PUB line that publishes
// size bytes to subject with reply, which the server bounds
// (MAX_CONTROL_LINE_SIZE, as the relay leaves it).
func pubLine(subject, reply string, size int) int {
	n := len(subject) + 1 + len(strconv.Itoa(size))
	if reply != "" {
		n += len(reply) + 1
	}
	return n
}

// apiTimeout is how long the relay waits for JetStream to answer a
// subscriber's API request, holding the subscribers' one place in its
// API queue: letting go sooner would put the next request in while
// JetStream still had the last.
const apiTimeout = 10 * time.Second

// answeredInPlace reports whether JetStream answers requests on subject
// from the stream or consumer itself, in the relay's account, rather than
// through its API: pulls, direct gets and acknowledgements.
func answeredInPlace(subject string) bool {
	for _, prefix := range []string{jsAPI + "CONSUMER.MSG.NEXT.", jsAPI + "DIRECT.GET.", "$JS.ACK."} {
		if strings.HasPrefix(subject, prefix) {
			return true
		}
	}
	return false
}

// close stops passing requests; those queued are dropped.
func (p *passer) close() {
	p.stop()
	if p.conn != nil {
		p.conn.Close()
	}
	if p.out != nil {
		p.out.close()
	}
	p.forget()
}
