package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Claims that come while a write is under way wait for it and share statements, and
// each is answered as it would be alone: the order's payment, its own when the order had
// none, the first one otherwise.
func TestConcurrentClaimsAreEachAsAlone(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
	now := time.Now().UTC().Truncate(time.Microsecond)
	claim := func(orderID string, status payment.Status) payment.Payment {
		return payment.Payment{ID: uuid.Must(uuid.NewV7()).String(), OrderID: orderID, CustomerID: issuer.Customer,
			CustomerEmail: "ada@example.com", AmountCents: 100, Currency: "EUR", Status: status, CauseEventID: "ev-" + orderID, CreatedAt: now}
	}
	const n = 200
	orders := make([]string, n)
	for i := range orders {
		orders[i] = fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d%04d", i)
	}
	// Every third order was cancelled before: its claim to charge finds that.
	cancelled := map[string]payment.Payment{}
	for i := 0; i < n; i += 3 {
		p, err := store.Claim(ctx, claim(orders[i], payment.Cancelled))
		if err != nil {
			t.Fatal(err)
		}
		cancelled[orders[i]] = p
	}
	release := testenv.HoldWrites(t, pool, "payments") // the claims queue behind a write under way
	var wg sync.WaitGroup
	for _, id := range orders {
		wg.Go(func() {
			want := claim(id, payment.Charging)
			got, err := store.Claim(ctx, want)
			if first, ok := cancelled[id]; ok {
				want = first
			}
			if err != nil || got.ID != want.ID || got.Status != want.Status || got.OrderID != id || !got.CreatedAt.Equal(want.CreatedAt) {
				t.Errorf("claim for order %s: %+v, %v; want %+v", id, got, err, want)
			}
		})
	}
	release()
	wg.Wait()
	var payments, transactions int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text) FROM payments WHERE status = $1`, payment.Charging).
		Scan(&payments, &transactions); err != nil {
		t.Fatal(err)
	}
	if want := n - len(cancelled); payments != want || transactions > 8 {
		t.Errorf("%d claims made while a write was under way: %d stored in %d transactions; want %d in a few", want, payments, transactions, want)
	}
}

// A claim and the record of its charge are made by statements PostgreSQL plans once and
// keeps: after their first five calls, each of one payment, on a table of settled
// payments, a plan made for the arguments would look no cheaper than the generic one.
func TestClaimAndChargedArePlannedOnce(t *testing.T) {
	ctx := context.Background()
	pool := testenv.SessionPool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO payments (id, order_id, customer_id, customer_email, amount_cents, currency, status, charge_id,
			cause_event_id, created_at)
		SELECT gen_random_uuid(), gen_random_uuid(), $1, 'ada@example.com', 100, 'EUR', 'COMPLETED', 'ch_' || g, 'ev-' || g, now()
		FROM generate_series(1, 2000) g`, issuer.Customer); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE payments`); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
	for i := range testenv.PlannedCalls {
		orderID := fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d%04d", i)
		p, err := store.Claim(ctx, payment.Payment{ID: uuid.Must(uuid.NewV7()).String(), OrderID: orderID, CustomerID: issuer.Customer,
			CustomerEmail: "ada@example.com", AmountCents: 100, Currency: "EUR", Status: payment.Charging, CauseEventID: "ev-" + orderID,
			CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		p.Status, p.ChargeID = payment.Completed, "ch-"+orderID
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := store.Charged(ctx, tx, []payment.Payment{p})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, statement := range []string{"ON CONFLICT (order_id) DO NOTHING", "UPDATE payments p SET status"} {
		testenv.WantGenericPlans(t, pool, statement)
	}
}
