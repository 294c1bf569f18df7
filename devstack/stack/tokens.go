package stack

import (
	"os"
	"path/filepath"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
)

// Audience is the audience of the local stack's tokens.
const Audience = "orderflow"

// Token mints a token the services accept: for sub, with scopes, valid for ttl.
func (s *Stack) Token(sub string, scopes []string, ttl time.Duration) (string, error) {
	return s.Issuer.Mint(sub, scopes, ttl)
}

// DemoTokens are the tokens WriteTokens writes, by file name: the demo customer, a
// second customer and an operator.
var DemoTokens = []struct {
	File, Subject string
	Scopes        []string
}{
	{"customer.jwt", issuer.Customer, []string{auth.ScopeCustomer}},
	{"customer2.jwt", issuer.Customer2, []string{auth.ScopeCustomer}},
	{"operator.jwt", issuer.Operator, []string{auth.ScopeOperator}},
}

// WriteTokens writes a fresh token of each of DemoTokens, valid for ttl, into dir.
func (s *Stack) WriteTokens(dir string, ttl time.Duration) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range DemoTokens {
		tok, err := s.Token(d.Subject, d.Scopes, ttl)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, d.File), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}
