// Package pki makes a certificate authority in a folder and signs certificates with it:
// the TLS of devstack's Apache Kafka (the broker's certificate, what clients trust) and of
// the tests that need one.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Authority is a certificate authority and the folder holding the PEM files of it and of
// what it signs.
type Authority struct {
	File string // its own certificate, PEM: what a client trusts
	Cert *x509.Certificate

	dir string
	key *ecdsa.PrivateKey
}

// New makes a CA valid for valid, its files in dir (created if need be).
func New(dir, name string, valid time.Duration) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	a := &Authority{dir: dir}
	var err error
	if a.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(valid), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &a.key.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	if a.Cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		return nil, err
	}
	if a.File, err = a.write("ca.pem", pemOf("CERTIFICATE", der)); err != nil {
		return nil, err
	}
	if _, err := a.write("ca-key.pem", pemOf("PRIVATE KEY", keyDER)); err != nil {
		return nil, err
	}
	return a, nil
}

// Open is the authority New made in dir, or a new one there when dir holds none or one
// about to expire.
func Open(dir, name string, valid time.Duration) (*Authority, error) {
	certPEM, err1 := os.ReadFile(filepath.Join(dir, "ca.pem"))
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err := errors.Join(err1, err2); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return New(dir, name, valid)
		}
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate authority in %s: %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || time.Until(cert.NotAfter) < valid/10 {
		return New(dir, name, valid)
	}
	return &Authority{File: filepath.Join(dir, "ca.pem"), Cert: cert, dir: dir, key: key}, nil
}

// Pool is the authority as a pool of one CA, for a server checking clients' certificates.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

// Issued is a certificate the authority signed, and its PEM files.
type Issued struct {
	tls.Certificate
	CertFile string // the certificate
	KeyFile  string // its key, PKCS #8
	// Bundle holds the key, then the certificate: what Apache Kafka reads as a PEM
	// keystore (ssl.keystore.type=PEM).
	Bundle string
}

// Issue signs a certificate named name for 127.0.0.1 and localhost (and hosts), valid
// as long as the authority, a server's (x509.ExtKeyUsageServerAuth) or a client's
// (x509.ExtKeyUsageClientAuth).
func (a *Authority) Issue(name string, usage x509.ExtKeyUsage, hosts ...string) (Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: a.Cert.NotAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: append([]string{"localhost"}, hosts...),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, &key.PublicKey, a.key)
	if err != nil {
		return Issued{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Issued{}, err
	}
	certPEM, keyPEM := pemOf("CERTIFICATE", der), pemOf("PRIVATE KEY", keyDER)
	var is Issued
	if is.CertFile, err = a.write(name+".pem", certPEM); err != nil {
		return Issued{}, err
	}
	if is.KeyFile, err = a.write(name+"-key.pem", keyPEM); err != nil {
		return Issued{}, err
	}
	if is.Bundle, err = a.write(name+"-keystore.pem", append(keyPEM, certPEM...)); err != nil {
		return Issued{}, err
	}
	if is.Certificate, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return Issued{}, err
	}
	return is, nil
}

func (a *Authority) write(name string, data []byte) (string, error) {
	path := filepath.Join(a.dir, name)
	return path, os.WriteFile(path, data, 0o600)
}

func pemOf(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// Certificate is the first certificate in pemData (a certificate file or a keystore).
func Certificate(pemData []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		if b, pemData = pem.Decode(pemData); b == nil {
			return nil, errors.New("no certificate in the PEM data")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}
