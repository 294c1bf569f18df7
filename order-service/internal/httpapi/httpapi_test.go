package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/common-events/web/webtest"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/orders"
	"github.com/orderflow/order-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	jsonType   = "application/json"
	customerID = issuer.Customer
)

// api is order-service's HTTP API on a fresh, migrated database, with its own token
// issuer. client presents the demo customer's token.
type api struct {
	url     string
	pool    *pgxpool.Pool
	changes *postgres.Changes
	issuer  *issuer.Issuer
	token   string       // the demo customer's
	client  *http.Client // presents token
}

func newAPI(t *testing.T) api {
	t.Helper()
	return newAPIWith(t, testenv.Issuer(t))
}

// newAPIWith is newAPI accepting the tokens of is.
func newAPIWith(t *testing.T, is *issuer.Issuer) api {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(t.Output(), nil))
	changes := postgres.NewChanges(pool, log)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = changes.Run(cctx) }()
	srv := httptest.NewServer(httpapi.New(log, orders.New(postgres.NewStore(pool), nil), changes, func(context.Context) error { return nil }, auth.NewVerifier(is.Config(), nil)))
	t.Cleanup(func() { stop(); <-done; srv.Close() }) // waiters and streams end first
	a := api{url: srv.URL, pool: pool, changes: changes, issuer: is}
	return a.as(t, customerID, auth.ScopeCustomer)
}

// as returns the API as seen by another holder of a token: sub with scopes.
func (a api) as(t *testing.T, sub string, scopes ...string) api {
	a.token = testenv.Token(t, a.issuer, sub, scopes...)
	a.client = &http.Client{Transport: issuer.Bearer{Token: a.token}}
	return a
}

// post sends body to POST /orders with contentType, none when empty.
func (a api) post(t *testing.T, contentType, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.url+"/orders", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return a.do(t, req)
}

func (a api) get(t *testing.T, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a.do(t, req)
}

func (a api) do(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// counts returns how many rows orders, outbox and order_history hold.
func (a api) counts(t *testing.T) [3]int {
	t.Helper()
	var c [3]int
	err := a.pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox), (SELECT count(*) FROM order_history)`,
	).Scan(&c[0], &c[1], &c[2])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkProblem asserts resp is a problem+json with status and code, naming exactly the
// fields given, and returns it.
func checkProblem(t *testing.T, resp *http.Response, status int, code string, fields ...string) web.Problem {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := webtest.Problem(t, resp, body, status, code)
	got := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		got[i] = e.Field
		if e.Message == "" {
			t.Errorf("errors[%d] (%s) has no message", i, e.Field)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(fields))
	if !slices.Equal(got, want) {
		t.Errorf("errors[].field = %v, want %v; body %s", got, want, body)
	}
	return p
}

type itemReq struct {
	SKU            any `json:"sku,omitempty"`
	Quantity       any `json:"quantity,omitempty"`
	UnitPriceCents any `json:"unit_price_cents,omitempty"`
}

// orderReq is a create request; fields are any so a test can send a wrong JSON type.
type orderReq map[string]any

func validOrder() orderReq {
	return orderReq{
		"customer_id":    customerID,
		"customer_email": "ada@example.com",
		"currency":       "EUR",
		"items": []itemReq{
			{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1500},
			{SKU: "PEN-7", Quantity: 1, UnitPriceCents: 250},
		},
		"payment_method": "tok_visa",
	}
}

func (r orderReq) with(key string, v any) orderReq {
	out := make(orderReq, len(r))
	for k, val := range r {
		out[k] = val
	}
	if v == nil {
		delete(out, key)
	} else {
		out[key] = v
	}
	return out
}

func (r orderReq) withItem(i int, it itemReq) orderReq {
	items := slices.Clone(r["items"].([]itemReq))
	items[i] = it
	return r.with("items", items)
}

func (r orderReq) JSON(t *testing.T) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func nItems(n int) []itemReq {
	its := make([]itemReq, n)
	for i := range its {
		its[i] = itemReq{SKU: fmt.Sprintf("SKU-%d", i), Quantity: 1, UnitPriceCents: 100}
	}
	return its
}

func TestCreateOrderRejected(t *testing.T) {
	a := newAPI(t)
	valid := validOrder().JSON(t)

	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code        string
		fields      []string
	}{
		{"syntax error", jsonType, `{"customer_id": "` + customerID + `",`, 400, "malformed_json", nil},
		{"not json", jsonType, `customer_id=` + customerID, 400, "malformed_json", nil},
		{"empty body", jsonType, ``, 400, "malformed_json", nil},
		{"whitespace body", jsonType, " \n\t", 400, "malformed_json", nil},
		{"trailing garbage", jsonType, valid + ` garbage`, 400, "malformed_json", nil},
		{"trailing object", jsonType, valid + `{}`, 400, "malformed_json", nil},
		{"trailing brace", jsonType, valid + `}`, 400, "malformed_json", nil},
		{"trailing bracket", jsonType, valid + `]`, 400, "malformed_json", nil},

		{"text/plain", "text/plain", valid, 415, "unsupported_media_type", nil},
		{"no content type", "", valid, 415, "unsupported_media_type", nil},
		{"form", "application/x-www-form-urlencoded", valid, 415, "unsupported_media_type", nil},
		{"unparsable content type", "application/json; charset", valid, 415, "unsupported_media_type", nil},

		{"body over 1 MiB", jsonType, validOrder().with("payment_method", strings.Repeat("x", httpapi.MaxBodyBytes)).JSON(t), 413, "body_too_large", nil},
		{"valid order padded over 1 MiB", jsonType, valid + strings.Repeat(" ", httpapi.MaxBodyBytes), 413, "body_too_large", nil},

		{"customer_id of another customer", jsonType, validOrder().with("customer_id", "11111111-2222-4333-8444-555555555555").JSON(t), 422, "validation", []string{"customer_id"}},
		{"customer_id not a uuid", jsonType, validOrder().with("customer_id", "customer-42").JSON(t), 422, "validation", []string{"customer_id"}},
		{"customer_id without dashes", jsonType, validOrder().with("customer_id", strings.ReplaceAll(customerID, "-", "")).JSON(t), 422, "validation", []string{"customer_id"}},
		{"customer_email missing", jsonType, validOrder().with("customer_email", "").JSON(t), 422, "validation", []string{"customer_email"}},
		{"customer_email invalid", jsonType, validOrder().with("customer_email", "ada.example.com").JSON(t), 422, "validation", []string{"customer_email"}},
		{"customer_email with display name", jsonType, validOrder().with("customer_email", "Ada <ada@example.com>").JSON(t), 422, "validation", []string{"customer_email"}},
		{"currency missing", jsonType, validOrder().with("currency", nil).JSON(t), 422, "validation", []string{"currency"}},
		{"currency lower case", jsonType, validOrder().with("currency", "eur").JSON(t), 422, "validation", []string{"currency"}},
		{"currency not ISO 4217", jsonType, validOrder().with("currency", "XYZ").JSON(t), 422, "validation", []string{"currency"}},
		{"currency four letters", jsonType, validOrder().with("currency", "EURO").JSON(t), 422, "validation", []string{"currency"}},
		{"items missing", jsonType, validOrder().with("items", nil).JSON(t), 422, "validation", []string{"items"}},
		{"items empty", jsonType, validOrder().with("items", []itemReq{}).JSON(t), 422, "validation", []string{"items"}},
		{"items 101", jsonType, validOrder().with("items", nItems(101)).JSON(t), 422, "validation", []string{"items"}},
		{"sku missing", jsonType, validOrder().withItem(0, itemReq{Quantity: 1, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].sku"}},
		{"sku with NUL (PostgreSQL cannot store it)", jsonType, validOrder().withItem(0, itemReq{SKU: "BOOK\x0042", Quantity: 1, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].sku"}},
		{"payment_method with NUL", jsonType, validOrder().with("payment_method", "tok_\x00visa").JSON(t), 422, "validation", []string{"payment_method"}},
		{"sku 65 chars", jsonType, validOrder().withItem(0, itemReq{SKU: strings.Repeat("S", 65), Quantity: 1, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].sku"}},
		{"quantity 0", jsonType, validOrder().withItem(0, itemReq{SKU: "A", Quantity: 0, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].quantity"}},
		{"quantity 1001", jsonType, validOrder().withItem(0, itemReq{SKU: "A", Quantity: 1001, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].quantity"}},
		{"quantity negative on second item", jsonType, validOrder().withItem(1, itemReq{SKU: "A", Quantity: -3, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[1].quantity"}},
		{"unit_price_cents 0", jsonType, validOrder().withItem(0, itemReq{SKU: "A", Quantity: 1, UnitPriceCents: 0}).JSON(t), 422, "validation", []string{"items[0].unit_price_cents"}},
		{"unit_price_cents 1e9+1", jsonType, validOrder().withItem(0, itemReq{SKU: "A", Quantity: 1, UnitPriceCents: 1_000_000_001}).JSON(t), 422, "validation", []string{"items[0].unit_price_cents"}},
		{"payment_method missing", jsonType, validOrder().with("payment_method", nil).JSON(t), 422, "validation", []string{"payment_method"}},

		{"quantity a string", jsonType, validOrder().withItem(0, itemReq{SKU: "A", Quantity: "two", UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[0].quantity"}},
		{"quantity a fraction", jsonType, validOrder().withItem(1, itemReq{SKU: "A", Quantity: 1.5, UnitPriceCents: 100}).JSON(t), 422, "validation", []string{"items[1].quantity"}},
		{"currency a number", jsonType, validOrder().with("currency", 978).JSON(t), 422, "validation", []string{"currency"}},
		{"items an object", jsonType, validOrder().with("items", map[string]any{"sku": "A"}).JSON(t), 422, "validation", []string{"items"}},
		{"unknown field", jsonType, validOrder().with("coupon", "FREE").JSON(t), 422, "validation", []string{"coupon"}},
		{"unknown item field", jsonType, validOrder().with("items", []map[string]any{{"sku": "A", "quantity": 1, "unit_price_cents": 100, "colour": "red"}}).JSON(t), 422, "validation", []string{"items[0].colour"}},

		{"several bad fields", jsonType, orderReq{
			"customer_id":    "nope",
			"customer_email": "not-an-email",
			"currency":       "eur",
			"items": []itemReq{
				{Quantity: 1, UnitPriceCents: 100},
				{SKU: "OK", Quantity: 1001, UnitPriceCents: 1_000_000_001},
			},
		}.JSON(t), 422, "validation", []string{
			"customer_id", "customer_email", "currency", "payment_method",
			"items[0].sku", "items[1].quantity", "items[1].unit_price_cents",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := a.counts(t)
			// Deferred so that it is checked even when checkProblem stops the test.
			defer func() {
				if after := a.counts(t); after != before {
					t.Errorf("orders, outbox, order_history rows = %v, want them unchanged at %v", after, before)
				}
			}()
			checkProblem(t, a.post(t, tt.contentType, tt.body), tt.status, tt.code, tt.fields...)
		})
	}
}

type orderResp struct {
	ID            string    `json:"id"`
	Status        string    `json:"status"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	Currency      string    `json:"currency"`
	Items         []item    `json:"items"`
	TotalCents    int64     `json:"total_cents"`
	FailureReason string    `json:"failure_reason"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

type item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

func decodeOrder(t *testing.T, resp *http.Response, status int) orderResp {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, jsonType) {
		t.Errorf("Content-Type = %q, want %s", ct, jsonType)
	}
	var o orderResp
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		t.Fatalf("order body %s: %v", body, err)
	}
	return o
}

func TestCreateAndGetOrder(t *testing.T) {
	a := newAPI(t)
	ctx := context.Background()

	resp := a.post(t, "application/json; charset=utf-8", validOrder().JSON(t))
	created := decodeOrder(t, resp, http.StatusAccepted)

	if _, err := uuid.Parse(created.ID); err != nil {
		t.Fatalf("id %q is not a UUID: %v", created.ID, err)
	}
	if loc, want := resp.Header.Get("Location"), "/orders/"+created.ID; loc != want {
		t.Errorf("Location = %q, want %q", loc, want)
	}
	want := orderResp{
		ID: created.ID, Status: "PENDING_PAYMENT", CustomerID: customerID, CustomerEmail: "ada@example.com",
		Currency: "EUR", Items: []item{{"BOOK-1", 2, 1500}, {"PEN-7", 1, 250}}, TotalCents: 2*1500 + 250,
		CreatedAt: created.CreatedAt, UpdatedAt: created.UpdatedAt,
	}
	if !equalOrders(created, want) {
		t.Errorf("created order = %+v, want %+v", created, want)
	}
	if created.CreatedAt.IsZero() || !created.UpdatedAt.Equal(created.CreatedAt) {
		t.Errorf("created_at, updated_at = %v, %v, want both set to the same time", created.CreatedAt, created.UpdatedAt)
	}

	t.Run("get", func(t *testing.T) {
		got := decodeOrder(t, a.get(t, resp.Header.Get("Location")), http.StatusOK)
		if !equalOrders(got, created) {
			t.Errorf("GET order = %+v, want the order POST answered: %+v", got, created)
		}
		// A client compares what the two answers say; both must name the same instant.
		if !got.CreatedAt.Equal(created.CreatedAt) || !got.UpdatedAt.Equal(created.UpdatedAt) {
			t.Errorf("GET created_at, updated_at = %v, %v, want %v, %v as POST answered",
				got.CreatedAt, got.UpdatedAt, created.CreatedAt, created.UpdatedAt)
		}
	})

	t.Run("get with upper-case id", func(t *testing.T) {
		got := decodeOrder(t, a.get(t, "/orders/"+strings.ToUpper(created.ID)), http.StatusOK)
		if got.ID != created.ID {
			t.Errorf("id = %q, want %q", got.ID, created.ID)
		}
	})

	t.Run("stored with its events and history", func(t *testing.T) {
		var n int
		rows, _ := a.pool.Query(ctx, `SELECT topic || ' ' || key FROM outbox ORDER BY id`)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("outbox: %v", err)
		}
		if want := []string{"order.created " + created.ID, "order.state " + created.ID}; !slices.Equal(got, want) {
			t.Errorf("outbox = %v, want %v", got, want)
		}

		var orderID, toStatus string
		var fromStatus *string
		err = a.pool.QueryRow(ctx, `SELECT count(*) OVER (), order_id::text, from_status, to_status FROM order_history`).
			Scan(&n, &orderID, &fromStatus, &toStatus)
		if err != nil {
			t.Fatalf("order_history: %v", err)
		}
		if n != 1 || orderID != created.ID || fromStatus != nil || toStatus != "PENDING_PAYMENT" {
			t.Errorf("order_history = %d row(s), first (%s, %v → %s), want 1 row (%s, NULL → PENDING_PAYMENT)",
				n, orderID, fromStatus, toStatus, created.ID)
		}
		if got := a.counts(t); got != [3]int{1, 2, 1} {
			t.Errorf("orders, outbox, order_history rows = %v, want [1 2 1]", got)
		}
	})

	t.Run("rejected order writes nothing", func(t *testing.T) {
		before := a.counts(t)
		checkProblem(t, a.post(t, jsonType, validOrder().with("currency", "eur").JSON(t)),
			http.StatusUnprocessableEntity, "validation", "currency")
		if after := a.counts(t); after != before {
			t.Errorf("orders, outbox, order_history rows = %v, want them unchanged at %v", after, before)
		}
	})
}

// equalOrders compares everything but the timestamps, which are checked on their own.
func equalOrders(a, b orderResp) bool {
	return a.ID == b.ID && a.Status == b.Status && a.CustomerID == b.CustomerID &&
		a.CustomerEmail == b.CustomerEmail && a.Currency == b.Currency && slices.Equal(a.Items, b.Items) &&
		a.TotalCents == b.TotalCents && a.FailureReason == b.FailureReason
}

func TestGetOrderNotFound(t *testing.T) {
	a := newAPI(t)
	tests := []struct {
		name string
		path string
	}{
		{"unknown uuid", "/orders/" + uuid.NewString()},
		{"not a uuid", "/orders/not-a-uuid"},
		{"sql-ish id", "/orders/1%27%20OR%20%271%27=%271"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblem(t, a.get(t, tt.path), http.StatusNotFound, "not_found")
		})
	}
}
