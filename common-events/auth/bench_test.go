package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
)

func BenchmarkVerify(b *testing.B) {
	is := testenv.Issuer(b)
	v := auth.NewVerifier(is.Config(), nil)
	tok := testenv.Token(b, is, issuer.Customer, auth.ScopeCustomer)
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkECDSAP256Verify(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("x"))
	sig, _ := ecdsa.SignASN1(rand.Reader, k, h[:])
	for b.Loop() {
		ecdsa.VerifyASN1(&k.PublicKey, h[:], sig)
	}
}
