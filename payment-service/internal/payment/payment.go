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
	Completed Status = "COMPLETED"
	Failed    Status = "FAILED"
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
	CauseEventID  string
	CreatedAt     time.Time
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
	DeclineCode string // card_declined, insufficient_funds, invalid_payment_method
}

// Provider charges payment methods. It must be idempotent on ChargeRequest.IdempotencyKey:
// a repeated request returns the first answer and never charges twice.
type Provider interface {
	Charge(ctx context.Context, req ChargeRequest) (Charge, error)
}

// ErrTransient is a provider failure worth retrying (timeout, 5xx, rate limit).
var ErrTransient = errors.New("payment provider temporarily unavailable")

// ErrIdempotencyMismatch says a key was reused with different parameters: a bug upstream,
// never retried.
var ErrIdempotencyMismatch = errors.New("idempotency key reused with different parameters")
