// SPDX-License-Identifier: Apache-2.0

// Package natsbus connects the relay to NATS: it starts the embedded
// nats-server with JetStream, or connects to an external server or cluster
// with the credentials relay.yaml names.
package natsbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/certfile"
	"github.com/scimrelay/scimrelay/relay/lograte"
)

// Options says how to reach NATS: an external server or cluster when URL
// is set, else an embedded server the relay runs itself.
type Options struct {
	// URL of an external server or cluster (comma-separated); empty runs the embedded server.
	URL string
	// Listen is the embedded server's client listener (host:port) for local
	// subscribers; empty keeps it in-process only.
	Listen string
	// StoreDir holds the embedded server's JetStream files.
	StoreDir string
	// Credentials (a .creds file), NkeySeedFile (a file holding a user nkey
	// seed), Token, and User with Password authenticate to an external server.
	Credentials, NkeySeedFile, Token, User, Password string
	// TLS is the client side of TLS to an external server, or the embedded
	// server's listener certificate (and, with a CA, the CA its clients'
	// certificates must chain to).
	TLS TLS
	// ConnectTimeout bounds each connection attempt.
	ConnectTimeout time.Duration
	// SyncInterval is how often the embedded server writes its store to
	// disk (0: nats-server's default, 2 minutes); SyncAlways writes every
	// message before acknowledging it.
	SyncInterval time.Duration
	SyncAlways   bool
	// Name identifies the connection in the server's monitoring.
	Name string
}

// TLS names PEM files.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// pingInterval and maxPingsOut are how the relay finds a server that stops
// answering without closing the connection (its machine lost, a network
// partition): it pings the server every pingInterval and gives the
// connection up when maxPingsOut pings in a row go unanswered, so within
// 20 to 30 s, and reconnects, to another server when the URL or the
// cluster names one. nats.go's defaults, 2 minutes and 2, took 4 to 6
// minutes, with the events waiting in the outbox and the deliveries
// paused all that time. A PONG comes after what the client sent before
// its PING, which a server reads at once however busy its streams are.
const (
	pingInterval = 10 * time.Second
	maxPingsOut  = 2
)

// Connect connects to the embedded server (in-process, no TCP, with the
// relay's own credential) when embedded is not nil, else to o.URL. The connection reconnects forever;
// publishes fail fast while it is away (no reconnect buffer), because the
// outbox, not the client, is where unpublished events wait.
func Connect(o Options, embedded *Embedded, log *slog.Logger) (*nats.Conn, error) {
	name := o.Name
	if name == "" {
		name = "scimrelay"
	}
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	reconnectFailures, asyncErrors := lograte.New[string](time.Minute), lograte.New[string](time.Minute)
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting (a front end's events wait in its outbox, a worker's deliveries pause)", "err", err)
			}
		}),
		// Each attempt that fails (every second or so while NATS is away),
		// said once a minute per error: after the disconnection line, a
		// server that refuses the relay (a TLS handshake, a credential
		// rotated on the server) said nothing of why it stayed away.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return
			}
			if due, held := reconnectFailures.Note(err.Error(), time.Now()); due {
				log.Warn("reconnecting to NATS failed; trying again every second (each error said once a minute)", "err", err, "failed_since", held)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			// Not ConnectedUrlRedacted: url.Redacted hides a password
			// only, and a lone user is a token (nats://TOKEN@host).
			log.Info("reconnected to NATS", "server", redactURL(nc.ConnectedUrl()))
		}),
		// A server that refuses the relay's credential says so at every
		// attempt (each second): said once a minute per subject and error.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			if due, held := asyncErrors.Note(subject+" "+err.Error(), time.Now()); due {
				log.Warn("NATS asynchronous error (each said once a minute)", "subject", subject, "err", err, "repeated_since", held)
			}
		}),
		// Reconnecting forever means through refusals too: by default
		// nats.go closes the connection for good at the second refusal of
		// the same credential by a server (one restarted before its users
		// or accounts were loaded, a credential rotated on the server
		// before relay.yaml), and the relay never reconnected, readyz
		// failing until it was restarted by hand.
		nats.IgnoreAuthErrorAbort(),
	}
	if embedded != nil {
		own, err := embedded.connectOptions()
		if err != nil {
			return nil, err
		}
		nc, err := nats.Connect("", append(opts, own...)...)
		if err != nil {
			return nil, fmt.Errorf("connecting to embedded NATS: %w", err)
		}
		return nc, nil
	}
	if o.Credentials != "" {
		opts = append(opts, nats.UserCredentials(o.Credentials))
	}
	if o.NkeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("reading nats.nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.TLS.CAFile != "" || o.TLS.CertFile != "" {
		tc, err := tlsConfig(o.TLS, log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURL(o.URL), err)
	}
	return nc, nil
}

// tlsConfig is the client side of TLS to an external NATS: the CA its
// certificate chains to (else the system's roots), and the relay's client
// certificate, read again from its files when they change (at most once a
// second, at a (re)connection), so that a renewed one is presented when
// the connection is next made, without a restart.
func tlsConfig(o TLS, log *slog.Logger) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading nats.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats.tls.ca_file %s holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		// Any extended key usage: whether the server asks for clientAuth
		// is its own check.
		pair, err := certfile.Load(o.CertFile, o.KeyFile, x509.ExtKeyUsageAny, log.With("nats_tls", "client"))
		if err != nil {
			return nil, fmt.Errorf("loading nats.tls.cert_file and key_file: %w", err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair.Certificate(), nil }
	}
	return tc, nil
}

// redactURL drops user information from NATS URLs before they reach a log.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil:
			// Unreadable, perhaps for a password with a "%" or "#": not
			// shown, since it may hold one.
			parts[i] = "(an unreadable URL)"
		case u.User != nil:
			u.User = url.User("redacted")
			parts[i] = u.String()
		case strings.Contains(p, "@"):
			// Without its scheme (user:password@host, TOKEN@host) url.Parse
			// takes what is before the @ for a scheme or a path, not
			// user information: not shown either.
			q := strings.TrimSpace(p)
			parts[i] = "redacted@" + q[strings.LastIndex(q, "@")+1:]
		}
	}
	return strings.Join(parts, ",")
}

// natsLogger sends nats-server's log to slog: warnings and errors as such,
// its start-up banner and other notices at Debug, where they do not drown
// the relay's own log. A client whose credential the server refuses is
// said at Warn, as the SCIM listener's 401s are: it is the client's
// mistake (or a subscriber cut off with its tenant, which retries every
// few seconds), not the relay's error.
//
// A warning or error is said once a minute per format string
// (natsRepeatEvery): nats-server says the same failure again and again
// while its cause lasts ("JetStream failed to store a msg on stream" every
// 2 s on a full disk, 26 times in 45 s of an on-call review). The lines
// held back go to Debug, and the next line said counts them (repeated).
type natsLogger struct {
	log     *slog.Logger
	repeats *lograte.Limiter[string]
	now     func() time.Time
}

// natsRepeatEvery is how often, at most, natsLogger says a warning or an
// error of one format.
const natsRepeatEvery = time.Minute

func newNATSLogger(log *slog.Logger) natsLogger {
	return natsLogger{log: log, repeats: lograte.New[string](natsRepeatEvery), now: time.Now}
}

var _ server.Logger = natsLogger{}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any) {
	l.say(slog.LevelWarn, format, fmt.Sprintf(format, v...))
}
func (l natsLogger) Fatalf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "authentication error") {
		l.say(slog.LevelWarn, format, msg)
		return
	}
	l.say(slog.LevelError, format, msg)
}

// clientPrefix is what nats-server puts before the format of a line about
// one connection (client.format: its address, "cid:N" or the like, and
// its quoted name and account/user once it connected): two connections'
// lines of one statement are one kind, so that a burst of refused
// connections (an authentication error each) is said once a minute, not
// once per connection.
var clientPrefix = regexp.MustCompile(`^\S+ - [a-z]+\S*:\d+(?: - "(?:[^"\\]|\\.)*")* - `)

// say logs msg, a warning or error of format, at level, or at Debug when
// a line of its format was said less than natsRepeatEvery ago; the next
// one said counts those (repeated). A format of nothing but "%s" (what
// nats-server's own RateLimitErrorf passes on, with the statement it
// formatted) is keyed by its message instead, so that different
// statements are not held back as one.
func (l natsLogger) say(level slog.Level, format, msg string) {
	key := clientPrefix.ReplaceAllString(format, "")
	if format == "%s" {
		key = msg
	}
	due, held := l.repeats.Note(key, l.now())
	switch {
	case !due:
		l.log.Debug(msg)
	case held > 0:
		l.log.Log(context.Background(), level, msg, "repeated", held)
	default:
		l.log.Log(context.Background(), level, msg)
	}
}
