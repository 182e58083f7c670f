// SPDX-License-Identifier: Apache-2.0

// Package certfile serves a listener's TLS certificate from a PEM
// certificate file and key file, read again when either changes on disk,
// so that a renewed certificate (certbot, cert-manager, a Kubernetes
// Secret's update) is served without a restart; and it gives the client
// on the listener's own machine (the CLI) a TLS configuration that trusts
// exactly the certificate in that file.
package certfile

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// RecheckEvery is how often, at most, a handshake looks at the files
// again: the cost of a renewal is a second of the old certificate.
const RecheckEvery = time.Second

// Server is a listener's certificate, from its files.
type Server struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	read    stamp     // of the files cert was read from
	refused string    // the files' state last found unusable, said once
	checked time.Time // when the files were last looked at
}

// stamp tells one version of the pair of files from another.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func stampOf(certFile, keyFile string) (stamp, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return stamp{}, err
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return stamp{}, err
	}
	return stamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// Load reads the certificate and key, which must be a pair. log says when
// a renewal is taken, or cannot be.
func Load(certFile, keyFile string, log *slog.Logger) (*Server, error) {
	st, err := stampOf(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := load(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &Server{certFile: certFile, keyFile: keyFile, log: log, now: time.Now, cert: cert, read: st, checked: time.Now()}, nil
}

// load reads a pair of files; the leaf must be a certificate a server may
// present.
func load(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if !servesTLS(cert.Leaf) {
		return nil, fmt.Errorf("%s: its first certificate is not for a TLS server (extended key usage without serverAuth)", certFile)
	}
	return &cert, nil
}

func servesTLS(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// Config is the server side's TLS configuration: TLS 1.2 at least, the
// certificate from the files.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.current(), nil },
	}
}

// NotAfter is when the certificate served now expires.
func (s *Server) NotAfter() time.Time {
	return s.current().Leaf.NotAfter
}

// current is the certificate to serve: the files are looked at again at
// most once per RecheckEvery, and a changed pair that does not load (a
// certificate written before its key, say) leaves the one served, said
// once at Warn, until the files change again.
func (s *Server) current() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < RecheckEvery {
		return s.cert
	}
	s.checked = now
	st, err := stampOf(s.certFile, s.keyFile)
	if err == nil && st == s.read {
		return s.cert
	}
	if err == nil {
		var cert *tls.Certificate
		if cert, err = load(s.certFile, s.keyFile); err == nil {
			s.cert, s.read, s.refused = cert, st, ""
			s.log.Info("serving a renewed TLS certificate", "cert_file", s.certFile, "not_after", cert.Leaf.NotAfter)
			return s.cert
		}
	}
	if why := fmt.Sprint(st, err); why != s.refused {
		s.refused = why
		s.log.Warn("the TLS certificate's files changed but cannot be used; serving the one read before", "cert_file", s.certFile, "key_file", s.keyFile, "not_after", s.cert.Leaf.NotAfter, "err", err)
	}
	return s.cert
}

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
	var want []byte
	for rest := b; want == nil; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", certFile)
		}
		if block.Type == "CERTIFICATE" {
			want = block.Bytes
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is not verified by name: the one certificate accepted
		// is compared whole below.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
				return errNotTheFilesCertificate
			}
			return nil
		},
	}, nil
}

var errNotTheFilesCertificate = errors.New("the listener presented a certificate other than the one its cert_file holds (renewed in the last seconds? try again)")
