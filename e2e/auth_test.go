package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/stack"
	"github.com/orderflow/devstack/testenv"
)

// authority is the token issuer that every stack this test binary starts trusts; nil
// against an external stack (E2E_ORDER_URL), whose tokens come from E2E_CUSTOMER_TOKEN and
// E2E_OPERATOR_TOKEN.
var authority *issuer.Issuer

// tokens are the bearer tokens the tests' client presents.
var tokens struct{ customer, operator string }

func TestMain(m *testing.M) {
	code, err := runWithAuthority(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.Exit(code)
}

func runWithAuthority(m *testing.M) (int, error) {
	if os.Getenv("E2E_ORDER_URL") != "" {
		tokens.customer, tokens.operator = os.Getenv("E2E_CUSTOMER_TOKEN"), os.Getenv("E2E_OPERATOR_TOKEN")
		if tokens.customer == "" || tokens.operator == "" {
			return 0, fmt.Errorf("E2E_ORDER_URL is set: set E2E_CUSTOMER_TOKEN (the demo customer %s) and E2E_OPERATOR_TOKEN too", issuer.Customer)
		}
		return testenv.Run(m), nil
	}
	is, err := issuer.Start("127.0.0.1:0", stack.Audience)
	if err != nil {
		return 0, err
	}
	defer is.Close()
	authority = is
	if tokens.customer, err = is.Mint(issuer.Customer, []string{auth.ScopeCustomer}, 2*time.Hour); err != nil {
		return 0, err
	}
	if tokens.operator, err = is.Mint(issuer.Operator, []string{auth.ScopeOperator}, 2*time.Hour); err != nil {
		return 0, err
	}
	return testenv.Run(m), nil
}

// customerToken is a token for a customer of the test's own: the stack must be one this
// test binary started.
func customerToken(t *testing.T, customer string) string {
	t.Helper()
	if authority == nil {
		t.Skip("needs a token for a customer of its own: run it against its own devstack")
	}
	return testenv.Token(t, authority, customer, auth.ScopeCustomer)
}

// authEnv is what a service started in this process needs to trust authority.
func authEnv() map[string]string {
	c := authority.Config()
	return map[string]string{"AUTH_ISSUER": c.Issuer, "AUTH_JWKS_URL": c.JWKSURL, "AUTH_AUDIENCE": c.Audience}
}

// client speaks as the tests' users do: as the demo customer to order-service, as an
// operator to the operators' views of payment-service and notification-service. A request
// that carries an Authorization header of its own keeps it.
var client = &http.Client{Transport: roles{}}

type roles struct{}

func (roles) RoundTrip(r *http.Request) (*http.Response, error) {
	return politely(r, func(r *http.Request) (*http.Response, error) {
		if r.Header.Get("Authorization") != "" {
			return http.DefaultTransport.RoundTrip(r)
		}
		tok := tokens.customer
		for _, view := range []string{"/payments", "/provider/", "/notifications", "/mismatches"} {
			if strings.HasPrefix(r.URL.Path, view) {
				tok = tokens.operator
			}
		}
		if strings.HasSuffix(r.URL.Path, "/timeline") { // reconciliation-service's
			tok = tokens.operator
		}
		return issuer.Bearer{Token: tok}.RoundTrip(r)
	})
}

// politely sends r with send as a well-behaved client does: a request the service refused
// before doing any of it — 503 overloaded, 429 over the client's share or rate, with
// Retry-After — is sent again after the time it asked for, up to 30 times. Scenarios that
// fire a hundred requests at once meet the admission limits; what they check holds for
// the requests that get through.
func politely(r *http.Request, send func(*http.Request) (*http.Response, error)) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		req := r
		if attempt > 1 && r.GetBody != nil {
			body, err := r.GetBody()
			if err != nil {
				return nil, err
			}
			req = r.Clone(r.Context())
			req.Body = body
		}
		resp, err := send(req)
		if err != nil || (resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests) ||
			attempt == 30 || (r.Body != nil && r.GetBody == nil) {
			return resp, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		var p struct{ Code string }
		if json.Unmarshal(b, &p) != nil || !slices.Contains([]string{web.CodeOverloaded, web.CodeRateLimited, web.CodeClientLimit}, p.Code) {
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return resp, nil
		}
		wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		select {
		case <-time.After(time.Duration(max(wait, 1)) * time.Second):
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

// The doors of a running stack: an order is its customer's alone, the operators' views are
// operators' alone, and a token that must not get in gets nowhere.
func TestScenarioOnlyTheRightPeopleGetIn(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	p, err := tg.place("tok_visa")
	if err != nil {
		t.Fatal(err)
	}
	other := os.Getenv("E2E_CUSTOMER2_TOKEN")
	if authority != nil {
		if other, err = authority.Mint(issuer.Customer2, []string{auth.ScopeCustomer}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	orderRoutes := [][2]string{
		{"GET", tg.order + "/orders/" + p.ID}, {"GET", tg.order + "/orders/" + p.ID + "/history"},
		{"GET", tg.order + "/orders/" + p.ID + "/events"}, {"POST", tg.order + "/orders/" + p.ID + "/cancel"},
	}
	views := [][2]string{
		{"GET", tg.payment + "/payments?order_id=" + p.ID}, {"GET", tg.notification + "/notifications?order_id=" + p.ID},
	}
	knock := func(method, url, authorization string) (int, string) {
		t.Helper()
		status, _, body := send(t, method, url, "", "Authorization", authorization)
		return status, string(body)
	}
	if other != "" {
		for _, r := range orderRoutes {
			if status, body := knock(r[0], r[1], "Bearer "+other); status != http.StatusNotFound || strings.Contains(body, p.Email) {
				t.Errorf("another customer: %s %s = %d %s, want 404 telling nothing", r[0], r[1], status, body)
			}
		}
		status, body := knock("GET", tg.order+"/orders", "Bearer "+other)
		if status != http.StatusOK || strings.Contains(body, p.ID) {
			t.Errorf("another customer's listing = %d and shows the order: %v", status, strings.Contains(body, p.ID))
		}
	}
	for _, r := range views {
		if status, _ := knock(r[0], r[1], "Bearer "+tokens.customer); status != http.StatusForbidden {
			t.Errorf("a customer on %s = %d, want 403", r[1], status)
		}
	}
	bad := map[string]string{"no token": "", "garbage": "Bearer x.y.z"}
	if authority != nil {
		forged, err := authority.Forgeries(issuer.Operator, []string{auth.ScopeCustomer, auth.ScopeOperator})
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range forged {
			bad[name] = "Bearer " + tok
		}
	}
	for name, authorization := range bad {
		for _, r := range append(append([][2]string{{"GET", tg.order + "/orders"}, {"POST", tg.order + "/orders"}}, orderRoutes...), views...) {
			if authorization == "" {
				authorization = "Basic bm9ib2R5Og==" // not a bearer token: as good as none
			}
			if status, body := knock(r[0], r[1], authorization); status != http.StatusUnauthorized || strings.Contains(body, p.ID) {
				t.Errorf("%s: %s %s = %d %s, want 401", name, r[0], r[1], status, body)
			}
		}
	}
	var page struct {
		Items []struct{ ID string } `json:"items"`
	}
	if status, _, body := send(t, "GET", tg.order+"/orders?customer_id="+issuer.Customer+"&limit=100", "", "Authorization", "Bearer "+tokens.operator); status != http.StatusOK {
		t.Errorf("the operator's listing = %d %s", status, body)
	} else if err := json.Unmarshal(body, &page); err != nil || !slices.ContainsFunc(page.Items, func(o struct{ ID string }) bool { return o.ID == p.ID }) {
		t.Errorf("the operator's listing does not show the order (%v)", err)
	}
	if o := tg.status(p.ID); o.Status == "CANCELLED" {
		t.Error("a refused cancel cancelled the order")
	}
}
