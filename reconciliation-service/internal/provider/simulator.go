package provider

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
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
		if events.IsUUID(c.OrderID) { // a key that is no order id is not orderflow's
			out = append(out, c)
		}
	}
	return out, nil
}
