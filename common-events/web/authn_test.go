package web_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
)

// guarded serves /mine (any valid token), /ops (the operator scope) and /either (the
// customer or the operator scope) behind
// Authenticate, each answering the token's subject, with tokens verified against is (or
// against jwksURL, when set).
func guarded(t testing.TB, is *issuer.Issuer, jwksURL string) *httptest.Server {
	t.Helper()
	if jwksURL == "" {
		jwksURL = is.JWKSURL()
	}
	v := auth.NewVerifier(auth.Config{Issuer: is.URL, Audience: is.Audience, JWKSURL: jwksURL}, nil)
	e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
	who := func(c echo.Context) error {
		p, _ := web.PrincipalOf(c)
		return c.String(http.StatusOK, "secret of "+p.Subject)
	}
	e.GET("/mine", who, web.Authenticate(v))
	e.GET("/ops", who, web.Authenticate(v, auth.ScopeOperator))
	e.GET("/either", who, web.Authenticate(v, auth.ScopeCustomer, auth.ScopeOperator))
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv
}

func getWith(t testing.TB, url, authorization string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(body)
}

func TestAuthenticateAnswersEachCaseAsRFC6750Says(t *testing.T) {
	is := testenv.Issuer(t)
	srv := guarded(t, is, "")
	customer, err := is.Mint("c-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := is.Mint("op-1", []string{auth.ScopeOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	scoped, err := is.Mint("c-2", []string{auth.ScopeCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, authorization string
		status                    int
		challenge                 string // WWW-Authenticate, "" for none
	}{
		{"no token", "/mine", "", 401, `Bearer realm="orderflow"`},
		{"another scheme", "/mine", "Basic YWRhOnNlY3JldA==", 401, `Bearer realm="orderflow"`},
		{"Bearer and nothing", "/mine", "Bearer", 401, `Bearer realm="orderflow", error="invalid_token"`},
		{"garbage", "/mine", "Bearer not.a.token", 401, `Bearer realm="orderflow", error="invalid_token"`},
		{"customer", "/mine", "Bearer " + customer, 200, ""},
		{"scheme in lower case", "/mine", "bearer " + customer, 200, ""},
		{"customer on an operator view", "/ops", "Bearer " + customer, 403,
			`Bearer realm="orderflow", error="insufficient_scope", scope="orderflow:operator"`},
		{"operator", "/ops", "Bearer " + operator, 200, ""},
		{"no scope where one of two is needed", "/either", "Bearer " + customer, 403,
			`Bearer realm="orderflow", error="insufficient_scope", scope="orderflow:customer orderflow:operator"`},
		{"the first of two", "/either", "Bearer " + scoped, 200, ""},
		{"the second of two", "/either", "Bearer " + operator, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := getWith(t, srv.URL+tt.path, tt.authorization)
			if status != tt.status || h.Get("WWW-Authenticate") != tt.challenge {
				t.Fatalf("= %d, WWW-Authenticate %q, %s; want %d, %q", status, h.Get("WWW-Authenticate"), body, tt.status, tt.challenge)
			}
			if status != 200 && (h.Get("Content-Type") != web.ProblemContentType || strings.Contains(body, "secret")) {
				t.Errorf("refusal is %q: %s; want problem+json telling nothing", h.Get("Content-Type"), body)
			}
		})
	}
}

// An issuer whose keys cannot be fetched makes the service unavailable, not the caller
// unauthorized: 503 with Retry-After.
func TestAuthenticateWithoutTheIssuersKeysIs503(t *testing.T) {
	is := testenv.Issuer(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	srv := guarded(t, is, down.URL)
	tok, err := is.Mint("c-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	status, h, body := getWith(t, srv.URL+"/mine", "Bearer "+tok)
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "token_issuer_unavailable") {
		t.Fatalf("= %d, Retry-After %q, %s; want 503 token_issuer_unavailable with Retry-After", status, h.Get("Retry-After"), body)
	}
}

// Whatever arrives in the Authorization header, the answer is 401 problem+json, never
// the resource and never a server error.
func FuzzAuthorizationHeader(f *testing.F) {
	is := testenv.Issuer(f)
	srv := guarded(f, is, "")
	valid, err := is.Mint("c-1", nil, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "Bearer", "Bearer ", "Bearer  x", "Basic x", "bearer " + valid + "x", "Bearer " + valid[:20],
		"Bearer " + strings.Repeat("a.", 200), "Bearer\t" + valid} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		if tok, ok := web.BearerToken(header); ok && tok == valid {
			return
		}
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/mine", nil)
		if err != nil {
			return
		}
		req.Header["Authorization"] = []string{header}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return // a header Go's client will not send
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "secret") {
			t.Fatalf("Authorization %q: %d %s", header, res.StatusCode, body)
		}
	})
}
