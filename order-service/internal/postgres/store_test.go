package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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

func TestMain(m *testing.M) { testenv.Main(m) }

// newStore is a store on a fresh, migrated orders database.
func newStore(t *testing.T) (*pgxpool.Pool, *postgres.Store) {
	t.Helper()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	return pool, postgres.NewStore(pool)
}

// newOrder is a valid pending order with id and its order.created event.
func newOrder(t *testing.T, id string, now time.Time) (order.Order, events.Envelope) {
	t.Helper()
	o, err := order.New(order.Request{
		CustomerID: issuer.Customer, CustomerEmail: "ada@example.com", Currency: "EUR",
		Items: []order.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}}, PaymentMethod: "tok_visa",
	}, id, "corr", now)
	if err != nil {
		t.Fatal(err)
	}
	env, err := events.New(o.CreatedEvent(), events.Meta{}, now)
	if err != nil {
		t.Fatal(err)
	}
	return o, env
}

// The order, its history and its event are written together or not at all.
func TestCreateIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	pool, store := newStore(t)
	now := time.Now()
	o, env := newOrder(t, "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f", now)
	if err := store.Create(ctx, o, []events.Envelope{env}); err != nil {
		t.Fatal(err)
	}
	again, _ := events.New(o.CreatedEvent(), events.Meta{}, now)
	if err := store.Create(ctx, o, []events.Envelope{again}); err == nil {
		t.Fatal("creating an order with an existing id succeeded")
	}
	var orders, history, outbox int
	err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_history), (SELECT count(*) FROM outbox)`).
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
	third, _ := events.New(other.CreatedEvent(), events.Meta{}, now)
	if err := store.Create(ctx, other, []events.Envelope{third}); err == nil {
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

// Orders placed at once are written together, and each as it would be alone: its row,
// its history entry caused by its first event, its events in order; an order that
// breaks a constraint fails alone, the others of its statement stored.
func TestConcurrentCreatesAreEachAsAlone(t *testing.T) {
	ctx := context.Background()
	pool, store := newStore(t)
	now := time.Now().UTC().Truncate(time.Microsecond)
	dup := "019a8f3e-6c19-7d4a-8e55-0a1b2c3d0000"
	first, firstEnv := newOrder(t, dup, now)
	if err := store.Create(ctx, first, []events.Envelope{firstEnv}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	type result struct {
		o     order.Order
		cause string
		err   error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d%04d", i+1)
			if i == n/2 {
				id = dup // a second order with an existing id: it alone fails
			}
			o, env := newOrder(t, id, now.Add(time.Duration(i)*time.Microsecond))
			state, _ := events.New(o.StateEvent(), env.Meta(), now)
			results <- result{o, env.ID, store.Create(ctx, o, []events.Envelope{env, state})}
		})
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.o.ID == dup {
			if r.err == nil {
				t.Error("an order with an existing id was created")
			}
			continue
		}
		if r.err != nil {
			t.Errorf("create %s: %v", r.o.ID, r.err)
			continue
		}
		got, err := store.Get(ctx, r.o.ID)
		if err != nil || got.Status != order.PendingPayment || got.TotalCents != r.o.TotalCents || !got.CreatedAt.Equal(r.o.CreatedAt) ||
			got.CustomerEmail != r.o.CustomerEmail || len(got.Items) != 1 || got.Items[0] != r.o.Items[0] {
			t.Errorf("order %s stored as %+v, %v; want %+v", r.o.ID, got, err, r.o)
		}
		h, err := store.History(ctx, r.o.ID)
		if err != nil || len(h) != 1 || h[0].CauseEventID != r.cause || h[0].To != order.PendingPayment {
			t.Errorf("order %s history %+v, %v; want one entry caused by %s", r.o.ID, h, err, r.cause)
		}
		var topics []string
		rows, _ := pool.Query(ctx, `SELECT topic FROM outbox WHERE key = $1 ORDER BY id`, r.o.ID)
		topics, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || !slices.Equal(topics, []string{events.TopicOrderCreated, events.TopicOrderState}) {
			t.Errorf("order %s events %v, %v; want order.created then order.state", r.o.ID, topics, err)
		}
	}
	var orders int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&orders); err != nil || orders != n {
		t.Errorf("%d orders stored, %v; want %d (the first and %d of the %d at once)", orders, err, n, n-1, n)
	}
}

// Orders that come while a write is under way wait for it and are written together: a
// commit for many.
func TestOrdersPlacedWhileAWriteIsUnderWayShareACommit(t *testing.T) {
	ctx := context.Background()
	pool, store := newStore(t)
	now := time.Now().UTC()
	release := testenv.HoldWrites(t, pool, "orders")
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			o, env := newOrder(t, fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d%04d", i), now)
			if err := store.Create(ctx, o, []events.Envelope{env}); err != nil {
				t.Errorf("create %s: %v", o.ID, err)
			}
		})
	}
	release()
	wg.Wait()
	var orders, commits int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text) FROM orders`).Scan(&orders, &commits); err != nil {
		t.Fatal(err)
	}
	if orders != n || commits > 8 {
		t.Errorf("%d orders placed while a write was under way: %d stored in %d transactions; want %d in a few", n, orders, commits, n)
	}
}

func TestPruneIdempotencyKeysRemovesOnlyExpiredOnes(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO idempotency_keys (customer_id, key, request_hash, status, response, order_id, created_at) VALUES
		('`+issuer.Customer+`', 'old', 'h', 202, '{}', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f', now() - interval '25 hours'),
		('`+issuer.Customer+`', 'new', 'h', 202, '{}', '019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e60', now() - interval '23 hours')`)
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

// A batch of status changes is applied in one go, each with its own outcome: pending
// orders move and get a history entry; an unknown order and one no longer pending are
// reported and left alone.
func TestTransitionAllReportsEachOutcome(t *testing.T) {
	ctx := context.Background()
	pool, store := newStore(t)
	now := time.Now()
	ids := []string{"019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e71", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e72", "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e73"}
	for _, id := range ids {
		o, env := newOrder(t, id, now)
		if err := store.Create(ctx, o, []events.Envelope{env}); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(changes ...postgres.Change) []postgres.Outcome {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		out, err := store.TransitionAll(ctx, tx, changes)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return out
	}
	apply(postgres.Change{OrderID: ids[2], To: order.Confirmed, CauseEventID: "e0", At: now})
	out := apply(
		postgres.Change{OrderID: ids[0], To: order.Confirmed, CauseEventID: "e1", At: now},
		postgres.Change{OrderID: "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4eff", To: order.Confirmed, CauseEventID: "e2", At: now},
		postgres.Change{OrderID: ids[1], To: order.PaymentFailed, Reason: "card_declined", CauseEventID: "e3", At: now},
		postgres.Change{OrderID: ids[2], To: order.PaymentFailed, Reason: "card_declined", CauseEventID: "e4", At: now},
	)
	if out[0].Err != nil || out[0].Order.Status != order.Confirmed {
		t.Errorf("pending → CONFIRMED: %+v", out[0])
	}
	if !errors.Is(out[1].Err, order.ErrNotFound) {
		t.Errorf("unknown order: err = %v, want ErrNotFound", out[1].Err)
	}
	if out[2].Err != nil || out[2].Order.Status != order.PaymentFailed || out[2].Order.FailureReason != "card_declined" {
		t.Errorf("pending → PAYMENT_FAILED: %+v", out[2])
	}
	if !errors.Is(out[3].Err, order.ErrInvalidTransition) || out[3].Order.Status != order.Confirmed {
		t.Errorf("CONFIRMED → PAYMENT_FAILED: %+v, want ErrInvalidTransition and the order as it stands", out[3])
	}
	for i, want := range []string{"PENDING_PAYMENT CONFIRMED e1 ", "PENDING_PAYMENT PAYMENT_FAILED e3 card_declined", "PENDING_PAYMENT CONFIRMED e0 "} {
		h, err := store.History(ctx, ids[i])
		if err != nil || len(h) != 2 {
			t.Fatalf("order %d history = %+v (%v), want two entries", i, h, err)
		}
		if got := fmt.Sprintf("%s %s %s %s", h[1].From, h[1].To, h[1].CauseEventID, h[1].Reason); got != want {
			t.Errorf("order %d change = %q, want %q", i, got, want)
		}
	}
}

// A batch's status changes are made by a statement PostgreSQL plans once and keeps: after
// its first five calls, each of one change, a plan made for the arguments (planning that
// cost PostgreSQL more than the update at 250 orders/s) would look no cheaper than the
// generic one.
func TestTransitionAllIsPlannedOnce(t *testing.T) {
	ctx := context.Background()
	pool := testenv.SessionPool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
	now := time.Now()
	var ids []string
	for i := range testenv.PlannedCalls {
		id := fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e%02d", i)
		o, env := newOrder(t, id, now)
		if err := store.Create(ctx, o, []events.Envelope{env}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// A table whose orders are mostly settled, as the statistics say: few are pending.
	if _, err := pool.Exec(ctx, `
		INSERT INTO orders (id, customer_id, customer_email, currency, items, total_cents, payment_method, status,
			correlation_id, created_at, updated_at)
		SELECT gen_random_uuid(), customer_id, customer_email, currency, items, total_cents, payment_method, 'CONFIRMED',
			correlation_id, created_at, updated_at
		FROM orders, generate_series(1, 2000) LIMIT 2000;
		ANALYZE orders`); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := store.TransitionAll(ctx, tx, []postgres.Change{{OrderID: id, To: order.Confirmed, CauseEventID: "e" + id, At: now}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	testenv.WantGenericPlans(t, pool, "UPDATE orders o SET status")
}
