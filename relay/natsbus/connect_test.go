// SPDX-License-Identifier: Apache-2.0

package natsbus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scimrelay/scimrelay/relay/events/eventstest"
	"github.com/scimrelay/scimrelay/relay/natsbus"
)

// runAuthServer starts an external NATS server that admits only the given
// users and nkeys, as an operator would configure one.
func runAuthServer(t *testing.T, mod func(*server.Options)) *server.Server {
	t.Helper()
	return eventstest.RunServerWith(t, t.TempDir(), -1, mod)
}

// TestConnectExternalCredentials: the relay reaches an external NATS with
// each credential relay.yaml offers, and is refused without one.
func TestConnectExternalCredentials(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	relayKey, seedFile := newSubscriber(t, "relay", "")
	s := runAuthServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "relay", Password: "s3cret-password"}}
		o.Nkeys = []*server.NkeyUser{{Nkey: relayKey.PublicKey}}
	})
	for name, o := range map[string]natsbus.Options{
		"nkey seed file": {URL: s.ClientURL(), NkeySeedFile: seedFile},
		"user/password":  {URL: s.ClientURL(), User: "relay", Password: "s3cret-password"},
	} {
		nc, err := natsbus.Connect(o, nil, log)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}
	for name, o := range map[string]natsbus.Options{
		"no credential":  {URL: s.ClientURL()},
		"wrong password": {URL: s.ClientURL(), User: "relay", Password: "guess"},
	} {
		if nc, err := natsbus.Connect(o, nil, log); err == nil {
			nc.Close()
			t.Fatalf("%s: connected", name)
		} else if !strings.Contains(err.Error(), "Authorization Violation") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := natsbus.Connect(natsbus.Options{URL: s.ClientURL(), NkeySeedFile: filepath.Join(t.TempDir(), "missing.nk")}, nil, log); err == nil || !strings.Contains(err.Error(), "nats.nkey") {
		t.Fatalf("a missing seed file: %v", err)
	}
}

// pki is a test CA and a server and a client certificate it signed for
// 127.0.0.1, as PEM files; leaf signs more.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	leaf                                             func(serial int64, usage x509.ExtKeyUsage) (cert, key string)
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return write(fmt.Sprintf("cert%d.pem", serial), "CERTIFICATE", der), write(fmt.Sprintf("key%d.pem", serial), "EC PRIVATE KEY", keyDER)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER), leaf: leaf}
	p.serverCert, p.serverKey = leaf(2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf(3, x509.ExtKeyUsageClientAuth)
	return p
}

// TestConnectTimeoutDefault holds relay.yaml's "connect_timeout: 0: the
// default, 5s": each attempt of a connection made with 0 (and with a value
// set) is bounded by it.
func TestConnectTimeoutDefault(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s := eventstest.RunServer(t)
	for set, want := range map[time.Duration]time.Duration{0: 5 * time.Second, 3 * time.Second: 3 * time.Second} {
		nc, err := natsbus.Connect(natsbus.Options{URL: s.ClientURL(), ConnectTimeout: set}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		if nc.Opts.Timeout != want {
			t.Errorf("connect_timeout %s: each attempt bounded by %s, want %s", set, nc.Opts.Timeout, want)
		}
		nc.Close()
	}
}

// TestSilentServerIsGivenUp: a server that stops answering without
// closing the connection (its machine lost, a network partition) is given
// up within 30 s (natsbus's pingInterval and maxPingsOut), and the connection
// goes on through a server that answers; with nats.go's defaults it stayed
// on the silent connection 4 to 6 minutes, events waiting in the outbox
// and deliveries paused. Here the server that answers is the same one,
// reached by a new connection through the proxy, whose old connections
// stay open and pass nothing more.
func TestSilentServerIsGivenUp(t *testing.T) {
	t.Parallel() // it waits out the pings, 20 to 30 s
	s := eventstest.RunServer(t)
	p := eventstest.NewSilencingProxy(t, s.Addr().String())
	logs := &eventstest.Log{}
	nc, err := natsbus.Connect(natsbus.Options{URL: "nats://" + p.Addr}, nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.Silence()
	silenced := time.Now()
	if err := nc.FlushTimeout(time.Second); err == nil {
		t.Fatal("a round trip through the silenced connection was answered")
	}
	eventstest.CheckFor(t, 40*time.Second, 100*time.Millisecond, func() error {
		if nc.Stats().Reconnects == 0 {
			return fmt.Errorf("still on the silent connection %s after it fell silent", time.Since(silenced).Round(time.Second))
		}
		return nil
	})
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("a round trip after the reconnection: %v", err)
	}
	if !strings.Contains(logs.String(), "disconnected from NATS") || !strings.Contains(logs.String(), nats.ErrStaleConnection.Error()) {
		t.Fatalf("the log does not say the connection was given up as stale:\n%s", logs)
	}
}

// TestEmbeddedTLS: with a certificate the embedded listener speaks TLS
// only; with a CA too, a subscriber must also present a client
// certificate. The relay's own in-process connection needs neither.
func TestEmbeddedTLS(t *testing.T) {
	p := newPKI(t)
	sub, seed := newSubscriber(t, "billing", "")
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutual=%v", mutual), func(t *testing.T) {
			tlsOpts := natsbus.TLS{CertFile: p.serverCert, KeyFile: p.serverKey}
			if mutual {
				tlsOpts.CAFile = p.ca
			}
			log := slog.New(slog.DiscardHandler)
			e, err := natsbus.StartEmbedded(natsbus.Options{Listen: fmt.Sprintf("127.0.0.1:%d", eventstest.FreePort(t)), StoreDir: t.TempDir(), TLS: tlsOpts}, []natsbus.Subscriber{sub}, log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(e.Shutdown)
			if !strings.HasPrefix(e.ClientURL(), "tls://") {
				t.Fatalf("client URL %s", e.ClientURL())
			}
			relayConn, err := natsbus.Connect(natsbus.Options{}, e, log)
			if err != nil {
				t.Fatalf("the relay's in-process connection: %v", err)
			}
			relayConn.Close()
			nkey := must(nats.NkeyOptionFromSeed(seed))
			plain := strings.Replace(e.ClientURL(), "tls://", "nats://", 1)
			if nc, err := nats.Connect(plain, nkey, nats.MaxReconnects(0)); err == nil {
				nc.Close()
				t.Fatal("connected without TLS")
			}
			opts := []nats.Option{nkey, nats.RootCAs(p.ca), nats.MaxReconnects(0)}
			if mutual {
				if nc, err := nats.Connect(e.ClientURL(), opts...); err == nil {
					nc.Close()
					t.Fatal("connected without a client certificate")
				}
				opts = append(opts, nats.ClientCert(p.clientCert, p.clientKey))
			}
			nc, err := nats.Connect(e.ClientURL(), opts...)
			if err != nil {
				t.Fatalf("connecting over TLS: %v", err)
			}
			nc.Close()
			// Subscribers change without a restart under TLS too.
			if err := e.SetSubscribers(nil); err != nil {
				t.Fatalf("reloading with TLS: %v", err)
			}
			if nc, err := nats.Connect(e.ClientURL(), opts...); err == nil {
				nc.Close()
				t.Fatal("connected after being removed")
			}
		})
	}
}

// TestConnectExternalTLS: the relay reaches an external NATS that
// requires TLS and a client certificate, with nats.tls.
func TestConnectExternalTLS(t *testing.T) {
	p := newPKI(t)
	_, url := runTLSServer(t, p)
	log := slog.New(slog.DiscardHandler)
	nc, err := natsbus.Connect(natsbus.Options{URL: url, TLS: natsbus.TLS{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if nc, err := natsbus.Connect(natsbus.Options{URL: url, TLS: natsbus.TLS{CAFile: p.ca}}, nil, log); err == nil {
		nc.Close()
		t.Fatal("connected without the client certificate the server requires")
	}
}

// runTLSServer runs an external NATS that requires TLS with p's server
// certificate and a client certificate p's CA signed; url is its tls://.
func runTLSServer(t *testing.T, p pki) (s *server.Server, url string) {
	t.Helper()
	s = runAuthServer(t, func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig, o.TLS, o.TLSVerify = tc, true, true
	})
	return s, strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
}

// TestEmbeddedListenerBeyondLoopbackWithoutTLSWarns: the nkey signature
// protects a subscriber's sign-in only, so an embedded listener that other
// machines can reach without TLS sends every event it serves in clear
// text: the relay says so at start. On loopback, or with TLS, it does not.
func TestEmbeddedListenerBeyondLoopbackWithoutTLSWarns(t *testing.T) {
	p := newPKI(t)
	for _, tt := range []struct {
		host string
		tls  bool
		warn bool
	}{
		{"0.0.0.0", false, true},
		{"0.0.0.0", true, false},
		{"127.0.0.1", false, false},
		{"localhost", false, false},
	} {
		logs := &eventstest.Log{}
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		o := natsbus.Options{Listen: fmt.Sprintf("%s:%d", tt.host, eventstest.FreePort(t)), StoreDir: t.TempDir()}
		if tt.tls {
			o.TLS = natsbus.TLS{CertFile: p.serverCert, KeyFile: p.serverKey}
		}
		e, err := natsbus.StartEmbedded(o, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		e.Shutdown()
		if got := strings.Contains(logs.String(), "without TLS"); got != tt.warn {
			t.Errorf("listening on %s, TLS %t: warned %t, want %t\n%s", tt.host, tt.tls, got, tt.warn, logs.String())
		}
	}
}

// TestReconnectLogShowsNoCredentialOfTheURL: README says the relay redacts
// a URL's user information wherever it shows one, "a literal password or
// lone user (a NATS token) before @". nats.url may carry the token as a
// lone user (nats://TOKEN@host:4222, which nats.go sends as the token):
// the "reconnected to NATS" line at Info must not show it, nor the
// password of nats://user:password@host.
func TestReconnectLogShowsNoCredentialOfTheURL(t *testing.T) {
	const (
		token    = "natsTok3nS3cret0123456789"
		password = "natsPassw0rdS3cret0123"
	)
	for name, tt := range map[string]struct {
		edit     func(*server.Options)
		userinfo string
	}{
		"token as lone user": {func(o *server.Options) { o.Authorization = token }, token},
		"user and password":  {func(o *server.Options) { o.Users = []*server.User{{Username: "relay", Password: password}} }, "relay:" + password},
	} {
		t.Run(name, func(t *testing.T) {
			dir, port := t.TempDir(), eventstest.FreePort(t)
			s := eventstest.RunServerWith(t, dir, port, tt.edit)
			var buf eventstest.Log
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			url := fmt.Sprintf("nats://%s@127.0.0.1:%d", tt.userinfo, port)
			nc, err := natsbus.Connect(natsbus.Options{URL: url}, nil, log)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// The server restarts, as on an upgrade: the relay reconnects.
			s.Shutdown()
			s.WaitForShutdown()
			eventstest.RunServerWith(t, dir, port, tt.edit)
			eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if !strings.Contains(buf.String(), "reconnected to NATS") {
					return fmt.Errorf("no reconnection logged yet:\n%s", buf.String())
				}
				return nil
			})
			out := buf.String()
			for _, secret := range []string{token, password} {
				if strings.Contains(out, secret) {
					t.Errorf("the Info log shows the credential %q of nats.url:\n%s", secret, out)
				}
			}
		})
	}
}

// TestReconnectingThroughRefusals: README, NATS: the relay reconnects
// for ever, and says why it cannot, once a minute per reason: a server
// away, then one that comes back refusing the relay's credential (one
// restarted before its users were loaded, a credential rotated on the
// server first) made nats.go close the connection for good at its second
// refusal: the relay never reconnected once the server took it again,
// readyz failing until a restart by hand; each refusal was said, every
// second, and a dial refused not at all.
func TestReconnectingThroughRefusals(t *testing.T) {
	dir, port := t.TempDir(), eventstest.FreePort(t)
	s := eventstest.RunServerAt(t, dir, port)
	var buf eventstest.Log
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc, err := natsbus.Connect(natsbus.Options{URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s.Shutdown()
	s.WaitForShutdown()
	// Away: why each attempt failed is said (once a minute).
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(buf.String(), "reconnecting to NATS failed") || !strings.Contains(buf.String(), "connection refused") {
			return fmt.Errorf("the log:\n%s", buf.String())
		}
		return nil
	})
	s = eventstest.RunServerWith(t, dir, port, func(o *server.Options) {
		o.Users = []*server.User{{Username: "other", Password: "other-secret"}}
	})
	// Refused three times at least (the second closed the connection).
	away := nc.Stats().Reconnects
	refused := func() int { return int(nc.Stats().Reconnects - away) }
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if n := refused(); n < 3 || nc.IsClosed() {
			return fmt.Errorf("%d refusals, the connection closed: %v", n, nc.IsClosed())
		}
		return nil
	})
	if n := strings.Count(buf.String(), "uthorization"); n != 1 {
		t.Errorf("%d refusals said in %d lines, want one:\n%s", refused(), n, buf.String())
	}
	s.Shutdown()
	s.WaitForShutdown()
	eventstest.RunServerAt(t, dir, port)
	eventstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not reconnected (closed %v)", nc.IsClosed())
		}
		return nil
	})
}
