// Package httpapi is order-service's REST API.
package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
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

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// Store is what the API needs of orders: package orders's Service.
type Store interface {
	Place(ctx context.Context, o order.Order, once *orders.Once) (order.Order, *order.Replay, error)
	Cancel(ctx context.Context, id string, v order.Viewer) (order.Order, error)
	Get(ctx context.Context, id string) (order.Order, error)
	List(ctx context.Context, f order.Filter) ([]order.Order, error)
	History(ctx context.Context, id string) ([]order.Change, error)
}

// New returns the API with every route registered. Every order route needs a bearer
// token that v accepts: a customer's (auth.ScopeCustomer) places orders and sees and
// cancels their own; an operator's (auth.ScopeOperator) sees and cancels any. Health and
// the two contract documents stay open.
func New(log *slog.Logger, store Store, changes Changes, ready func(context.Context) error, v *auth.Verifier) *echo.Echo {
	e := web.NewEcho(log, problemFor)
	web.Health(e, ready)
	customer := web.Authenticate(v, auth.ScopeCustomer)
	either := web.Authenticate(v, auth.ScopeCustomer, auth.ScopeOperator)
	e.POST("/orders", createOrder(log, store, changes, time.Now), customer)
	e.GET("/orders", listOrders(store), either)
	e.GET("/orders/:id", getOrder(store, changes), either)
	e.GET("/orders/:id/history", orderHistory(store), either)
	e.GET("/orders/:id/events", orderEvents(store, changes), either)
	e.POST("/orders/:id/cancel", cancelOrder(log, store), either)
	web.Document(e, "/openapi.yaml", openAPIDocument)
	web.Document(e, "/asyncapi.yaml", events.AsyncAPI())
	return e
}

// problemFor decides the status of every domain error, in one place.
func problemFor(err error) *web.Problem {
	var ve *order.ValidationError
	switch {
	case errors.As(err, &ve):
		p := web.NewProblem(http.StatusUnprocessableEntity, "validation", "Your request is not valid", ve.Error())
		fields, omitted := ve.Listed()
		for _, f := range fields {
			p.Errors = append(p.Errors, web.FieldError{Field: f.Field, Message: f.Message})
		}
		p.ErrorsOmitted = omitted
		return p
	case errors.Is(err, order.ErrNotFound):
		return web.NewProblem(http.StatusNotFound, "not_found", "Order not found", "no order has this id")
	case errors.Is(err, order.ErrIdempotencyKeyReused):
		return web.NewProblem(http.StatusUnprocessableEntity, "idempotency_key_reused", "Idempotency key reused",
			"this Idempotency-Key was first used with a different request; use a new key for a new order")
	case errors.Is(err, order.ErrIdempotencyKeyInFlight):
		return web.NewProblem(http.StatusConflict, "idempotency_key_in_flight", "Request in flight",
			"a request with this Idempotency-Key is being processed; retry in a moment")
	}
	return nil
}

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

type itemJSON struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

type createRequest struct {
	CustomerID    string `json:"customer_id"`
	CustomerEmail string `json:"customer_email"`
	Currency      string `json:"currency"`
	// Items are decoded one by one, so an error names the item: items[2].quantity.
	Items         itemList `json:"items"`
	PaymentMethod string   `json:"payment_method"`
}

// itemList is the items array as raw items: the first order.MaxItems of them, and how
// many it holds. Items past those are counted, never kept, so a body of a million empty
// items costs no more memory than one of a hundred.
type itemList struct {
	raw []json.RawMessage
	n   int
}

func (l *itemList) UnmarshalJSON(data []byte) error {
	// encoding/json has checked data is one well-formed value; only its kind is unknown.
	switch data[0] {
	case 'n':
		*l = itemList{} // null: no items, as when the field is left out
		return nil
	case '[':
	default:
		// The *json.UnmarshalTypeError encoding/json gives for a non-array; it names
		// no field, and encoding/json adds "items" to it on the way out.
		var notArray []json.RawMessage
		return json.Unmarshal(data, &notArray)
	}
	*l = itemList{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // [
		return err
	}
	var raw json.RawMessage // one buffer for every item, copied only for those kept
	for dec.More() {
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if l.n < order.MaxItems {
			l.raw = append(l.raw, bytes.Clone(raw))
		}
		l.n++
	}
	return nil
}

type orderJSON struct {
	ID            string     `json:"id"`
	Status        string     `json:"status"`
	CustomerID    string     `json:"customer_id"`
	CustomerEmail string     `json:"customer_email"`
	Currency      string     `json:"currency"`
	Items         []itemJSON `json:"items"`
	TotalCents    int64      `json:"total_cents"`
	FailureReason string     `json:"failure_reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

func toJSON(o order.Order) orderJSON {
	items := make([]itemJSON, len(o.Items))
	for i, it := range o.Items {
		items[i] = itemJSON(it)
	}
	return orderJSON{
		ID: o.ID, Status: string(o.Status), CustomerID: o.CustomerID, CustomerEmail: o.CustomerEmail,
		Currency: o.Currency, Items: items, TotalCents: o.TotalCents, FailureReason: o.FailureReason,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
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

// withOtherCustomer adds to err, the request's validation errors if any, that its
// customer_id names another customer than the token.
func withOtherCustomer(err error) error {
	out := &order.ValidationError{}
	out.Add(order.FieldError{Field: "customer_id", Message: "must be left out or be the customer the bearer token names"})
	// Rebuilt through Add, so the bound holds with this error first.
	if ve := (*order.ValidationError)(nil); errors.As(err, &ve) {
		fields, omitted := ve.Listed()
		for _, f := range fields {
			out.Add(f)
		}
		out.Omitted += omitted
		out.Of = ve.Of
	}
	return out
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

type changeJSON struct {
	OrderID      string    `json:"order_id,omitempty"`
	From         string    `json:"from,omitempty"`
	To           string    `json:"to"`
	CauseEventID string    `json:"cause_event_id"`
	Reason       string    `json:"reason,omitempty"`
	At           time.Time `json:"at"`
}

func toChangeJSON(orderID string, ch order.Change) changeJSON {
	return changeJSON{OrderID: orderID, From: string(ch.From), To: string(ch.To), CauseEventID: ch.CauseEventID, Reason: ch.Reason, At: ch.At.UTC()}
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

// parseCreate reads a create-order request: the body decoded strictly, each item on its
// own so an error names it. It returns a *web.Problem (400, 413, 415) or an
// *order.ValidationError (422) for a bad request; order.New validates the rest. Too many
// items is answered on the count alone, before any item is decoded.
func parseCreate(contentType string, body io.Reader) (order.Request, error) {
	var req createRequest
	if err := decodeJSON(contentType, body, &req); err != nil {
		return order.Request{}, err
	}
	if req.Items.n > order.MaxItems {
		return order.Request{}, &order.ValidationError{Fields: []order.FieldError{order.TooManyItems(req.Items.n)}}
	}
	items := make([]order.Item, len(req.Items.raw))
	var ve order.ValidationError
	for i, raw := range req.Items.raw {
		var it itemJSON
		if err := strictUnmarshal(raw, &it); err != nil {
			for _, f := range fieldErrors(err, fmt.Sprintf("items[%d]", i)) {
				ve.Add(f)
			}
			continue
		}
		items[i] = order.Item(it)
	}
	if len(ve.Fields) > 0 {
		return order.Request{}, &ve
	}
	return order.Request{
		CustomerID: req.CustomerID, CustomerEmail: req.CustomerEmail, Currency: req.Currency,
		Items: items, PaymentMethod: req.PaymentMethod,
	}, nil
}

// decodeJSON reads a JSON body strictly: application/json only (415), at most
// MaxBodyBytes (413), one well-formed JSON value and nothing after it (400), known fields
// of the right types (422).
func decodeJSON(contentType string, body io.Reader, v any) error {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != echo.MIMEApplicationJSON {
		return web.NewProblem(http.StatusUnsupportedMediaType, "unsupported_media_type", "Unsupported Media Type",
			"send the body as application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, io.NopCloser(body), MaxBodyBytes))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		// Anything after the value, even a stray "}", makes the body malformed; reading to
		// the end also notices a body that is too large only past the value.
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("unexpected data after the JSON value")
			}
		}
	}
	if err == nil {
		return nil
	}
	var tooBig *http.MaxBytesError
	var unread *web.BodyError
	switch {
	case errors.As(err, &unread):
		return err // the body's own problem: it stopped arriving
	case errors.As(err, &tooBig):
		return web.NewProblem(http.StatusRequestEntityTooLarge, "body_too_large", "Request Entity Too Large",
			fmt.Sprintf("the body must be at most %d bytes", MaxBodyBytes))
	case errors.Is(err, io.EOF):
		return web.NewProblem(http.StatusBadRequest, "malformed_json", "Malformed JSON", "the request body is empty")
	}
	if fields := fieldErrors(err, ""); fields != nil {
		return &order.ValidationError{Fields: fields}
	}
	return web.NewProblem(http.StatusBadRequest, "malformed_json", "Malformed JSON", "the request body is not valid JSON: "+err.Error())
}

// strictUnmarshal decodes one JSON value, refusing unknown fields.
func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// fieldErrors turns a decoding error that is about one field (wrong type, unknown name)
// into a field error under prefix, or returns nil for any other error.
func fieldErrors(err error, prefix string) []order.FieldError {
	path := func(field string) string {
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = prefix
		} else {
			field = path(field)
		}
		if field == "" {
			field = "(body)"
		}
		return []order.FieldError{{Field: field, Message: fmt.Sprintf("must be a %s, got a JSON %s", jsonType(typeErr.Type.Kind().String()), typeErr.Value)}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return []order.FieldError{{Field: path(name), Message: "is not a known field"}}
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "int32":
		return "whole number"
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return kind
}
