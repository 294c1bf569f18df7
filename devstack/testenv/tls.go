package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/orderflow/devstack/pki"
)

// Authority is a certificate authority made for one test, and the PEM files of what it
// signs: TLS for a broker, and clients' certificates.
type Authority struct {
	*pki.Authority
	t testing.TB
}

// NewAuthority makes a CA valid for the next hour.
func NewAuthority(t testing.TB) *Authority {
	t.Helper()
	a, err := pki.New(t.TempDir(), "orderflow test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &Authority{Authority: a, t: t}
}

// Issue signs a certificate named name for 127.0.0.1 and localhost, a server's
// (x509.ExtKeyUsageServerAuth) or a client's (ExtKeyUsageClientAuth), and returns it
// with the PEM files of it and its key.
func (a *Authority) Issue(name string, usage x509.ExtKeyUsage) (_ tls.Certificate, certFile, keyFile string) {
	a.t.Helper()
	is, err := a.Authority.Issue(name, usage)
	if err != nil {
		a.t.Fatal(err)
	}
	return is.Certificate, is.CertFile, is.KeyFile
}
