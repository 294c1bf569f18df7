// Package postgres stores payments and their outbox events in the payments database.
package postgres

import (
	"context"
	"fmt"

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

// Exists reports whether the order already has a payment, taking a lock on the order id
// for the rest of tx so two deliveries of one order cannot both go on to charge.
func (s *Store) Exists(ctx context.Context, tx pgx.Tx, orderID string) (bool, error) {
	var exists bool
	err := tx.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1::uuid)
		FROM (SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))) AS locked`, orderID).Scan(&exists)
	if err != nil {
		return false, fmt.Errorf("payment of order %s: %w", orderID, err)
	}
	return exists, nil
}

// Record writes the payment and its outcome event (to topic) in tx.
func (s *Store) Record(ctx context.Context, tx pgx.Tx, p payment.Payment, topic string, outcome events.Envelope) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO payments (id, order_id, customer_id, customer_email, amount_cents, currency, status,
			failure_reason, charge_id, cause_event_id, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), nullif($9, ''), $10, $11)`,
		p.ID, p.OrderID, p.CustomerID, p.CustomerEmail, p.AmountCents, p.Currency, p.Status,
		p.FailureReason, p.ChargeID, p.CauseEventID, p.CreatedAt)
	if err != nil {
		return fmt.Errorf("record payment of order %s: %w", p.OrderID, err)
	}
	return outbox.Insert(ctx, tx, topic, outcome)
}

// ByOrder returns the payments of an order (at most one).
func (s *Store) ByOrder(ctx context.Context, orderID string) ([]payment.Payment, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT id::text, order_id::text, customer_id::text, customer_email, amount_cents, currency, status,
			coalesce(failure_reason, ''), coalesce(charge_id, ''), cause_event_id, created_at
		FROM payments WHERE order_id = $1 ORDER BY created_at`, orderID)
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (p payment.Payment, err error) {
		err = r.Scan(&p.ID, &p.OrderID, &p.CustomerID, &p.CustomerEmail, &p.AmountCents, &p.Currency, &p.Status,
			&p.FailureReason, &p.ChargeID, &p.CauseEventID, &p.CreatedAt)
		p.CreatedAt = p.CreatedAt.UTC()
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("payments of order %s: %w", orderID, err)
	}
	return ps, nil
}
