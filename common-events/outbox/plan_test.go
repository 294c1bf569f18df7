package outbox

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

// The relay's read is a statement PostgreSQL plans once and keeps: after its first five
// calls, each deleting one published row, on an outbox of many rows, a plan made for the
// arguments would look no cheaper than the generic one.
func TestTheRelaysReadIsPlannedOnce(t *testing.T) {
	ctx := context.Background()
	conn := testenv.SessionPool(t)
	if err := migrations.UpPool(ctx, conn, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (topic, key, headers, payload)
		SELECT 'order.created', 'k' || g, '{}', '\x00' FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	r := &Relay{BatchSize: 100}
	for id := range int64(testenv.PlannedCalls) {
		if err := conn.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
			_, err := r.next(ctx, c.Conn(), []int64{id + 1})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WantGenericPlans(t, conn, "WITH published AS (DELETE FROM outbox")
}
