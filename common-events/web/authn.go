package web

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/auth"
)

// Realm names orderflow in WWW-Authenticate challenges.
const Realm = "orderflow"

const (
	principalKey = "orderflow.principal"
	identityKey  = "orderflow.identity"
)

// identity is what the request's bearer token turned out to be.
type identity struct {
	p       auth.Principal
	err     error
	present bool // a bearer credential was sent
}

// Identify checks the request's bearer token, if any, before anything else is done for
// it, so that the limits know whose request it is (Admit) and Authenticate need not
// check it again. It refuses nothing: a missing or bad token is Authenticate's to answer.
func Identify(v *auth.Verifier) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			identify(c, v)
			return next(c)
		}
	}
}

// identify returns what the request's token is, checking it the first time.
func identify(c echo.Context, v *auth.Verifier) identity {
	if id, ok := c.Get(identityKey).(identity); ok {
		return id
	}
	var id identity
	raw, present := BearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
	if id.present = present; present {
		id.p, id.err = v.Verify(c.Request().Context(), raw)
		if id.err == nil {
			c.Set(principalKey, id.p)
		}
	}
	c.Set(identityKey, id)
	return id
}

// Authenticate lets a request through only with a valid bearer token carrying one of
// scopes (any valid token when none is given); the handler finds whom it speaks for with PrincipalOf. A request
// without a token is 401 with a bare Bearer challenge; a bad token 401 with
// error="invalid_token"; a token without the scope 403 with error="insufficient_scope"
// (RFC 6750 §3); an issuer whose keys cannot be fetched 503 with Retry-After. The answers
// are problem+json and say nothing of what was asked for.
func Authenticate(v *auth.Verifier, scopes ...string) echo.MiddlewareFunc {
	granted := func(p auth.Principal) bool { return len(scopes) == 0 || slices.ContainsFunc(scopes, p.Has) }
	scope := strings.Join(scopes, " ")
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			id := identify(c, v)
			if !id.present {
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+Realm+`"`)
				return NewProblem(http.StatusUnauthorized, "unauthenticated", "Unauthorized", "this endpoint needs a bearer token")
			}
			p, err := id.p, id.err
			switch {
			case errors.Is(err, auth.ErrKeysUnavailable):
				p := NewProblem(http.StatusServiceUnavailable, "token_issuer_unavailable", "Service Unavailable",
					"the token issuer's keys cannot be fetched; retry shortly")
				p.RetryAfter = 5
				return p
			case err != nil:
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+Realm+`", error="invalid_token"`)
				return NewProblem(http.StatusUnauthorized, "invalid_token", "Unauthorized", "the bearer token is not valid")
			case !granted(p):
				h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="`+Realm+`", error="insufficient_scope", scope="`+scope+`"`)
				return NewProblem(http.StatusForbidden, "insufficient_scope", "Forbidden", "the token does not grant this")
			}
			return next(c)
		}
	}
}

// BearerToken takes the token out of an Authorization header value. present is false
// when there is no bearer credential at all (no header, another scheme); a "Bearer"
// with nothing usable after it is present with an empty token, which no verifier accepts.
func BearerToken(header string) (token string, present bool) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(header), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

// PrincipalOf is whom the request's valid bearer token speaks for (behind Identify or
// Authenticate; only Authenticate checks its scopes).
func PrincipalOf(c echo.Context) (auth.Principal, bool) {
	p, ok := c.Get(principalKey).(auth.Principal)
	return p, ok
}
