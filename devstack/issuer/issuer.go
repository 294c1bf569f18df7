// Package issuer is a development token issuer: its own ES256 signing key, a JWKS
// endpoint and an OpenID Connect discovery document, and tokens minted on request. The
// local stack and the tests use it where a real deployment has its identity provider.
package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Paths it serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/jwks.json"
)

// Issuer signs tokens with a key made at start and publishes its public half.
type Issuer struct {
	URL      string // the issuer ("iss"), http://host:port
	Audience string // the "aud" of the tokens it mints
	key      jwk.Key
	srv      *http.Server
	done     chan struct{}
}

// Start makes a signing key and serves the discovery document and the JWKS on addr
// (host:port; port 0 picks one). Close stops it.
func Start(addr, audience string) (*Issuer, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	kid, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	for name, v := range map[string]any{jwk.KeyIDKey: fmt.Sprintf("%x", kid[:8]), jwk.AlgorithmKey: jwa.ES256(), jwk.KeyUsageKey: "sig"} {
		if err := key.Set(name, v); err != nil {
			return nil, fmt.Errorf("issuer key: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("issuer: listen on %s: %w", addr, err)
	}
	is := &Issuer{URL: "http://" + ln.Addr().String(), Audience: audience, key: key, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, is.discovery)
	mux.HandleFunc("GET "+JWKSPath, is.jwks)
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(is.done)
		_ = is.srv.Serve(ln)
	}()
	return is, nil
}

// JWKSURL is where the public key is published.
func (is *Issuer) JWKSURL() string { return is.URL + JWKSPath }

// Close stops serving.
func (is *Issuer) Close() error {
	err := is.srv.Close()
	<-is.done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Sign signs tok with the issuer's key, whatever it claims: for tests that need a token
// the issuer really signed but with a wrong audience, an expiry past, and so on.
func (is *Issuer) Sign(tok jwt.Token) (string, error) {
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), is.key))
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return string(signed), nil
}

// Mint returns a token for sub with scopes, valid from now for ttl.
func (is *Issuer) Mint(sub string, scopes []string, ttl time.Duration) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().Issuer(is.URL).Audience([]string{is.Audience}).Subject(sub).
		IssuedAt(now).NotBefore(now).Expiration(now.Add(ttl)).
		Claim("scope", strings.Join(scopes, " ")).Build()
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return is.Sign(tok)
}

func (is *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer": is.URL, "jwks_uri": is.JWKSURL(),
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
	})
}

func (is *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	pub, err := jwk.PublicKeyOf(is.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(set)
}
