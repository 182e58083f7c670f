// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// renew puts the certificate and key of files from in place of those of to.
func renew(t *testing.T, fromCert, fromKey, toCert, toKey string) []byte {
	t.Helper()
	for from, to := range map[string]string{fromCert: toCert, fromKey: toKey} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	return derOf(t, toCert)
}

// derOf is the first certificate in a PEM file.
func derOf(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	return block.Bytes
}

// TestRenewedClientCertificateOnReconnect: the relay's connection to an
// external NATS presents the client certificate its files hold when it
// connects again, so that a renewal (cert-manager's, say) needs no
// restart.
func TestRenewedClientCertificateOnReconnect(t *testing.T) {
	p := newPKI(t)
	s, url := runTLSServer(t, p)
	nc, err := natsbus.Connect(natsbus.Options{URL: url, Name: "renewing", TLS: natsbus.TLS{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	presented := func() (string, error) {
		cz, err := s.Connz(&server.ConnzOptions{Username: true})
		if err != nil {
			return "", err
		}
		for _, c := range cz.Conns {
			if c.Name == "renewing" && len(c.TLSPeerCerts) > 0 {
				return c.TLSPeerCerts[0].CertSha256, nil
			}
		}
		return "", errors.New("not connected")
	}
	sum := func(der []byte) string { s := sha256.Sum256(der); return hex.EncodeToString(s[:]) }
	first := sum(derOf(t, p.clientCert))
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got, err := presented(); err != nil || got != first {
			return fmt.Errorf("presented %s (%v), want the first certificate", got, err)
		}
		return nil
	})

	newCert, newKey := p.leaf(4, x509.ExtKeyUsageClientAuth)
	second := sum(renew(t, newCert, newKey, p.clientCert, p.clientKey))
	eventstest.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		got, err := presented()
		if err == nil && got == second {
			return nil
		}
		if nc.IsConnected() {
			_ = nc.ForceReconnect()
		}
		return fmt.Errorf("presented %s (%v), want the renewed certificate", got, err)
	})
}

// TestEmbeddedListenerServesARenewedCertificate: the embedded server's
// TLS listener serves the certificate its files hold within seconds of a
// renewal, without a restart.
func TestEmbeddedListenerServesARenewedCertificate(t *testing.T) {
	p := newPKI(t)
	e, err := natsbus.StartEmbedded(natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: t.TempDir(),
		TLS: natsbus.TLS{CertFile: p.serverCert, KeyFile: p.serverKey}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(must(os.ReadFile(p.ca)))
	served := func() ([]byte, error) {
		// NATS greets with INFO in clear text, then the client starts TLS.
		addr := strings.TrimPrefix(e.ClientURL(), "tls://")
		conn, err := tlsAfterInfo(addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw, nil
	}
	if got, err := served(); err != nil || !bytes.Equal(got, derOf(t, p.serverCert)) {
		t.Fatalf("served %x (%v), want the first certificate", got, err)
	}
	newCert, newKey := p.leaf(5, x509.ExtKeyUsageServerAuth)
	second := renew(t, newCert, newKey, p.serverCert, p.serverKey)
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		got, err := served()
		if err != nil {
			return err
		}
		if !bytes.Equal(got, second) {
			return errors.New("still the first certificate")
		}
		return nil
	})
}

// tlsAfterInfo connects to a NATS listener as a client does: it reads the
// server's INFO line, sent in clear text, then starts TLS.
func tlsAfterInfo(addr string, tc *tls.Config) (*tls.Conn, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(raw).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		raw.Close()
		return nil, fmt.Errorf("no INFO from %s: %q %v", addr, line, err)
	}
	conn := tls.Client(raw, tc)
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}
