// Package httpapi is notification-service's read-only view for operators and tests.
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
	"github.com/orderflow/notification-service/internal/notification"
)

// Store is what the API needs of the notifications database.
type Store interface {
	ByOrder(ctx context.Context, orderID string) ([]notification.Notification, error)
}

// New returns the API with every route registered. The view needs an operator's bearer
// token that v accepts; health and the event contract stay open.
func New(log *slog.Logger, store Store, ready func(context.Context) error, v *auth.Verifier) *echo.Echo {
	e := web.NewEcho(log, nil)
	web.Health(e, ready)
	e.GET("/notifications", views.ListByOrder(store.ByOrder, view), web.Authenticate(v, auth.ScopeOperator))
	web.Document(e, "/asyncapi.yaml", events.AsyncAPI())
	return e
}

type notificationJSON struct {
	ID        string     `json:"id"`
	OrderID   string     `json:"order_id"`
	Kind      string     `json:"kind"`
	Recipient string     `json:"recipient"`
	Subject   string     `json:"subject"`
	MessageID string     `json:"message_id"`
	Status    string     `json:"status"`
	SentAt    *time.Time `json:"sent_at,omitempty"` // absent when SUPPRESSED
}

func view(n notification.Notification) notificationJSON {
	v := notificationJSON{
		ID: n.ID, OrderID: n.OrderID, Kind: string(n.Kind), Recipient: n.Recipient, Subject: n.Subject,
		MessageID: n.MessageID, Status: n.Status,
	}
	if !n.SentAt.IsZero() {
		v.SentAt = &n.SentAt
	}
	return v
}
