package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
)

const audience = "orderflow"

func start(t *testing.T) (*issuer.Issuer, *auth.Verifier) {
	t.Helper()
	is, err := issuer.Start("127.0.0.1:0", audience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = is.Close() })
	return is, auth.NewVerifier(auth.Config{Issuer: is.URL, Audience: audience, JWKSURL: is.JWKSURL()}, nil)
}

func mint(t *testing.T, is *issuer.Issuer, sub string, scopes ...string) string {
	t.Helper()
	tok, err := is.Mint(sub, scopes, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// issuerKey fetches the issuer's published key set and returns its one key.
func issuerKey(t *testing.T, is *issuer.Issuer) jwk.Key {
	t.Helper()
	set, err := jwk.Fetch(context.Background(), is.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	k, ok := set.Key(0)
	if !ok {
		t.Fatal("empty JWKS")
	}
	return k
}

// claims are a token's claims as the issuer would write them, for forging.
func claims(t *testing.T, is *issuer.Issuer, edit func(b *jwt.Builder)) jwt.Token {
	t.Helper()
	now := time.Now()
	b := jwt.NewBuilder().Issuer(is.URL).Audience([]string{audience}).Subject("c-1").
		IssuedAt(now).NotBefore(now).Expiration(now.Add(time.Hour))
	if edit != nil {
		edit(b)
	}
	tok, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signedByIssuer is a token the issuer really signed, with claims edited, or one removed.
func signedByIssuer(t *testing.T, is *issuer.Issuer, edit func(b *jwt.Builder), remove string) string {
	t.Helper()
	tok := claims(t, is, edit)
	if remove != "" {
		if err := tok.Remove(remove); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := is.Sign(tok)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// unsigned is tok with "alg": "none" and no signature.
func unsigned(t *testing.T, tok jwt.Token, kid string) string {
	t.Helper()
	payload, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`)) + "." + enc(payload) + "."
}

// signWith signs tok with a key of ours, under kid.
func signWith(t *testing.T, tok jwt.Token, alg jwa.SignatureAlgorithm, key any, kid string) string {
	t.Helper()
	hdr := jws.NewHeaders()
	if kid != "" {
		_ = hdr.Set(jws.KeyIDKey, kid)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

func TestAValidTokenSpeaksForItsSubject(t *testing.T) {
	is, v := start(t)
	p, err := v.Verify(context.Background(), mint(t, is, "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93", auth.ScopeOperator))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93" || !p.Has(auth.ScopeOperator) {
		t.Errorf("principal = %+v", p)
	}
	p, err = v.Verify(context.Background(), mint(t, is, "c-2"))
	if err != nil || p.Has(auth.ScopeOperator) {
		t.Errorf("customer token: %+v, %v; want no operator scope", p, err)
	}
}

// Every way a token can be wrong is refused as an invalid token.
func TestTokensThatMustNotGetIn(t *testing.T) {
	is, v := start(t)
	kid, _ := issuerKey(t, is).KeyID()
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubBytes, err := json.Marshal(issuerKey(t, is)) // what an attacker would use as an HMAC secret
	if err != nil {
		t.Fatal(err)
	}
	valid := mint(t, is, "c-1")
	parts := strings.Split(valid, ".")
	tests := map[string]string{
		"empty":                          "",
		"garbage":                        "not-a-token",
		"two parts":                      parts[0] + "." + parts[1],
		"wrong signature":                parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("x", 64))),
		"payload swapped":                parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+is.URL+`","aud":"orderflow","sub":"admin","exp":9999999999,"scope":"orderflow:operator"}`)) + "." + parts[2],
		"another key, same kid":          signWith(t, claims(t, is, nil), jwa.ES256(), other, kid),
		"unknown kid":                    signWith(t, claims(t, is, nil), jwa.ES256(), other, "someone-else"),
		"no kid":                         signWith(t, claims(t, is, nil), jwa.ES256(), other, ""),
		"HMAC keyed with the public key": signWith(t, claims(t, is, nil), jwa.HS256(), pubBytes, kid),
		"alg none":                       unsigned(t, claims(t, is, nil), kid),
		"wrong issuer":                   signedByIssuer(t, is, func(b *jwt.Builder) { b.Issuer("https://evil.example") }, ""),
		"wrong audience":                 signedByIssuer(t, is, func(b *jwt.Builder) { b.Audience([]string{"someone-else"}) }, ""),
		"expired":                        signedByIssuer(t, is, func(b *jwt.Builder) { b.Expiration(time.Now().Add(-time.Hour)) }, ""),
		"not yet valid":                  signedByIssuer(t, is, func(b *jwt.Builder) { b.NotBefore(time.Now().Add(time.Hour)) }, ""),
		"no expiry":                      signedByIssuer(t, is, nil, "exp"),
		"no subject":                     signedByIssuer(t, is, nil, "sub"),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := v.Verify(context.Background(), tok)
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalidToken", p, err)
			}
		})
	}
}

// keyServer serves a JWKS that a test can change, and counts the fetches.
type keyServer struct {
	set     atomic.Pointer[jwk.Set]
	fetches atomic.Int32
	down    atomic.Bool
}

func (ks *keyServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ks.fetches.Add(1)
	if ks.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(*ks.set.Load())
}

// newKey is a signing key with its public JWK (kid, ES256).
func newKey(t *testing.T, kid string) (*ecdsa.PrivateKey, jwk.Set) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, kid)
	_ = pub.Set(jwk.AlgorithmKey, jwa.ES256())
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	return priv, set
}

// A rotated key is fetched when a token names it; made-up key ids do not make the
// verifier fetch more than once per MinRefresh; keys that cannot be fetched at all make
// every token unverifiable, said as ErrKeysUnavailable (a 503, not a 401).
func TestKeysAreFetchedWhenNeededAndNoMore(t *testing.T) {
	ks := &keyServer{}
	old, oldSet := newKey(t, "k1")
	ks.set.Store(&oldSet)
	srv := httptest.NewServer(ks)
	defer srv.Close()
	v := auth.NewVerifier(auth.Config{Issuer: "https://issuer.test", Audience: audience, JWKSURL: srv.URL}, nil)
	tok := func(key *ecdsa.PrivateKey, kid string) string {
		t.Helper()
		b := jwt.NewBuilder().Issuer("https://issuer.test").Audience([]string{audience}).Subject("c-1").
			Expiration(time.Now().Add(time.Hour))
		tk, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return signWith(t, tk, jwa.ES256(), key, kid)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok(old, "k1")); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := v.Verify(ctx, tok(old, "made-up")); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("made-up kid: %v", err)
		}
	}
	if n := ks.fetches.Load(); n != 1 {
		t.Errorf("%d fetches after a good token and 20 made-up key ids within MinRefresh, want 1", n)
	}

	v.MinRefresh = 0 // the issuer rotates its key
	rotated, newSet := newKey(t, "k2")
	ks.set.Store(&newSet)
	if _, err := v.Verify(ctx, tok(rotated, "k2")); err != nil {
		t.Fatalf("token under the rotated key: %v", err)
	}

	ks.down.Store(true)
	fresh := auth.NewVerifier(auth.Config{Issuer: "https://issuer.test", Audience: audience, JWKSURL: srv.URL}, nil)
	if _, err := fresh.Verify(ctx, tok(rotated, "k2")); !errors.Is(err, auth.ErrKeysUnavailable) {
		t.Errorf("keys unavailable: err = %v, want ErrKeysUnavailable", err)
	}
}

// Whatever string arrives as a token, Verify neither panics nor accepts it.
func FuzzVerify(f *testing.F) {
	is, err := issuer.Start("127.0.0.1:0", audience)
	if err != nil {
		f.Fatal(err)
	}
	defer is.Close()
	v := auth.NewVerifier(auth.Config{Issuer: is.URL, Audience: audience, JWKSURL: is.JWKSURL()}, nil)
	valid, err := is.Mint("c-1", nil, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", ".", "..", "a.b.c", valid[:len(valid)-2], valid + "x", strings.ToUpper(valid)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == valid {
			return
		}
		if p, err := v.Verify(context.Background(), s); err == nil {
			t.Fatalf("accepted %q as %+v", s, p)
		}
	})
}
