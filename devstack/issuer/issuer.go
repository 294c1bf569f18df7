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
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/orderflow/common-events/auth"
)

// The demo identities: the local stack writes a token for each, and tests use them.
const (
	Customer  = "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93" // ada@example.com, the customer of every example
	Customer2 = "9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a" // grace@example.com, another customer
	Operator  = "operator"
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
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	return serve(addr, audience, key)
}

// Open is Start with the signing key kept in dir (made there on first use), and the
// issuer's URL and audience written beside it, so that tokens outlive a restart and
// Load can mint more while it runs.
func Open(dir, addr, audience string) (*Issuer, error) {
	key, err := loadKey(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if key, err = newKey(); err == nil {
			err = saveKey(dir, key)
		}
	}
	if err != nil {
		return nil, err
	}
	is, err := serve(addr, audience, key)
	if err != nil {
		return nil, err
	}
	about, _ := json.Marshal(map[string]string{"issuer": is.URL, "audience": audience})
	if err := os.WriteFile(filepath.Join(dir, aboutFile), about, 0o644); err != nil {
		_ = is.Close()
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return is, nil
}

// Load returns the issuer last opened in dir, able to mint tokens but not serving: for a
// command that mints a token for the running local stack.
func Load(dir string) (*Issuer, error) {
	key, err := loadKey(dir)
	if err != nil {
		return nil, fmt.Errorf("no issuer in %s (start the stack once with make run): %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, aboutFile))
	if err != nil {
		return nil, fmt.Errorf("no issuer in %s (start the stack once with make run): %w", dir, err)
	}
	var about struct{ Issuer, Audience string }
	if err := json.Unmarshal(b, &about); err != nil {
		return nil, fmt.Errorf("issuer in %s: %w", dir, err)
	}
	return &Issuer{URL: about.Issuer, Audience: about.Audience, key: key}, nil
}

// Files in an issuer's folder.
const (
	keyFile   = "signing-key.jwk" // the private key: readable by its owner only
	aboutFile = "issuer.json"
)

func newKey() (jwk.Key, error) {
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
	return key, nil
}

func loadKey(dir string) (jwk.Key, error) {
	b, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	key, err := jwk.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("issuer key %s: %w", filepath.Join(dir, keyFile), err)
	}
	return key, nil
}

func saveKey(dir string, key jwk.Key) error {
	b, err := json.Marshal(key)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, keyFile), b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("issuer key: %w", err)
	}
	return nil
}

func serve(addr, audience string, key jwk.Key) (*Issuer, error) {
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

// Config is what a service that accepts this issuer's tokens is configured with.
func (is *Issuer) Config() auth.Config {
	return auth.Config{Issuer: is.URL, Audience: is.Audience, JWKSURL: is.JWKSURL()}
}

// Bearer is an http.RoundTripper that presents Token with every request that carries no
// Authorization header of its own.
type Bearer struct {
	Token string
	Base  http.RoundTripper // nil: http.DefaultTransport
}

// RoundTrip sends r with the token.
func (b Bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.Token)
	}
	base := b.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// JWKSURL is where the public key is published.
func (is *Issuer) JWKSURL() string { return is.URL + JWKSPath }

// Close stops serving.
func (is *Issuer) Close() error {
	if is.srv == nil { // from Load: not serving
		return nil
	}
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
