package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

// A status change committed on one pool wakes the subscribers of another instance's feed,
// also after the feed's connection was killed, and only the order's own subscribers.
func TestChangesWakeSubscribersAcrossInstances(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
	place := func(id string) {
		t.Helper()
		o, err := order.New(order.Request{
			CustomerID: issuer.Customer, CustomerEmail: "ada@example.com", Currency: "EUR",
			Items: []order.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}}, PaymentMethod: "tok_visa",
		}, id, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		env, _ := events.New(o.CreatedEvent(), events.Meta{}, time.Now())
		if err := store.Create(ctx, o, []events.Envelope{env}); err != nil {
			t.Fatal(err)
		}
	}
	confirm := func(id string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := store.Transition(ctx, tx, id, order.Confirmed, "", "evt", time.Now())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	const a, b = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e60"
	place(a)
	place(b)

	other, err := pgxpool.New(ctx, pool.Config().ConnString()) // another instance's pool
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	changes := postgres.NewChanges(other, slog.New(slog.NewJSONHandler(t.Output(), nil)))
	changes.RetryInterval = 50 * time.Millisecond
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- changes.Run(rctx) }()

	woken, unsubscribe := changes.Subscribe(a)
	notMine, unsubscribeB := changes.Subscribe(b)
	// Run wakes every subscriber whenever it starts listening; drain that first wake-up.
	expect(t, woken, "the wake-up on listening")
	expect(t, notMine, "the wake-up on listening")

	confirm(a)
	expect(t, woken, "a's change")
	select {
	case <-notMine:
		t.Error("b's subscriber was woken by a's change")
	case <-time.After(200 * time.Millisecond):
	}

	// Kill the listening connection: the feed listens again and wakes everyone, since a
	// change may have been missed meanwhile.
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN order_status'`); err != nil {
		t.Fatal(err)
	}
	expect(t, notMine, "the wake-up after listening again")
	confirm(b)
	expect(t, notMine, "b's change after the reconnect")

	unsubscribe()
	unsubscribeB()
	if n := changes.Waiting(); n != 0 {
		t.Errorf("Waiting = %d after unsubscribing, want 0", n)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes.Done():
	default:
		t.Error("Done is still open after Run returned")
	}
}

func expect(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("not woken within 10s: %s", what)
	}
}
