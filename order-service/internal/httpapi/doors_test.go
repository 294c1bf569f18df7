package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/order-service/internal/httpapi"
)

// open are the routes anyone may call: probes and the contract documents.
var open = map[string]bool{"/healthz": true, "/readyz": true, "/openapi.yaml": true, "/asyncapi.yaml": true}

// knock sends method path as the holder of authorization ("" for none), with a valid
// order as the body of a POST /orders, and returns the answer.
func (a api) knock(t *testing.T, method, path, authorization string, header ...string) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost && path == "/orders" {
		body = strings.NewReader(validOrder().with("customer_id", nil).JSON(t))
	}
	// An event stream that opened would run on: what came in a few seconds is the answer.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", jsonType)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// protectedRoutes lists every route the API serves except the open ones, with {id} as
// id: a route added later is covered without being named here.
func protectedRoutes(t *testing.T, id string) [][2]string {
	var out [][2]string
	for _, r := range httpapi.New(slog.New(slog.DiscardHandler), nil, nil, nil, nil).Routes() {
		if !open[r.Path] {
			out = append(out, [2]string{r.Method, strings.Replace(r.Path, ":id", id, 1)})
		}
	}
	if len(out) != 6 {
		t.Fatalf("%d protected routes, want the 6 order routes: %v", len(out), out)
	}
	return out
}

// tellsNothing fails when an answer names the order, its customer or their email.
func tellsNothing(t *testing.T, body string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("the answer tells %q: %s", s, body)
		}
	}
}

// On every order route, each kind of token that must not get in — none, malformed,
// forged, another issuer's or audience's, out of date — is 401 problem+json with a Bearer
// challenge, and tells nothing; nothing it asked for happens.
func TestEveryOrderRouteRefusesBadTokens(t *testing.T) {
	a := newAPI(t)
	ada := a.place(t, customerID)
	before := a.counts(t)
	forged, err := a.issuer.Forgeries(customerID, []string{auth.ScopeCustomer, auth.ScopeOperator})
	if err != nil {
		t.Fatal(err)
	}
	forged["no token"] = ""
	for _, r := range protectedRoutes(t, ada.ID) {
		for name, tok := range forged {
			t.Run(r[0]+" "+r[1]+"/"+name, func(t *testing.T) {
				authorization := ""
				if name != "no token" {
					authorization = "Bearer " + tok
				}
				status, h, body := a.knock(t, r[0], r[1], authorization)
				if status != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), `Bearer realm="orderflow"`) ||
					h.Get("Content-Type") != web.ProblemContentType {
					t.Fatalf("= %d, WWW-Authenticate %q, %s %s; want 401 problem+json with a Bearer challenge",
						status, h.Get("WWW-Authenticate"), h.Get("Content-Type"), body)
				}
				tellsNothing(t, body, ada.ID, customerID, "ada@example.com")
			})
		}
	}
	if after := a.counts(t); after != before {
		t.Errorf("orders, outbox, history rows went from %v to %v: a refused request changed something", before, after)
	}
	if got := a.getOrder(t, ada.ID); got.Status != "PENDING_PAYMENT" {
		t.Errorf("the order is %s after refused cancels, want PENDING_PAYMENT", got.Status)
	}
}

// A customer's order does not exist for another customer: 404 on every route, the very
// answer an unknown id gets, and their listing does not show it. An operator sees it.
func TestCustomersSeeOnlyTheirOwnOrders(t *testing.T) {
	a := newAPI(t)
	ada := a.place(t, customerID)
	grace := a.as(t, issuer.Customer2, auth.ScopeCustomer)
	theirs := grace.place(t, issuer.Customer2)
	const unknownID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	graceToken := "Bearer " + grace.token

	for _, r := range protectedRoutes(t, ada.ID) {
		if r[0] == http.MethodPost && r[1] == "/orders" || r[1] == "/orders" {
			continue // not about one order
		}
		for _, wait := range []string{"", "wait=1"} {
			if wait != "" && r[1] != "/orders/"+ada.ID {
				continue
			}
			t.Run(r[0]+" "+r[1]+" "+wait, func(t *testing.T) {
				status, _, body := a.knock(t, r[0], r[1], graceToken, "Prefer", wait)
				uStatus, _, uBody := a.knock(t, r[0], strings.Replace(r[1], ada.ID, unknownID, 1), graceToken, "Prefer", wait)
				if status != http.StatusNotFound || body != strings.ReplaceAll(uBody, unknownID, ada.ID) || uStatus != status {
					t.Fatalf("another customer's order = %d %s; an unknown one = %d %s; want the same 404", status, body, uStatus, uBody)
				}
				tellsNothing(t, body, customerID, "ada@example.com", "PENDING_PAYMENT")
			})
		}
	}
	if got := a.getOrder(t, ada.ID); got.Status != "PENDING_PAYMENT" {
		t.Errorf("ada's order is %s after grace's cancel, want PENDING_PAYMENT", got.Status)
	}

	listed := func(as api, query string) []string {
		t.Helper()
		q, err := url.ParseQuery(query)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, o := range as.list(t, q).Items {
			ids = append(ids, o.ID)
		}
		return ids
	}
	if ids := listed(grace, ""); len(ids) != 1 || ids[0] != theirs.ID {
		t.Errorf("grace's listing = %v, want only her order %s", ids, theirs.ID)
	}
	if ids := listed(grace, "customer_id="+customerID); len(ids) != 0 {
		t.Errorf("grace listing ada's orders = %v, want none", ids)
	}
	// A body naming another customer places no order for them.
	status, _, _ := a.knock(t, http.MethodPost, "/orders", graceToken)
	if status != http.StatusAccepted {
		t.Fatalf("grace placing an order = %d", status)
	}
	op := a.as(t, issuer.Operator, auth.ScopeOperator)
	if ids := listed(op, ""); len(ids) != 3 {
		t.Errorf("the operator's listing = %v, want all 3 orders", ids)
	}
	if ids := listed(op, "customer_id="+customerID); len(ids) != 1 || ids[0] != ada.ID {
		t.Errorf("the operator listing ada's orders = %v, want [%s]", ids, ada.ID)
	}
	if got := op.getOrder(t, ada.ID); got.ID != ada.ID {
		t.Errorf("the operator reading ada's order got %+v", got)
	}
}

// Scopes: a token without one sees nothing; an operator cannot place orders; a customer
// token whose subject is no customer id places none and sees none.
func TestScopesDecideWhatATokenMayDo(t *testing.T) {
	a := newAPI(t)
	ada := a.place(t, customerID)
	bare := "Bearer " + a.as(t, customerID).token
	for _, r := range protectedRoutes(t, ada.ID) {
		status, h, body := a.knock(t, r[0], r[1], bare)
		if status != http.StatusForbidden || !strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Errorf("%s %s without a scope = %d %q %s; want 403 insufficient_scope", r[0], r[1], status, h.Get("WWW-Authenticate"), body)
		}
		tellsNothing(t, body, customerID, "ada@example.com")
	}
	op := "Bearer " + a.as(t, issuer.Operator, auth.ScopeOperator).token
	if status, _, body := a.knock(t, http.MethodPost, "/orders", op); status != http.StatusForbidden {
		t.Errorf("an operator placing an order = %d %s, want 403", status, body)
	}
	nobody := a.as(t, "not-a-uuid", auth.ScopeCustomer)
	if status, _, body := a.knock(t, http.MethodPost, "/orders", "Bearer "+nobody.token); status != http.StatusForbidden || !strings.Contains(body, "not_a_customer") {
		t.Errorf("a customer token whose subject is no UUID placing an order = %d %s, want 403 not_a_customer", status, body)
	}
	if status, _, _ := a.knock(t, http.MethodGet, "/orders/"+ada.ID, "Bearer "+nobody.token); status != http.StatusNotFound {
		t.Errorf("it reading an order = %d, want 404", status)
	}
	if items := nobody.list(t, nil).Items; len(items) != 0 {
		t.Errorf("it listing orders got %d, want none", len(items))
	}
}

func (a api) getOrder(t *testing.T, id string) orderResp {
	t.Helper()
	return decodeOrder(t, a.get(t, "/orders/"+id), http.StatusOK)
}
