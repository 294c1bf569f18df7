package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/order-service/internal/order"
)

// Changes tells a request when an order's status changes, on any instance.
type Changes interface {
	// Subscribe returns a channel woken after each status change of the order, and the
	// function that ends the subscription.
	Subscribe(orderID string) (changed <-chan struct{}, stop func())
	// Done is closed when the service shuts down.
	Done() <-chan struct{}
}

// MaxWait bounds Prefer: wait, in seconds.
const MaxWait = 30

// preferWait reads RFC 7240's "Prefer: wait=N" from any Prefer header. N above MaxWait
// counts as MaxWait; a malformed preference is ignored, as RFC 7240 asks of a server.
func preferWait(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";") // parameters of a preference: none for wait
			name, value, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`))
			if err != nil || n < 0 {
				continue
			}
			return time.Duration(min(n, MaxWait)) * time.Second, true
		}
	}
	return 0, false
}

// awaitOutcome returns order id as soon as it is no longer pending, or as it stands when
// wait has passed, the client has gone or the service is shutting down. It wakes only
// when the order changes: no polling, and its subscription ends with it.
func awaitOutcome(ctx context.Context, store Store, changes Changes, v order.Viewer, id string, wait time.Duration) (order.Order, error) {
	changed, stop := changes.Subscribe(id)
	defer stop()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		o, err := visible(ctx, store, v, id)
		if err != nil || o.Status.Terminal() {
			return o, err
		}
		select {
		case <-changed:
		case <-timeout.C:
			return o, nil
		case <-changes.Done():
			return o, nil
		case <-ctx.Done():
			return o, ctx.Err()
		}
	}
}

// respondAfterWait answers a request that asked to wait: final (the given status) or
// still pending (202), with Preference-Applied.
func respondAfterWait(c echo.Context, o order.Order, wait time.Duration, final int) error {
	c.Response().Header().Set("Preference-Applied", fmt.Sprintf("wait=%d", int(wait.Seconds())))
	if o.Status.Terminal() {
		return c.JSON(final, toJSON(o))
	}
	return c.JSON(http.StatusAccepted, toJSON(o))
}

// KeepAliveInterval is how often an idle event stream sends a comment, so proxies and
// clients can tell a quiet stream from a dead one.
const KeepAliveInterval = 15 * time.Second

// orderEvents serves GET /orders/{id}/events as Server-Sent Events: one "status" event
// per status change, the changes so far first, then each as it happens; the stream ends
// after the terminal change. Event ids are positions in the history, so a client that
// reconnects with Last-Event-ID gets only what it missed.
func orderEvents(store Store, changes Changes) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := orderID(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		changed, stop := changes.Subscribe(id)
		defer stop()
		history, err := historyOf(ctx, store, viewerOf(c), id)
		if err != nil {
			return err
		}
		if err := web.Wait(c); err != nil { // a stream waits, apart from the working requests
			return err
		}
		// Resume after Last-Event-ID; an id this stream never gave out starts it over.
		sent, err := strconv.Atoi(c.Request().Header.Get("Last-Event-ID"))
		if err != nil || sent < 0 || sent > len(history) {
			sent = 0
		}

		h := c.Response().Header()
		h.Set(echo.HeaderContentType, "text/event-stream")
		h.Set(echo.HeaderCacheControl, "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
		c.Response().WriteHeader(http.StatusOK)
		c.Response().Flush()

		keepAlive := time.NewTicker(KeepAliveInterval)
		defer keepAlive.Stop()
		for {
			for i := sent; i < len(history); i++ {
				data, _ := json.Marshal(toChangeJSON(id, history[i]))
				if _, err := fmt.Fprintf(c.Response(), "id: %d\nevent: status\ndata: %s\n\n", i+1, data); err != nil {
					return nil
				}
			}
			sent = max(sent, len(history))
			c.Response().Flush()
			if len(history) > 0 && history[len(history)-1].To.Terminal() {
				return nil
			}
			if !idle(c, changed, changes.Done(), keepAlive.C) {
				return nil
			}
			if history, err = store.History(ctx, id); err != nil {
				return nil // the stream has begun: ending it is all that is left to say
			}
		}
	}
}

// idle waits for the next change, sending keep-alive comments meanwhile. It reports false
// when the stream should end: the client went away or the service is shutting down.
func idle(c echo.Context, changed <-chan struct{}, done <-chan struct{}, keepAlive <-chan time.Time) bool {
	for {
		select {
		case <-changed:
			return true
		case <-keepAlive:
			if _, err := fmt.Fprint(c.Response(), ": keep-alive\n\n"); err != nil {
				return false
			}
			c.Response().Flush()
		case <-done:
			return false
		case <-c.Request().Context().Done():
			return false
		}
	}
}

// historyOf returns the history of an order v sees, or order.ErrNotFound: every order has
// at least its first entry, written with it.
func historyOf(ctx context.Context, store Store, v order.Viewer, id string) ([]order.Change, error) {
	if !v.Operator { // an operator sees every order: no need to look at whose it is
		if _, err := visible(ctx, store, v, id); err != nil {
			return nil, err
		}
	}
	history, err := store.History(ctx, id)
	if err == nil && len(history) == 0 {
		err = order.ErrNotFound
	}
	return history, err
}
