// Package httpapi is notification-service's read-only view for operators and tests.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/notification-service/internal/notification"
)

// Store is what the API needs of the notifications database.
type Store interface {
	ByOrder(ctx context.Context, orderID string) ([]notification.Notification, error)
}

// New returns the API with every route registered.
func New(log *slog.Logger, store Store, ready func(context.Context) error) *echo.Echo {
	e := platform.NewEcho(log, nil)
	platform.Health(e, ready)
	e.GET("/notifications", listNotifications(store))
	return e
}

type notificationJSON struct {
	ID        string    `json:"id"`
	OrderID   string    `json:"order_id"`
	Kind      string    `json:"kind"`
	Recipient string    `json:"recipient"`
	Subject   string    `json:"subject"`
	MessageID string    `json:"message_id"`
	Status    string    `json:"status"`
	SentAt    time.Time `json:"sent_at"`
}

func listNotifications(store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		orderID, err := platform.OrderIDParam(c)
		if err != nil {
			return err
		}
		ns, err := store.ByOrder(c.Request().Context(), orderID)
		if err != nil {
			return err
		}
		items := make([]notificationJSON, len(ns))
		for i, n := range ns {
			items[i] = notificationJSON{
				ID: n.ID, OrderID: n.OrderID, Kind: string(n.Kind), Recipient: n.Recipient, Subject: n.Subject,
				MessageID: n.MessageID, Status: n.Status, SentAt: n.SentAt,
			}
		}
		return c.JSON(http.StatusOK, map[string]any{"items": items})
	}
}
