package issuer_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
)

// The issuer opened in a folder keeps its key: tokens minted before a restart, and by
// Load meanwhile, verify against the restarted issuer's keys. The private key is its
// owner's alone.
func TestAnOpenedIssuerKeepsItsKey(t *testing.T) {
	dir := t.TempDir()
	first, err := issuer.Open(dir, "127.0.0.1:0", "orderflow")
	if err != nil {
		t.Fatal(err)
	}
	before, err := first.Mint(issuer.Customer, []string{auth.ScopeCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := first.URL[len("http://"):]
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := issuer.Open(dir, addr, "orderflow")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	loaded, err := issuer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	fromLoad, err := loaded.Mint(issuer.Operator, []string{auth.ScopeOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v := auth.NewVerifier(again.Config(), nil)
	for name, tok := range map[string]string{"minted before the restart": before, "minted by Load": fromLoad} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "signing-key.jwk"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signing key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if _, err := issuer.Load(t.TempDir()); err == nil {
		t.Error("Load of a folder without an issuer did not fail")
	}
}
