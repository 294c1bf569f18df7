package httpapi

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/order-service/internal/order"
)

// Whatever the body, decoding and validating a create request ends in a valid order or
// in a 4xx the API can answer: never a panic, never an error it would turn into a 500,
// never more than order.MaxFieldErrors fields listed.
func FuzzCreateRequest(f *testing.F) {
	for _, seed := range []string{
		`{"customer_id":"` + issuer.Customer + `","customer_email":"ada@example.com","currency":"EUR",
		  "items":[{"sku":"BOOK-42","quantity":2,"unit_price_cents":1999}],"payment_method":"tok_visa"}`,
		`{"items":[{"quantity":"two"},{"colour":"red"}]}`,
		`{"items":[{"sku":"S","quantity":1000,"unit_price_cents":1000000000}],"currency":"eur"}`,
		`{} }`, `[]`, `null`, ``, `{"customer_id":1e400}`, `{"items":[null]}`,
		`{"items":"BOOK-42"}`, `{"items":null,"currency":7}`,
		`{"items":[` + strings.Repeat(`{},`, order.MaxItems) + `{}]}`,
		`{"items":[` + strings.Repeat(`{"sku":1},`, 30) + `[]]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseCreate("application/json", bytes.NewReader(body))
		if err == nil {
			_, err = order.New(req, "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "", time.Now())
			if err == nil {
				return
			}
		}
		var p *web.Problem
		var ve *order.ValidationError
		switch {
		case errors.As(err, &ve):
			if len(ve.Fields) == 0 || len(ve.Fields) > order.MaxFieldErrors || ve.Omitted < 0 {
				t.Fatalf("a validation error listing %d fields, %d omitted, for %q", len(ve.Fields), ve.Omitted, body)
			}
		case errors.As(err, &p):
			if p.Status < 400 || p.Status > 499 {
				t.Fatalf("problem status %d for %q", p.Status, body)
			}
		default:
			t.Fatalf("%T %v for %q would be a 500", err, err, body)
		}
	})
}
