// Package httpapi is payment-service's read-only view for operators and tests.
package httpapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/views"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/simulator"
)

// Store is what the API needs of the payments database.
type Store interface {
	ByOrder(ctx context.Context, orderID string) ([]payment.Payment, error)
}

// Ledger is the payment provider's record of its charges and refunds, by idempotency key.
type Ledger interface {
	Ledger(ctx context.Context, key string) ([]simulator.LedgerEntry, error)
	Refunds(ctx context.Context, key string) ([]simulator.RefundEntry, error)
}

// New returns the API with every route registered. ledger may be nil when the provider
// keeps no ledger of its own here. The views need an operator's bearer token that v
// accepts; health and the two contract documents stay open.
func New(log *slog.Logger, store Store, ledger Ledger, ready func(context.Context) error, v *auth.Verifier) *echo.Echo {
	e := web.NewEcho(log, nil)
	web.Health(e, ready)
	operator := web.Authenticate(v, auth.ScopeOperator)
	e.GET("/payments", views.ListByOrder(store.ByOrder, view), operator)
	web.Document(e, "/openapi.yaml", openAPIDocument)
	web.Document(e, "/asyncapi.yaml", events.AsyncAPI())
	if ledger != nil {
		e.GET("/provider/charges", views.ListByOrder(ledger.Ledger, viewCharge), operator)
		e.GET("/provider/refunds", views.ListByOrder(ledger.Refunds, viewRefund), operator)
	}
	return e
}

type chargeJSON struct {
	IdempotencyKey string    `json:"idempotency_key"`
	ChargeID       string    `json:"charge_id"`
	AmountCents    int64     `json:"amount_cents"`
	Currency       string    `json:"currency"`
	Outcome        string    `json:"outcome"`
	DeclineCode    string    `json:"decline_code,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

func viewCharge(e simulator.LedgerEntry) chargeJSON {
	return chargeJSON{
		IdempotencyKey: e.IdempotencyKey, ChargeID: e.ChargeID, AmountCents: e.AmountCents, Currency: e.Currency,
		Outcome: e.Outcome, DeclineCode: e.DeclineCode, CreatedAt: e.CreatedAt,
	}
}

type refundJSON struct {
	IdempotencyKey string    `json:"idempotency_key"`
	RefundID       string    `json:"refund_id"`
	ChargeID       string    `json:"charge_id"`
	AmountCents    int64     `json:"amount_cents"`
	Currency       string    `json:"currency"`
	CreatedAt      time.Time `json:"created_at"`
}

func viewRefund(e simulator.RefundEntry) refundJSON { return refundJSON(e) }

type paymentJSON struct {
	ID            string     `json:"id"`
	OrderID       string     `json:"order_id"`
	Status        string     `json:"status"`
	AmountCents   int64      `json:"amount_cents"`
	Currency      string     `json:"currency"`
	FailureReason string     `json:"failure_reason,omitempty"`
	ChargeID      string     `json:"charge_id,omitempty"`
	RefundID      string     `json:"refund_id,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	RefundedAt    *time.Time `json:"refunded_at,omitempty"`
}

func view(p payment.Payment) paymentJSON {
	v := paymentJSON{
		ID: p.ID, OrderID: p.OrderID, Status: string(p.Status), AmountCents: p.AmountCents,
		Currency: p.Currency, FailureReason: p.FailureReason, ChargeID: p.ChargeID, RefundID: p.RefundID, CreatedAt: p.CreatedAt,
	}
	if !p.RefundedAt.IsZero() {
		v.RefundedAt = &p.RefundedAt
	}
	return v
}
