// Package views serves the operators' views of every service: "GET /things?order_id=",
// the things recorded for one order, with the order id checked strictly.
package views

import (
	"context"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
)

// OrderIDParam reads the order_id query parameter that the operators' views filter by:
// required, given once, and a UUID (either case; returned in lower case). Parameters other
// than order_id are ignored, as a client may add its own (a cache buster, tracing).
//
// A query string that is not valid URL encoding is a 400: echo would silently drop the
// broken pair, and a misspelt order_id would then be answered "is required", or a broken
// extra parameter hide what the client meant. A repeated order_id is a 422 rather than
// "first wins": a client that sends two ids expects both to count, and silently answering
// for one of them would hide its mistake.
func OrderIDParam(c echo.Context) (string, error) {
	const name = "order_id"
	q, err := web.Query(c)
	if err != nil {
		return "", err
	}
	bad := func(msg string) error {
		p := web.NewProblem(http.StatusUnprocessableEntity, "validation", "Your request is not valid", name+" "+msg)
		p.Errors = []web.FieldError{{Field: name, Message: msg}}
		return p
	}
	vs, ok := q[name]
	switch {
	case !ok:
		return "", bad("is required")
	case len(vs) > 1:
		return "", bad("must be given once")
	case vs[0] == "":
		return "", bad("must not be empty; it must be a UUID")
	case !events.IsUUID(vs[0]):
		// The value is not repeated back: it may be huge or not UTF-8.
		return "", bad("must be a UUID, such as 019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f")
	}
	return strings.ToLower(vs[0]), nil
}

// ListByOrder serves the operators' view "GET /things?order_id=": the order's things,
// each shown through view, as {"items": [...]}.
func ListByOrder[T, J any](list func(ctx context.Context, orderID string) ([]T, error), view func(T) J) echo.HandlerFunc {
	return func(c echo.Context) error {
		orderID, err := OrderIDParam(c)
		if err != nil {
			return err
		}
		things, err := list(c.Request().Context(), orderID)
		if err != nil {
			return err
		}
		items := make([]J, len(things))
		for i, t := range things {
			items[i] = view(t)
		}
		return c.JSON(http.StatusOK, map[string]any{"items": items})
	}
}
