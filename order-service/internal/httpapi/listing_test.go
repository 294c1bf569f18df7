package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

type page struct {
	Items      []orderResp `json:"items"`
	NextCursor string      `json:"next_cursor"`
}

func (a api) list(t *testing.T, query url.Values) page {
	t.Helper()
	resp := a.get(t, "/orders?"+query.Encode())
	if resp.StatusCode != http.StatusOK {
		checkProblem(t, resp, http.StatusOK, "")
	}
	var p page
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (a api) place(t *testing.T, customer string) orderResp {
	t.Helper()
	return decodeOrder(t, a.as(t, customer, auth.ScopeCustomer).post(t, jsonType, validOrder().with("customer_id", customer).JSON(t)), http.StatusAccepted)
}

// Pages are newest first, cover every order once, and stay put while new orders arrive.
func TestListOrdersPagesAreStableUnderInserts(t *testing.T) {
	a := newAPI(t)
	const other = "11111111-2222-4333-8444-555555555555"
	var mine []string
	for i := range 25 {
		mine = append(mine, a.place(t, customerID).ID)
		if i%5 == 0 {
			a.place(t, other)
		}
	}
	seen := map[string]bool{}
	var order_ []string
	q := url.Values{"customer_id": {customerID}, "limit": {"10"}}
	pages := 0
	for {
		p := a.list(t, q)
		pages++
		for _, o := range p.Items {
			if o.CustomerID != customerID {
				t.Fatalf("listing for %s returned an order of %s", customerID, o.CustomerID)
			}
			if seen[o.ID] {
				t.Fatalf("order %s listed twice", o.ID)
			}
			seen[o.ID] = true
			order_ = append(order_, o.ID)
		}
		a.place(t, customerID) // arrives between pages: newer than every cursor, never shown later
		if p.NextCursor == "" {
			break
		}
		q.Set("cursor", p.NextCursor)
	}
	if pages != 3 || len(order_) != 25 {
		t.Fatalf("%d pages with %d orders, want 3 pages with the 25 orders that existed", pages, len(order_))
	}
	for i, id := range order_ {
		if want := mine[len(mine)-1-i]; id != want {
			t.Fatalf("position %d is %s, want %s (newest first)", i, id, want)
		}
	}
}

func TestListOrdersFiltersAndRejectsBadParameters(t *testing.T) {
	a := newAPI(t)
	pending := a.place(t, customerID)
	if got := a.list(t, url.Values{"status": {"PENDING_PAYMENT"}}); len(got.Items) != 1 || got.Items[0].ID != pending.ID {
		t.Errorf("status=PENDING_PAYMENT = %+v", got.Items)
	}
	if got := a.list(t, url.Values{"status": {"CONFIRMED"}}); len(got.Items) != 0 {
		t.Errorf("status=CONFIRMED = %+v, want none", got.Items)
	}
	// Pending for longer than a threshold: an order placed 10 minutes ago is, one placed
	// just now is not.
	stuck := a.place(t, customerID)
	if _, err := a.pool.Exec(context.Background(), `UPDATE orders SET created_at = now() - interval '10 minutes' WHERE id = $1`, stuck.ID); err != nil {
		t.Fatal(err)
	}
	if got := a.list(t, url.Values{"status": {"PENDING_PAYMENT"}, "older_than": {"5m"}}); len(got.Items) != 1 || got.Items[0].ID != stuck.ID {
		t.Errorf("status=PENDING_PAYMENT&older_than=5m = %+v, want only %s", got.Items, stuck.ID)
	}
	if got := a.list(t, url.Values{"status": {"PENDING_PAYMENT"}}); len(got.Items) != 2 {
		t.Errorf("status=PENDING_PAYMENT = %d orders, want both", len(got.Items))
	}
	for _, tc := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=101", "limit"}, {"limit=ten", "limit"},
		{"status=SHIPPED", "status"}, {"customer_id=42", "customer_id"}, {"cursor=not-a-cursor", "cursor"},
		{"limit=" + strings.Repeat("9", 10000), "limit"}, {"limit=1.5", "limit"}, {"customer_id=" + strings.Repeat("a", 5000), "customer_id"},
		{"status=CONFIRMED&status=PENDING_PAYMENT", "status"}, {"limit=1&limit=2", "limit"},
		{"customer_id=", "customer_id"}, {"status=", "status"}, {"limit=", "limit"},
		{"older_than=", "older_than"}, {"older_than=5", "older_than"}, {"older_than=-5m", "older_than"},
		{"older_than=five", "older_than"}, {"older_than=5m&older_than=1h", "older_than"}, {"older_than=0", "older_than"},
		{"older_than=999999h", "older_than"},
		{"cursor=AAAAAAAAAAAAAAAAAAAAAA==", "cursor"}, {"cursor=" + strings.Repeat("A", 23), "cursor"},
	} {
		t.Run(tc.query[:min(len(tc.query), 40)], func(t *testing.T) {
			checkProblem(t, a.get(t, "/orders?"+tc.query), http.StatusUnprocessableEntity, "validation", tc.field)
		})
	}
	// Broken URL encoding is refused rather than silently dropped, which would widen the filter.
	for _, query := range []string{"status=%ZZ", "customer_id=" + customerID + "&x=%G1", "limit=5;status=CONFIRMED"} {
		checkProblem(t, a.get(t, "/orders?"+query), http.StatusBadRequest, "malformed_query")
	}
	// Parameters the API does not know are ignored, as a cache buster would be.
	if got := a.list(t, url.Values{"status": {"PENDING_PAYMENT"}, "_": {"12345"}}); len(got.Items) != 2 {
		t.Errorf("with an unknown parameter: %+v", got.Items)
	}
}

func TestOrderHistoryShowsEachChangeWithItsCause(t *testing.T) {
	a := newAPI(t)
	o := a.place(t, customerID)
	ctx := context.Background()
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.NewStore(a.pool).Transition(ctx, tx, o.ID, order.PaymentFailed, "card_declined", "event-42", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	resp := a.get(t, "/orders/"+o.ID+"/history")
	var h struct {
		Items []struct {
			From, To, Reason string
			CauseEventID     string `json:"cause_event_id"`
			At               time.Time
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if len(h.Items) != 2 || h.Items[0].To != "PENDING_PAYMENT" || h.Items[0].From != "" || h.Items[0].CauseEventID == "" ||
		h.Items[1].From != "PENDING_PAYMENT" || h.Items[1].To != "PAYMENT_FAILED" || h.Items[1].Reason != "card_declined" ||
		h.Items[1].CauseEventID != "event-42" || h.Items[1].At.IsZero() {
		t.Errorf("history = %+v", h.Items)
	}
	checkProblem(t, a.get(t, fmt.Sprintf("/orders/%s/history", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f")), http.StatusNotFound, "not_found")
}
