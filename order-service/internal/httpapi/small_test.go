package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/orders"
	"github.com/orderflow/order-service/internal/postgres"
)

// emptyItems is a create request whose items are n empty objects.
func emptyItems(n int) string {
	const head, tail = `{"customer_email":"ada@example.com","items":[`, `]}`
	var b strings.Builder
	b.Grow(len(head) + 3*n + len(tail))
	b.WriteString(head)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("{}")
	}
	b.WriteString(tail)
	return b.String()
}

// hugeEmptyItems is emptyItems with as many items as fit in a body under MaxBodyBytes,
// and that many.
func hugeEmptyItems() (body string, n int) {
	n = (httpapi.MaxBodyBytes - len(emptyItems(0))) / 3
	return emptyItems(n), n
}

// A body of hundreds of thousands of items is refused on its count alone: one error,
// in an answer of a few KiB.
func TestTooManyItemsAnsweredSmall(t *testing.T) {
	a := newAPI(t)
	body, n := hugeEmptyItems()
	if len(body) >= httpapi.MaxBodyBytes {
		t.Fatalf("body of %d bytes, want under %d", len(body), httpapi.MaxBodyBytes)
	}
	resp := a.post(t, jsonType, body)
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) >= 8<<10 {
		t.Errorf("answer of %d bytes, want under 8 KiB; it starts %.300s", len(raw), raw)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(raw)))
	p := checkProblem(t, resp, http.StatusUnprocessableEntity, "validation", "items")
	want := fmt.Sprintf("must hold at most %d items, got %d", order.MaxItems, n)
	if len(p.Errors) == 1 && p.Errors[0].Message != want {
		t.Errorf("items: %q, want %q", p.Errors[0].Message, want)
	}
	if p.ErrorsOmitted != 0 {
		t.Errorf("errors_omitted = %d, want 0", p.ErrorsOmitted)
	}
}

// However many fields are wrong, the answer lists the first order.MaxFieldErrors of them
// and counts the rest.
func TestFieldErrorsBounded(t *testing.T) {
	a := newAPI(t)
	items := func(item string) []json.RawMessage {
		its := make([]json.RawMessage, order.MaxItems)
		for i := range its {
			its[i] = json.RawMessage(item)
		}
		return its
	}
	// fields names the first n of each item's fields with these suffixes, item by item.
	fields := func(n int, suffixes ...string) []string {
		var out []string
		for i := 0; len(out) < n; i++ {
			for _, s := range suffixes {
				if len(out) < n {
					out = append(out, fmt.Sprintf("items[%d]%s", i, s))
				}
			}
		}
		return out
	}
	const bound = order.MaxFieldErrors
	tests := []struct {
		name   string
		body   string
		listed []string // in order
		total  int      // invalid fields in all
	}{
		// order.New: the sku, quantity and unit_price_cents of every item.
		{"100 empty items", validOrder().with("items", items(`{}`)).JSON(t),
			fields(bound, ".sku", ".quantity", ".unit_price_cents"), 3 * order.MaxItems},
		// withOtherCustomer puts its error first, and the bound still holds.
		{"100 empty items and another customer", validOrder().with("items", items(`{}`)).with("customer_id", "11111111-2222-4333-8444-555555555555").JSON(t),
			append([]string{"customer_id"}, fields(bound-1, ".sku", ".quantity", ".unit_price_cents")...), 3*order.MaxItems + 1},
		// parseCreate: items that do not decode.
		{"100 items of the wrong type", validOrder().with("items", items(`"BOOK-1"`)).JSON(t), fields(bound, ""), order.MaxItems},
		{"100 items with an unknown field", validOrder().with("items", items(`{"colour":"red"}`)).JSON(t), fields(bound, ".colour"), order.MaxItems},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := checkProblem(t, a.post(t, jsonType, tt.body), http.StatusUnprocessableEntity, "validation", tt.listed...)
			got := make([]string, len(p.Errors))
			for i, e := range p.Errors {
				got[i] = e.Field
			}
			if !slices.Equal(got, tt.listed) {
				t.Errorf("errors[].field = %v, want %v in that order", got, tt.listed)
			}
			if want := tt.total - bound; p.ErrorsOmitted != want {
				t.Errorf("errors_omitted = %d, want %d", p.ErrorsOmitted, want)
			}
			if want := fmt.Sprintf("; and %d more", tt.total-bound); !strings.HasSuffix(p.Detail, want) {
				t.Errorf("detail = %q, want it to end %q", p.Detail, want)
			}
			if n := strings.Count(p.Detail, "; "); n != bound {
				t.Errorf("detail = %q, want %d fields and the count of the rest", p.Detail, bound)
			}
		})
	}
}

// A body of hundreds of thousands of items costs what reading any body of its size
// does: the items past order.MaxItems are counted, never kept or decoded.
func TestTooManyItemsAllocateLittle(t *testing.T) {
	a := newAPI(t)
	h := httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(a.pool), nil), a.changes,
		func(context.Context) error { return nil }, auth.NewVerifier(a.issuer.Config(), nil))
	serve := func(body string) (allocated uint64) {
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", jsonType)
		req.Header.Set("Authorization", "Bearer "+a.token)
		rec := httptest.NewRecorder()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)
		if rec.Code != http.StatusUnprocessableEntity {
			t.Fatalf("status = %d, want 422; body %.300s", rec.Code, rec.Body)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	many, n := hugeEmptyItems()
	// As long, with one item: the JSON decoder's buffer grows to hold the whole body
	// either way, and that is all the reading should cost.
	const head, tail = `{"customer_email":"ada@example.com",`, `"items":[{}]}`
	one := head + strings.Repeat(" ", len(many)-len(head)-len(tail)) + tail

	serve(one) // the first request fills caches (token keys, JSON type info) once
	base, got := serve(one), serve(many)
	t.Logf("a body of %d bytes allocated %d bytes with %d items, %d with one", len(many), got, n, base)
	// One json.RawMessage per item alone would be some 10 MiB more.
	const slack = 512 << 10
	if got > base+slack {
		t.Errorf("%d items allocated %d bytes, want at most %d more than the %d of one item in a body as long",
			n, got, slack, base)
	}
}
