// Package httpapi is order-service's REST API: its routes (this file), the answers its
// errors get (errors.go), the JSON it reads and writes (json.go), and its handlers
// (handlers.go; live.go for waiting on an order and its event stream).
package httpapi

import (
	"context"
	"log/slog"
	"time"

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
