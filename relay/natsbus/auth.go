// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"encoding/base64"
	"reflect"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// authenticator admits the embedded server's clients: the relay's own
// nkey over an in-process connection, and each subscriber's nkey with its
// permissions. It is the server's custom client authentication rather than
// its Nkeys option so that subscribers come and go without ReloadOptions,
// which in nats-server 2.15 swaps the server's options while JetStream
// requests read them (a data race the race detector reports), and so that a
// removed subscriber's live connections are known and closed.
type authenticator struct {
	relay string // the relay's public nkey
	// alive reports whether a connection id is still open; stale ids of a
	// subscriber that reconnects often are pruned with it.
	alive func(id uint64) bool

	mu    sync.Mutex
	users map[string]*server.NkeyUser // public nkey → what it may do
	conns map[string]map[uint64]bool  // public nkey → ids of its connections
	// cooling are keys refused until a time (coolDown), public nkey → it.
	cooling map[string]time.Time
	// internal are the keys of the relay's own in-process connections
	// into the subscribers' accounts (its passers, requests.go), each
	// generated in memory for one passer, never written anywhere, public
	// nkey → its account and permissions.
	internal map[string]*server.NkeyUser
}

var _ server.Authentication = (*authenticator)(nil)

func newAuthenticator(relay string) *authenticator {
	return &authenticator{relay: relay, users: map[string]*server.NkeyUser{}, conns: map[string]map[uint64]bool{}, cooling: map[string]time.Time{}, internal: map[string]*server.NkeyUser{}}
}

// addInternal admits u, one of the relay's own keys, in-process only,
// into its account with its permissions, until removeInternal.
func (a *authenticator) addInternal(u *server.NkeyUser) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.internal[u.Nkey] = u
}

// removeInternal stops admitting the relay's key pub.
func (a *authenticator) removeInternal(pub string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.internal, pub)
}

// MaxSubscriberConns is how many connections one subscriber key may hold
// open at once; the next is refused. Connections cost the relay's process
// file descriptors and memory, which its SCIM listener shares.
const MaxSubscriberConns = 64

// nkeyRegistrar is how the server's client takes an nkey user's
// permissions; server.ClientAuthentication does not name it, the client
// type has it.
type nkeyRegistrar interface {
	RegisterNkeyUser(*server.NkeyUser) error
}

// Check verifies the client's signature of the server's nonce with the
// public nkey it presents, and gives it that key's permissions. A
// subscriber's key holding MaxSubscriberConns connections is refused.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Nkey == "" || o.Sig == "" || c.Kind() != server.CLIENT {
		return false
	}
	inProcess := c.RemoteAddress() != nil && c.RemoteAddress().Network() == "pipe"
	a.mu.Lock()
	user, known := a.users[o.Nkey]
	own, internal := a.internal[o.Nkey]
	a.mu.Unlock()
	relay := o.Nkey == a.relay
	switch {
	case (relay || internal) && !inProcess:
		return false // the relay's keys are only ever used in-process
	case relay:
		user = &server.NkeyUser{Nkey: a.relay}
	case internal:
		user = own
	case !known || inProcess:
		return false
	}
	if !verifyNonce(o.Nkey, o.Sig, c.GetNonce()) {
		return false
	}
	reg, ok := c.(nkeyRegistrar)
	if !ok || reg.RegisterNkeyUser(user) != nil {
		return false
	}
	if internal {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.internal[o.Nkey] == own // not removed meanwhile
	}
	if !relay {
		a.mu.Lock()
		defer a.mu.Unlock()
		// The subscribers may have changed since the user was read: set()
		// kicked the connections it knew of then, not this one. Admit it
		// only if the key is still configured with the account and
		// permissions it was given.
		if now, ok := a.users[o.Nkey]; !ok || !sameUser(now, user) {
			return false
		}
		if until, ok := a.cooling[o.Nkey]; ok {
			if time.Now().Before(until) {
				return false
			}
			delete(a.cooling, o.Nkey)
		}
		ids := a.conns[o.Nkey]
		if ids == nil {
			ids = map[uint64]bool{}
			a.conns[o.Nkey] = ids
		}
		if len(ids) >= MaxSubscriberConns && a.alive != nil {
			for id := range ids {
				if !a.alive(id) {
					delete(ids, id)
				}
			}
		}
		if len(ids) >= MaxSubscriberConns {
			return false
		}
		ids[c.GetID()] = true
	}
	return true
}

// verifyNonce reports whether sig (base64, URL or standard alphabet, as
// nats-server accepts) is the signature of nonce by the public nkey pub.
func verifyNonce(pub, sig string, nonce []byte) bool {
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	kp, err := nkeys.FromPublicKey(pub)
	return err == nil && len(nonce) > 0 && kp.Verify(nonce, raw) == nil
}

// set replaces the admitted subscribers and returns the ids of the
// connections that must go: those of a subscriber removed, or whose
// permissions or account changed (it reconnects and gets the new ones).
func (a *authenticator) set(users map[string]*server.NkeyUser) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	kick := a.dropChangedLocked(users)
	a.users = users
	return kick
}

// retain stops admitting the subscribers that users removes or changes,
// without admitting any new one yet, and returns the ids of their
// connections, which must go.
func (a *authenticator) retain(users map[string]*server.NkeyUser) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	kick := a.dropChangedLocked(users)
	kept := make(map[string]*server.NkeyUser, len(a.users))
	for key, u := range a.users {
		if next, ok := users[key]; ok && sameUser(u, next) {
			kept[key] = u
		}
	}
	a.users = kept
	return kick
}

// dropChangedLocked forgets the connections of the keys that users
// removes or changes and returns their ids. a.mu is held.
func (a *authenticator) dropChangedLocked(users map[string]*server.NkeyUser) []uint64 {
	var kick []uint64
	for key, old := range a.users {
		if next, ok := users[key]; ok && sameUser(old, next) {
			continue
		}
		for id := range a.conns[key] {
			kick = append(kick, id)
		}
		delete(a.conns, key)
	}
	return kick
}

// coolDown refuses a subscriber's key until until, and returns the ids of
// its connections, which must go.
func (a *authenticator) coolDown(key string, until time.Time) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cooling[key] = until
	var ids []uint64
	for id := range a.conns[key] {
		ids = append(ids, id)
	}
	delete(a.conns, key)
	return ids
}

// sameUser reports whether two users of a key put a client in the same
// account with the same permissions.
func sameUser(a, b *server.NkeyUser) bool {
	return a == b || a.Account == b.Account && reflect.DeepEqual(a.Permissions, b.Permissions)
}
