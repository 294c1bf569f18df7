package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/orderflow/devstack/issuer"
)

// The one client of the end-to-end tests: every harness (in-process, devstack, compose)
// places and reads orders through these, with client's tokens (roles) unless a request
// carries its own Authorization.

// orderBody is an order of the demo customer's, to email, paid with token: items, when
// given, in place of one BOOK-42 at 19.99.
func orderBody(email, token string, items ...string) string {
	lines := `{"sku":"BOOK-42","quantity":1,"unit_price_cents":1999}`
	if len(items) > 0 {
		lines = strings.Join(items, ",")
	}
	return fmt.Sprintf(`{"customer_id":"`+issuer.Customer+`","customer_email":%q,"currency":"EUR","items":[%s],"payment_method":%q}`, email, lines, token)
}

// placeOrder posts body to orderURL's /orders with headers (name, value pairs) and
// returns the order as accepted: 202, PENDING_PAYMENT, its Location. Anything else is
// an error that says what came.
func placeOrder(orderURL, body string, headers ...string) (orderResp, error) {
	return placeOrderWith(client, orderURL, body, headers...)
}

// placeOrderWith is placeOrder through c: http.DefaultClient sends once, where client
// sends again what the service refused with Retry-After.
func placeOrderWith(c *http.Client, orderURL, body string, headers ...string) (orderResp, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, orderURL+"/orders", strings.NewReader(body))
	if err != nil {
		return orderResp{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return orderResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return orderResp{}, err
	}
	var o orderResp
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &o) != nil || o.Status != "PENDING_PAYMENT" || resp.Header.Get("Location") != "/orders/"+o.ID {
		return orderResp{}, fmt.Errorf("POST /orders = %d %s (Location %q), want 202 PENDING_PAYMENT at its Location", resp.StatusCode, b, resp.Header.Get("Location"))
	}
	return o, nil
}

// getJSON reads url, which must answer 200, into v.
func getJSON(url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s = %d %s", url, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// must fails t with err, if any.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
