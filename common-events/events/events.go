// Package events is orderflow's event contract: topic names, event payloads and the
// CloudEvents 1.0 envelope carried in Kafka headers (binary content mode).
//
// It uses the standard library only, so any consumer can depend on it without
// pulling in a Kafka client or a database driver.
package events

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Topics. Every event has exactly one producer and is keyed by order id. order.state is
// an entity topic (compacted): the latest record of each key is that order as it stands.
const (
	TopicOrderCreated     = "order.created"
	TopicPaymentCompleted = "payment.completed"
	TopicPaymentFailed    = "payment.failed"
	TopicOrderCancelled   = "order.cancelled"
	TopicPaymentRefunded  = "payment.refunded"
	TopicOrderState       = "order.state"
	TopicNotificationSent = "notification.sent"
)

// Event types (ce_type). A breaking change to a payload is a new type ("….v2").
const (
	TypeOrderCreated     = "order.created"
	TypePaymentCompleted = "payment.completed"
	TypePaymentFailed    = "payment.failed"
	TypeOrderCancelled   = "order.cancelled"
	TypePaymentRefunded  = "payment.refunded"
	TypeOrderState       = "order.state"
	TypeNotificationSent = "notification.sent"
)

// The services that produce events (ce_source).
const (
	SourceOrderService        = "order-service"
	SourcePaymentService      = "payment-service"
	SourceNotificationService = "notification-service"
)

// Kind is one event type: its ce_type, the topic it travels on, its one producer and how
// its payload decodes. Every kind is declared once, in kinds; the AsyncAPI document
// describes each with one message, which its tests check.
type Kind struct {
	Type   string // ce_type, from the payload type's EventType
	Topic  string
	Source string // the one service that produces it
	// Entity: the topic says what each key is now rather than what happened to it, and
	// is compacted: the broker keeps each key's latest record for ever and drops the
	// older ones, so a new consumer reads every key's current state from the start.
	Entity bool
	decode func(data []byte, unmarshal Unmarshal) (Event, error)
}

var kinds = []Kind{
	kind[OrderCreated](TopicOrderCreated, SourceOrderService),
	kind[PaymentCompleted](TopicPaymentCompleted, SourcePaymentService),
	kind[PaymentFailed](TopicPaymentFailed, SourcePaymentService),
	kind[OrderCancelled](TopicOrderCancelled, SourceOrderService),
	kind[PaymentRefunded](TopicPaymentRefunded, SourcePaymentService),
	entity(kind[OrderState](TopicOrderState, SourceOrderService)),
	kind[NotificationSent](TopicNotificationSent, SourceNotificationService),
}

func entity(k Kind) Kind {
	k.Entity = true
	return k
}

// IsEntityTopic reports whether topic is an entity topic, compacted (Kind.Entity).
func IsEntityTopic(topic string) bool {
	return slices.ContainsFunc(kinds, func(k Kind) bool { return k.Topic == topic && k.Entity })
}

// kind declares payload type E: its ce_type comes from E itself, and decoding yields an E
// (a value, not a pointer, so a type switch reads naturally).
func kind[E Event](topic, source string) Kind {
	var zero E
	return Kind{Type: zero.EventType(), Topic: topic, Source: source, decode: func(data []byte, unmarshal Unmarshal) (Event, error) {
		var ev E
		if err := unmarshal(data, &ev); err != nil {
			return nil, err
		}
		return ev, nil
	}}
}

// Kinds lists every event type.
func Kinds() []Kind { return slices.Clone(kinds) }

// KindOf returns the kind whose ce_type is eventType.
func KindOf(eventType string) (Kind, bool) {
	i := slices.IndexFunc(kinds, func(k Kind) bool { return k.Type == eventType })
	if i < 0 {
		return Kind{}, false
	}
	return kinds[i], true
}

// Topics lists every topic orderflow publishes to.
func Topics() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.Topic
	}
	return out
}

// DeadLetterTopic names the topic where group parks the poison records it read from topic.
func DeadLetterTopic(topic, group string) string {
	return topic + "." + group + ".dlq"
}

// Payment failure reason codes (payment.failed "reason").
const (
	ReasonCardDeclined         = "card_declined"
	ReasonInsufficientFunds    = "insufficient_funds"
	ReasonInvalidPaymentMethod = "invalid_payment_method"
	// ReasonProviderUnavailable: the provider kept failing until the payment deadline,
	// and its records show no charge for the order: it was never charged.
	ReasonProviderUnavailable = "provider_unavailable"
	// ReasonProviderRejected: the provider refused the charge as such (its idempotency
	// key was used before with other parameters: a bug to look into), and its records
	// show no charge for the order.
	ReasonProviderRejected = "provider_rejected"
	// ReasonDeclined: the provider declined the charge without saying why.
	ReasonDeclined = "declined"
)

// Event is a payload that can travel in an envelope.
type Event interface {
	// EventType is the ce_type of the payload.
	EventType() string
	// Subject is the order id: the ce_subject and the Kafka key.
	Subject() string
	// Validate reports the first field that makes the payload unusable.
	Validate() error
}

// Item is one order line. Money is in integer minor units of the order's currency.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// OrderCreated says an order was accepted and waits for payment.
type OrderCreated struct {
	OrderID       string    `json:"order_id"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	Items         []Item    `json:"items"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	PaymentMethod string    `json:"payment_method"`
	CreatedAt     time.Time `json:"created_at"`
}

// PaymentCompleted says the customer was charged for the order.
type PaymentCompleted struct {
	OrderID       string    `json:"order_id"`
	PaymentID     string    `json:"payment_id"`
	ChargeID      string    `json:"charge_id"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	AmountCents   int64     `json:"amount_cents"`
	Currency      string    `json:"currency"`
	CompletedAt   time.Time `json:"completed_at"`
}

// PaymentFailed says the charge was refused for good; Reason is a code such as card_declined.
type PaymentFailed struct {
	OrderID       string    `json:"order_id"`
	PaymentID     string    `json:"payment_id"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	AmountCents   int64     `json:"amount_cents"`
	Currency      string    `json:"currency"`
	Reason        string    `json:"reason"`
	FailedAt      time.Time `json:"failed_at"`
}

// OrderCancelled says the customer cancelled the order while it waited for payment. A
// payment that went through anyway is refunded.
type OrderCancelled struct {
	OrderID       string    `json:"order_id"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	CancelledAt   time.Time `json:"cancelled_at"`
}

// PaymentRefunded says the charge for a cancelled order was paid back in full.
type PaymentRefunded struct {
	OrderID       string    `json:"order_id"`
	PaymentID     string    `json:"payment_id"`
	ChargeID      string    `json:"charge_id"`
	RefundID      string    `json:"refund_id"`
	CustomerID    string    `json:"customer_id"`
	CustomerEmail string    `json:"customer_email"`
	AmountCents   int64     `json:"amount_cents"`
	Currency      string    `json:"currency"`
	RefundedAt    time.Time `json:"refunded_at"`
}

// OrderState is an order as it stands, the value of its key on the entity topic
// order.state, written with every change of the order (placed, confirmed, failed,
// cancelled) in the same transaction. Version grows by one with each change: a consumer
// keeps the highest it has seen and ignores a record with a lower or equal one, so a
// redelivered or reordered record cannot move an order back. The customer's email is left
// out: the topic keeps every order for ever.
type OrderState struct {
	OrderID       string    `json:"order_id"`
	CustomerID    string    `json:"customer_id"`
	Status        string    `json:"status"`
	FailureReason string    `json:"failure_reason,omitempty"`
	Items         []Item    `json:"items"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	Version       int64     `json:"version"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// The statuses of an order (OrderState.Status).
const (
	StatusPendingPayment = "PENDING_PAYMENT"
	StatusConfirmed      = "CONFIRMED"
	StatusPaymentFailed  = "PAYMENT_FAILED"
	StatusCancelled      = "CANCELLED"
)

// NotificationSent says notification-service handed an email about an order to the mail
// server. RecipientDomain is the part of the address after the @: enough to see where
// mail goes, not whom it went to.
type NotificationSent struct {
	OrderID         string    `json:"order_id"`
	Kind            string    `json:"kind"`
	MessageID       string    `json:"message_id"`
	RecipientDomain string    `json:"recipient_domain"`
	SentAt          time.Time `json:"sent_at"`
}

func (OrderCreated) EventType() string     { return TypeOrderCreated }
func (PaymentCompleted) EventType() string { return TypePaymentCompleted }
func (PaymentFailed) EventType() string    { return TypePaymentFailed }
func (OrderCancelled) EventType() string   { return TypeOrderCancelled }
func (PaymentRefunded) EventType() string  { return TypePaymentRefunded }
func (OrderState) EventType() string       { return TypeOrderState }
func (NotificationSent) EventType() string { return TypeNotificationSent }

func (e OrderCreated) Subject() string     { return e.OrderID }
func (e PaymentCompleted) Subject() string { return e.OrderID }
func (e PaymentFailed) Subject() string    { return e.OrderID }
func (e OrderCancelled) Subject() string   { return e.OrderID }
func (e PaymentRefunded) Subject() string  { return e.OrderID }
func (e OrderState) Subject() string       { return e.OrderID }
func (e NotificationSent) Subject() string { return e.OrderID }

// Validate checks what a consumer relies on; the producer validated the rest.
func (e OrderCreated) Validate() error {
	var errs []error
	errs = append(errs, required("order_id", e.OrderID), required("customer_id", e.CustomerID),
		required("customer_email", e.CustomerEmail), currency(e.Currency),
		required("payment_method", e.PaymentMethod), positive("total_cents", e.TotalCents))
	if len(e.Items) == 0 {
		errs = append(errs, errors.New("items: empty"))
	}
	var sum int64
	for i, it := range e.Items {
		if it.SKU == "" || it.Quantity <= 0 || it.UnitPriceCents <= 0 {
			errs = append(errs, fmt.Errorf("items[%d]: sku, quantity and unit_price_cents are required", i))
		}
		sum += int64(it.Quantity) * it.UnitPriceCents
	}
	if len(e.Items) > 0 && sum != e.TotalCents {
		errs = append(errs, fmt.Errorf("total_cents: %d is not the sum of the items (%d)", e.TotalCents, sum))
	}
	return errors.Join(errs...)
}

func (e PaymentCompleted) Validate() error {
	return errors.Join(required("order_id", e.OrderID), required("payment_id", e.PaymentID),
		required("customer_email", e.CustomerEmail), currency(e.Currency),
		positive("amount_cents", e.AmountCents))
}

func (e PaymentFailed) Validate() error {
	return errors.Join(required("order_id", e.OrderID), required("payment_id", e.PaymentID),
		required("customer_email", e.CustomerEmail), currency(e.Currency),
		required("reason", e.Reason))
}

func (e OrderCancelled) Validate() error {
	return errors.Join(required("order_id", e.OrderID), required("customer_id", e.CustomerID),
		required("customer_email", e.CustomerEmail), currency(e.Currency), positive("total_cents", e.TotalCents))
}

func (e PaymentRefunded) Validate() error {
	return errors.Join(required("order_id", e.OrderID), required("payment_id", e.PaymentID),
		required("refund_id", e.RefundID), required("customer_email", e.CustomerEmail), currency(e.Currency),
		positive("amount_cents", e.AmountCents))
}

func (e OrderState) Validate() error {
	var status error
	switch e.Status {
	case StatusPendingPayment, StatusConfirmed, StatusPaymentFailed, StatusCancelled:
	default:
		status = fmt.Errorf("status: %q is no order status", e.Status)
	}
	return errors.Join(required("order_id", e.OrderID), required("customer_id", e.CustomerID), status,
		currency(e.Currency), positive("total_cents", e.TotalCents), positive("version", e.Version))
}

func (e NotificationSent) Validate() error {
	return errors.Join(required("order_id", e.OrderID), required("kind", e.Kind), required("message_id", e.MessageID),
		required("recipient_domain", e.RecipientDomain))
}

func required(field, v string) error {
	if v == "" {
		return fmt.Errorf("%s: required", field)
	}
	return nil
}

func positive(field string, v int64) error {
	if v <= 0 {
		return fmt.Errorf("%s: must be positive, got %d", field, v)
	}
	return nil
}

func currency(v string) error {
	if len(v) != 3 {
		return fmt.Errorf("currency: want a 3-letter code, got %q", v)
	}
	return nil
}

// IsUUID reports whether s is a UUID in the one form the contract allows: 36 characters,
// hexadecimal digits (either case) in groups of 8-4-4-4-12 joined by hyphens. No braces,
// no urn:uuid: prefix, no 32-digit form. Every id of the contract (an order's, a
// customer's, an event's) and of the APIs is checked with it.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'):
			return false
		}
	}
	return true
}
