package testenv

import (
	"net/http"
	"testing"
	"time"

	"github.com/orderflow/devstack/issuer"
)

// Issuer starts a development token issuer for this test, on a free port of 127.0.0.1,
// for the audience "orderflow"; it stops when the test ends.
func Issuer(t testing.TB) *issuer.Issuer {
	t.Helper()
	is, err := issuer.Start("127.0.0.1:0", "orderflow")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = is.Close() })
	return is
}

// Token mints a token of is for sub with scopes, valid for an hour.
func Token(t testing.TB, is *issuer.Issuer, sub string, scopes ...string) string {
	t.Helper()
	tok, err := is.Mint(sub, scopes, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Client returns an HTTP client that presents a token of is for sub with scopes on every
// request without an Authorization header of its own.
func Client(t testing.TB, is *issuer.Issuer, sub string, scopes ...string) *http.Client {
	t.Helper()
	return &http.Client{Transport: issuer.Bearer{Token: Token(t, is, sub, scopes...)}}
}
