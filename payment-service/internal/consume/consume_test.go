package consume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
	"github.com/orderflow/payment-service/internal/simulator"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type fixture struct {
	pool     *pgxpool.Pool
	sim      *simulator.Simulator
	store    *postgres.Store
	handlers map[string]consumer.Handler
}

func newFixture(t *testing.T) fixture {
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if err := simulator.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(pool, 0, 0)
	store := postgres.NewStore(pool)
	return fixture{pool: pool, sim: sim, store: store, handlers: consume.Handlers(sim, 10*time.Minute, settler(pool, store))}
}

// settler is the Settler of store's database.
func settler(pool *pgxpool.Pool, store *postgres.Store) consume.Settler {
	return consume.Settler{Store: store, Pool: pool, Log: slog.New(slog.DiscardHandler)}
}

// deliver hands ev to its handler and commits what it returns, as the consumer runner does.
func (f fixture) deliver(t *testing.T, topic string, ev events.Event) {
	t.Helper()
	apply, err := f.handle(t, topic, ev)
	if err == nil {
		err = f.commit(apply)
	}
	if err != nil {
		t.Fatalf("%s: %v", topic, err)
	}
}

// handle runs the first step of ev's handler alone, as a consumer that crashes before
// committing would.
func (f fixture) handle(t *testing.T, topic string, ev events.Event) (consumer.Apply, error) {
	t.Helper()
	env, err := events.New(ev, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msg := consumer.Message{Envelope: env, Event: ev, Topic: topic, Log: slog.New(slog.NewJSONHandler(t.Output(), nil))}
	return f.handlers[topic](context.Background(), msg)
}

func (f fixture) commit(apply consumer.Apply) error {
	return pgx.BeginFunc(context.Background(), f.pool, func(tx pgx.Tx) error { _, err := apply.Run(context.Background(), tx); return err })
}

// outcome is where an order's money stands: payment status, charges and refunds at the
// provider, and the events published.
type outcome struct {
	status            string
	charges, refunds  int
	completed, refund int
}

func (f fixture) outcome(t *testing.T, orderID string) outcome {
	t.Helper()
	ctx := context.Background()
	var o outcome
	ps, err := f.store.ByOrder(ctx, orderID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) == 1 {
		o.status = string(ps[0].Status)
	}
	charges, _ := f.sim.Ledger(ctx, orderID)
	refunds, _ := f.sim.Refunds(ctx, orderID)
	o.charges, o.refunds = len(charges), len(refunds)
	err = f.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE topic = $2), count(*) FILTER (WHERE topic = $3) FROM outbox WHERE key = $1`,
		orderID, events.TopicPaymentCompleted, events.TopicPaymentRefunded).Scan(&o.completed, &o.refund)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

const customer = issuer.Customer

func created(id, token string) events.OrderCreated {
	return events.OrderCreated{OrderID: id, CustomerID: customer, CustomerEmail: "ada@example.com",
		Items: []events.Item{{SKU: "BOOK-42", Quantity: 2, UnitPriceCents: 1999}}, TotalCents: 3998, Currency: "EUR",
		PaymentMethod: token, CreatedAt: time.Now()}
}

func cancelled(id string) events.OrderCancelled {
	return events.OrderCancelled{OrderID: id, CustomerID: customer, CustomerEmail: "ada@example.com",
		TotalCents: 3998, Currency: "EUR", CancelledAt: time.Now()}
}

// Whichever order creation and cancellation arrive in, and however often, the customer
// ends up either never charged or charged and refunded exactly once.
func TestCancelledOrderIsRefundedOrNeverCharged(t *testing.T) {
	tests := []struct {
		name  string
		token string
		steps []string // "created", "cancelled"
		want  outcome
	}{
		{"charged, then cancelled: refunded", simulator.TokenVisa, []string{"created", "cancelled"},
			outcome{status: "REFUNDED", charges: 1, refunds: 1, completed: 1, refund: 1}},
		{"cancellation redelivered: refunded once", simulator.TokenVisa, []string{"created", "cancelled", "cancelled", "created"},
			outcome{status: "REFUNDED", charges: 1, refunds: 1, completed: 1, refund: 1}},
		{"cancelled before the charge: never charged", simulator.TokenVisa, []string{"cancelled", "created"},
			outcome{status: "CANCELLED"}},
		{"declined, then cancelled: nothing to refund", simulator.TokenDeclined, []string{"created", "cancelled"},
			outcome{status: "FAILED", charges: 1}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			id := events.NewID(time.Now().Add(time.Duration(i) * time.Millisecond))
			for _, step := range tt.steps {
				if step == "created" {
					f.deliver(t, events.TopicOrderCreated, created(id, tt.token))
				} else {
					f.deliver(t, events.TopicOrderCancelled, cancelled(id))
				}
			}
			if got := f.outcome(t, id); got != tt.want {
				t.Errorf("outcome = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The charge happens outside the transaction that records it. A cancellation arriving
// while it is under way waits (a transient error, retried) and then refunds; a crash
// between the charge and its record leaves a claim that the redelivery completes with the
// same charge.
func TestChargeUnderWay(t *testing.T) {
	t.Run("cancellation waits for the outcome, then refunds", func(t *testing.T) {
		f := newFixture(t)
		id := events.NewID(time.Now())
		record, err := f.handle(t, events.TopicOrderCreated, created(id, simulator.TokenVisa))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.handle(t, events.TopicOrderCancelled, cancelled(id)); err == nil || errors.Is(err, consumer.ErrPoison) {
			t.Fatalf("cancellation during the charge: err = %v, want a transient error (wait and retry)", err)
		}
		if got := f.outcome(t, id); got != (outcome{status: "CHARGING", charges: 1}) {
			t.Fatalf("while waiting: outcome = %+v", got)
		}
		if err := f.commit(record); err != nil {
			t.Fatal(err)
		}
		f.deliver(t, events.TopicOrderCancelled, cancelled(id))
		if got, want := f.outcome(t, id), (outcome{status: "REFUNDED", charges: 1, refunds: 1, completed: 1, refund: 1}); got != want {
			t.Errorf("outcome = %+v, want %+v", got, want)
		}
	})
	t.Run("a crash after the charge: the redelivery records the same charge once", func(t *testing.T) {
		f := newFixture(t)
		id := events.NewID(time.Now())
		lost, err := f.handle(t, events.TopicOrderCreated, created(id, simulator.TokenVisa))
		if err != nil {
			t.Fatal(err)
		}
		f.deliver(t, events.TopicOrderCreated, created(id, simulator.TokenVisa))
		if err := f.commit(lost); err != nil { // the first delivery's commit, late: changes nothing
			t.Fatal(err)
		}
		f.deliver(t, events.TopicOrderCreated, created(id, simulator.TokenVisa))
		if got, want := f.outcome(t, id), (outcome{status: "COMPLETED", charges: 1, completed: 1}); got != want {
			t.Errorf("outcome = %+v, want %+v", got, want)
		}
	})
	t.Run("a cancellation, even one not committed, stops the charge", func(t *testing.T) {
		f := newFixture(t)
		id := events.NewID(time.Now())
		if _, err := f.handle(t, events.TopicOrderCancelled, cancelled(id)); err != nil { // then crashes
			t.Fatal(err)
		}
		f.deliver(t, events.TopicOrderCreated, created(id, simulator.TokenVisa))
		f.deliver(t, events.TopicOrderCancelled, cancelled(id)) // the redelivery
		if got, want := f.outcome(t, id), (outcome{status: "CANCELLED"}); got != want {
			t.Errorf("outcome = %+v, want %+v", got, want)
		}
	})
}

// A batch of provider answers is recorded in one statement; an answer whose claim was
// settled already (an earlier delivery) records nothing and publishes nothing.
func TestChargedRecordsABatchOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var ps []payment.Payment
	var envs []events.Envelope
	for i := range 3 {
		id := events.NewID(time.Now().Add(time.Duration(i) * time.Millisecond))
		p, err := f.store.Claim(ctx, payment.Payment{ID: events.NewID(time.Now()), OrderID: id, CustomerID: customer,
			CustomerEmail: "ada@example.com", AmountCents: 3998, Currency: "EUR", Status: payment.Charging, CauseEventID: "e", CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		p.Status, p.ChargeID = payment.Completed, "ch_"+id
		env, err := events.New(events.PaymentCompleted{OrderID: id, PaymentID: p.ID, ChargeID: p.ChargeID, CustomerID: customer,
			CustomerEmail: "ada@example.com", AmountCents: 3998, Currency: "EUR", CompletedAt: time.Now()}, events.Meta{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ps, envs = append(ps, p), append(envs, env)
	}
	// record says which orders' events were emitted.
	record := func(ps []payment.Payment, envs []events.Envelope) []string {
		t.Helper()
		var emitted []events.Envelope
		err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) (err error) {
			emitted, err = consume.RecordCharges(ctx, tx, ps, envs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var orders []string
		for _, e := range emitted {
			orders = append(orders, e.Subject)
		}
		return orders
	}
	if got := record(ps[1:2], envs[1:2]); !slices.Equal(got, []string{ps[1].OrderID}) {
		t.Fatalf("first record emitted for %v, want %s", got, ps[1].OrderID)
	}
	if got := record(ps, envs); !slices.Equal(got, []string{ps[0].OrderID, ps[2].OrderID}) {
		t.Errorf("batch emitted for %v, want the settled one (%s) left out", got, ps[1].OrderID)
	}
	for _, p := range ps {
		if o := f.outcome(t, p.OrderID); o.status != "COMPLETED" || o.completed != 1 {
			t.Errorf("order %s: %+v, want COMPLETED with one payment.completed event", p.OrderID, o)
		}
	}
}

// A charge that keeps failing is retried until the payment deadline, counted from the
// order's creation; then the provider's records decide, never a guess: no charge under
// the order's key is payment.failed provider_unavailable and nobody is charged, a charge
// that went through after all is payment.completed. Before the deadline the failure is
// retried, and no charge is attempted once the payment is decided.
func TestAPaymentEndsAtItsDeadline(t *testing.T) {
	f := newFixture(t)
	down := simulator.New(f.pool, 0, 1) // every charge fails transiently
	handlers := consume.Handlers(down, 10*time.Minute, settler(f.pool, f.store))
	run := func(ev events.OrderCreated) (consumer.Apply, error) {
		env, err := events.New(ev, events.Meta{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		msg := consumer.Message{Envelope: env, Event: ev, Topic: events.TopicOrderCreated, Log: slog.New(slog.NewJSONHandler(t.Output(), nil))}
		return handlers[events.TopicOrderCreated](context.Background(), msg)
	}

	young := created("019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e01", "tok_visa")
	if _, err := run(young); !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("before the deadline: err = %v, want the transient failure, to be retried", err)
	}

	old := created("019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e02", "tok_visa")
	old.CreatedAt = time.Now().Add(-11 * time.Minute)
	apply, err := run(old)
	if err == nil {
		err = f.commit(apply)
	}
	if err != nil {
		t.Fatalf("past the deadline, no charge at the provider: %v", err)
	}
	var reason string
	if err := f.pool.QueryRow(context.Background(), `SELECT convert_from(payload, 'UTF8')::jsonb->>'reason' FROM outbox WHERE key = $1 AND topic = $2`,
		old.OrderID, events.TopicPaymentFailed).Scan(&reason); err != nil || reason != events.ReasonProviderUnavailable {
		t.Errorf("payment.failed reason = %q (%v), want %s", reason, err, events.ReasonProviderUnavailable)
	}
	if o := f.outcome(t, old.OrderID); o.status != "FAILED" || o.charges != 0 {
		t.Errorf("past the deadline, no charge: %+v, want FAILED and no charge", o)
	}
	f.deliver(t, events.TopicOrderCreated, old) // redelivered, the provider back: decided, no charge
	if o := f.outcome(t, old.OrderID); o.charges != 0 {
		t.Errorf("a decided payment was charged on redelivery: %+v", o)
	}

	// The provider took the charge and its answer was lost; then it went down.
	late := created("019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e03", "tok_visa")
	late.CreatedAt = time.Now().Add(-11 * time.Minute)
	if _, err := f.sim.Charge(context.Background(), payment.ChargeRequest{IdempotencyKey: late.OrderID,
		AmountCents: late.TotalCents, Currency: late.Currency, PaymentMethod: late.PaymentMethod}); err != nil {
		t.Fatal(err)
	}
	if apply, err = run(late); err == nil {
		err = f.commit(apply)
	}
	if err != nil {
		t.Fatalf("past the deadline, a charge at the provider: %v", err)
	}
	if o := f.outcome(t, late.OrderID); o.status != "COMPLETED" || o.charges != 1 || o.completed != 1 {
		t.Errorf("past the deadline, charged after all: %+v, want COMPLETED, one charge, payment.completed", o)
	}
}

// scripted is the simulator with its charges answered by charge, counted.
type scripted struct {
	*simulator.Simulator
	charge  func(ctx context.Context) (payment.Charge, error)
	charges atomic.Int32
}

func (s *scripted) Charge(ctx context.Context, _ payment.ChargeRequest) (payment.Charge, error) {
	s.charges.Add(1)
	return s.charge(ctx)
}

// handleWith runs ev's handler with provider and deadline, in an attempt of the given
// timeout as the runner makes one, and commits what it returns.
func (f fixture) handleWith(t *testing.T, provider payment.Provider, deadline, attempt time.Duration, ev events.OrderCreated) error {
	t.Helper()
	env, err := events.New(ev, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msg := consumer.Message{Envelope: env, Event: ev, Topic: events.TopicOrderCreated, Log: slog.New(slog.NewJSONHandler(t.Output(), nil))}
	ctx, cancel := context.WithTimeout(context.Background(), attempt)
	defer cancel()
	apply, err := consume.Handlers(provider, deadline, settler(f.pool, f.store))[events.TopicOrderCreated](ctx, msg)
	if err != nil {
		return err
	}
	return f.commit(apply)
}

// failedWith returns the reason of the order's payment.failed, failing the test unless
// there is exactly one and the payment is FAILED.
func (f fixture) failedWith(t *testing.T, orderID string) string {
	t.Helper()
	var reasons []string
	rows, _ := f.pool.Query(context.Background(), `SELECT convert_from(payload, 'UTF8')::jsonb->>'reason' FROM outbox WHERE key = $1 AND topic = $2`,
		orderID, events.TopicPaymentFailed)
	reasons, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if o := f.outcome(t, orderID); o.status != "FAILED" || len(reasons) != 1 {
		t.Fatalf("payment %s with payment.failed reasons %v, want FAILED and one", o.status, reasons)
	}
	return reasons[0]
}

// A provider that hangs uses up the attempt: the deadline's lookup then runs on a
// context of its own and ends the payment. It used to reuse the attempt's expired
// context, fail at once, and retry the charge for ever.
func TestAHangingProviderEndsAtTheDeadline(t *testing.T) {
	f := newFixture(t)
	hung := &scripted{Simulator: f.sim, charge: func(ctx context.Context) (payment.Charge, error) {
		<-ctx.Done()
		return payment.Charge{}, fmt.Errorf("%w: %w", payment.ErrTransient, ctx.Err())
	}}
	ev := created(events.NewID(time.Now()), simulator.TokenVisa)
	ev.CreatedAt = time.Now().Add(-900 * time.Millisecond) // past the deadline of 1 s while the charge hangs
	if err := f.handleWith(t, hung, time.Second, 300*time.Millisecond, ev); err != nil {
		t.Fatalf("a charge that hung past the deadline: %v, want the payment settled", err)
	}
	if reason := f.failedWith(t, ev.OrderID); reason != events.ReasonProviderUnavailable {
		t.Errorf("reason %q, want %s", reason, events.ReasonProviderUnavailable)
	}
}

// A claim past its deadline is not charged again when its order.created comes again (the
// answer to the first attempt lost, or never given): the provider's records decide.
func TestARedeliveryPastTheDeadlineIsNotCharged(t *testing.T) {
	f := newFixture(t)
	counting := &scripted{Simulator: f.sim, charge: func(context.Context) (payment.Charge, error) {
		return payment.Charge{ID: "ch_1", Succeeded: true}, nil
	}}
	ev := created(events.NewID(time.Now()), simulator.TokenVisa)
	ev.CreatedAt = time.Now().Add(-11 * time.Minute)
	if _, err := f.store.Claim(context.Background(), payment.Payment{ID: events.NewID(time.Now()), OrderID: ev.OrderID,
		CustomerID: customer, CustomerEmail: ev.CustomerEmail, AmountCents: ev.TotalCents, Currency: ev.Currency,
		Status: payment.Charging, CauseEventID: "first", CreatedAt: ev.CreatedAt}); err != nil {
		t.Fatal(err)
	}
	if err := f.handleWith(t, counting, 10*time.Minute, 5*time.Second, ev); err != nil {
		t.Fatal(err)
	}
	if n := counting.charges.Load(); n != 0 {
		t.Errorf("the redelivery past the deadline was charged %d times, want none", n)
	}
	if reason := f.failedWith(t, ev.OrderID); reason != events.ReasonProviderUnavailable {
		t.Errorf("reason %q, want %s", reason, events.ReasonProviderUnavailable)
	}
}

// What the provider answers after the claim always ends the payment: a decline without a
// code fails as declined, and a charge refused for its idempotency key fails as
// provider_rejected when the provider holds no charge. Both used to dead-letter the
// order.created and leave the payment CHARGING, and its order pending, for ever.
func TestEveryAnswerAfterTheClaimEndsThePayment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		charge func(context.Context) (payment.Charge, error)
		reason string
	}{
		{"a decline without a code", func(context.Context) (payment.Charge, error) { return payment.Charge{ID: "ch_2"}, nil }, events.ReasonDeclined},
		{"an idempotency key used with other parameters", func(context.Context) (payment.Charge, error) {
			return payment.Charge{}, payment.ErrIdempotencyMismatch
		}, events.ReasonProviderRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ev := created(events.NewID(time.Now()), simulator.TokenVisa)
			if err := f.handleWith(t, &scripted{Simulator: f.sim, charge: tc.charge}, 10*time.Minute, 5*time.Second, ev); err != nil {
				t.Fatalf("%v, want the payment ended", err)
			}
			if reason := f.failedWith(t, ev.OrderID); reason != tc.reason {
				t.Errorf("reason %q, want %s", reason, tc.reason)
			}
		})
	}
}
