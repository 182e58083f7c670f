// SPDX-License-Identifier: Apache-2.0

// Package certfiletest writes certificates and keys for tests of TLS
// listeners.
package certfiletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// Pair is a certificate and its key, as files, with the certificate's
// DER bytes and expiry.
type Pair struct {
	CertFile, KeyFile string
	DER               []byte
	NotAfter          time.Time
}

// Write writes a self-signed server certificate for 127.0.0.1 and
// localhost, valid from an hour ago until notAfter, and its key, to
// cert.pem and key.pem in dir (replacing what is there), each readable
// by its owner alone.
func Write(t testing.TB, dir string, notAfter time.Time) Pair {
	t.Helper()
	return WriteBetween(t, dir, time.Now().Add(-time.Hour), notAfter)
}

// WriteBetween is Write with a certificate valid from notBefore, e.g. one
// not valid yet.
func WriteBetween(t testing.TB, dir string, notBefore, notAfter time.Time) Pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "scimrelay test"},
		NotBefore: notBefore, NotAfter: notAfter,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := Pair{CertFile: dir + "/cert.pem", KeyFile: dir + "/key.pem", DER: der, NotAfter: notAfter.Truncate(time.Second)}
	writePEM(t, p.CertFile, "CERTIFICATE", der)
	writePEM(t, p.KeyFile, "EC PRIVATE KEY", keyDER)
	return p
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Pool is a certificate pool of p's certificate alone, for a client that
// trusts it.
func (p Pair) Pool(t testing.TB) *x509.CertPool {
	t.Helper()
	c, err := x509.ParseCertificate(p.DER)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool
}
