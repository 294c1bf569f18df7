package stripepay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/orderflow/common-events/web"
	"github.com/orderflow/payment-service/internal/payment"
)

// WebhookPath is where Stripe delivers its events to payment-service.
const WebhookPath = "/webhooks/stripe"

// Tolerance is how old a delivery's signed timestamp may be: Stripe's own default, so a
// captured delivery cannot be replayed later.
const Tolerance = 5 * time.Minute

// maxWebhookBytes bounds a delivery's body; Stripe's events are a few kilobytes.
const maxWebhookBytes = 256 << 10

// Settler records the outcomes that deliveries tell (consume.Settler is one).
type Settler interface {
	Charged(ctx context.Context, providerEventID, orderID string, charge payment.Charge) (bool, error)
	Refunded(ctx context.Context, providerEventID, orderID, refundID string) (bool, error)
}

// Webhook is POST /webhooks/stripe: it verifies each delivery's Stripe-Signature against
// Secrets (several during a rotation: any one of them), refuses an old one, and settles
// what payment_intent.succeeded, payment_intent.payment_failed and charge.refunded tell
// about the intents this provider made. Stripe signs it, so it takes no bearer token; the
// service's admission limits apply to it like to any route.
type Webhook struct {
	Provider *Provider
	Secrets  []string
	Settle   Settler
	Log      *slog.Logger
	Now      func() time.Time // default time.Now
}

// Handle is the route's handler.
func (w Webhook) Handle(c echo.Context) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, c.Request().Body, maxWebhookBytes))
	if errors.As(err, new(*http.MaxBytesError)) {
		return web.NewProblem(http.StatusRequestEntityTooLarge, "body_too_large", "Request Entity Too Large",
			fmt.Sprintf("a delivery must be at most %d bytes", maxWebhookBytes))
	}
	if err != nil {
		return &web.BodyError{Err: err} // it stopped arriving, or the sender went away
	}
	ev, err := w.verify(body, c.Request().Header.Get("Stripe-Signature"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var intentID string
	var settle func(orderID string) (bool, error)
	switch ev.Type {
	case stripe.EventTypePaymentIntentSucceeded, stripe.EventTypePaymentIntentPaymentFailed:
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(ev.Data.Raw, &pi); err != nil || pi.ID == "" {
			return badEvent(ev, "its object is not a PaymentIntent")
		}
		intentID = pi.ID
		charge := payment.Charge{ID: pi.ID, Succeeded: ev.Type == stripe.EventTypePaymentIntentSucceeded}
		if !charge.Succeeded && pi.LastPaymentError != nil {
			charge.ProviderCode = declineCode(pi.LastPaymentError)
			charge.DeclineCode = Reason(charge.ProviderCode)
		}
		settle = func(orderID string) (bool, error) { return w.Settle.Charged(ctx, ev.ID, orderID, charge) }
	case stripe.EventTypeChargeRefunded: // refunded in full, from Stripe's dashboard say
		var ch stripe.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil || ch.PaymentIntent == nil || ch.PaymentIntent.ID == "" {
			return badEvent(ev, "its object is not a Charge of a PaymentIntent")
		}
		intentID = ch.PaymentIntent.ID
		settle = func(orderID string) (bool, error) {
			if !ch.Refunded { // a partial refund: the payment is not paid back
				w.Log.InfoContext(ctx, "stripe webhook: a partial refund, not settled", "stripe_event_id", ev.ID, "order_id", orderID,
					"amount_refunded", ch.AmountRefunded)
				return false, nil
			}
			// A Charge carries its refunds only in API versions before 2022-11-15 (since,
			// only when expanded, which webhooks never are): ask Stripe when it does not.
			refundID := ""
			if ch.Refunds != nil && len(ch.Refunds.Data) > 0 {
				refundID = ch.Refunds.Data[0].ID
			} else if r, _, err := w.Provider.refunds(ctx, intentID, orderID); err != nil || r == "" {
				return false, errors.Join(fmt.Errorf("the refund of PaymentIntent %s is not to be found", intentID), err)
			} else {
				refundID = r
			}
			return w.Settle.Refunded(ctx, ev.ID, orderID, refundID)
		}
	default:
		return web.NewProblem(http.StatusBadRequest, "unhandled_event_type", "Unhandled event type",
			fmt.Sprintf("payment-service handles payment_intent.succeeded, payment_intent.payment_failed and charge.refunded, not %s: send it only those", ev.Type))
	}
	orderID, err := w.Provider.orderOf(ctx, intentID)
	if err != nil {
		return err
	}
	if orderID == "" { // an intent another integration on the account made
		w.Log.InfoContext(ctx, "stripe webhook about an intent not ours; ignored", "stripe_event_id", ev.ID, "type", ev.Type, "intent", intentID)
		return c.NoContent(http.StatusNoContent)
	}
	moved, err := settle(orderID)
	if err != nil {
		return err
	}
	w.Log.InfoContext(ctx, "stripe webhook", "stripe_event_id", ev.ID, "type", ev.Type, "order_id", orderID, "settled", moved)
	return c.NoContent(http.StatusNoContent)
}

// verify checks body's signature against each secret, within Tolerance.
func (w Webhook) verify(body []byte, signature string) (stripe.Event, error) {
	err := fmt.Errorf("%w: no webhook secret is set", webhook.ErrNoValidSignature)
	for _, secret := range w.Secrets {
		var ev stripe.Event
		ev, err = webhook.ConstructEventWithOptions(body, signature, secret, webhook.ConstructEventOptions{
			Tolerance: Tolerance, IgnoreAPIVersionMismatch: true,
		})
		if err == nil {
			return ev, nil
		}
		if !errors.Is(err, webhook.ErrNoValidSignature) {
			break // not a matter of which secret: unsigned, malformed, too old, not an event
		}
	}
	detail := "the Stripe-Signature header does not sign this body with any webhook secret of this service"
	switch {
	case errors.Is(err, webhook.ErrNotSigned):
		detail = "the delivery has no Stripe-Signature header"
	case errors.Is(err, webhook.ErrInvalidHeader):
		detail = "the Stripe-Signature header is malformed"
	case errors.Is(err, webhook.ErrTooOld):
		detail = fmt.Sprintf("the signed timestamp is more than %s old", Tolerance)
	case !errors.Is(err, webhook.ErrNoValidSignature):
		// Signed, and no Stripe event: the signature checked, the body did not parse.
		return stripe.Event{}, web.NewProblem(http.StatusBadRequest, "invalid_event", "Invalid event",
			"the delivery is signed but is no Stripe event: "+err.Error())
	}
	return stripe.Event{}, web.NewProblem(http.StatusBadRequest, "invalid_signature", "Invalid webhook signature", detail)
}

func badEvent(ev stripe.Event, why string) error {
	return web.NewProblem(http.StatusBadRequest, "invalid_event", "Invalid event", fmt.Sprintf("event %s (%s): %s", ev.ID, ev.Type, why))
}

// orderOf is the order whose intent is intentID, or "" when this provider made no such
// intent.
func (p *Provider) orderOf(ctx context.Context, intentID string) (string, error) {
	var order string
	err := p.pool.QueryRow(ctx, `SELECT idempotency_key FROM stripe_intents WHERE intent_id = $1 LIMIT 1`, intentID).Scan(&order)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	return order, nil
}
