// SPDX-License-Identifier: Apache-2.0

package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/certfile"
)

// TLS on the relay's own listeners: tls for the SCIM listener (listen),
// admin.tls for the admin listener (admin_listen). Each is off (plain
// HTTP) unless both its files are set, and then speaks HTTPS only.

// checkListenerTLS checks a listener's tls setting under field ("tls",
// "admin.tls"): both files or neither, and each there, which check sees
// without opening them, as it does the files NATS reads. Whether they
// make a pair a server can present only starting shows (configureTLS):
// a reload, which checks the whole file, is then not refused while a
// renewal is half written, which the listener rides out.
func checkListenerTLS(add func(field, format string, args ...any), field string, t config.ListenerTLS) {
	switch {
	case !t.On():
		return
	case t.KeyFile == "":
		add(field+".key_file", "must be set with %s.cert_file: the certificate's private key (or neither, for plain HTTP)", field)
	case t.CertFile == "":
		add(field+".cert_file", "must be set with %s.key_file: the certificate for the key (or neither, for plain HTTP)", field)
	default:
		checkFiles(add, listenerFiles(field, t))
	}
}

// listenerFiles are the files of a listener's tls setting under field
// ("tls", "admin.tls"), the key secret.
func listenerFiles(field string, t config.ListenerTLS) []fileKey {
	return []fileKey{{field + ".cert_file", t.CertFile, false}, {field + ".key_file", t.KeyFile, true}}
}

// configureTLS makes srv, the listener relay.yaml's field ("tls",
// "admin.tls") configures, speak HTTPS over HTTP/1.1 with the certificate
// its files hold, and registers when that certificate expires and how many
// handshakes failed (handshakeLog) as metrics, labelled listener. It does
// nothing when the setting is off.
//
// HTTP/1.1 only, as over plain HTTP: what identity providers send, and
// what the listeners' limits (header and read timeouts, one request at a
// time per connection) were written and tested for.
func (s *server) configureTLS(srv *http.Server, field, listener string, t config.ListenerTLS) error {
	if !t.On() {
		return nil
	}
	certs, err := certfile.Load(t.CertFile, t.KeyFile, x509.ExtKeyUsageServerAuth, s.log.With("listener", listener))
	if err != nil {
		return fmt.Errorf("%s: cert_file and key_file cannot be served: %w", field, err)
	}
	if leaf, now := certs.Leaf(), time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		s.log.Warn("the TLS certificate is not valid now: clients will refuse it", "listener", listener, "cert_file", t.CertFile, "not_before", leaf.NotBefore, "not_after", leaf.NotAfter)
	}
	srv.TLSConfig = certs.ServerConfig()
	var http1 http.Protocols
	http1.SetHTTP1(true)
	srv.Protocols = &http1
	failed := prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "scimrelay_tls_handshake_errors_total",
		Help:        "TLS handshakes a listener failed: a client in clear text, one that does not trust the certificate, a scanner; each is said at Debug.",
		ConstLabels: prometheus.Labels{"listener": listener},
	})
	srv.ErrorLog = log.New(handshakeLog{next: srv.ErrorLog.Writer(), log: s.log.With("listener", listener), failed: failed}, "", 0)
	return errors.Join(s.registry.Register(failed), s.registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "scimrelay_tls_certificate_expiry_timestamp_seconds",
		Help:        "When the certificate a listener serves expires (Unix time); it is read again from its files when they change.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(certs.Certificate().Leaf.NotAfter.Unix()) }))) // renewed files count without a handshake
}

// handshakeLog is the error log of a listener that speaks TLS: Go's line
// for a failed handshake (a client in clear text, one that does not trust
// the certificate, a scanner) is counted and said at Debug; the server's
// other lines go on to next. Each was a Warn line, which anyone who
// reaches the port, a public one, could write at will, past the summaries
// that keep refused requests to a few lines a minute
// (TestClientsCannotWriteTheServerLogAtWill).
type handshakeLog struct {
	next   io.Writer
	log    *slog.Logger
	failed prometheus.Counter
}

func (h handshakeLog) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	if !strings.HasPrefix(line, "http: TLS handshake error") {
		return h.next.Write(p)
	}
	h.failed.Inc()
	h.log.Debug(line)
	return len(p), nil
}

// schemeOf is the URL scheme a listener of this tls setting speaks.
func schemeOf(t config.ListenerTLS) string {
	if t.On() {
		return "https"
	}
	return "http"
}

// adminHTTPClient is how a command on the relay's machine talks to its
// admin listener: plain HTTP, or with admin.tls, TLS that accepts the
// certificate in admin.tls.cert_file alone (certfile.ClientTrusting).
// Either way it connects to admin_listen itself: never through
// $HTTP_PROXY, which would be handed the admin token.
func adminHTTPClient(cfg *config.Config) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone() // its dial and handshake timeouts
	t.Proxy = nil
	if cfg.Admin.TLS.On() {
		tc, err := certfile.ClientTrusting(cfg.Admin.TLS.CertFile)
		if err != nil {
			return nil, fmt.Errorf("admin.tls.cert_file: %w", err)
		}
		t.TLSClientConfig = tc
	}
	return &http.Client{Transport: t}, nil
}
