// Package natsbus connects the relay to NATS: it starts the embedded
// nats-server with JetStream, or connects to an external server or cluster
// with the credentials relay.yaml names.
package natsbus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
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
	// Credentials, Token, User and Password authenticate to an external server.
	Credentials, Token, User, Password string
	// CAFile, CertFile and KeyFile configure TLS to an external server.
	CAFile, CertFile, KeyFile string
	// ConnectTimeout bounds each connection attempt.
	ConnectTimeout time.Duration
	// Name identifies the connection in the server's monitoring.
	Name string
}

// StartEmbedded starts an in-process nats-server with JetStream storing
// under o.StoreDir. It listens on o.Listen (loopback by default) so that
// local services can subscribe, or on nothing when o.Listen is empty.
func StartEmbedded(o Options, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "scimrelay",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true, // the relay owns signal handling
		MaxPayload: 8 << 20,
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
		opts.Host, opts.Port = host, p
		// Fail with a clear message rather than nats-server's own when the port is taken.
		l, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS cannot listen on %s: %w (is another NATS or scimrelay running? set nats.listen to another address, or to \"\" for in-process only)", o.Listen, err)
		}
		_ = l.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configuring embedded NATS: %w", err)
	}
	s.SetLoggerV2(natsLogger{log.With("component", "nats-server")}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS did not become ready within 30s")
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS started without JetStream (store %s)", o.StoreDir)
	}
	return s, nil
}

// Connect connects to the embedded server (in-process, no TCP) when
// embedded is not nil, else to o.URL. The connection reconnects forever;
// publishes fail fast while it is away (no reconnect buffer), because the
// outbox, not the client, is where unpublished events wait.
func Connect(o Options, embedded *server.Server, log *slog.Logger) (*nats.Conn, error) {
	name := o.Name
	if name == "" {
		name = "scimrelay"
	}
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; events wait in the outbox until it is back", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS asynchronous error", "subject", subject, "err", err)
		}),
	}
	if embedded != nil {
		opts = append(opts, nats.InProcessServer(embedded))
		nc, err := nats.Connect("", opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to embedded NATS: %w", err)
		}
		return nc, nil
	}
	if o.Credentials != "" {
		opts = append(opts, nats.UserCredentials(o.Credentials))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.CAFile != "" || o.CertFile != "" {
		tc, err := tlsConfig(o)
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

func tlsConfig(o Options) (*tls.Config, error) {
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
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading nats.tls.cert_file and key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redactURL drops user information from NATS URLs before they reach a log.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// natsLogger sends nats-server's log to slog: warnings and errors as such,
// its start-up banner and other notices at Debug, where they do not drown
// the relay's own log.
type natsLogger struct{ log *slog.Logger }

var _ server.Logger = natsLogger{}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
