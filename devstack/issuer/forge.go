package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Forgeries returns, by name, every kind of token that must not get in, each claiming to
// be sub with scopes — so a verifier that let one through would grant exactly what the
// test then checks is refused: malformed, a wrong or missing signature ("alg": "none", an
// HMAC keyed with the issuer's public key, another key under the issuer's key id or an
// unknown one), another issuer or audience, expired, not yet valid, no expiry, no
// subject.
func (is *Issuer) Forgeries(sub string, scopes []string) (map[string]string, error) {
	kid, _ := is.key.KeyID()
	pub, err := jwk.PublicKeyOf(is.key)
	if err != nil {
		return nil, err
	}
	pubJSON, err := json.Marshal(pub) // what an attacker would use as an HMAC secret
	if err != nil {
		return nil, err
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	valid, err := is.Mint(sub, scopes, time.Hour)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(valid, ".")
	enc := base64.RawURLEncoding.EncodeToString
	claims := func(edit func(b *jwt.Builder)) (jwt.Token, error) {
		now := time.Now()
		b := jwt.NewBuilder().Issuer(is.URL).Audience([]string{is.Audience}).Subject(sub).
			IssuedAt(now).NotBefore(now).Expiration(now.Add(time.Hour)).Claim("scope", strings.Join(scopes, " "))
		if edit != nil {
			edit(b)
		}
		return b.Build()
	}
	// Each forgery is made by one of these, from the claims with edit applied.
	signed := func(edit func(b *jwt.Builder), remove string) func() (string, error) {
		return func() (string, error) {
			tok, err := claims(edit)
			if err == nil && remove != "" {
				err = tok.Remove(remove)
			}
			if err != nil {
				return "", err
			}
			return is.Sign(tok)
		}
	}
	signedWith := func(alg jwa.SignatureAlgorithm, key any, kid string) func() (string, error) {
		return func() (string, error) {
			tok, err := claims(nil)
			if err != nil {
				return "", err
			}
			hdr := jws.NewHeaders()
			if kid != "" {
				if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
					return "", err
				}
			}
			b, err := jwt.Sign(tok, jwt.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
			return string(b), err
		}
	}
	unsigned := func() (string, error) {
		tok, err := claims(nil)
		if err != nil {
			return "", err
		}
		payload, err := json.Marshal(tok)
		return enc([]byte(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`)) + "." + enc(payload) + ".", err
	}
	fixed := func(s string) func() (string, error) { return func() (string, error) { return s, nil } }
	swapped, err := json.Marshal(map[string]any{"iss": is.URL, "aud": is.Audience, "sub": sub, "exp": 9999999999, "scope": strings.Join(scopes, " ")})
	if err != nil {
		return nil, err
	}
	makers := map[string]func() (string, error){
		"empty":                          fixed(""),
		"garbage":                        fixed("not-a-token"),
		"two parts":                      fixed(parts[0] + "." + parts[1]),
		"wrong signature":                fixed(parts[0] + "." + parts[1] + "." + enc([]byte(strings.Repeat("x", 64)))),
		"payload swapped":                fixed(parts[0] + "." + enc(swapped) + "." + parts[2]),
		"another key, same kid":          signedWith(jwa.ES256(), other, kid),
		"unknown kid":                    signedWith(jwa.ES256(), other, "someone-else"),
		"no kid":                         signedWith(jwa.ES256(), other, ""),
		"HMAC keyed with the public key": signedWith(jwa.HS256(), pubJSON, kid),
		"alg none":                       unsigned,
		"wrong issuer":                   signed(func(b *jwt.Builder) { b.Issuer("https://evil.example") }, ""),
		"wrong audience":                 signed(func(b *jwt.Builder) { b.Audience([]string{"someone-else"}) }, ""),
		"expired":                        signed(func(b *jwt.Builder) { b.Expiration(time.Now().Add(-time.Hour)) }, ""),
		"not yet valid":                  signed(func(b *jwt.Builder) { b.NotBefore(time.Now().Add(time.Hour)) }, ""),
		"no expiry":                      signed(nil, "exp"),
		"no subject":                     signed(nil, "sub"),
	}
	out := make(map[string]string, len(makers))
	for name, make := range makers {
		if out[name], err = make(); err != nil {
			return nil, fmt.Errorf("forge %s: %w", name, err)
		}
	}
	return out, nil
}
