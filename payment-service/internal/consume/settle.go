package consume

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
)

// WebhookGroup names the provider's notifications in the inbox: each is recorded there
// by the provider's own event id, so a redelivered one changes nothing.
const WebhookGroup = "provider-webhooks"

// Settler records what the provider tells later (Stripe's webhooks) through the same path
// as an answer given at once: the payment moves, with its event, in one transaction that
// also records the provider's event id in the inbox; then the relay is woken. Only a
// payment still waiting moves: a notification about one decided already — answered at
// once, or told before, or told out of order — changes nothing, so none can undo a final
// state.
type Settler struct {
	Store *postgres.Store
	Pool  *pgxpool.Pool
	Waker *outbox.Waker // nil: the relay finds the event at its next poll
	Log   *slog.Logger
	Now   func() time.Time // default time.Now
}

// Charged settles the order's claimed (CHARGING) payment as charge says, once per
// provider event id. It reports whether the payment moved.
func (s Settler) Charged(ctx context.Context, providerEventID, orderID string, charge payment.Charge) (bool, error) {
	return s.ChargedWith(ctx, providerEventID, orderID, charge, events.Meta{})
}

// ChargedWith is Charged with the outcome's event inheriting meta (the correlation id of
// the record that decided it).
func (s Settler) ChargedWith(ctx context.Context, providerEventID, orderID string, charge payment.Charge, meta events.Meta) (bool, error) {
	return s.settle(ctx, providerEventID, orderID, payment.Charging, func(p payment.Payment, now time.Time) (payment.Payment, events.Envelope, error) {
		return Outcome(p, charge, meta, now)
	}, func(ctx context.Context, tx pgx.Tx, p payment.Payment) (bool, error) {
		recorded, err := s.Store.Charged(ctx, tx, []payment.Payment{p})
		return err == nil && recorded[0], err
	})
}

// Refunded settles the order's completed payment as refunded by the provider's refund
// refundID, once per provider event id. It reports whether the payment moved.
func (s Settler) Refunded(ctx context.Context, providerEventID, orderID, refundID string) (bool, error) {
	return s.settle(ctx, providerEventID, orderID, payment.Completed, func(p payment.Payment, now time.Time) (payment.Payment, events.Envelope, error) {
		return Refunded(p, refundID, events.Meta{}, now)
	}, s.Store.Refunded)
}

func (s Settler) settle(ctx context.Context, providerEventID, orderID string, from payment.Status,
	decide func(payment.Payment, time.Time) (payment.Payment, events.Envelope, error),
	record func(context.Context, pgx.Tx, payment.Payment) (bool, error)) (bool, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	ps, err := s.Store.ByOrder(ctx, orderID)
	if err != nil {
		return false, err
	}
	if len(ps) == 0 || ps[0].Status != from {
		return false, nil // nothing waits for this: decided already, or never claimed
	}
	p, env, err := decide(ps[0], now)
	if err != nil {
		return false, fmt.Errorf("settle order %s: %w", orderID, err)
	}
	moved := false
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			WebhookGroup, providerEventID)
		if err != nil || tag.RowsAffected() == 0 {
			return err // told before
		}
		if moved, err = record(ctx, tx, p); err != nil || !moved {
			return err
		}
		return outbox.Write(ctx, tx, env)
	})
	if err != nil {
		return false, fmt.Errorf("settle order %s: %w", orderID, err)
	}
	if moved {
		s.Waker.Wake()
		s.Log.Info("payment settled by the provider's notification", "order_id", orderID, "status", p.Status,
			"provider_event_id", providerEventID, "payment_id", p.ID)
	}
	return moved, nil
}
