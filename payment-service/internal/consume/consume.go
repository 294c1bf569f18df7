// Package consume charges for orders as they are created.
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
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
)

// Group is payment-service's consumer group.
const Group = "payment-service"

// Source names payment-service in the events it publishes.
const Source = "payment-service"

// Handlers returns the handler of each topic payment-service consumes.
func Handlers(store *postgres.Store, provider payment.Provider) map[string]consumer.Handler {
	c := charger{store: store, provider: provider, now: time.Now}
	return map[string]consumer.Handler{events.TopicOrderCreated: c.handle}
}

type charger struct {
	store    *postgres.Store
	provider payment.Provider
	now      func() time.Time
}

// handle charges for a new order and records the outcome with its event, in the
// consumer's transaction. The provider call is idempotent on the order id, so a retry or
// a redelivery after a crash gets the first charge back instead of a second one.
func (c charger) handle(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
	ev, ok := msg.Event.(events.OrderCreated)
	if !ok {
		return consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if _, err := uuid.Parse(ev.OrderID); err != nil {
		return consumer.Poison(fmt.Errorf("order id %q is not a UUID", ev.OrderID))
	}
	if _, err := uuid.Parse(ev.CustomerID); err != nil {
		return consumer.Poison(fmt.Errorf("customer id %q is not a UUID", ev.CustomerID))
	}
	exists, err := c.store.Exists(ctx, tx, ev.OrderID)
	if err != nil {
		return err
	}
	if exists {
		msg.Log.Info("order already paid for or refused; nothing to do")
		return nil
	}

	charge, err := c.provider.Charge(ctx, payment.ChargeRequest{
		IdempotencyKey: ev.OrderID, AmountCents: ev.TotalCents, Currency: ev.Currency, PaymentMethod: ev.PaymentMethod,
	})
	if errors.Is(err, payment.ErrIdempotencyMismatch) {
		return consumer.Poison(err)
	}
	if err != nil {
		return err // transient: the runner retries with backoff
	}

	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	now := c.now().UTC()
	p := payment.Payment{
		ID: id.String(), OrderID: ev.OrderID, CustomerID: ev.CustomerID, CustomerEmail: ev.CustomerEmail,
		AmountCents: ev.TotalCents, Currency: ev.Currency, ChargeID: charge.ID, CauseEventID: msg.ID, CreatedAt: now,
	}
	var outcome events.Event
	topic := events.TopicPaymentCompleted
	if charge.Succeeded {
		p.Status = payment.Completed
		outcome = events.PaymentCompleted{
			OrderID: p.OrderID, PaymentID: p.ID, ChargeID: charge.ID, CustomerID: p.CustomerID,
			CustomerEmail: p.CustomerEmail, AmountCents: p.AmountCents, Currency: p.Currency, CompletedAt: now,
		}
	} else {
		p.Status, p.FailureReason, topic = payment.Failed, charge.DeclineCode, events.TopicPaymentFailed
		outcome = events.PaymentFailed{
			OrderID: p.OrderID, PaymentID: p.ID, CustomerID: p.CustomerID, CustomerEmail: p.CustomerEmail,
			AmountCents: p.AmountCents, Currency: p.Currency, Reason: charge.DeclineCode, FailedAt: now,
		}
	}
	env, err := events.New(outcome, msg.Meta(Source), now)
	if err != nil {
		return consumer.Poison(err)
	}
	if err := c.store.Record(ctx, tx, p, topic, env); err != nil {
		return err
	}
	msg.Log.Info("payment recorded", "status", p.Status, "failure_reason", p.FailureReason, "charge_id", p.ChargeID, "payment_id", p.ID)
	return nil
}
