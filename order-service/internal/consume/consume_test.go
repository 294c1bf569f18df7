package consume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/consume"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A payment outcome for an order this process placed is recorded from what it wrote, its
// order.state built before the statement, with the inbox's and the outbox's rows in that
// one statement; an outcome for any other order (another instance's, or one placed before
// a restart) is read back by its update. Both leave the order, its history and its
// order.state alike, down to the last field; an outcome for an order no longer pending
// (cancelled meanwhile, by another instance) changes nothing, whichever way it goes.
func TestAnOutcomeForAnOrderPlacedHereIsRecordedAsAnyOther(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	traced, statements := testenv.TracedPool(t, pool)
	here, elsewhere := postgres.NewStore(pool), postgres.NewStore(pool) // the placing instance, and another
	placedHere := handlers(t, here)
	now := time.Now()
	ids := map[string]string{}
	for i, name := range []string{"completed here", "completed elsewhere", "failed here", "failed elsewhere", "cancelled elsewhere"} {
		id := fmt.Sprintf("019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e%02d", i)
		ids[name] = id
		o, err := order.New(order.Request{CustomerID: issuer.Customer, CustomerEmail: "ada@example.com", Currency: "EUR",
			Items: []order.Item{{SKU: "S", Quantity: 2, UnitPriceCents: 150}}, PaymentMethod: "tok_visa"}, id, "corr-"+name, now)
		if err != nil {
			t.Fatal(err)
		}
		created, err := events.New(o.CreatedEvent(), events.Meta{}, now)
		if err != nil {
			t.Fatal(err)
		}
		store := here
		if name == "completed elsewhere" || name == "failed elsewhere" {
			store = elsewhere
		}
		if err := store.Create(ctx, o, []events.Envelope{created}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := here.Placed(ids["completed here"]); !ok {
		t.Fatal("the store does not remember the order it placed")
	}
	err := elsewhere.Change(ctx, ids["cancelled elsewhere"], order.Viewer{Operator: true}, func(o order.Order) (order.Order, []events.Envelope, error) {
		if err := o.Transition(order.Cancelled, "", time.Now()); err != nil {
			return o, nil, err
		}
		env, err := events.New(o.CancelledEvent(), events.Meta{}, o.UpdatedAt)
		return o, []events.Envelope{env}, err
	})
	if err != nil {
		t.Fatal(err)
	}

	decided := time.Now()
	apply := func(name, topic string, ev events.Event) []events.Envelope {
		t.Helper()
		env, err := events.New(ev, events.Meta{CorrelationID: "corr-" + name}, decided)
		if err != nil {
			t.Fatal(err)
		}
		msg := consumer.Message{Envelope: env, Event: ev, Topic: topic, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		a, err := placedHere[topic](ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		var emitted []events.Envelope
		err = pgx.BeginFunc(ctx, traced, func(tx pgx.Tx) error { emitted, err = consumer.RunBatch(ctx, tx, a); return err })
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return emitted
	}
	completed := func(name string) events.PaymentCompleted {
		return events.PaymentCompleted{OrderID: ids[name], PaymentID: "p", ChargeID: "ch", CustomerID: issuer.Customer,
			CustomerEmail: "ada@example.com", AmountCents: 300, Currency: "EUR", CompletedAt: decided}
	}
	failed := func(name string) events.PaymentFailed {
		return events.PaymentFailed{OrderID: ids[name], PaymentID: "p", CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
			AmountCents: 300, Currency: "EUR", Reason: events.ReasonDeclined, FailedAt: decided}
	}
	states := map[string][]events.Envelope{}
	for _, name := range []string{"completed here", "completed elsewhere", "cancelled elsewhere"} {
		states[name] = apply(name, events.TopicPaymentCompleted, completed(name))
	}
	for _, name := range []string{"failed here", "failed elsewhere"} {
		states[name] = apply(name, events.TopicPaymentFailed, failed(name))
	}
	if n := statements.Count("applied AS"); n != 3 {
		t.Errorf("%d statements recorded a decision with its event, want 3: the orders placed here, the one cancelled elsewhere among them", n)
	}
	// The outcome again, the order decided and still remembered (the runner has it
	// forgotten once the statement commits; RunBatch's caller commits): nothing changes.
	if again := apply("completed here", events.TopicPaymentCompleted, completed("completed here")); len(again) != 0 {
		t.Errorf("the outcome again emitted %d events, want none", len(again))
	}

	for _, name := range []string{"completed here", "completed elsewhere", "failed here", "failed elsewhere"} {
		o, err := here.Get(ctx, ids[name])
		if err != nil {
			t.Fatal(err)
		}
		if len(states[name]) != 1 {
			t.Errorf("%s: %d events emitted, want its order.state", name, len(states[name]))
			continue
		}
		var got events.OrderState
		if err := json.Unmarshal(states[name][0].Data, &got); err != nil {
			t.Fatal(err)
		}
		if want := o.StateEvent(); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("%s: order.state\n%+v\nwant, as the row stands,\n%+v", name, got, want)
		}
		if o.Version != 2 {
			t.Errorf("%s: version %d, want 2", name, o.Version)
		}
	}
	if len(states["cancelled elsewhere"]) != 0 {
		t.Errorf("an outcome for an order cancelled meanwhile emitted %d events, want none", len(states["cancelled elsewhere"]))
	}
	var history []string
	rows, _ := pool.Query(ctx, `SELECT right(order_id::text, 2) || ' ' || coalesce(from_status, '-') || '→' || to_status || ' ' || coalesce(reason, '-')
		FROM order_history ORDER BY order_id, at`)
	if history, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	want := "[00 -→PENDING_PAYMENT - 00 PENDING_PAYMENT→CONFIRMED - 01 -→PENDING_PAYMENT - 01 PENDING_PAYMENT→CONFIRMED - " +
		"02 -→PENDING_PAYMENT - 02 PENDING_PAYMENT→PAYMENT_FAILED declined 03 -→PENDING_PAYMENT - 03 PENDING_PAYMENT→PAYMENT_FAILED declined " +
		"04 -→PENDING_PAYMENT - 04 PENDING_PAYMENT→CANCELLED -]"
	if fmt.Sprint(history) != want {
		t.Errorf("history\n%v\nwant\n%s", history, want)
	}
}

// handlers are order-service's handlers on store.
func handlers(t *testing.T, store *postgres.Store) map[string]consumer.Handler {
	t.Helper()
	h, err := consume.Handlers(store, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return h
}
