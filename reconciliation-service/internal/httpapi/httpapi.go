// Package httpapi is reconciliation-service's API for operators: the open mismatches, and
// everything the services said about one order.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// Store is what the API reads.
type Store interface {
	Mismatches(ctx context.Context, kind, afterKind, afterOrder string, limit int) ([]reconcile.Mismatch, error)
	Timeline(ctx context.Context, orderID string) ([]postgres.Said, error)
}

// The page sizes of GET /mismatches.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// New returns the API: both views want an operator's bearer token that v accepts; health
// and the event contract stay open.
func New(log *slog.Logger, store Store, ready func(context.Context) error, v *auth.Verifier) *echo.Echo {
	e := web.NewEcho(log, nil)
	web.Health(e, ready)
	operator := web.Authenticate(v, auth.ScopeOperator)
	e.GET("/mismatches", mismatches(store), operator)
	e.GET("/orders/:id/timeline", timeline(store), operator)
	web.Document(e, "/asyncapi.yaml", events.AsyncAPI())
	return e
}

type mismatchJSON struct {
	Kind    string            `json:"kind"`
	OrderID string            `json:"order_id"`
	Since   time.Time         `json:"since"`
	Facts   map[string]string `json:"facts"`
}

// mismatches is GET /mismatches?kind=&after=&limit=: the open mismatches, by kind then
// order, a page at a time; next is the cursor of the following page (after), absent on
// the last.
func mismatches(store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		q, err := web.Query(c)
		if err != nil {
			return err
		}
		var errs []web.FieldError
		kind := q.Get("kind")
		if kind != "" && !slices.Contains(reconcile.Kinds(), reconcile.Kind(kind)) {
			errs = append(errs, web.FieldError{Field: "kind", Message: "must be a kind of mismatch: " + kindList()})
		}
		afterKind, afterOrder, _ := strings.Cut(q.Get("after"), "/")
		if q.Get("after") != "" && (!slices.Contains(reconcile.Kinds(), reconcile.Kind(afterKind)) || !events.IsUUID(afterOrder)) {
			errs = append(errs, web.FieldError{Field: "after", Message: "must be the next cursor of a page: <kind>/<order id>"})
		}
		limit := defaultLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxLimit {
				errs = append(errs, web.FieldError{Field: "limit", Message: "must be an integer from 1 to " + strconv.Itoa(maxLimit)})
			}
			limit = n
		}
		if len(errs) > 0 {
			p := web.NewProblem(http.StatusUnprocessableEntity, "validation", "Your request is not valid", errs[0].Field+" "+errs[0].Message)
			p.Errors = errs
			return p
		}
		ms, err := store.Mismatches(c.Request().Context(), kind, afterKind, strings.ToLower(afterOrder), limit+1)
		if err != nil {
			return err
		}
		out := map[string]any{}
		if len(ms) > limit {
			ms = ms[:limit]
			last := ms[len(ms)-1]
			out["next"] = string(last.Kind) + "/" + last.OrderID
		}
		items := make([]mismatchJSON, len(ms))
		for i, m := range ms {
			items[i] = mismatchJSON{Kind: string(m.Kind), OrderID: m.OrderID, Since: m.Since, Facts: m.Facts}
		}
		out["items"] = items
		return c.JSON(http.StatusOK, out)
	}
}

func kindList() string {
	var ks []string
	for _, k := range reconcile.Kinds() {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

type saidJSON struct {
	At        time.Time      `json:"at"`
	Source    string         `json:"source"`
	EventType string         `json:"event_type"`
	EventID   string         `json:"event_id"`
	Summary   map[string]any `json:"summary"`
}

// timeline is GET /orders/{id}/timeline: everything every service said about the order,
// in time order.
func timeline(store Store) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Param("id")
		if !events.IsUUID(id) {
			p := web.NewProblem(http.StatusUnprocessableEntity, "validation", "Your request is not valid", "id must be a UUID")
			p.Errors = []web.FieldError{{Field: "id", Message: "must be a UUID"}}
			return p
		}
		said, err := store.Timeline(c.Request().Context(), strings.ToLower(id))
		if err != nil {
			return err
		}
		if len(said) == 0 {
			return web.NewProblem(http.StatusNotFound, "not_found", "Not Found", "no service said anything about order "+id)
		}
		items := make([]saidJSON, len(said))
		for i, x := range said {
			items[i] = saidJSON(x)
		}
		return c.JSON(http.StatusOK, map[string]any{"order_id": strings.ToLower(id), "items": items})
	}
}
