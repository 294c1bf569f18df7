// Package postgres is reconciliation-service's read model: what each service said about
// each order, its timeline, and the open mismatches.
package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// Store is the reconciliation database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Apply records what env says about its order, in tx: the order's facts move (an
// order.state only if its version is higher than the one held, so a redelivered or
// reordered record cannot move an order back; a payment refunded stays refunded), the
// order is to be looked at again by the sweep, and the event joins the order's timeline.
func (s *Store) Apply(ctx context.Context, tx pgx.Tx, env events.Envelope, ev events.Event) error {
	var sql string
	var args []any
	summary := map[string]any{}
	switch e := ev.(type) {
	case events.OrderState:
		sql = `INSERT INTO order_facts (order_id, status, version, failure_reason, placed_at, changed_at)
			VALUES ($1, $2, $3, nullif($4, ''), $5, $6)
			ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, version = EXCLUDED.version,
				failure_reason = EXCLUDED.failure_reason, placed_at = EXCLUDED.placed_at, changed_at = EXCLUDED.changed_at,
				settled = false
			WHERE order_facts.version < EXCLUDED.version`
		args = []any{e.OrderID, e.Status, e.Version, e.FailureReason, e.CreatedAt, e.UpdatedAt}
		summary["status"], summary["version"] = e.Status, e.Version
		if e.FailureReason != "" {
			summary["failure_reason"] = e.FailureReason
		}
	case events.PaymentCompleted:
		sql = `INSERT INTO order_facts (order_id, payment, charge_id, payment_at) VALUES ($1, 'COMPLETED', $2, $3)
			ON CONFLICT (order_id) DO UPDATE SET charge_id = $2, payment_at = $3, settled = false,
				payment = CASE WHEN order_facts.payment = 'REFUNDED' THEN 'REFUNDED' ELSE 'COMPLETED' END`
		args = []any{e.OrderID, e.ChargeID, e.CompletedAt}
		summary["charge_id"], summary["amount_cents"], summary["currency"] = e.ChargeID, e.AmountCents, e.Currency
	case events.PaymentFailed:
		sql = `INSERT INTO order_facts (order_id, payment, payment_at) VALUES ($1, 'FAILED', $2)
			ON CONFLICT (order_id) DO UPDATE SET settled = false,
				payment = CASE WHEN order_facts.payment IN ('COMPLETED', 'REFUNDED') THEN order_facts.payment ELSE 'FAILED' END,
				payment_at = coalesce(order_facts.payment_at, $2)`
		args = []any{e.OrderID, e.FailedAt}
		summary["reason"] = e.Reason
	case events.PaymentRefunded:
		sql = `INSERT INTO order_facts (order_id, payment, charge_id, refund_id, refunded_at) VALUES ($1, 'REFUNDED', $2, $3, $4)
			ON CONFLICT (order_id) DO UPDATE SET payment = 'REFUNDED', charge_id = $2, refund_id = $3, refunded_at = $4, settled = false`
		args = []any{e.OrderID, e.ChargeID, e.RefundID, e.RefundedAt}
		summary["refund_id"] = e.RefundID
	case events.NotificationSent:
		sql = `INSERT INTO order_facts (order_id, emails) VALUES ($1, jsonb_build_object($2::text, $3::timestamptz))
			ON CONFLICT (order_id) DO UPDATE SET emails = order_facts.emails || jsonb_build_object($2::text, $3::timestamptz),
				settled = false`
		args = []any{e.OrderID, e.Kind, e.SentAt}
		summary["kind"], summary["message_id"], summary["recipient_domain"] = e.Kind, e.MessageID, e.RecipientDomain
	default:
		return fmt.Errorf("reconciliation does not keep %s", env.Type)
	}
	// The facts and the timeline in one statement: one round trip a record.
	n := len(args)
	args = append(args, env.ID, ev.Subject(), env.Time, env.Source, env.Type, summary)
	sql = fmt.Sprintf(`WITH facts AS (%s)
		INSERT INTO timeline (event_id, order_id, at, source, event_type, summary) VALUES ($%d, $%d, $%d, $%d, $%d, $%d)
		ON CONFLICT (event_id) DO NOTHING`, sql, n+1, n+2, n+3, n+4, n+5, n+6)
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("apply %s to order %s: %w", env.Type, ev.Subject(), err)
	}
	return nil
}

// Unsettled returns the facts of up to limit orders the sweep has not found settled.
func (s *Store) Unsettled(ctx context.Context, limit int) ([]reconcile.Facts, error) {
	rows, _ := s.pool.Query(ctx, `SELECT order_id::text, coalesce(status, ''), version, coalesce(failure_reason, ''),
			placed_at, changed_at, coalesce(payment, ''), coalesce(charge_id, ''), coalesce(refund_id, ''),
			payment_at, refunded_at, emails
		FROM order_facts WHERE NOT settled ORDER BY order_id LIMIT $1`, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (reconcile.Facts, error) {
		var f reconcile.Facts
		var placed, changed, paid, refunded *time.Time
		var emails map[string]time.Time
		err := r.Scan(&f.OrderID, &f.Status, &f.Version, &f.FailureReason, &placed, &changed, &f.Payment, &f.ChargeID,
			&f.RefundID, &paid, &refunded, &emails)
		f.PlacedAt, f.ChangedAt, f.PaymentAt, f.RefundedAt = at(placed), at(changed), at(paid), at(refunded)
		f.Emails = emails
		return f, err
	})
}

func at(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// Found records what a sweep found for orders: their open mismatches replace those held,
// and the orders in settled are settled — unless a fact about them came meanwhile (their
// row then says settled = false again, and the next sweep looks).
func (s *Store) Found(ctx context.Context, orders []string, ms []reconcile.Mismatch, settled []string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM mismatches WHERE order_id = ANY($1::uuid[])`, orders); err != nil {
			return err
		}
		for _, m := range ms {
			facts, _ := json.Marshal(m.Facts)
			if _, err := tx.Exec(ctx, `INSERT INTO mismatches (kind, order_id, since, facts) VALUES ($1, $2, $3, $4)`,
				m.Kind, m.OrderID, m.Since, facts); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE order_facts SET settled = true WHERE order_id = ANY($1::uuid[])`, settled)
		return err
	})
}

// Mismatch is an open mismatch as stored.
type Mismatch = reconcile.Mismatch

// Mismatches returns up to limit open mismatches of kind (empty: any), in (kind, order)
// order, after the keyset cursor (kind, orderID) (empty: from the first).
func (s *Store) Mismatches(ctx context.Context, kind string, afterKind, afterOrder string, limit int) ([]Mismatch, error) {
	rows, _ := s.pool.Query(ctx, `SELECT kind, order_id::text, since, facts FROM mismatches
		WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR (kind, order_id) > ($2, nullif($3, '')::uuid))
		ORDER BY kind, order_id LIMIT $4`, kind, afterKind, afterOrder, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mismatch, error) {
		var m Mismatch
		var kind string
		err := r.Scan(&kind, &m.OrderID, &m.Since, &m.Facts)
		m.Kind, m.Since = reconcile.Kind(kind), m.Since.UTC()
		return m, err
	})
}

// Open counts the open mismatches of each kind and says since when the oldest holds.
func (s *Store) Open(ctx context.Context) (map[reconcile.Kind]int, map[reconcile.Kind]time.Time, error) {
	counts, oldest := map[reconcile.Kind]int{}, map[reconcile.Kind]time.Time{}
	rows, _ := s.pool.Query(ctx, `SELECT kind, count(*), min(since) FROM mismatches GROUP BY kind`)
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n int
		var since time.Time
		if err := rows.Scan(&kind, &n, &since); err != nil {
			return nil, nil, err
		}
		counts[reconcile.Kind(kind)], oldest[reconcile.Kind(kind)] = n, since
	}
	return counts, oldest, rows.Err()
}

// Said is one thing a service said about an order.
type Said struct {
	At        time.Time
	Source    string
	EventType string
	EventID   string
	Summary   map[string]any
}

// Timeline returns what every service said about the order, in time order.
func (s *Store) Timeline(ctx context.Context, orderID string) ([]Said, error) {
	rows, _ := s.pool.Query(ctx, `SELECT at, source, event_type, event_id, summary FROM timeline WHERE order_id = $1 ORDER BY at, event_id`, orderID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Said, error) {
		var x Said
		err := r.Scan(&x.At, &x.Source, &x.EventType, &x.EventID, &x.Summary)
		x.At = x.At.UTC()
		return x, err
	})
}
