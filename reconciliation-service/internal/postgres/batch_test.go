package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/reconciliation-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A batch's records, folded into one row per order, leave each order's facts and timeline
// exactly as the same records applied one at a time do, in the order they came: an older
// order.state never moves an order back, a refund stays a refund, a completion stays a
// completion, emails add up.
func TestABatchIsItsRecordsOneByOne(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	rec := func(ev events.Event, s int) postgres.Record {
		env, err := events.New(ev, events.Meta{}, at(s))
		if err != nil {
			t.Fatal(err)
		}
		return postgres.Record{Env: env, Event: ev}
	}
	state := func(id, status string, v int64, s int) postgres.Record {
		return rec(events.OrderState{OrderID: id, CustomerID: id, Status: status, Items: []events.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 100}},
			TotalCents: 100, Currency: "EUR", Version: v, CreatedAt: at(0), UpdatedAt: at(s)}, s)
	}
	completed := func(id, charge string, s int) postgres.Record {
		return rec(events.PaymentCompleted{OrderID: id, PaymentID: id, ChargeID: charge, CustomerID: id, CustomerEmail: "a@example.com",
			AmountCents: 100, Currency: "EUR", CompletedAt: at(s)}, s)
	}
	failed := func(id string, s int) postgres.Record {
		return rec(events.PaymentFailed{OrderID: id, PaymentID: id, CustomerID: id, CustomerEmail: "a@example.com", Reason: "card_declined",
			AmountCents: 100, Currency: "EUR", FailedAt: at(s)}, s)
	}
	refunded := func(id, charge string, s int) postgres.Record {
		return rec(events.PaymentRefunded{OrderID: id, PaymentID: id, ChargeID: charge, RefundID: "re_" + charge, CustomerID: id,
			CustomerEmail: "a@example.com", AmountCents: 100, Currency: "EUR", RefundedAt: at(s)}, s)
	}
	sent := func(id, kind string, s int) postgres.Record {
		return rec(events.NotificationSent{OrderID: id, Kind: kind, MessageID: "<" + id + "." + kind + "@x>", RecipientDomain: "example.com", SentAt: at(s)}, s)
	}
	a, b, c, d := events.NewID(t0), events.NewID(t0), events.NewID(t0), events.NewID(t0)
	recs := []postgres.Record{
		// a: confirmed, its states out of order, its email and a redelivered completion
		state(a, events.StatusConfirmed, 2, 3), state(a, events.StatusPendingPayment, 1, 1), completed(a, "ch_a", 2),
		sent(a, "order_confirmed", 4), completed(a, "ch_a", 2),
		// b: failed, then (a bug) completed: the completion stays
		state(b, events.StatusPendingPayment, 1, 1), failed(b, 2), completed(b, "ch_b", 5),
		// c: cancelled and refunded, the refund before the completion
		state(c, events.StatusCancelled, 2, 2), refunded(c, "ch_c", 4), completed(c, "ch_c", 3),
		sent(c, "order_cancelled", 3), sent(c, "payment_refunded", 5),
		// d: completed, then failed again: the failure's time does not replace the completion's
		completed(d, "ch_d", 2), failed(d, 6),
	}
	model := func(t *testing.T, batches [][]postgres.Record) []string {
		pool, store := migrated(t)
		for _, batch := range batches {
			applyBatch(t, pool, store, batch)
		}
		rows, _ := pool.Query(ctx, `SELECT r FROM (SELECT 1 AS t, order_id::text AS k, to_jsonb(f)::text AS r FROM order_facts f
			UNION ALL SELECT 2, event_id, to_jsonb(x)::text FROM timeline x) m ORDER BY t, k`)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var oneByOne [][]postgres.Record
	for _, r := range recs {
		oneByOne = append(oneByOne, []postgres.Record{r})
	}
	want := model(t, oneByOne)
	for name, batches := range map[string][][]postgres.Record{
		"one batch":      {recs},
		"two batches":    {recs[:7], recs[7:]},
		"three batches":  {recs[:3], recs[3:10], recs[10:]},
		"again, at once": {recs, recs}, // a redelivery of everything
	} {
		if got := model(t, batches); !slices.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, want)
		}
	}
	for _, r := range want {
		t.Log(r)
	}
}

// An order's new status is written beside its facts (a HOT update, no new index entry),
// as their pages keep room for it (fillfactor), for nearly every order of a batch.
func TestANewStatusIsWrittenBesideTheFacts(t *testing.T) {
	ctx := context.Background()
	pool, store := migrated(t)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = events.NewID(t0)
	}
	states := func(status string, version int64) []postgres.Record {
		recs := make([]postgres.Record, len(ids))
		for i, id := range ids {
			recs[i] = stateRecord(t, id, status, version, t0)
		}
		return recs
	}
	applyBatch(t, pool, store, states(events.StatusPendingPayment, 1))
	var updated, hot int
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := store.ApplyBatch(ctx, tx, states(events.StatusConfirmed, 2)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_updated('order_facts'::regclass),
			pg_stat_get_xact_tuples_hot_updated('order_facts'::regclass)`).Scan(&updated, &hot)
	}); err != nil {
		t.Fatal(err)
	}
	if updated != len(ids) || hot < len(ids)*9/10 {
		t.Errorf("%d orders confirmed: %d updates, %d of them beside the row (HOT); want %d, at least %d", len(ids), updated, hot, len(ids), len(ids)*9/10)
	}
}
