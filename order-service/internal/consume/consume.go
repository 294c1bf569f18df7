// Package consume applies payment outcomes to orders.
package consume

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

// Group is order-service's consumer group.
const Group = "order-service"

// Handlers returns the handler of each topic order-service consumes.
func Handlers(store *postgres.Store) map[string]consumer.Handler {
	h := paymentOutcome{store: store, now: time.Now}
	return map[string]consumer.Handler{
		events.TopicPaymentCompleted: consumer.InTx(h.handle),
		events.TopicPaymentFailed:    consumer.InTx(h.handle),
	}
}

type paymentOutcome struct {
	store *postgres.Store
	now   func() time.Time
}

// handle moves a pending order to CONFIRMED or PAYMENT_FAILED. An outcome that does not
// apply (unknown order, order no longer pending) is logged and acknowledged: retrying it
// could never succeed, and it is a valid event, so it is no dead letter either.
func (h paymentOutcome) handle(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
	var to order.Status
	var reason string
	switch ev := msg.Event.(type) {
	case events.PaymentCompleted:
		to = order.Confirmed
	case events.PaymentFailed:
		to, reason = order.PaymentFailed, ev.Reason
	default:
		return consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if _, err := uuid.Parse(msg.Subject); err != nil {
		return consumer.Poison(fmt.Errorf("order id %q is not a UUID", msg.Subject))
	}
	o, err := h.store.Transition(ctx, tx, msg.Subject, to, reason, msg.ID, h.now())
	switch {
	case errors.Is(err, order.ErrNotFound):
		msg.Log.Warn("payment outcome for an unknown order ignored", "to", to)
		return nil
	case errors.Is(err, order.ErrInvalidTransition) && o.Status == order.Cancelled:
		// Cancelled while payment was under way: payment-service refunds it.
		msg.Log.Info("payment outcome for a cancelled order ignored", "to", to)
		return nil
	case errors.Is(err, order.ErrInvalidTransition):
		msg.Log.Warn("payment outcome does not apply; ignored", "status", o.Status, "to", to)
		return nil
	case err != nil:
		return err
	}
	msg.Log.Info("order status changed", "status", o.Status, "failure_reason", o.FailureReason)
	return nil
}
