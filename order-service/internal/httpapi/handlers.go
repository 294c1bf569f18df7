package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/orders"
)

// viewerOf is whom the request's token speaks for: an operator, a customer (the token's
// subject, when it is a UUID), both, or — a customer token whose subject is no customer
// id — neither, which sees nothing.
func viewerOf(c echo.Context) order.Viewer {
	p, _ := web.PrincipalOf(c)
	v := order.Viewer{Operator: p.Has(auth.ScopeOperator)}
	if sub := strings.ToLower(p.Subject); p.Has(auth.ScopeCustomer) && events.IsUUID(sub) {
		v.Customer = sub
	}
	return v
}

// visible returns order id if v sees it, and order.ErrNotFound otherwise: another
// customer's order does not exist for v.
func visible(ctx context.Context, store Store, v order.Viewer, id string) (order.Order, error) {
	o, err := store.Get(ctx, id)
	if err == nil && !v.Sees(o) {
		return order.Order{}, order.ErrNotFound
	}
	return o, err
}

// createOrder accepts an order: stored PENDING_PAYMENT with its order.created event in one
// transaction, answered 202 Accepted, since payment happens afterwards.
//
// With "Prefer: wait=N" it holds the answer until payment has decided, at most N seconds:
// 201 Created with the final order, or 202 with the pending one.
func createOrder(log *slog.Logger, store Store, changes Changes, now func() time.Time) echo.HandlerFunc {
	return func(c echo.Context) error {
		v := viewerOf(c)
		if v.Customer == "" {
			return web.NewProblem(http.StatusForbidden, "not_a_customer", "Forbidden",
				"the token's subject is not a customer id (a UUID), so it cannot place orders")
		}
		req, err := parseCreate(c.Request().Header.Get(echo.HeaderContentType), c.Request().Body)
		if err != nil {
			return err
		}
		// The customer is the token's subject. A customer_id in the body may repeat it
		// (older clients send one) but never name someone else.
		otherCustomer := req.CustomerID != "" && strings.ToLower(req.CustomerID) != v.Customer
		req.CustomerID = v.Customer
		key, err := idempotencyKey(c)
		if err != nil {
			return err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		t := now()
		correlationID := c.Request().Header.Get("X-Correlation-ID")
		if len(correlationID) > 128 {
			correlationID = "" // start a new one rather than carry an oversized header along
		}
		o, err := order.New(req, id.String(), correlationID, t)
		if otherCustomer {
			return withOtherCustomer(err)
		}
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		o, replay, err := store.Place(ctx, o, once(key, o))
		if err != nil {
			return err
		}
		if replay != nil {
			h := c.Response().Header()
			h.Set("Idempotent-Replayed", "true")
			h.Set(echo.HeaderLocation, "/orders/"+replay.OrderID)
			return c.Blob(replay.Status, echo.MIMEApplicationJSON, replay.Body)
		}
		log.InfoContext(ctx, "order accepted", "order_id", o.ID, "correlation_id", o.CorrelationID, "total_cents", o.TotalCents)
		c.Response().Header().Set(echo.HeaderLocation, "/orders/"+o.ID)
		if wait, ok := preferWait(c.Request().Header); ok && web.Wait(c) == nil {
			// The order is stored: a failure to wait still answers with it, as pending;
			// so does a request that finds no waiting place (Prefer is a preference).
			if final, err := awaitOutcome(c.Request().Context(), store, changes, v, o.ID, wait); err == nil {
				o = final
			}
			return respondAfterWait(c, o, wait, http.StatusCreated)
		}
		return c.JSON(http.StatusAccepted, toJSON(o))
	}
}

// once places o at most once per Idempotency-Key when key is not empty, a key seen
// before replaying the 202 of its first request.
func once(key string, o order.Order) *orders.Once {
	if key == "" {
		return nil
	}
	return &orders.Once{Key: key, RequestHash: requestHash(o), Answer: func(o order.Order) (int, []byte, error) {
		body, err := json.Marshal(toJSON(o))
		return http.StatusAccepted, body, err
	}}
}

// idempotencyKey reads the Idempotency-Key header: absent, or 1 to 255 visible ASCII
// characters.
func idempotencyKey(c echo.Context) (string, error) {
	values := c.Request().Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", nil
	}
	key := values[0]
	bad := len(values) > 1 || key == "" || len(key) > order.MaxIdempotencyKeyLength
	for _, r := range key {
		if r < 0x21 || r > 0x7e {
			bad = true
		}
	}
	if bad {
		return "", web.NewProblem(http.StatusBadRequest, "invalid_idempotency_key", "Invalid Idempotency-Key",
			fmt.Sprintf("send one Idempotency-Key of 1 to %d visible ASCII characters", order.MaxIdempotencyKeyLength))
	}
	return key, nil
}

// requestHash identifies what was asked for, independent of JSON spacing and key order.
func requestHash(o order.Order) string {
	b, _ := json.Marshal(struct {
		CustomerID, CustomerEmail, Currency, PaymentMethod string
		Items                                              []order.Item
	}{o.CustomerID, o.CustomerEmail, o.Currency, o.PaymentMethod, o.Items})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Listing limits.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// durationParam is the form of a duration parameter, as the OpenAPI document gives it:
// each number with its unit ("0" alone, which Go would take, is not one), small enough
// never to overflow.
var durationParam = regexp.MustCompile(`^([0-9]{1,5}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$`)

// listOrders serves GET /orders?customer_id=&status=&older_than=&limit=&cursor=, newest first, with
// an opaque cursor to the next page ("next_cursor", absent on the last page).
func listOrders(store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := web.Query(c)
		if err != nil {
			return err
		}
		f := order.Filter{Limit: DefaultPageSize}
		var errs []order.FieldError
		bad := func(field, msg string) { errs = append(errs, order.FieldError{Field: field, Message: msg}) }
		for _, name := range []string{"customer_id", "status", "older_than", "limit", "cursor"} {
			if len(q[name]) > 1 {
				bad(name, "must be given once")
			}
		}
		// A filter (or limit) given empty is refused like any invalid value, never ignored:
		// that would widen the filter the client asked for.
		given := func(name string) (string, bool) { _, ok := q[name]; return q.Get(name), ok }
		if v, ok := given("customer_id"); ok {
			if !events.IsUUID(v) {
				bad("customer_id", "must be a UUID")
			}
			f.CustomerID = strings.ToLower(v)
		}
		if v, ok := given("status"); ok {
			switch st := order.Status(v); st {
			case order.PendingPayment, order.Confirmed, order.PaymentFailed, order.Cancelled:
				f.Status = st
			default:
				bad("status", "must be PENDING_PAYMENT, CONFIRMED, PAYMENT_FAILED or CANCELLED")
			}
		}
		if v, ok := given("older_than"); ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || !durationParam.MatchString(v) {
				bad("older_than", "must be a duration such as 300s, 5m or 1h30m")
			}
			f.PlacedBefore = time.Now().Add(-d)
		}
		if v, ok := given("limit"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxPageSize {
				bad("limit", fmt.Sprintf("must be a whole number from 1 to %d", MaxPageSize))
			}
			f.Limit = n
		}
		if v := q.Get("cursor"); v != "" { // empty: the first page, which widens nothing
			// The cursor is the last order's id, its 16 bytes in unpadded base64url: 22
			// characters, every one of which names a position, so none is refused.
			b, err := base64.RawURLEncoding.DecodeString(v)
			id, perr := uuid.FromBytes(b)
			if err != nil || perr != nil {
				bad("cursor", "is not a cursor this API gave out")
			}
			f.Before = id.String()
		}
		if len(errs) > 0 {
			return &order.ValidationError{Fields: errs, Of: "query"}
		}
		var orders []order.Order
		if f, ok := viewerOf(c).Narrow(f); ok {
			if orders, err = store.List(c.Request().Context(), f); err != nil {
				return err
			}
		}
		page := struct {
			Items      []orderJSON `json:"items"`
			NextCursor string      `json:"next_cursor,omitempty"`
		}{Items: make([]orderJSON, len(orders))}
		for i, o := range orders {
			page.Items[i] = toJSON(o)
		}
		if len(orders) == f.Limit {
			last, err := uuid.Parse(orders[len(orders)-1].ID)
			if err != nil {
				return fmt.Errorf("list orders: next cursor: %w", err)
			}
			page.NextCursor = base64.RawURLEncoding.EncodeToString(last[:])
		}
		return c.JSON(http.StatusOK, page)
	}
}

// orderHistory serves GET /orders/{id}/history: each status change, oldest first, with
// the id of the event that caused it.
func orderHistory(store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := orderID(c)
		if err != nil {
			return err
		}
		changes, err := historyOf(c.Request().Context(), store, viewerOf(c), id)
		if err != nil {
			return err
		}
		items := make([]changeJSON, len(changes))
		for i, ch := range changes {
			items[i] = toChangeJSON("", ch)
		}
		return c.JSON(http.StatusOK, map[string]any{"items": items})
	}
}

// getOrder serves GET /orders/{id}. With "Prefer: wait=N" a pending order is answered
// once payment has decided (200), or after N seconds as it stands (202).
func getOrder(store Store, changes Changes) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := orderID(c)
		if err != nil {
			return err
		}
		if wait, ok := preferWait(c.Request().Header); ok && web.Wait(c) == nil { // no waiting place: answered at once
			o, err := awaitOutcome(c.Request().Context(), store, changes, viewerOf(c), id, wait)
			if err != nil {
				return err
			}
			return respondAfterWait(c, o, wait, http.StatusOK)
		}
		o, err := visible(c.Request().Context(), store, viewerOf(c), id)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, toJSON(o))
	}
}

// cancelOrder serves POST /orders/{id}/cancel: a pending order becomes CANCELLED and
// order.cancelled is published; payment refunds a charge that went through regardless.
func cancelOrder(log *slog.Logger, store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := orderID(c)
		if err != nil {
			return err
		}
		o, err := store.Cancel(c.Request().Context(), id, viewerOf(c))
		if err != nil {
			return err
		}
		log.InfoContext(c.Request().Context(), "order cancelled", "order_id", o.ID, "correlation_id", o.CorrelationID)
		return c.JSON(http.StatusOK, toJSON(o))
	}
}

// orderID reads the {id} path parameter: an order id, or order.ErrNotFound.
func orderID(c echo.Context) (string, error) {
	id := strings.ToLower(c.Param("id"))
	if !events.IsUUID(id) {
		return "", order.ErrNotFound
	}
	return id, nil
}
