package postgres_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/provider"
)

// A listing's charges, in one statement, leave the facts as one update after another
// would: an order charged twice names its last charge, every charge joins its order's
// timeline once, and a listing read again changes nothing.
func TestProviderChargesAsListed(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Reconciliation); err != nil {
		t.Fatal(err)
	}
	store := postgres.NewStore(pool)
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
