// SPDX-License-Identifier: Apache-2.0

package certfile

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scimrelay/scimrelay/relay/certfile/certfiletest"
)

// TestServerTakesRenewedFiles: a changed pair of files is served from the
// first handshake a second after the last look, whatever the files' times;
// a half-written renewal (the new certificate beside the old key) leaves
// the old certificate served, said once, until the key arrives.
func TestServerTakesRenewedFiles(t *testing.T) {
	dir := t.TempDir()
	s, first, log, later := loadWatched(t, dir)
	served := func() []byte {
		t.Helper()
		c, err := s.ServerConfig().GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificate[0]
	}

	info, err := os.Stat(first.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	firstTime := info.ModTime()
	oldKey, err := os.ReadFile(first.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	second := certfiletest.Write(t, dir, time.Now().Add(2*time.Hour))
	newKey, err := os.ReadFile(second.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(second.KeyFile, oldKey, 0o600); err != nil { // the key not yet renewed
		t.Fatal(err)
	}
	if !bytes.Equal(served(), first.DER) {
		t.Fatal("files looked at again within a second")
	}
	for range 3 {
		later()
		if !bytes.Equal(served(), first.DER) {
			t.Fatal("a certificate without its key was served")
		}
	}
	if n := strings.Count(log.String(), "cannot be used"); n != 1 {
		t.Fatalf("the half-written renewal was said %d times, want once:\n%s", n, log.String())
	}
	if err := os.WriteFile(second.KeyFile, newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	// A copy that keeps the old files' times (cp -p, rsync -t) is seen by
	// its contents.
	for _, f := range []string{second.CertFile, second.KeyFile} {
		if err := os.Chtimes(f, firstTime, firstTime); err != nil {
			t.Fatal(err)
		}
	}
	later()
	if !bytes.Equal(served(), second.DER) || !s.Leaf().NotAfter.Equal(second.NotAfter) {
		t.Fatalf("the renewal was not served (expiry %s, want %s):\n%s", s.Leaf().NotAfter, second.NotAfter, log.String())
	}
	if !strings.Contains(log.String(), "using a renewed TLS certificate") {
		t.Errorf("the renewal was not logged:\n%s", log.String())
	}
}

// TestClientTrustsTheFilesCertificateAlone: ClientTrusting accepts the
// server presenting the certificate in the file, by an address or a name
// it does not hold, and no other server.
func TestClientTrustsTheFilesCertificateAlone(t *testing.T) {
	own := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
	other := certfiletest.Write(t, t.TempDir(), time.Now().Add(time.Hour))
	// Served as serve serves a listener (httptest's StartTLS adds a
	// certificate of its own).
	serve := func(p certfiletest.Pair) string {
		s, err := Load(p.CertFile, p.KeyFile, x509.ExtKeyUsageServerAuth, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }), TLSConfig: s.ServerConfig()}
		go func() { _ = srv.ServeTLS(ln, "", "") }()
		t.Cleanup(func() { _ = srv.Close() })
		return "https://" + ln.Addr().String()
	}
	tc, err := ClientTrusting(own.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	ownURL := serve(own)
	// The listener is at 127.0.0.1, which the certificate names; a name
	// it does not hold passes as well.
	elsewhere := tc.Clone()
	elsewhere.ServerName = "elsewhere.invalid"
	for _, c := range []*http.Client{client, {Transport: &http.Transport{TLSClientConfig: elsewhere}}} {
		res, err := c.Get(ownURL)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	_, err = client.Get(serve(other))
	if err == nil || !strings.Contains(err.Error(), ErrOtherCertificate.Error()) {
		t.Fatalf("another certificate: %v, want %v", err, ErrOtherCertificate)
	}
	if _, err := ClientTrusting(own.KeyFile); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("a key file as the certificate: %v", err)
	}
}

// TestBrokenRenewalAgainIsSaidAgain: a half-written renewal (a certificate
// without its key) is said once at Warn; the files put back as they were,
// the same half-written renewal again (a deploy hook run again) is said
// again: it was not, the refusal of the first still remembered.
func TestBrokenRenewalAgainIsSaidAgain(t *testing.T) {
	s, first, log, later := loadWatched(t, t.TempDir())
	served, err := os.ReadFile(first.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(certfiletest.Write(t, t.TempDir(), time.Now().Add(2*time.Hour)).CertFile)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(first.CertFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		later()
		s.Certificate()
	}
	for i := range 2 {
		write(other) // a certificate without its key
		if n := strings.Count(log.String(), "cannot be used"); n != i+1 {
			t.Fatalf("the broken renewal, #%d: said %d times in all, want %d:\n%s", i+1, n, i+1, log.String())
		}
		write(served) // put back
	}
}

// loadWatched loads a pair written in dir for the test, with its log in
// log and its clock in the test's hands: later moves it past RecheckEvery,
// so that the next look reads the files again.
func loadWatched(t *testing.T, dir string) (s *Pair, files certfiletest.Pair, log *bytes.Buffer, later func()) {
	t.Helper()
	files = certfiletest.Write(t, dir, time.Now().Add(time.Hour))
	log = &bytes.Buffer{}
	s, err := Load(files.CertFile, files.KeyFile, x509.ExtKeyUsageServerAuth, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	s.now = func() time.Time { return clock }
	return s, files, log, func() { clock = clock.Add(RecheckEvery) }
}
