// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimrelay/scimrelay/cmd/scimrelay/internal/certfile"
	"github.com/scimrelay/scimrelay/config"
)

// TLS on the relay's own listeners: tls for the SCIM listener (listen),
// admin.tls for the admin listener (admin_listen). Each is off (plain
// HTTP) unless both its files are set, and then speaks HTTPS only.

// checkListenerTLS checks a listener's tls setting under field ("tls",
// "admin.tls"): both files or neither, each there, and a certificate and
// key that make a pair a server can present. Loading them is what serve
// does at start, so that check and serve agree.
func checkListenerTLS(add func(field, format string, args ...any), field string, t config.ListenerTLS) {
	if !t.On() {
		return
	}
	if t.CertFile == "" || t.KeyFile == "" {
		add(field, "cert_file and key_file go together: set both for HTTPS, or neither for plain HTTP")
		return
	}
	problems := 0
	checkFiles(func(f, format string, args ...any) { problems++; add(f, format, args...) },
		[]fileKey{{field + ".cert_file", t.CertFile}, {field + ".key_file", t.KeyFile}})
	if problems > 0 {
		return
	}
	if _, err := certfile.Load(t.CertFile, t.KeyFile, slog.New(slog.DiscardHandler)); err != nil {
		add(field, "cert_file and key_file cannot be served: %v", err)
	}
}

// serveTLS makes srv, the listener field names, speak HTTPS with the
// certificate t's files hold, and registers the time it expires as a
// metric. It does nothing when t is off.
func (s *server) serveTLS(srv *http.Server, listener string, t config.ListenerTLS) error {
	if !t.On() {
		return nil
	}
	certs, err := certfile.Load(t.CertFile, t.KeyFile, s.log.With("listener", listener))
	if err != nil {
		return fmt.Errorf("%s listener's certificate: %w", listener, err)
	}
	srv.TLSConfig = certs.Config()
	return s.registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "scimrelay_tls_certificate_expiry_timestamp_seconds",
		Help:        "When the certificate a listener serves expires (Unix time); it is read again from its files when they change.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(certs.NotAfter().Unix()) }))
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
func adminHTTPClient(cfg *config.Config) (*http.Client, error) {
	if !cfg.Admin.TLS.On() {
		return http.DefaultClient, nil
	}
	tc, err := certfile.ClientTrusting(cfg.Admin.TLS.CertFile)
	if err != nil {
		return nil, fmt.Errorf("admin.tls.cert_file: %w", err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}, nil
}
