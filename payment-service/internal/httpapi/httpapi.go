// Package httpapi is payment-service's read-only view for operators and tests.
package httpapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/payment-service/internal/payment"
)

// Store is what the API needs of the payments database.
type Store interface {
	ByOrder(ctx context.Context, orderID string) ([]payment.Payment, error)
}

// New returns the API with every route registered.
func New(log *slog.Logger, store Store, ready func(context.Context) error) *echo.Echo {
	e := platform.NewEcho(log, nil)
	platform.Health(e, ready)
	e.GET("/payments", platform.ListByOrder(store.ByOrder, view))
	return e
}

type paymentJSON struct {
	ID            string    `json:"id"`
	OrderID       string    `json:"order_id"`
	Status        string    `json:"status"`
	AmountCents   int64     `json:"amount_cents"`
	Currency      string    `json:"currency"`
	FailureReason string    `json:"failure_reason,omitempty"`
	ChargeID      string    `json:"charge_id,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
}

func view(p payment.Payment) paymentJSON {
	return paymentJSON{
		ID: p.ID, OrderID: p.OrderID, Status: string(p.Status), AmountCents: p.AmountCents,
		Currency: p.Currency, FailureReason: p.FailureReason, ChargeID: p.ChargeID, CreatedAt: p.CreatedAt,
	}
}
