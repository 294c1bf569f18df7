package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Ledger is the simulator's records: its ledger table, read through a role that may read
// it and nothing else of payment-service's database (provider_reader), as a real
// provider's list API is read with a key that may only list.
type Ledger struct {
	pool *pgxpool.Pool
}

// NewLedger reads the ledger in pool's database.
func NewLedger(pool *pgxpool.Pool) *Ledger { return &Ledger{pool: pool} }

// Charges returns the ledger's successful charges made in [from, to).
func (l *Ledger) Charges(ctx context.Context, from, to time.Time) ([]Charge, error) {
	rows, _ := l.pool.Query(ctx, `SELECT idempotency_key, charge_id, created_at FROM provider_charges
		WHERE outcome = 'succeeded' AND created_at >= $1 AND created_at < $2`, from, to)
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c Charge, err error) {
		err = r.Scan(&c.OrderID, &c.ChargeID, &c.At)
		c.At = c.At.UTC()
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("simulator ledger: %w", err)
	}
	out := all[:0]
	for _, c := range all {
		if c, ok := normalize(c); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// Lookup reads the ledger's successful charge under the order's key.
func (l *Ledger) Lookup(ctx context.Context, orderID, _ string) (Charge, bool, error) {
	var c Charge
	err := l.pool.QueryRow(ctx, `SELECT idempotency_key, charge_id, created_at FROM provider_charges
		WHERE idempotency_key = $1 AND outcome = 'succeeded'`, orderID).Scan(&c.OrderID, &c.ChargeID, &c.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return Charge{}, false, nil
	}
	if err != nil {
		return Charge{}, false, fmt.Errorf("simulator ledger: %w", err)
	}
	c.At = c.At.UTC()
	return c, true, nil
}
