// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/config"
	"github.com/scimrelay/scimrelay/relay/certfile/certfiletest"
	"github.com/scimrelay/scimrelay/relay/events/eventstest"
)

// send sends a request with a bearer token through c and returns the
// status and body.
func send(c *http.Client, method, url, token, body string) (int, string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// trusting is a client that trusts pair's certificate alone.
func trusting(t *testing.T, pair certfiletest.Pair) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool(t)}}}
}

// certificateExpiry reads a listener's scimrelay_tls_certificate_expiry_timestamp_seconds.
func certificateExpiry(t *testing.T, c *http.Client, adminURL, listener string) int64 {
	t.Helper()
	status, body, err := send(c, "GET", adminURL+"/metrics", "", "")
	if err != nil || status != http.StatusOK {
		t.Fatalf("/metrics: %d %v", status, err)
	}
	prefix := `scimrelay_tls_certificate_expiry_timestamp_seconds{listener="` + listener + `"} `
	for sc := bufio.NewScanner(strings.NewReader(body)); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(f)
		}
	}
	t.Fatalf("/metrics has no %s", prefix)
	return 0
}

// TestListenersSpeakTLS holds README's "tls and admin.tls": with them set,
// the SCIM and admin listeners speak HTTPS only (a request in clear text,
// with a valid token, is refused before it is read, and changes nothing),
// the CLI and the health check reach the admin listener over HTTPS,
// trusting the certificate in admin.tls.cert_file alone, the certificates'
// expiry is a metric, and a renewed pair of files is served without a
// restart.
func TestListenersSpeakTLS(t *testing.T) {
	dir := t.TempDir()
	first := certfiletest.Write(t, dir, time.Now().Add(48*time.Hour))
	cfg := testConfig(t, t.TempDir())
	cfg.TLS = config.ListenerTLS{CertFile: first.CertFile, KeyFile: first.KeyFile}
	cfg.Admin.TLS = cfg.TLS
	p := startRelay(t, cfg, roleAll)
	if !strings.HasPrefix(p.scimURL, "https://") || !strings.HasPrefix(p.adminURL, "https://") {
		t.Fatalf("listeners at %s and %s, want https", p.scimURL, p.adminURL)
	}
	c := trusting(t, first)
	users := p.scimURL + "/scim/v2/acme/Users"
	if status, body, err := send(c, "POST", users, acmeToken, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`); err != nil || status != http.StatusCreated {
		t.Fatalf("create over TLS: %d %v %s", status, err, body)
	}

	// HTTP/1.1, as over plain HTTP, to a client that would speak HTTP/2.
	h2 := trusting(t, first)
	h2.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	for _, url := range []string{users, p.adminURL + "/healthz"} {
		res, err := h2.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.Proto != "HTTP/1.1" {
			t.Errorf("%s answered over %s, want HTTP/1.1", url, res.Proto)
		}
	}

	// In clear text: refused before the request is read, on both listeners.
	plain := func(url string) string { return "http://" + strings.TrimPrefix(url, "https://") }
	status, body, err := send(http.DefaultClient, "POST", plain(users), acmeToken, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"eve@example.com"}`)
	if err != nil || status != http.StatusBadRequest || !strings.Contains(body, "HTTP request to an HTTPS server") {
		t.Fatalf("create in clear text: %d %v %q, want Go's 400 for HTTP to HTTPS", status, err, body)
	}
	if status, body, err := send(c, "GET", users+"?"+q(`userName eq "eve@example.com"`), acmeToken, ""); err != nil || status != http.StatusOK || !strings.Contains(body, `"totalResults":0`) {
		t.Fatalf("the user sent in clear text: %d %v %s, want none", status, err, body)
	}
	if status, body, err := send(http.DefaultClient, "GET", plain(p.adminURL)+"/admin/v1/tenants", adminSecret, ""); err != nil || status != http.StatusBadRequest || strings.Contains(body, "acme") {
		t.Fatalf("admin API in clear text: %d %v %q", status, err, body)
	}
	// A client that does not trust the certificate stops at the handshake.
	if _, _, err := send(http.DefaultClient, "GET", p.adminURL+"/healthz", "", ""); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the certificate: %v, want a certificate error", err)
	}
	// TLS 1.2 at least.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: first.Pool(t), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}}
	for _, url := range []string{users, p.adminURL + "/healthz"} {
		if _, _, err := send(old, "GET", url, acmeToken, ""); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("%s over TLS 1.1: %v, want a protocol version refusal", url, err)
		}
	}

	// The CLI and the health check, from relay.yaml, as on the relay's machine.
	cliCfg := filepath.Join(t.TempDir(), "relay.yaml")
	text := fmt.Sprintf("admin_listen: %s\nadmin:\n  token: %q\n  tls: {cert_file: %q, key_file: %q}\ntenants:\n  - name: acme\n",
		strings.TrimPrefix(p.adminURL, "https://"), adminSecret, first.CertFile, first.KeyFile)
	if err := os.WriteFile(cliCfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, "token", "list", "--tenant", "acme", "--config", cliCfg); code != exitOK {
		t.Fatalf("token list over TLS: %d %s %s", code, out, stderr)
	}
	if code, out, stderr := cli(t, "healthcheck", "--config", cliCfg); code != exitOK || !strings.Contains(out, "https://") {
		t.Fatalf("healthcheck over TLS: %d %q %q", code, out, stderr)
	}

	for _, listener := range []string{"scim", "admin"} {
		if got, want := certificateExpiry(t, c, p.adminURL, listener), first.NotAfter.Unix(); got != want {
			t.Errorf("%s certificate expires at %d, want %d", listener, got, want)
		}
	}

	// A renewal: new files in place, served within seconds, no restart.
	second := certfiletest.Write(t, dir, time.Now().Add(72*time.Hour))
	renewed := trusting(t, second)
	servesTheRenewal := func(url string) {
		t.Helper()
		eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			res, err := renewed.Get(url)
			if err != nil {
				return err
			}
			res.Body.Close()
			if !bytes.Equal(res.TLS.PeerCertificates[0].Raw, second.DER) {
				return errors.New("still the first certificate")
			}
			return nil
		})
	}
	servesTheRenewal(p.adminURL + "/healthz")
	// The SCIM listener's expiry follows its files before any client
	// has connected to it since.
	eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if got, want := certificateExpiry(t, renewed, p.adminURL, "scim"), second.NotAfter.Unix(); got != want {
			return fmt.Errorf("the SCIM certificate expires at %d, want the renewal's %d", got, want)
		}
		return nil
	})
	servesTheRenewal(p.scimURL + "/scim/v2/acme/ServiceProviderConfig")
	if code, out, stderr := cli(t, "healthcheck", "--config", cliCfg); code != exitOK {
		t.Fatalf("healthcheck after the renewal: %d %q %q", code, out, stderr)
	}

	// A renewal the listener cannot serve (a key of another certificate):
	// it keeps the one it serves, and the CLI, which trusts the file's,
	// says why it refuses the listener, not that the relay is down.
	third := certfiletest.Write(t, t.TempDir(), time.Now().Add(96*time.Hour))
	if err := os.Rename(third.CertFile, second.CertFile); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"healthcheck"}, {"token", "list"}} {
		eventstest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			code, _, stderr := cli(t, append(args, "--config", cliCfg)...)
			if code != exitError || !strings.Contains(stderr, "presented a certificate other than the one its cert_file holds") || strings.Contains(stderr, "is scimrelay serve running") {
				return fmt.Errorf("%s: %d %q", args[0], code, stderr)
			}
			return nil
		})
	}
	res, err := renewed.Get(p.adminURL + "/healthz")
	if err != nil {
		t.Fatalf("the certificate served before the broken renewal: %v", err)
	}
	res.Body.Close()
}

// TestListenerTLSProblems: check refuses listener TLS settings serve
// could not open, naming the field, and serve refuses, naming the field,
// files that do not make a pair it can serve (which check, like a reload,
// does not open).
func TestListenerTLSProblems(t *testing.T) {
	a := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
	b := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
	for _, c := range []struct {
		name         string
		tls          config.ListenerTLS
		field, wants string
		atStart      bool
	}{
		{"missing", config.ListenerTLS{CertFile: a.CertFile, KeyFile: a.KeyFile + ".gone"}, "tls.key_file", "does not exist", false},
		{"no key", config.ListenerTLS{CertFile: a.CertFile}, "tls.key_file", "must be set with", false},
		{"not a pair", config.ListenerTLS{CertFile: a.CertFile, KeyFile: b.KeyFile}, "tls", "cannot be served: tls: private key does not match public key", true},
		{"not a certificate", config.ListenerTLS{CertFile: a.KeyFile, KeyFile: a.KeyFile}, "tls", "cannot be served", true},
	} {
		for _, prefix := range []string{"", "admin."} {
			cfg := testConfig(t, t.TempDir())
			if prefix == "" {
				cfg.TLS = c.tls
			} else {
				cfg.Admin.TLS = c.tls
			}
			if c.atStart {
				if ps := checkConfig(cfg, roleAll); len(ps) != 0 {
					t.Errorf("%stls, %s: check found %v; only starting opens the files", prefix, c.name, ps)
				}
				srv, err := newServer(context.Background(), cfg, roleAll, slog.New(slog.DiscardHandler), io.Discard)
				if err == nil {
					_ = srv.close()
				}
				if err == nil || !strings.HasPrefix(err.Error(), prefix+c.field+": ") || !strings.Contains(err.Error(), c.wants) {
					t.Errorf("%stls, %s: serve: %v, want %s%s saying %q", prefix, c.name, err, prefix, c.field, c.wants)
				}
				continue
			}
			found := false
			for _, p := range checkConfig(cfg, roleAll) {
				found = found || p.Field == prefix+c.field && strings.Contains(p.Message, c.wants)
			}
			if !found {
				t.Errorf("%stls, %s: problems %v, want %s%s saying %q", prefix, c.name, checkConfig(cfg, roleAll), prefix, c.field, c.wants)
			}
		}
	}
	// A delivery worker opens no SCIM listener: tls is not its concern.
	cfg := testConfig(t, t.TempDir())
	cfg.TLS = config.ListenerTLS{CertFile: a.CertFile + ".gone", KeyFile: b.KeyFile}
	for _, p := range checkConfig(cfg, roleSinks) {
		if strings.HasPrefix(p.Field, "tls") {
			t.Errorf("role sinks: %v", p)
		}
	}
}

// TestClientsCannotWriteTheServerLogAtWill: a failed TLS handshake on
// either listener (a client in clear text, one that does not trust the
// certificate, a connection that sends nothing) counts in
// scimrelay_tls_handshake_errors_total{listener} and is said at Debug:
// each was a Warn line Go's server wrote, which anyone who reaches a port
// could make it write at will.
func TestClientsCannotWriteTheServerLogAtWill(t *testing.T) {
	pair := certfiletest.Write(t, t.TempDir(), time.Now().Add(48*time.Hour))
	cfg := testConfig(t, t.TempDir())
	cfg.TLS = config.ListenerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
	cfg.Admin.TLS = cfg.TLS
	var logs eventstest.Log
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), io.Discard)
	const rounds = 5
	for _, l := range []struct{ listener, base string }{{"scim", p.scimURL}, {"admin", p.adminURL}} {
		addr := strings.TrimPrefix(l.base, "https://")
		for range rounds {
			// In clear text: Go's 400.
			res, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			// Not trusting the certificate.
			if _, err := http.Get(l.base + "/healthz"); err == nil {
				t.Fatal("a client without the certificate got through")
			}
			// Connected, then gone.
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
		}
		eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if n := metric(t, p, "scimrelay_tls_handshake_errors_total", "listener", l.listener); n != 3*rounds {
				return fmt.Errorf("%s: %v failed handshakes counted, want %d", l.listener, n, 3*rounds)
			}
			return nil
		})
	}
	eventstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), `"level":"DEBUG","msg":"http: TLS handshake error`); n != 2*3*rounds {
			return fmt.Errorf("%d failed handshakes said at Debug, want %d", n, 2*3*rounds)
		}
		return nil
	})
	if n := strings.Count(logs.String(), `"level":"WARN","msg":"http: `); n != 0 {
		t.Errorf("%d lines of Go's server said at Warn, want none:\n%s", n, logs.String())
	}
}

// TestCertificateNotValidNowIsSaid: a listener whose certificate has
// expired, or is not valid yet, is said at Warn at start, naming the
// listener, and served all the same (a renewal may be on its way, and
// the listener then takes it without a restart): clients that check
// the certificate's dates refuse it.
func TestCertificateNotValidNowIsSaid(t *testing.T) {
	now := time.Now()
	expired := certfiletest.WriteBetween(t, t.TempDir(), now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	early := certfiletest.WriteBetween(t, t.TempDir(), now.Add(24*time.Hour), now.Add(48*time.Hour))
	cfg := testConfig(t, t.TempDir())
	cfg.TLS = config.ListenerTLS{CertFile: expired.CertFile, KeyFile: expired.KeyFile}
	cfg.Admin.TLS = config.ListenerTLS{CertFile: early.CertFile, KeyFile: early.KeyFile}
	var logs eventstest.Log
	p := startRelayWith(t, cfg, roleAll, slog.New(slog.NewJSONHandler(&logs, nil)), io.Discard)

	said := map[string]any{}
	for _, r := range warnings(t, logs.String(), "the TLS certificate is not valid now") {
		said[r["listener"].(string)] = r["cert_file"]
	}
	if want := map[string]any{"scim": expired.CertFile, "admin": early.CertFile}; !maps.Equal(said, want) {
		t.Errorf("said of %v, want %v; the log:\n%s", said, want, logs.String())
	}
	for _, l := range []struct {
		url  string
		pair certfiletest.Pair
	}{{p.scimURL + "/scim/v2/acme/ServiceProviderConfig", expired}, {p.adminURL + "/healthz", early}} {
		if _, _, err := send(trusting(t, l.pair), "GET", l.url, acmeToken, ""); err == nil || !strings.Contains(err.Error(), "expired or is not yet valid") {
			t.Errorf("%s to a client trusting its certificate: %v, want it refused for its dates", l.url, err)
		}
		dates := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		req, err := http.NewRequest("GET", l.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+acmeToken)
		res, err := dates.Do(req)
		if err != nil {
			t.Fatalf("%s, its certificate's dates unchecked: %v", l.url, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !bytes.Equal(res.TLS.PeerCertificates[0].Raw, l.pair.DER) {
			t.Errorf("%s: %d, want 200 with the certificate its files hold", l.url, res.StatusCode)
		}
	}
}
