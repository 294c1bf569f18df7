// Package auth verifies the bearer tokens (JWT) that customers and operators present:
// signed by the issuer's key from its JWKS, for this audience, in date. It pins the
// algorithm to the one the key is published for, so a token cannot choose "none" or an
// HMAC keyed with the public key.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Scopes a token may carry, space-separated in its "scope" claim.
const (
	// ScopeCustomer lets a customer, the token's subject (a UUID), place orders and see
	// and cancel their own.
	ScopeCustomer = "orderflow:customer"
	// ScopeOperator grants the operators' views: every order, payments, charges,
	// notifications.
	ScopeOperator = "orderflow:operator"
)

// Config names the issuer whose tokens are accepted.
type Config struct {
	Issuer   string // the "iss" every token must carry
	Audience string // one of the token's "aud" values
	JWKSURL  string // where the issuer publishes its public keys
}

// ErrInvalidToken: the token is malformed, not signed by the issuer's key, for another
// issuer or audience, or out of date. The wrapped error says which; do not show it to
// the caller.
var ErrInvalidToken = errors.New("invalid token")

// ErrKeysUnavailable: the issuer's keys could not be fetched, so no token can be checked.
var ErrKeysUnavailable = errors.New("the token issuer's keys are unavailable")

// Principal is who a valid token speaks for.
type Principal struct {
	Subject string   // "sub": the customer id, or the operator's name
	Scopes  []string // "scope", split
}

// Has reports whether the token carries scope.
func (p Principal) Has(scope string) bool { return slices.Contains(p.Scopes, scope) }

// Verifier checks tokens against the issuer's keys, fetched when first needed, again
// every KeysTTL, and again when a token names a key id it has not seen (a rotated key),
// at most once every MinRefresh after a fetch that succeeded, or after a short backoff
// after one that failed. A fetch is the verifier's, not the request's that set it off: a
// client that goes away does not cancel it, so it cannot keep new keys out.
//
// A client presents the same token with every request of its session, and checking a
// signature is the dear part (ES256; make bench prints what one costs), so a token that
// passed is remembered, by its SHA-256, while it is in date and the keys it was checked
// against are the ones held: at most MaxRemembered tokens, forgotten all at once when
// the keys are fetched again.
type Verifier struct {
	cfg    Config
	client *http.Client
	now    func() time.Time

	KeysTTL    time.Duration // default 5 minutes
	MinRefresh time.Duration // default 10 seconds
	Skew       time.Duration // tolerated clock difference for exp, nbf, iat; default 30 seconds
	// MaxRemembered bounds the verified tokens kept; default 10,000 (about 1 MB). 0
	// remembers none.
	MaxRemembered int

	mu      sync.Mutex
	keys    jwk.Set
	fetched time.Time // when keys were fetched
	tried   time.Time // when the last fetch ended
	failed  bool      // whether it failed
	// fetching is the fetch under way; nil when none is.
	fetching *flight
	passed   map[[sha256.Size]byte]passed
}

// flight is one fetch of the keys, which the requests that need them wait for.
type flight struct {
	done chan struct{} // closed when it ends
	err  error         // why it failed; read once done is closed
}

// fetchTimeout bounds a fetch of the keys, whichever client makes it: a fetch no request
// can cancel must still end.
const fetchTimeout = 5 * time.Second

// passed is a token that was verified against the keys fetched at keysFrom.
type passed struct {
	p        Principal
	until    time.Time // its expiry, with Skew
	keysFrom time.Time
}

// NewVerifier returns a verifier for cfg's issuer; client fetches the keys (nil: a plain
// http.Client). A fetch is given up after 5 s.
func NewVerifier(cfg Config, client *http.Client) *Verifier {
	if client == nil {
		client = &http.Client{}
	}
	return &Verifier{cfg: cfg, client: client, now: time.Now,
		KeysTTL: 5 * time.Minute, MinRefresh: 10 * time.Second, Skew: 30 * time.Second, MaxRemembered: 10_000,
		passed: map[[sha256.Size]byte]passed{}}
}

// Verify checks raw (the token, without "Bearer ") and returns whom it speaks for.
func (v *Verifier) Verify(ctx context.Context, raw string) (Principal, error) {
	sum := sha256.Sum256([]byte(raw))
	if p, ok := v.remembered(sum); ok {
		return p, nil
	}
	p, exp, keysFrom, err := v.verify(ctx, raw)
	if err == nil {
		v.remember(sum, p, exp, keysFrom)
	}
	return p, err
}

// remembered returns the principal of a token verified before, while it is in date and
// the keys it passed are the current ones.
func (v *Verifier) remembered(sum [sha256.Size]byte) (Principal, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.passed[sum]
	now := v.now()
	if !ok || !e.keysFrom.Equal(v.fetched) || now.After(e.until) || now.Sub(v.fetched) > v.KeysTTL {
		return Principal{}, false
	}
	return e.p, true
}

// remember keeps a token that passed against the keys fetched at keysFrom — unless the
// keys were fetched again meanwhile (by another request), which may have withdrawn its key.
func (v *Verifier) remember(sum [sha256.Size]byte, p Principal, exp, keysFrom time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.MaxRemembered <= 0 || !keysFrom.Equal(v.fetched) {
		return
	}
	for k := range v.passed { // full: make room, forgetting any one
		if len(v.passed) < v.MaxRemembered {
			break
		}
		delete(v.passed, k)
	}
	v.passed[sum] = passed{p: p, until: exp.Add(v.Skew), keysFrom: keysFrom}
}

// verify checks raw against the issuer's keys and returns whom it speaks for and when it
// expires.
func (v *Verifier) verify(ctx context.Context, raw string) (_ Principal, exp, keysFrom time.Time, _ error) {
	msg, err := jws.Parse([]byte(raw))
	if err != nil {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: not a signed JWT", ErrInvalidToken)
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: %d signatures, want 1", ErrInvalidToken, len(sigs))
	}
	headers := sigs[0].ProtectedHeaders()
	alg, ok := headers.Algorithm()
	if !ok || alg == jwa.NoSignature() {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: unsigned", ErrInvalidToken)
	}
	kid, ok := headers.KeyID()
	if !ok || kid == "" {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: no key id", ErrInvalidToken)
	}
	key, keysFrom, err := v.key(ctx, kid)
	if err != nil {
		return Principal{}, time.Time{}, time.Time{}, err
	}
	keyAlg, ok := key.Algorithm()
	if !ok || keyAlg.String() != alg.String() {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: algorithm %s is not the one key %s is for", ErrInvalidToken, alg, kid)
	}
	tok, err := jwt.Parse([]byte(raw),
		jwt.WithKey(alg, key),
		jwt.WithValidate(true),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithAudience(v.cfg.Audience),
		jwt.WithRequiredClaim("exp"),
		jwt.WithRequiredClaim("sub"),
		jwt.WithAcceptableSkew(v.Skew),
		jwt.WithClock(jwt.ClockFunc(v.now)),
	)
	if err != nil {
		return Principal{}, time.Time{}, time.Time{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	sub, _ := tok.Subject()
	exp, _ = tok.Expiration()
	p := Principal{Subject: sub}
	var scope string
	if err := tok.Get("scope", &scope); err == nil {
		p.Scopes = strings.Fields(scope)
	}
	return p, exp, keysFrom, nil
}

// key returns the issuer's key with id kid, fetching the key set when it is missing,
// older than KeysTTL, or lacks kid — but, once it has keys, not within MinRefresh of a
// fetch that succeeded, so tokens with made-up key ids cannot hammer the issuer, nor
// within failBackoff of one that failed, so a fetch that failed (or was made to fail)
// does not keep a rotated key out for MinRefresh. keysFrom says when the key set it came
// from was fetched. The fetch runs on its own, outside the lock and detached from ctx, so
// a slow issuer holds up only the requests that need new keys, never those whose token
// was remembered, and a request that goes away stops waiting without cancelling the fetch
// for the others, who wait for that one fetch rather than each making its own.
func (v *Verifier) key(ctx context.Context, kid string) (_ jwk.Key, keysFrom time.Time, _ error) {
	v.mu.Lock()
	now := v.now()
	var k jwk.Key
	found := false
	if v.keys != nil {
		k, found = v.keys.LookupKeyID(kid)
	}
	need := v.keys == nil || now.Sub(v.fetched) > v.KeysTTL || !found
	window := v.MinRefresh
	if v.failed {
		window = v.failBackoff()
	}
	if need && v.fetching == nil && (v.keys == nil || now.Sub(v.tried) > window) {
		// The verifier's goroutine, not the request's: it ends within fetchTimeout.
		v.fetching = &flight{done: make(chan struct{})}
		go v.fetch(context.WithoutCancel(ctx), v.fetching)
	}
	f := v.fetching
	fetched := v.fetched
	v.mu.Unlock()
	if need && f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, time.Time{}, fmt.Errorf("%w: %s: %w", ErrKeysUnavailable, v.cfg.JWKSURL, ctx.Err())
		}
		// Look again, once: in the keys fetched, or in those held when the fetch failed.
		v.mu.Lock()
		if v.keys != nil {
			k, found = v.keys.LookupKeyID(kid)
		}
		fetched = v.fetched
		noKeys := v.keys == nil
		v.mu.Unlock()
		if noKeys {
			return nil, time.Time{}, fmt.Errorf("%w: %s: %w", ErrKeysUnavailable, v.cfg.JWKSURL, f.err)
		}
	}
	if !found {
		return nil, time.Time{}, fmt.Errorf("%w: unknown key id %q", ErrInvalidToken, kid)
	}
	return k, fetched, nil
}

// failBackoff is how soon a fetch that failed may be tried again: soon, since the issuer
// may be back and a rotated key waiting; not at once, so a down issuer is not asked by
// every request. At most a tenth of MinRefresh, so it stays the shorter wait.
func (v *Verifier) failBackoff() time.Duration { return min(time.Second, v.MinRefresh/10) }

// fetch fetches the keys for f, bounded by fetchTimeout, and ends f.
func (v *Verifier) fetch(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := jwk.Fetch(ctx, v.cfg.JWKSURL, jwk.WithHTTPClient(v.client))

	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.tried, v.failed = now, err != nil
	if err == nil {
		v.keys, v.fetched = set, now
		clear(v.passed) // checked against keys no longer held
	}
	f.err = err
	v.fetching = nil
	close(f.done)
}
