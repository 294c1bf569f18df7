package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
)

const audience = "orderflow"

func start(t *testing.T) (*issuer.Issuer, *auth.Verifier) {
	t.Helper()
	is := testenv.Issuer(t)
	return is, auth.NewVerifier(is.Config(), nil)
}

func TestAValidTokenSpeaksForItsSubject(t *testing.T) {
	is, v := start(t)
	p, err := v.Verify(context.Background(), testenv.Token(t, is, issuer.Customer, auth.ScopeOperator))
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != issuer.Customer || !p.Has(auth.ScopeOperator) {
		t.Errorf("principal = %+v", p)
	}
	p, err = v.Verify(context.Background(), testenv.Token(t, is, "c-2"))
	if err != nil || p.Has(auth.ScopeOperator) {
		t.Errorf("customer token: %+v, %v; want no operator scope", p, err)
	}
}

// Every way a token can be wrong is refused as an invalid token.
func TestTokensThatMustNotGetIn(t *testing.T) {
	is, v := start(t)
	forged, err := is.Forgeries("c-1", []string{auth.ScopeOperator})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range forged {
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
	// hold, when set, is waited on by every fetch: an issuer that has stopped answering.
	hold atomic.Pointer[chan struct{}]
}

func (ks *keyServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	ks.fetches.Add(1)
	if hold := ks.hold.Load(); hold != nil {
		<-*hold
	}
	if ks.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	_ = json.NewEncoder(w).Encode(*ks.set.Load())
}

// signed is a token of https://issuer.test for c-1, signed by key under kid, expiring at exp.
func signed(t *testing.T, key *ecdsa.PrivateKey, kid string, exp time.Time) string {
	t.Helper()
	tk, err := jwt.NewBuilder().Issuer("https://issuer.test").Audience([]string{audience}).Subject("c-1").
		Expiration(exp).Build()
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	b, err := jwt.Sign(tk, jwt.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A token that passed is remembered, not trusted forever: it is refused once it expires,
// and once the keys are fetched again without the key it was signed with (the issuer
// dropped a compromised key), however recently it passed.
func TestARememberedTokenIsCheckedAgainWhenItOrTheKeysChange(t *testing.T) {
	key, set := newKey(t, "k1")
	ks, v := serveKeys(t, set)
	now := time.Now()
	v.SetClock(func() time.Time { return now })
	ctx := context.Background()
	tok := signed(t, key, "k1", now.Add(10*time.Minute))
	for range 3 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(11 * time.Minute) // past its expiry and the skew
	if _, err := v.Verify(ctx, tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("an expired token that passed before: err = %v, want ErrInvalidToken", err)
	}

	tok = signed(t, key, "k1", now.Add(time.Hour))
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	_, other := newKey(t, "k2")
	ks.set.Store(&other)           // k1 is withdrawn
	now = now.Add(6 * time.Minute) // past KeysTTL: the keys are fetched again
	if _, err := v.Verify(ctx, tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a token whose key was withdrawn: err = %v, want ErrInvalidToken", err)
	}
}

// serveKeys serves set from a keyServer for the test, and returns it with a verifier of
// https://issuer.test's tokens that fetches its keys there.
func serveKeys(t *testing.T, set jwk.Set) (*keyServer, *auth.Verifier) {
	t.Helper()
	ks := &keyServer{}
	ks.set.Store(&set)
	srv := httptest.NewServer(ks)
	t.Cleanup(srv.Close)
	return ks, auth.NewVerifier(auth.Config{Issuer: "https://issuer.test", Audience: audience, JWKSURL: srv.URL}, nil)
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
	old, oldSet := newKey(t, "k1")
	ks, v := serveKeys(t, oldSet)
	tok := func(key *ecdsa.PrivateKey, kid string) string { return signed(t, key, kid, time.Now().Add(time.Hour)) }
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

	down, fresh := serveKeys(t, newSet)
	down.down.Store(true)
	if _, err := fresh.Verify(ctx, tok(rotated, "k2")); !errors.Is(err, auth.ErrKeysUnavailable) {
		t.Errorf("keys unavailable: err = %v, want ErrKeysUnavailable", err)
	}
}

// While a fetch of the keys hangs, a remembered token still passes at once, and the
// requests that need the new keys wait for that one fetch rather than each making its own.
func TestASlowIssuerHoldsUpOnlyWhatNeedsItsKeys(t *testing.T) {
	key, set := newKey(t, "k1")
	ks, v := serveKeys(t, set)
	v.MinRefresh = 0
	ctx := context.Background()
	known := signed(t, key, "k1", time.Now().Add(time.Hour))
	if _, err := v.Verify(ctx, known); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	var release sync.Once
	defer release.Do(func() { close(hold) }) // on failure too, so the server can close
	ks.hold.Store(&hold)
	rotated, newSet := newKey(t, "k2")
	ks.set.Store(&newSet)
	results := make(chan error, 3)
	for range 3 { // three requests under the new key: one fetch, which hangs
		go func() {
			_, err := v.Verify(ctx, signed(t, rotated, "k2", time.Now().Add(time.Hour)))
			results <- err
		}()
	}
	for ks.fetches.Load() < 2 { // the first fetch, then the one that hangs
		time.Sleep(time.Millisecond)
	}
	passed := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, known); passed <- err }()
	select {
	case err := <-passed:
		if err != nil {
			t.Errorf("remembered token during the fetch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a remembered token waited for the issuer's keys")
	}
	release.Do(func() { close(hold) })
	for range 3 {
		if err := <-results; err != nil {
			t.Errorf("token under the new key: %v", err)
		}
	}
	if n := ks.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2: three requests waiting for new keys share one", n)
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

// clock is a time a test moves on, read safely by the verifier's fetch as well.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// A client that sends a token under a made-up key id and hangs up while the keys are
// being fetched, once every MinRefresh, does not keep a rotated key out: the fetch it set
// off still ends, and the next token under the new key passes without another fetch.
func TestAClientThatHangsUpDoesNotKeepNewKeysOut(t *testing.T) {
	old, set := newKey(t, "k1")
	ks, v := serveKeys(t, set)
	c := &clock{t: time.Now()}
	v.SetClock(c.Now)
	exp := c.Now().Add(time.Hour)
	if _, err := v.Verify(context.Background(), signed(t, old, "k1", exp)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c.Add(v.MinRefresh + time.Second)
		kid := fmt.Sprintf("rotated-%d", i)
		rotated, newSet := newKey(t, kid)
		ks.set.Store(&newSet)

		hold := make(chan struct{}) // a slow issuer, answering once the client has gone
		ks.hold.Store(&hold)
		ctx, hangUp := context.WithCancel(context.Background())
		want := ks.fetches.Load() + 1
		go func() {
			for ks.fetches.Load() < want && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			hangUp()
		}()
		_, err := v.Verify(ctx, signed(t, old, "made-up", exp))
		hangUp()
		ks.hold.Store(nil)
		close(hold)
		if err == nil {
			t.Fatal("a made-up key id passed")
		}

		if _, err := v.Verify(context.Background(), signed(t, rotated, kid, exp)); err != nil {
			t.Fatalf("round %d: token under the rotated key after a client hung up: %v", i, err)
		}
		if n, want := ks.fetches.Load(), int32(2+i); n != want {
			t.Errorf("round %d: %d fetches, want %d: one per hung-up client, none more", i, n, want)
		}
	}
}

// A fetch that failed does not hold the keys back for MinRefresh: once the issuer answers
// again, a rotated key is fetched after the short backoff — and not before it, so a down
// issuer is not asked by every request.
func TestAFailedFetchIsTriedAgainSoon(t *testing.T) {
	old, set := newKey(t, "k1")
	ks, v := serveKeys(t, set)
	c := &clock{t: time.Now()}
	v.SetClock(c.Now)
	exp := c.Now().Add(time.Hour)
	ctx := context.Background()
	if _, err := v.Verify(ctx, signed(t, old, "k1", exp)); err != nil {
		t.Fatal(err)
	}
	c.Add(v.MinRefresh + time.Second)
	rotated, newSet := newKey(t, "k2")
	ks.set.Store(&newSet)
	tok := signed(t, rotated, "k2", exp)

	ks.down.Store(true)
	if _, err := v.Verify(ctx, tok); err == nil {
		t.Fatal("passed while the issuer was down")
	}
	ks.down.Store(false)
	c.Add(500 * time.Millisecond)
	if _, err := v.Verify(ctx, tok); err == nil {
		t.Error("passed within the backoff: fetched again at once after a failure")
	}
	if n := ks.fetches.Load(); n != 2 {
		t.Errorf("%d fetches within the backoff of a failed one, want 2", n)
	}
	c.Add(time.Second) // past the backoff, well within MinRefresh
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Errorf("token under the rotated key after the backoff: %v", err)
	}
	if n := ks.fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
}
