// SPDX-License-Identifier: Apache-2.0

package natsbus

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/scimrelay/scimrelay/relay/certfile"
)

// Embedded is the in-process nats-server the relay runs when relay.yaml
// names no external NATS. Its client listener requires a credential: the
// relay's own nkey, generated in memory at each start, never written
// anywhere, and usable only in-process; and the subscribers' nkeys, each
// with the read-only permissions of SubscriberPermissions. Loopback is not
// a security boundary: without this any local process could publish an
// event that the relay would sign and deliver.
type Embedded struct {
	srv   *server.Server
	relay nkeys.KeyPair
	auth  *authenticator
	own   *nats.Conn          // the relay's connection that keeps the subscribers' consumers
	js    jetstream.JetStream // on own
	log   *slog.Logger
	opts  server.Options // as started

	mu       sync.Mutex                 // serialises SetSubscribers
	accounts map[string]*server.Account // the subscribers' accounts by name, under mu
	// internalSubs are the subscriptions each account held when it was
	// made, for its imports and exports (subscriptions.go), under mu.
	internalSubs map[string]int
	// watching ends watchSubscriptions; Shutdown, which may be called
	// more than once, closes it once.
	watching  chan struct{}
	watchDone sync.Once
	passers   map[string]*passer // each subscriber's requests by its name, under mu
	apiSlot   chan struct{}      // one subscriber API request in JetStream at a time (requests.go)
	rates     passRates          // what the passers started next pass on a second, under mu
	// users are the nkey users usersOf last returned, by subscriber, under mu.
	users map[Subscriber]*server.NkeyUser
}

// StartEmbedded starts an in-process nats-server with JetStream storing
// under o.StoreDir, admitting the relay and subscribers. It listens on
// o.Listen (loopback by default, with TLS when o.TLS has a certificate) so
// that local services can subscribe, or on nothing when o.Listen is empty.
func StartEmbedded(o Options, subscribers []Subscriber, log *slog.Logger) (*Embedded, error) {
	relay, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("generating the relay's NATS credential: %w", err)
	}
	opts := server.Options{
		ServerName: "scimrelay",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true, // the relay owns signal handling
		MaxPayload: 8 << 20,
		// A connection counts against MaxConn from when it is accepted,
		// signed in or not: nats-server's default wait for its credential.
		AuthTimeout: 2,
		// nats-server keeps the last closed connections, each with every
		// subscription it had, for its monitoring, which the relay does
		// not serve (0 is the default, 10,000; a review held 1.6 GiB that
		// way in 36 s).
		MaxClosedClients: 1,
		// Below the systemd unit's LimitNOFILE (65536), which the relay's
		// SCIM listener and store share; each subscriber key holds at most
		// MaxSubscriberConns of these.
		MaxConn: maxConns,
		// What a client that does not read may hold of the server's memory
		// before it is cut off (the default is 64 MiB): at least an event
		// of MaxPayload.
		MaxPending: 16 << 20,
		// The publisher deletes an event from the outbox only once the
		// server has written it to disk (nats.sync_interval).
		SyncInterval: o.SyncInterval,
		SyncAlways:   o.SyncAlways,
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen address %q: bad port", o.Listen)
		}
		if p == 0 {
			// nats-server reads 0 as its default, 4222; -1 is a port of
			// the system's choosing, which 0 is everywhere else (listen,
			// admin_listen, and check's "port 0 is always free").
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if o.TLS.CertFile != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
				CertFile: o.TLS.CertFile, KeyFile: o.TLS.KeyFile, CaFile: o.TLS.CAFile,
				Verify: o.TLS.CAFile != "", MinVersion: tls.VersionTLS12,
			})
			if err != nil {
				return nil, fmt.Errorf("nats.tls for the embedded listener: %w", err)
			}
			// The certificate read again from its files when they change,
			// as the relay's own listeners do. nats-server reads
			// Certificates for its monitoring, which the relay does not
			// open, and for OCSP stapling, which it does at start for a
			// certificate that demands it (Must-Staple): such a one keeps
			// nats-server's own handling, and a renewal needs a restart.
			pair, err := certfile.Load(o.TLS.CertFile, o.TLS.KeyFile, x509.ExtKeyUsageServerAuth, log.With("nats_tls", "listener"))
			if err != nil {
				return nil, fmt.Errorf("nats.tls for the embedded listener: %w", err)
			}
			if mustStaple(pair.Leaf()) {
				log.Info("the embedded NATS listener's certificate demands OCSP stapling, which nats-server does for the certificate it read at start: restart the relay after a renewal", "cert_file", o.TLS.CertFile)
			} else {
				tc.Certificates, tc.GetCertificate = nil, pair.ServerConfig().GetCertificate
			}
			opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, o.TLS.CAFile != "", 2
		} else if !loopbackHost(host) {
			// The nkey signature protects the sign-in only: what a
			// subscriber reads crosses the network as it is.
			log.Warn("the embedded NATS server listens beyond this machine without TLS: subscribers' events cross the network in clear text; set nats.tls.cert_file and key_file",
				"listen", o.Listen)
		}
		// Fail with a clear message rather than nats-server's own when the port is taken.
		l, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS cannot listen on %s: %w (is another NATS or scimrelay running? set nats.listen to another address, or to \"\" for in-process only)", o.Listen, err)
		}
		_ = l.Close()
	}
	pub, err := relay.PublicKey()
	if err != nil {
		return nil, err
	}
	e := &Embedded{relay: relay, auth: newAuthenticator(pub), log: log, accounts: map[string]*server.Account{},
		internalSubs: map[string]int{}, watching: make(chan struct{}),
		passers: map[string]*passer{}, apiSlot: make(chan struct{}, 1),
		rates: passRates{requests: SubscriberRequestsPerSecond, acks: SubscriberAcksPerSecond}}
	if _, err := subscriberUsers(pub, subscribers); err != nil {
		return nil, err
	}
	opts.CustomClientAuthentication = e.auth
	opts.AlwaysEnableNonce = true // clients sign it with their nkey
	e.opts = opts
	start := opts // NewServer keeps and fills in the pointer it is given
	s, err := server.NewServer(&start)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded NATS: %w", err)
	}
	s.SetLoggerV2(newNATSLogger(log.With("component", "nats-server")), false, false, false)
	e.auth.alive = func(id uint64) bool { return s.GetClient(id) != nil }
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS did not become ready within 30s")
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS started without JetStream (store %s)", o.StoreDir)
	}
	e.srv = s
	own, err := e.connectOptions()
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	if e.own, err = nats.Connect("", append(own, nats.Name("scimrelay subscribers' consumers"))...); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("connecting to embedded NATS: %w", err)
	}
	if e.js, err = jetstream.New(e.own); err != nil {
		e.own.Close()
		s.Shutdown()
		return nil, fmt.Errorf("opening JetStream on embedded NATS: %w", err)
	}
	// Subscribers are admitted once their accounts can import from the
	// relay's, whose JetStream is now there. One whose consumer cannot be
	// made is refused (SetSubscribers logs it), not the relay.
	if err := e.SetSubscribers(subscribers); err != nil && !OnlyOthersNotAdmitted(err, "") {
		e.own.Close()
		s.Shutdown()
		return nil, err
	}
	go e.watchSubscriptions(e.watching)
	return e, nil
}

// NotAdmitted is the error of a subscriber SetSubscribers or
// EnsureConsumers could not admit (its consumer could not be made or
// updated): it is refused until a later change of subscribers or start,
// and the others are admitted.
type NotAdmitted struct {
	Name string
	Err  error
}

func (n *NotAdmitted) Error() string {
	return "subscriber " + n.Name + " not admitted: " + n.Err.Error()
}
func (n *NotAdmitted) Unwrap() error { return n.Err }

// OnlyOthersNotAdmitted reports whether err, from SetSubscribers or
// EnsureConsumers, says no more than that subscribers other than name
// were not admitted (nil says nothing; name "" is no subscriber): a
// change of one subscriber is not failed by another's consumer.
func OnlyOthersNotAdmitted(err error, name string) bool {
	if err == nil {
		return true
	}
	leaves := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = joined.Unwrap()
	}
	for _, leaf := range leaves {
		var na *NotAdmitted
		if !errors.As(leaf, &na) || na.Name == name {
			return false
		}
	}
	return true
}

// maxConns is the most clients the embedded server admits at once.
const maxConns = 16384

// subscriberUsers returns the subscribers' nkey users, each with its
// permissions, by public key; relay is the relay's own key, which no
// subscriber may present.
func subscriberUsers(relay string, subscribers []Subscriber) (map[string]*server.NkeyUser, error) {
	users := make(map[string]*server.NkeyUser, len(subscribers))
	for _, sub := range subscribers {
		if err := sub.Check(); err != nil {
			return nil, err
		}
		if sub.PublicKey == relay || users[sub.PublicKey] != nil {
			return nil, fmt.Errorf("subscriber %s: its public key is already in use", sub.Name)
		}
		users[sub.PublicKey] = &server.NkeyUser{Nkey: sub.PublicKey, Permissions: SubscriberPermissions(sub)}
	}
	return users, nil
}

// SetSubscribers replaces the subscribers the server admits, without a
// restart. A subscriber no longer in the list is disconnected at once;
// one whose permissions changed gets the new ones. The consumer of each
// added or changed subscriber is made, or adopted with its position and
// given the relay's settings (ensureConsumer), before the subscriber is
// admitted; a subscriber whose consumer could not be is not admitted, and
// the error says why. (Removing a subscriber's consumer is its remover's.)
func (e *Embedded) SetSubscribers(subscribers []Subscriber) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	users, err := e.usersOf(subscribers)
	if err != nil {
		return err
	}
	next := make(map[string]Subscriber, len(subscribers))
	for _, sub := range subscribers {
		next[sub.Name] = sub
	}
	// A subscriber removed or changed (its key, its subjects) loses what
	// it queued: with its old passer go the requests its old key sent,
	// and its connections go before a new passer starts, so that nothing
	// its old key sends reaches one, and none reads from its consumer
	// while its filter changes. (Requests carry no proof of their
	// sender's key; the passer's configuration is the proof.)
	for name, p := range e.passers {
		if next[name] != p.sub {
			p.close()
			delete(e.passers, name)
		}
	}
	for _, id := range e.auth.retain(users) {
		_ = e.srv.DisconnectClientByID(id)
	}
	var errs []error
	for name, sub := range next {
		if e.passers[name] != nil {
			continue // unchanged, and so is its consumer
		}
		if err := e.ensureConsumer(sub); err != nil {
			errs = append(errs, e.notAdmitted(name, err))
			delete(users, sub.PublicKey)
			continue
		}
		p, err := e.startPasser(sub, users[sub.PublicKey].Account)
		if err != nil {
			return err
		}
		e.passers[name] = p
	}
	for _, id := range e.auth.set(users) {
		_ = e.srv.DisconnectClientByID(id) // gone already is fine
	}
	return errors.Join(errs...)
}

// usersOf returns the nkey users of subscribers, each in its account.
// A subscriber given last time as it is now keeps its user, which the
// authenticator then knows unchanged without comparing its permissions:
// every change of subscribers gives them all, and comparing each one's
// took most of adding the 2,001st. e.mu is held.
func (e *Embedded) usersOf(subscribers []Subscriber) (map[string]*server.NkeyUser, error) {
	users, err := subscriberUsers(e.auth.relay, subscribers)
	if err != nil {
		return nil, err
	}
	known := make(map[Subscriber]*server.NkeyUser, len(subscribers))
	for _, sub := range subscribers {
		u := e.users[sub]
		if u == nil {
			u = users[sub.PublicKey]
			if u.Account, err = e.subscriberAccount(sub); err != nil {
				return nil, err
			}
		}
		users[sub.PublicKey], known[sub] = u, u
	}
	e.users = known
	return users, nil
}

// notAdmitted logs that the subscriber name is refused, and why, and
// returns that as its NotAdmitted.
func (e *Embedded) notAdmitted(name string, err error) error {
	e.log.Error("embedded NATS: a subscriber is not admitted: its consumer could not be made or kept; it is tried again at the next change of subscribers or start",
		"subscriber", name, "err", err)
	return &NotAdmitted{Name: name, Err: err}
}

// Server returns the nats-server, for monitoring and tests.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL returns the URL subscribers connect to (tls:// when the
// listener requires TLS), or "" when the server listens on nothing.
func (e *Embedded) ClientURL() string {
	if e.opts.DontListen {
		return ""
	}
	addr := e.srv.Addr()
	if addr == nil {
		return ""
	}
	scheme := "nats"
	if e.opts.TLSConfig != nil {
		scheme = "tls"
	}
	host := e.opts.Host
	if ip := net.ParseIP(unzoned(host)); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // reachable from this machine; other hosts use the machine's address
	}
	// url.URL writes an IPv6 zone as %25, which a client's URL parser
	// needs ([fe80::1%eth0] is not a URL's host).
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(addr.(*net.TCPAddr).Port))}
	return u.String()
}

// unzoned is host without an IPv6 zone.
func unzoned(host string) string {
	h, _, _ := strings.Cut(host, "%")
	return h
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.watchDone.Do(func() { close(e.watching) })
	e.mu.Lock()
	for _, p := range e.passers {
		p.close()
	}
	e.mu.Unlock()
	e.own.Close()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// connectOptions are how the relay connects: in-process, with its nkey.
func (e *Embedded) connectOptions() ([]nats.Option, error) {
	pub, err := e.relay.PublicKey()
	if err != nil {
		return nil, err
	}
	return []nats.Option{
		nats.InProcessServer(e.srv),
		nats.Nkey(pub, e.relay.Sign),
	}, nil
}

// loopbackHost reports whether a listen host is this machine only: a
// loopback address or "localhost". An empty host, 0.0.0.0 and [::] listen
// on every interface.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(unzoned(host))
	return ip != nil && ip.IsLoopback()
}

// tlsFeature is the TLS Feature extension (RFC 7633), which a certificate
// that demands OCSP stapling (Must-Staple) carries.
var tlsFeature = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// mustStaple says whether a certificate demands OCSP stapling.
func mustStaple(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(tlsFeature) {
			return true
		}
	}
	return false
}
