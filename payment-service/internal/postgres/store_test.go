package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

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
