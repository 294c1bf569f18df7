package postgres_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/provider"
)

// migrated is a database of its own, migrated, and a store on it.
func migrated(t *testing.T) (*pgxpool.Pool, *postgres.Store) {
	t.Helper()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Reconciliation); err != nil {
		t.Fatal(err)
	}
	return pool, postgres.NewStore(pool)
}

// stateRecord is order id's order.state record at that status and version: placed at t0,
// changed version seconds later.
func stateRecord(t *testing.T, id, status string, version int64, t0 time.Time) postgres.Record {
	t.Helper()
	ev := events.OrderState{OrderID: id, CustomerID: id, Status: status, Items: []events.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 100}},
		TotalCents: 100, Currency: "EUR", Version: version, CreatedAt: t0, UpdatedAt: t0.Add(time.Duration(version) * time.Second)}
	env, err := events.New(ev, events.Meta{}, ev.UpdatedAt)
	if err != nil {
		t.Fatal(err)
	}
	return postgres.Record{Env: env, Event: ev}
}

// applyBatch applies recs through store in a transaction of their own.
func applyBatch(t *testing.T, pool *pgxpool.Pool, store *postgres.Store, recs []postgres.Record) {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return store.ApplyBatch(ctx, tx, recs) }); err != nil {
		t.Fatal(err)
	}
}

// A listing's charges, in one statement, leave the facts as one update after another
// would: an order charged twice names its last charge, every charge joins its order's
// timeline once, and a listing read again changes nothing.
func TestProviderChargesAsListed(t *testing.T) {
	ctx := context.Background()
	pool, store := migrated(t)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	a, b := events.NewID(t0), events.NewID(t0)
	listing := []provider.Charge{
		{OrderID: a, ChargeID: "ch_a1", At: t0},
		{OrderID: b, ChargeID: "ch_b", At: t0.Add(time.Second)},
		{OrderID: strings.ToUpper(a), ChargeID: "ch_a2", At: t0.Add(2 * time.Second)}, // a second charge: a double charge
	}
	for range 2 {
		if err := store.ProviderCharges(ctx, listing, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	rows, _ := pool.Query(ctx, `SELECT order_id::text, provider_charge FROM order_facts`)
	var id, charge string
	if _, err := pgx.ForEachRow(rows, []any{&id, &charge}, func() error { got[id] = charge; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{a: "ch_a2", b: "ch_b"}; !maps.Equal(got, want) {
		t.Errorf("provider charges %v, want %v", got, want)
	}
	for order, want := range map[string][]string{a: {"provider/ch_a1", "provider/ch_a2"}, b: {"provider/ch_b"}} {
		said, err := store.Timeline(ctx, order)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range said {
			ids = append(ids, s.EventID)
		}
		if !slices.Equal(ids, want) {
			t.Errorf("order %s timeline %v, want %v", order, ids, want)
		}
	}
	if until, ok, err := store.ListedUntil(ctx); err != nil || !ok || !until.Equal(t0.Add(time.Minute)) {
		t.Errorf("listed until %v, %v, %v", until, ok, err)
	}
}

// A sweep settles only what it read: an order about which a fact came between the
// sweep's read and its settling stays unsettled for the next sweep, which settles it once
// nothing came meanwhile.
func TestAFactAfterTheSweepsReadKeepsTheOrderUnsettled(t *testing.T) {
	ctx := context.Background()
	pool, store := migrated(t)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	id := events.NewID(t0)
	apply := func(status string, version int64) {
		t.Helper()
		applyBatch(t, pool, store, []postgres.Record{stateRecord(t, id, status, version, t0)})
	}
	unsettled := func() []postgres.Read {
		t.Helper()
		reads, err := store.Unsettled(ctx, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		return reads
	}
	apply(events.StatusConfirmed, 2)
	read := unsettled()
	apply(events.StatusPendingPayment, 3) // put back by hand, as the sweep decides
	if err := store.Found(ctx, []string{id}, nil, read); err != nil {
		t.Fatal(err)
	}
	again := unsettled()
	if len(again) != 1 || again[0].Status != events.StatusPendingPayment {
		t.Fatalf("after a fact that came since the read: unsettled %+v, want the order, pending", again)
	}
	if err := store.Found(ctx, []string{id}, nil, again); err != nil {
		t.Fatal(err)
	}
	if left := unsettled(); len(left) != 0 {
		t.Errorf("settled as read, with nothing since: unsettled %+v, want none", left)
	}
}

// A charge listed for an order whose payment no service told of yet (its facts hold its
// state, no charge) is recorded: the provider was not asked about a payment not yet told.
func TestAChargeListedBeforeItsPaymentIsRecorded(t *testing.T) {
	ctx := context.Background()
	pool, store := migrated(t)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	id := events.NewID(t0)
	applyBatch(t, pool, store, []postgres.Record{stateRecord(t, id, events.StatusPendingPayment, 1, t0)})
	if err := store.ProviderCharges(ctx, []provider.Charge{{OrderID: id, ChargeID: "ch_early", At: t0}}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var charge string
	var asked bool
	if err := pool.QueryRow(ctx, `SELECT provider_charge, provider_asked FROM order_facts WHERE order_id = $1`, id).Scan(&charge, &asked); err != nil {
		t.Fatal(err)
	}
	if charge != "ch_early" || asked {
		t.Errorf("provider charge %q, asked %v; want ch_early, not asked", charge, asked)
	}
}
