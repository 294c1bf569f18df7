// Package payment is the payment domain: a payment's outcome and the provider that
// charges cards.
package payment

import (
	"context"
	"errors"
	"time"
)

// Status of a payment.
type Status string

const (
	// Charging: claimed for charging; the provider's answer is not recorded yet.
	Charging  Status = "CHARGING"
	Completed Status = "COMPLETED"
	Failed    Status = "FAILED"
	// Refunded: completed, then paid back because the order was cancelled.
	Refunded Status = "REFUNDED"
	// Cancelled: the order was cancelled before it was charged, and never will be.
	Cancelled Status = "CANCELLED"
)

// Payment is the outcome of charging for one order. There is at most one per order.
type Payment struct {
	ID            string
	OrderID       string
	CustomerID    string
	CustomerEmail string
	AmountCents   int64
	Currency      string
	Status        Status
	FailureReason string
	ChargeID      string
	RefundID      string
	CauseEventID  string
	CreatedAt     time.Time
	RefundedAt    time.Time
	// PendingSince is when the provider said the charge's outcome comes later (zero: it
	// did not, or the outcome is recorded).
	PendingSince time.Time
}

// ChargeRequest asks the provider to charge once per IdempotencyKey, however often it
// is asked.
type ChargeRequest struct {
	IdempotencyKey string // the order id
	AmountCents    int64
	Currency       string
	PaymentMethod  string
}

// Charge is the provider's answer. A declined charge is an answer, not an error.
type Charge struct {
	ID          string
	Succeeded   bool
	DeclineCode string // card_declined, insufficient_funds, invalid_payment_method (empty: declined, no reason given)
	// ProviderCode is the provider's own code for a decline, when it has more of them
	// than the contract's reasons (Stripe's decline_code): for the log.
	ProviderCode string
}

// RefundRequest asks the provider to pay a charge back in full, once per IdempotencyKey.
type RefundRequest struct {
	IdempotencyKey string // the order id
	ChargeID       string
	AmountCents    int64
	Currency       string
}

// Refund is the provider's answer to a refund.
type Refund struct {
	ID string
}

// Provider charges payment methods and refunds charges. It must be idempotent on the
// requests' IdempotencyKey: a repeated request returns the first answer and never
// charges or refunds twice.
type Provider interface {
	Charge(ctx context.Context, req ChargeRequest) (Charge, error)
	Refund(ctx context.Context, req RefundRequest) (Refund, error)
	// Lookup returns the charge the provider holds under key, and whether it holds one:
	// what settles a payment whose charging kept failing, or whose outcome was to come
	// later and did not (ErrTransient when it cannot say). It decides: a charge still
	// waiting at the provider (for the customer's authentication, say) is called off
	// first, so none can succeed after Lookup said there was none.
	Lookup(ctx context.Context, key string) (Charge, bool, error)
}

// ErrPending says the provider took the charge and tells its outcome later (Stripe: 3-D
// Secure, processing), through a notification (a webhook); past the payment deadline,
// Lookup decides.
var ErrPending = errors.New("the charge's outcome comes later")

// ErrTransient is a provider failure worth retrying (timeout, 5xx, rate limit).
var ErrTransient = errors.New("payment provider temporarily unavailable")

// ErrNotRefundable says the charge does not exist, did not succeed, or was already
// refunded under another key: a bug upstream, never retried.
var ErrNotRefundable = errors.New("charge cannot be refunded")

// ErrRejected says the provider refused the request as such and asking again would not
// help: what it holds decides, as for ErrIdempotencyMismatch.
var ErrRejected = errors.New("the provider refused the request; asking again would not help")

// ErrIdempotencyMismatch says a key was reused with different parameters: a bug upstream,
// never retried.
var ErrIdempotencyMismatch = errors.New("idempotency key reused with different parameters")
