// Package postgres stores payments in the payments database.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/coalesce"
	"github.com/orderflow/payment-service/internal/payment"
)

// Store is the payments database.
type Store struct {
	pool   *pgxpool.Pool
	claims *coalesce.Batcher[payment.Payment, claimed]
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool}
	s.claims = coalesce.New(s.claimAll, coalesce.Options{Max: maxClaims, Alone: coalesce.ByRow})
	return s
}

// maxClaims is the most claims one statement makes.
const maxClaims = 128

// claimed is what became of a claim: the order's payment, or why there is none to show.
type claimed struct {
	payment payment.Payment
	err     error
}

// Claim inserts p (CHARGING, to charge; CANCELLED, never to charge) unless the order has
// a payment already, and returns the order's payment: p if it was inserted, or whatever
// decided the order first. It runs on its own, outside any transaction, before the
// provider is asked, so a charge and a cancellation of one order always see each other.
// The order's unique payment makes this hold under any concurrency. The claims made at
// the same time share one statement and one commit.
func (s *Store) Claim(ctx context.Context, p payment.Payment) (payment.Payment, error) {
	c, err := s.claims.Do(ctx, p)
	if err = cmp.Or(err, c.err); err != nil {
		return payment.Payment{}, fmt.Errorf("claim payment of order %s: %w", p.OrderID, err)
	}
	return c.payment, nil
}

// claimAll makes the claims ps in one statement: those whose order has no payment yet
// are inserted (in order id order, the one order in which any two claim statements lock
// the orders they share), and every order's payment is returned.
func (s *Store) claimAll(ctx context.Context, ps []payment.Payment) ([]claimed, error) {
	n := len(ps)
	ids, orders, customers, emails := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	amounts, currencies, statuses, causes, created := make([]int64, n), make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i, p := range ps {
		ids[i], orders[i], customers[i], emails[i] = p.ID, p.OrderID, p.CustomerID, p.CustomerEmail
		amounts[i], currencies[i], statuses[i], causes[i], created[i] = p.AmountCents, p.Currency, string(p.Status), p.CauseEventID, p.CreatedAt
	}
	// The orders already paid for are found through a scalar subquery: one plan kept for
	// every batch (docs/performance.md, "Plans made once").
	rows, _ := s.pool.Query(ctx, `
		WITH ins AS (
			INSERT INTO payments (id, order_id, customer_id, customer_email, amount_cents, currency, status,
				cause_event_id, created_at)
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[],
				$8::text[], $9::timestamptz[])
			ORDER BY 2
			ON CONFLICT (order_id) DO NOTHING
			RETURNING `+paymentColumns+`
		)
		SELECT * FROM ins
		UNION ALL
		SELECT `+paymentColumns+` FROM payments
		WHERE order_id = ANY(((SELECT $2::uuid[]))::uuid[]) AND order_id NOT IN (SELECT order_id::uuid FROM ins)`,
		ids, orders, customers, emails, amounts, currencies, statuses, causes, created)
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (payment.Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, err
	}
	byOrder := make(map[string]payment.Payment, len(got))
	for _, p := range got {
		byOrder[p.OrderID] = p
	}
	out := make([]claimed, n)
	for i, p := range ps {
		var ok bool
		if out[i].payment, ok = byOrder[strings.ToLower(p.OrderID)]; !ok {
			// The order's first payment is being written by a transaction not committed yet.
			out[i].err = errors.New("a concurrent write is under way")
		}
	}
	return out, nil
}

// Charged records the provider's answers to claimed payments (each COMPLETED or FAILED),
// in tx, in one statement for the batch. It reports, for each, whether it was recorded:
// not when the claim was settled already, by an earlier delivery of the same
// order.created.
func (s *Store) Charged(ctx context.Context, tx pgx.Tx, ps []payment.Payment) ([]bool, error) {
	sql, args := ChargedStatement(ps, 1, "")
	rows, _ := tx.Query(ctx, sql, args...)
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("record %d payments: %w", len(ps), err)
	}
	recorded := make([]bool, len(ps))
	for _, tag := range done {
		recorded[tag] = true
	}
	return recorded, nil
}

// ChargedStatement is the statement that records the provider's answers ps (Charged), its
// parameters numbered from first on, and their values. It returns the tag of each payment
// it recorded: its index in ps. With fresh, the name of a relation of the caller's
// statement with an int column tag, it records only the payments whose index fresh holds
// (consumer.NewStatementSet).
func ChargedStatement(ps []payment.Payment, first int, fresh string) (string, []any) {
	n := len(ps)
	ids, statuses, reasons, chargeIDs, tags := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]int32, n)
	for i, p := range ps {
		ids[i], statuses[i], reasons[i], chargeIDs[i], tags[i] = p.ID, string(p.Status), p.FailureReason, p.ChargeID, int32(i)
	}
	id, status, reason, chargeID, tag, charging := first, first+1, first+2, first+3, first+4, first+5
	guard := ""
	if fresh != "" {
		guard = fmt.Sprintf(" AND ($%d::int[])[array_position($%d::uuid[], p.id)] IN (SELECT tag FROM %s)", tag, id, fresh)
	}
	// Found by id = ANY, an index scan whatever the statistics say, each payment taking
	// its values at its id's position in the arrays: no join to plan. The ids come through
	// a scalar subquery: one plan kept for every batch (docs/performance.md, "Plans made
	// once").
	return fmt.Sprintf(`
		UPDATE payments p SET status = ($%[2]d::text[])[array_position($%[1]d::uuid[], p.id)],
			failure_reason = nullif(($%[3]d::text[])[array_position($%[1]d::uuid[], p.id)], ''),
			charge_id = nullif(($%[4]d::text[])[array_position($%[1]d::uuid[], p.id)], ''),
			pending_since = NULL
		WHERE p.id = ANY(((SELECT $%[1]d::uuid[]))::uuid[]) AND p.status = $%[6]d::text%[7]s
		RETURNING ($%[5]d::int[])[array_position($%[1]d::uuid[], p.id)] AS tag`,
			id, status, reason, chargeID, tag, charging, guard),
		[]any{ids, statuses, reasons, chargeIDs, tags, string(payment.Charging)}
}

// Refunded marks the completed payment p refunded, in tx. It reports false, changing
// nothing, if p is not COMPLETED any more (refunded by an earlier delivery of the same
// order.cancelled).
func (s *Store) Refunded(ctx context.Context, tx pgx.Tx, p payment.Payment) (bool, error) {
	tag, err := tx.Exec(ctx, `UPDATE payments SET status = $2, refund_id = $3, refunded_at = $4 WHERE id = $1 AND status = $5`,
		p.ID, payment.Refunded, p.RefundID, p.RefundedAt, payment.Completed)
	if err != nil {
		return false, fmt.Errorf("record refund of order %s: %w", p.OrderID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Pending marks the claimed payment id as waiting for an outcome the provider tells
// later, since at, in tx. It changes nothing once the outcome is recorded.
func (s *Store) Pending(ctx context.Context, tx pgx.Tx, id string, at time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE payments SET pending_since = $2 WHERE id = $1 AND status = $3 AND pending_since IS NULL`,
		id, at, payment.Charging)
	if err != nil {
		return fmt.Errorf("mark payment %s pending: %w", id, err)
	}
	return nil
}

// Waiting returns up to limit payments still waiting for an outcome the provider was to
// tell later, claimed before before, in claim order after the payment (claimed at
// afterAt, id afterID; zero: from the first): a keyset, so a sweep goes round them all
// even when the first ones cannot be settled yet.
func (s *Store) Waiting(ctx context.Context, before, afterAt time.Time, afterID string, limit int) ([]payment.Payment, error) {
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	rows, _ := s.pool.Query(ctx, `SELECT `+paymentColumns+` FROM payments
		WHERE pending_since IS NOT NULL AND status = $1 AND created_at < $2 AND (created_at, id) > ($3, $4::uuid)
		ORDER BY created_at, id LIMIT $5`,
		payment.Charging, before, afterAt, afterID, limit)
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (payment.Payment, error) { return scanPayment(r) })
	if err != nil {
		return nil, fmt.Errorf("payments waiting for the provider: %w", err)
	}
	return ps, nil
}

const paymentColumns = `id::text, order_id::text, customer_id::text, customer_email, amount_cents, currency, status,
	coalesce(failure_reason, ''), coalesce(charge_id, ''), coalesce(refund_id, ''), cause_event_id, created_at,
	refunded_at, pending_since`

func scanPayment(row pgx.Row) (payment.Payment, error) {
	var p payment.Payment
	var refundedAt, pendingSince *time.Time
	err := row.Scan(&p.ID, &p.OrderID, &p.CustomerID, &p.CustomerEmail, &p.AmountCents, &p.Currency, &p.Status,
		&p.FailureReason, &p.ChargeID, &p.RefundID, &p.CauseEventID, &p.CreatedAt, &refundedAt, &pendingSince)
	p.CreatedAt = p.CreatedAt.UTC()
	if refundedAt != nil {
		p.RefundedAt = refundedAt.UTC()
	}
	if pendingSince != nil {
		p.PendingSince = pendingSince.UTC()
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
