// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A subscriber's subscriptions are bounded by the relay, since nats-server
// bounds them only per connection and for every client at once (MaxSubs,
// which the relay's own connections would share) or through JWT accounts.
// They cost more than memory: every message JetStream sends a subscriber
// (a pulled event, a pull's heartbeat) goes to each of its subscriptions
// on the reply subject, from the one goroutine that also stores the
// relay's publishes and feeds the sinks. A review subscribed 10,000 times
// on 8 connections to its inbox and stopped publishing for as long as it
// pulled. A nats.go or nats.js consumer holds a handful.
const (
	// MaxSubscriberSubscriptions is how many subscriptions a subscriber
	// may hold across its connections.
	MaxSubscriberSubscriptions = 1024
	// subscriptionsCoolDown is how long a key that held more is refused.
	subscriptionsCoolDown = time.Minute
	// subscriptionsCheckedEvery is how often they are counted.
	subscriptionsCheckedEvery = time.Second
)

// watchSubscriptions counts each admitted subscriber's subscriptions every
// subscriptionsCheckedEvery until done is closed, and closes the
// connections of one holding more than MaxSubscriberSubscriptions; its key
// is refused for subscriptionsCoolDown, so that it cannot start again at
// once.
func (e *Embedded) watchSubscriptions(done <-chan struct{}) {
	t := time.NewTicker(subscriptionsCheckedEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			e.checkSubscriptions()
		}
	}
}

// checkSubscriptions is one count of watchSubscriptions.
func (e *Embedded) checkSubscriptions() {
	type over struct {
		sub  Subscriber
		subs int
	}
	var found []over
	e.mu.Lock()
	for _, p := range e.passers {
		acc := e.accounts[p.account]
		if acc == nil {
			continue
		}
		if n := acc.TotalSubs() - e.internalSubs[p.account] - passerSubscriptions; n > MaxSubscriberSubscriptions {
			found = append(found, over{p.sub, n})
		}
	}
	e.mu.Unlock()
	for _, o := range found {
		ids := e.auth.coolDown(o.sub.PublicKey, time.Now().Add(subscriptionsCoolDown))
		e.log.Warn("embedded NATS: a subscriber held more subscriptions than it may; its connections are closed, and its key refused for a while",
			"subscriber", o.sub.Name, "subscriptions", o.subs, "max", MaxSubscriberSubscriptions,
			"connections_closed", len(ids), "refused_for", subscriptionsCoolDown.String())
		for _, id := range ids {
			_ = e.srv.DisconnectClientByID(id)
		}
	}
}

// countInternalSubs notes the subscriptions an account holds for its
// imports and exports, before any client of it connects: what a
// subscriber's own count leaves out. e.mu is held.
func (e *Embedded) countInternalSubs(name string, acc *server.Account) {
	if _, ok := e.internalSubs[name]; !ok {
		e.internalSubs[name] = acc.TotalSubs()
	}
}
