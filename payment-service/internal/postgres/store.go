// Package postgres stores payments and their outbox events in the payments database.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/payment-service/internal/payment"
)

// Store is the payments database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Lock takes a lock on the order id for the rest of tx, so two deliveries of one order,
// or its creation and its cancellation, are handled one after the other, and returns the
// order's payment, if it has one.
func (s *Store) Lock(ctx context.Context, tx pgx.Tx, orderID string) (payment.Payment, bool, error) {
	p, err := scanPayment(tx.QueryRow(ctx, `
		SELECT `+paymentColumns+`
		FROM (SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))) AS locked
		JOIN payments ON order_id = $1::uuid`, orderID))
	if errors.Is(err, pgx.ErrNoRows) {
		return payment.Payment{}, false, nil
	}
	if err != nil {
		return payment.Payment{}, false, fmt.Errorf("payment of order %s: %w", orderID, err)
	}
	return p, true, nil
}

// Record writes the payment and its outcome event (to topic) in tx.
func (s *Store) Record(ctx context.Context, tx pgx.Tx, p payment.Payment, topic string, outcome events.Envelope) error {
	if err := insert(ctx, tx, p); err != nil {
		return err
	}
	return outbox.Insert(ctx, tx, topic, outcome)
}

// RecordCancelled writes the CANCELLED payment of an order cancelled before it was
// charged, in tx: nothing happened at the provider, so there is nothing to announce.
func (s *Store) RecordCancelled(ctx context.Context, tx pgx.Tx, p payment.Payment) error {
	return insert(ctx, tx, p)
}

func insert(ctx context.Context, tx pgx.Tx, p payment.Payment) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO payments (id, order_id, customer_id, customer_email, amount_cents, currency, status,
			failure_reason, charge_id, cause_event_id, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), nullif($9, ''), $10, $11)`,
		p.ID, p.OrderID, p.CustomerID, p.CustomerEmail, p.AmountCents, p.Currency, p.Status,
		p.FailureReason, p.ChargeID, p.CauseEventID, p.CreatedAt)
	if err != nil {
		return fmt.Errorf("record payment of order %s: %w", p.OrderID, err)
	}
	return nil
}

// Refunded marks the payment refunded and writes its payment.refunded event, in tx.
func (s *Store) Refunded(ctx context.Context, tx pgx.Tx, p payment.Payment, refunded events.Envelope) error {
	_, err := tx.Exec(ctx, `UPDATE payments SET status = $2, refund_id = $3, refunded_at = $4 WHERE id = $1`,
		p.ID, payment.Refunded, p.RefundID, p.RefundedAt)
	if err != nil {
		return fmt.Errorf("record refund of order %s: %w", p.OrderID, err)
	}
	return outbox.Insert(ctx, tx, events.TopicPaymentRefunded, refunded)
}

const paymentColumns = `id::text, order_id::text, customer_id::text, customer_email, amount_cents, currency, status,
	coalesce(failure_reason, ''), coalesce(charge_id, ''), coalesce(refund_id, ''), cause_event_id, created_at,
	refunded_at`

func scanPayment(row pgx.Row) (payment.Payment, error) {
	var p payment.Payment
	var refundedAt *time.Time
	err := row.Scan(&p.ID, &p.OrderID, &p.CustomerID, &p.CustomerEmail, &p.AmountCents, &p.Currency, &p.Status,
		&p.FailureReason, &p.ChargeID, &p.RefundID, &p.CauseEventID, &p.CreatedAt, &refundedAt)
	p.CreatedAt = p.CreatedAt.UTC()
	if refundedAt != nil {
		p.RefundedAt = refundedAt.UTC()
	}
	return p, err
}

// ByOrder returns the payments of an order (at most one).
func (s *Store) ByOrder(ctx context.Context, orderID string) ([]payment.Payment, error) {
	rows, _ := s.pool.Query(ctx, `SELECT `+paymentColumns+` FROM payments WHERE order_id = $1 ORDER BY created_at`, orderID)
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (payment.Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, fmt.Errorf("payments of order %s: %w", orderID, err)
	}
	return ps, nil
}
