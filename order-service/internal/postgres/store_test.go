package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The order, its history and its event are written together or not at all.
func TestCreateIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
	now := time.Now()
	o, err := order.New(order.Request{
		CustomerID: "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93", CustomerEmail: "ada@example.com", Currency: "EUR",
		Items: []order.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}}, PaymentMethod: "tok_visa",
	}, "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "corr", now)
	if err != nil {
		t.Fatal(err)
	}
	env, err := events.New(o.CreatedEvent(), events.Meta{Source: "test"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Create(ctx, o, env); err != nil {
		t.Fatal(err)
	}
	again, _ := events.New(o.CreatedEvent(), events.Meta{Source: "test"}, now)
	if err := store.Create(ctx, o, again); err == nil {
		t.Fatal("creating an order with an existing id succeeded")
	}
	var orders, history, outbox int
	err = pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_history), (SELECT count(*) FROM outbox)`).
		Scan(&orders, &history, &outbox)
	if err != nil {
		t.Fatal(err)
	}
	if orders != 1 || history != 1 || outbox != 1 {
		t.Errorf("after a failed second create: %d orders, %d history rows, %d outbox rows; want 1 each", orders, history, outbox)
	}

	// The event cannot be stored: then the order must not be either.
	if _, err := pool.Exec(ctx, `ALTER TABLE outbox ADD CONSTRAINT refuse_all CHECK (false) NOT VALID`); err != nil {
		t.Fatal(err)
	}
	other := o
	other.ID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e60"
	third, _ := events.New(other.CreatedEvent(), events.Meta{Source: "test"}, now)
	if err := store.Create(ctx, other, third); err == nil {
		t.Fatal("create succeeded though its event could not be stored")
	}
	if _, err := store.Get(ctx, other.ID); err != order.ErrNotFound {
		t.Errorf("the order whose event failed was stored anyway (Get: %v)", err)
	}

	got, err := store.Get(ctx, o.ID)
	if err != nil || got.Status != order.PendingPayment || got.TotalCents != 100 || !got.CreatedAt.Equal(o.CreatedAt) {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

func TestPruneIdempotencyKeysRemovesOnlyExpiredOnes(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO idempotency_keys (key, request_hash, status, response, order_id, created_at) VALUES
		('old', 'h', 202, '{}', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f', now() - interval '25 hours'),
		('new', 'h', 202, '{}', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e60', now() - interval '23 hours')`)
	if err != nil {
		t.Fatal(err)
	}
	n, err := postgres.NewStore(pool).PruneIdempotencyKeys(ctx)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	var left string
	if err := pool.QueryRow(ctx, `SELECT string_agg(key, ',') FROM idempotency_keys`).Scan(&left); err != nil || left != "new" {
		t.Errorf("keys left = %q (%v), want new", left, err)
	}
}
