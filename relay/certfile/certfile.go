// SPDX-License-Identifier: Apache-2.0

// Package certfile holds a TLS certificate and key from PEM files, read
// again when their contents change, so that a renewed certificate
// (certbot, cert-manager, a Kubernetes Secret's update) is used without a
// restart: the relay's listeners serve it, and its NATS connection
// presents it on each (re)connection. It also gives the client on a
// listener's own machine (the CLI) a TLS configuration that trusts
// exactly the certificate in that listener's file.
package certfile

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// RecheckEvery is how often, at most, a handshake reads the files again:
// the cost of a renewal is a second of the old certificate.
const RecheckEvery = time.Second

// Pair is a certificate and its key, from their files.
type Pair struct {
	certFile, keyFile string
	usage             x509.ExtKeyUsage // what the certificate must allow
	log               *slog.Logger
	now               func() time.Time

	cert atomic.Pointer[tls.Certificate] // served; handshakes never wait for the files

	// mu is held by the one handshake that reads the files; the others
	// serve cert meanwhile.
	mu      sync.Mutex
	checked time.Time         // when the files were last read
	read    [sha256.Size]byte // digest of the contents cert was made from
	refused [sha256.Size]byte // digest of the state last found unusable, said once
}

// Load reads the certificate and key, which must make a pair, whose
// certificate (the first in its file) allows usage: x509.ExtKeyUsageServerAuth
// for a listener's; x509.ExtKeyUsageAny asks nothing. log says when a
// renewal is taken, or cannot be.
func Load(certFile, keyFile string, usage x509.ExtKeyUsage, log *slog.Logger) (*Pair, error) {
	s := &Pair{certFile: certFile, keyFile: keyFile, usage: usage, log: log, now: time.Now}
	certPEM, keyPEM, err := s.readFiles()
	if err != nil {
		return nil, err
	}
	cert, err := s.parse(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	s.cert.Store(cert)
	s.read, s.checked = digest(certPEM, keyPEM), s.now()
	return s, nil
}

func (s *Pair) readFiles() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(s.certFile); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = os.ReadFile(s.keyFile); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// digest tells one state of the files from another: their contents, or
// why they could not be read.
func digest(parts ...[]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// parse makes a certificate of a pair of PEM texts; its first certificate
// must allow s.usage.
func (s *Pair) parse(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !allows(cert.Leaf, s.usage) {
		return nil, fmt.Errorf("its first certificate's extended key usage leaves out %s", usageNames[s.usage])
	}
	return &cert, nil
}

var usageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageServerAuth: "serverAuth (a TLS server's)",
	x509.ExtKeyUsageClientAuth: "clientAuth (a TLS client's)",
}

// allows says whether c may be used for usage: it names no extended key
// usage (any goes), or names that one or any.
func allows(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	if usage == x509.ExtKeyUsageAny || len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == usage || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// ServerConfig is a listener's TLS configuration: TLS 1.2 at least, the
// certificate from the files.
func (s *Pair) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.Certificate(), nil },
	}
}

// Leaf is the certificate held now, parsed.
func (s *Pair) Leaf() *x509.Certificate { return s.cert.Load().Leaf }

// Certificate is the certificate to present, for a tls.Config's
// GetCertificate or GetClientCertificate. One handshake at a time, and at
// most once per RecheckEvery, reads the files again; a changed pair that
// does not load (a certificate written before its key, say) leaves the
// one held, said once at Warn, until the files change again.
func (s *Pair) Certificate() *tls.Certificate {
	if s.mu.TryLock() {
		s.recheck()
		s.mu.Unlock()
	}
	return s.cert.Load()
}

// recheck reads the files again when it is time; s.mu is held.
func (s *Pair) recheck() {
	now := s.now()
	if now.Sub(s.checked) < RecheckEvery {
		return
	}
	s.checked = now
	certPEM, keyPEM, err := s.readFiles()
	state := digest(certPEM, keyPEM)
	if err == nil {
		if state == s.read {
			// Back to what is served (a broken renewal undone): the same
			// broken files again are news again, to be said.
			s.refused = [sha256.Size]byte{}
			return
		}
		var cert *tls.Certificate
		if cert, err = s.parse(certPEM, keyPEM); err == nil {
			s.cert.Store(cert)
			s.read, s.refused = state, [sha256.Size]byte{}
			s.log.Info("using a renewed TLS certificate", "cert_file", s.certFile, "not_after", cert.Leaf.NotAfter)
			return
		}
	} else {
		state = digest([]byte(err.Error()))
	}
	if state != s.refused {
		s.refused = state
		s.log.Warn("the TLS certificate's files changed but cannot be used; using the certificate read before", "cert_file", s.certFile, "key_file", s.keyFile, "not_after", s.Leaf().NotAfter, "err", err)
	}
}

// ErrOtherCertificate is a client's refusal of a listener that presented
// another certificate than the one its cert_file holds (ClientTrusting).
var ErrOtherCertificate = errors.New("the listener presented a certificate other than the one its cert_file holds: a listener serves new files within a second of their change, unless they do not make a pair it can serve, which its log then says at Warn")

// ClientTrusting is a client's TLS configuration that accepts only the
// server presenting the first certificate in certFile, by whatever name
// or address the client reached it: a command on the relay's machine
// reaches the admin listener on a loopback address the certificate need
// not name, and the file it reads is the one the listener serves. Nothing
// else is trusted: not the CA that signed it, whose other certificates a
// local process could present as well.
func ClientTrusting(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	want, err := firstCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Not verified by a CA or a name: the one certificate accepted is
		// compared whole below (the handshake still proves the server
		// holds its key).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want.Raw) {
				return ErrOtherCertificate
			}
			return nil
		},
	}, nil
}

// firstCertificate is the first CERTIFICATE block of a PEM text, parsed.
func firstCertificate(pemText []byte) (*x509.Certificate, error) {
	for {
		block, rest := pem.Decode(pemText)
		switch {
		case block == nil:
			return nil, errors.New("holds no PEM certificate")
		case block.Type == "CERTIFICATE":
			return x509.ParseCertificate(block.Bytes)
		}
		pemText = rest
	}
}
