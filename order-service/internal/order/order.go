// Package order is the order domain: what an order is, what makes a request for one
// valid, and which status changes are allowed. It is pure: no I/O.
package order

import (
	"errors"
	"fmt"
	"math"
	"net/mail"
	"strings"
	"time"
	"unicode"

	"github.com/orderflow/common-events/events"
)

// Status is where an order stands.
type Status string

const (
	PendingPayment Status = "PENDING_PAYMENT"
	Confirmed      Status = "CONFIRMED"
	PaymentFailed  Status = "PAYMENT_FAILED"
	Cancelled      Status = "CANCELLED"
)

// Terminal reports whether nothing more happens to an order in this status.
func (s Status) Terminal() bool { return s != PendingPayment }

// Sentinel errors the store and the API translate.
var (
	ErrNotFound          = errors.New("order not found")
	ErrInvalidTransition = errors.New("invalid status transition")
	// ErrIdempotencyKeyReused: the key was first used with a different request.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused with a different request")
	// ErrIdempotencyKeyInFlight: a request with the same key is being processed right now.
	ErrIdempotencyKeyInFlight = errors.New("a request with this idempotency key is in flight")
)

// Idempotency keys are kept this long; a key older than that is free again.
const IdempotencyKeyTTL = 24 * time.Hour

// MaxIdempotencyKeyLength bounds an Idempotency-Key header.
const MaxIdempotencyKeyLength = 255

// Replay is the stored answer to the first request made with an idempotency key.
type Replay struct {
	Status  int
	Body    []byte
	OrderID string
}

// Limits on a request.
const (
	MaxItems          = 100
	MaxSKULength      = 64
	MaxQuantity       = 1000
	MaxUnitPriceCents = 1_000_000_000
	MaxEmailLength    = 254
	MaxPaymentMethod  = 255
)

// Item is one order line; prices are integer minor units of the order's currency.
type Item struct {
	SKU            string
	Quantity       int
	UnitPriceCents int64
}

// Request is what a customer asks for.
type Request struct {
	CustomerID    string
	CustomerEmail string
	Currency      string
	Items         []Item
	PaymentMethod string
}

// Order is an order and where it stands.
type Order struct {
	ID            string
	CustomerID    string
	CustomerEmail string
	Currency      string
	Items         []Item
	TotalCents    int64
	PaymentMethod string
	Status        Status
	FailureReason string
	CorrelationID string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	// Version is 1 when placed and one more with each change: what order.state's
	// records carry, so a consumer can tell the latest.
	Version int64
}

// Filter selects orders for a listing page.
type Filter struct {
	CustomerID string // empty: any
	Status     Status // empty: any
	Before     string // keyset cursor: only orders with a smaller id (older); empty: from the newest
	// PlacedBefore keeps the orders placed before it; zero: any. With Status
	// PENDING_PAYMENT: the orders pending for longer than a threshold.
	PlacedBefore time.Time
	Limit        int
}

// Viewer is whom a request speaks for: a customer, who sees only their own orders, or an
// operator, who sees every order. The zero Viewer sees nothing.
type Viewer struct {
	Customer string // the customer's id (lower case), when the viewer is a customer
	Operator bool
}

// Sees reports whether v may see (and act on) o. An order v does not see answers as if
// it did not exist, so its id tells nothing.
func (v Viewer) Sees(o Order) bool {
	return v.Operator || (v.Customer != "" && o.CustomerID == v.Customer)
}

// Narrow restricts f to the orders v sees. ok is false when that leaves none: a customer
// asking for another customer's orders.
func (v Viewer) Narrow(f Filter) (_ Filter, ok bool) {
	if v.Operator {
		return f, true
	}
	if v.Customer == "" || (f.CustomerID != "" && f.CustomerID != v.Customer) {
		return f, false
	}
	f.CustomerID = v.Customer
	return f, true
}

// Change is one entry of an order's history.
type Change struct {
	From, To     Status
	CauseEventID string
	Reason       string
	At           time.Time
}

// FieldError names one invalid field, as a JSON path such as items[2].quantity.
type FieldError struct {
	Field   string
	Message string
}

// MaxFieldErrors bounds the invalid fields a ValidationError lists: enough to fix a
// request by, and an answer that stays small however much of a request is wrong.
const MaxFieldErrors = 20

// ValidationError names the invalid fields of a request: the first MaxFieldErrors, and
// how many more there are.
type ValidationError struct {
	Fields  []FieldError
	Omitted int    // invalid fields not listed in Fields
	Of      string // what was invalid: "order" when empty, "query" for a listing
}

// Add records one more invalid field: listed while fewer than MaxFieldErrors are,
// only counted after that.
func (e *ValidationError) Add(f FieldError) {
	if len(e.Fields) >= MaxFieldErrors {
		e.Omitted++
		return
	}
	e.Fields = append(e.Fields, f)
}

// Listed returns the fields to show, at most MaxFieldErrors even when e was built
// without Add, and how many more are invalid.
func (e *ValidationError) Listed() (fields []FieldError, omitted int) {
	if len(e.Fields) <= MaxFieldErrors {
		return e.Fields, e.Omitted
	}
	return e.Fields[:MaxFieldErrors], e.Omitted + len(e.Fields) - MaxFieldErrors
}

func (e *ValidationError) Error() string {
	fields, omitted := e.Listed()
	parts := make([]string, len(fields), len(fields)+1)
	for i, f := range fields {
		parts[i] = f.Field + ": " + f.Message
	}
	if omitted > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", omitted))
	}
	of := e.Of
	if of == "" {
		of = "order"
	}
	return "invalid " + of + ": " + strings.Join(parts, "; ")
}

// TooManyItems is the error for an order of n items, n above MaxItems. It is the only
// one such an order gets about its items: they are not checked one by one.
func TooManyItems(n int) FieldError {
	return FieldError{Field: "items", Message: fmt.Sprintf("must hold at most %d items, got %d", MaxItems, n)}
}

// New validates req and returns the order it describes, honestly PENDING_PAYMENT:
// nothing has been charged yet. A bad request returns a *ValidationError naming its
// invalid fields (at most MaxFieldErrors of them).
func New(req Request, id, correlationID string, now time.Time) (Order, error) {
	var ve ValidationError
	bad := func(field, format string, args ...any) {
		ve.Add(FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}

	if req.CustomerID == "" {
		bad("customer_id", "is required")
	} else if !events.IsUUID(req.CustomerID) {
		bad("customer_id", "must be a UUID such as 5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93")
	}
	switch {
	case req.CustomerEmail == "":
		bad("customer_email", "is required")
	case len(req.CustomerEmail) > MaxEmailLength || !validEmail(req.CustomerEmail):
		bad("customer_email", "must be a valid email address such as ada@example.com")
	}
	switch {
	case req.Currency == "":
		bad("currency", "is required")
	case !currencies[req.Currency]:
		bad("currency", "must be an ISO 4217 currency code in capitals, such as EUR or USD")
	}
	switch {
	case req.PaymentMethod == "":
		bad("payment_method", "is required")
	case len(req.PaymentMethod) > MaxPaymentMethod:
		bad("payment_method", "must be at most %d characters", MaxPaymentMethod)
	case hasControl(req.PaymentMethod):
		bad("payment_method", "must not contain control characters")
	}
	items := req.Items
	switch n := len(items); {
	case n == 0:
		bad("items", "must hold at least one item")
	case n > MaxItems:
		ve.Add(TooManyItems(n))
		items = nil // the count is the error; the items themselves are not looked at
	}

	var total int64
	overflow := false
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		switch n := len(it.SKU); {
		case n == 0:
			bad(field+".sku", "is required")
		case n > MaxSKULength:
			bad(field+".sku", "must be at most %d characters", MaxSKULength)
		case hasControl(it.SKU):
			bad(field+".sku", "must not contain control characters")
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			bad(field+".quantity", "must be from 1 to %d, got %d", MaxQuantity, it.Quantity)
		}
		if it.UnitPriceCents < 1 || it.UnitPriceCents > MaxUnitPriceCents {
			bad(field+".unit_price_cents", "must be from 1 to %d, got %d", MaxUnitPriceCents, it.UnitPriceCents)
		}
		line := int64(it.Quantity) * it.UnitPriceCents
		if it.Quantity > 0 && it.UnitPriceCents > 0 && (line/int64(it.Quantity) != it.UnitPriceCents || total > math.MaxInt64-line) {
			overflow = true
		}
		total += line
	}
	if overflow {
		bad("items", "the order total does not fit in 64 bits")
	}
	if len(ve.Fields) > 0 {
		return Order{}, &ve
	}
	now = now.UTC().Truncate(time.Microsecond) // what PostgreSQL keeps, so POST and GET agree
	return Order{
		ID:            id,
		CustomerID:    strings.ToLower(req.CustomerID),
		CustomerEmail: req.CustomerEmail,
		Currency:      req.Currency,
		Items:         req.Items,
		TotalCents:    total,
		PaymentMethod: req.PaymentMethod,
		Status:        PendingPayment,
		CorrelationID: correlationID,
		CreatedAt:     now,
		UpdatedAt:     now,
		Version:       1,
	}, nil
}

// hasControl reports whether s holds a control character: nothing an identifier needs,
// and NUL is one PostgreSQL cannot store (Schemathesis sent one: a 500, until this check).
func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func validEmail(s string) bool {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	return at > 0 && strings.Contains(s[at+1:], ".")
}

// TransitionError is a move the order's status does not allow; it is ErrInvalidTransition.
type TransitionError struct {
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%v: %s → %s", ErrInvalidTransition, e.From, e.To)
}

// Is makes a TransitionError ErrInvalidTransition.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }

// Transition moves the order to status to, recording reason when the payment failed.
// Only a pending order moves; anything else is a *TransitionError.
func (o *Order) Transition(to Status, reason string, now time.Time) error {
	if o.Status != PendingPayment || (to != Confirmed && to != PaymentFailed && to != Cancelled) {
		return &TransitionError{From: o.Status, To: to}
	}
	o.Status = to
	o.FailureReason = ""
	if to == PaymentFailed {
		o.FailureReason = reason
	}
	o.UpdatedAt = now.UTC().Truncate(time.Microsecond)
	o.Version++
	return nil
}

// CreatedEvent is the order.created payload: everything payment and later consumers need.
func (o Order) CreatedEvent() events.OrderCreated {
	items := make([]events.Item, len(o.Items))
	for i, it := range o.Items {
		items[i] = events.Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents}
	}
	return events.OrderCreated{
		OrderID: o.ID, CustomerID: o.CustomerID, CustomerEmail: o.CustomerEmail, Items: items,
		TotalCents: o.TotalCents, Currency: o.Currency, PaymentMethod: o.PaymentMethod, CreatedAt: o.CreatedAt,
	}
}

// StateEvent is the order.state payload: the order as it stands, with its version.
func (o Order) StateEvent() events.OrderState {
	return events.OrderState{
		OrderID: o.ID, CustomerID: o.CustomerID, Status: string(o.Status), FailureReason: o.FailureReason,
		Items: o.CreatedEvent().Items, TotalCents: o.TotalCents, Currency: o.Currency, Version: o.Version,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
}

// CancelledEvent is the order.cancelled payload: enough for payment to refund and for
// notification to tell the customer.
func (o Order) CancelledEvent() events.OrderCancelled {
	return events.OrderCancelled{
		OrderID: o.ID, CustomerID: o.CustomerID, CustomerEmail: o.CustomerEmail,
		TotalCents: o.TotalCents, Currency: o.Currency, CancelledAt: o.UpdatedAt,
	}
}
