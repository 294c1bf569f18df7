package simulator_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/simulator"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if err := simulator.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestTokens(t *testing.T) {
	sim := simulator.New(openPool(t), 0, 0)
	tests := []struct {
		token       string
		succeeded   bool
		declineCode string
	}{
		{"tok_visa", true, ""},
		{"tok_mastercard", true, ""},
		{"tok_chargeDeclined", false, "card_declined"},
		{"tok_chargeDeclinedInsufficientFunds", false, "insufficient_funds"},
		{"tok_unknown", false, "invalid_payment_method"},
		{"4242424242424242", false, "invalid_payment_method"},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			c, err := sim.Charge(context.Background(), payment.ChargeRequest{
				IdempotencyKey: "key-" + tt.token, AmountCents: 100, Currency: "EUR", PaymentMethod: tt.token,
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.Succeeded != tt.succeeded || c.DeclineCode != tt.declineCode || c.ID == "" {
				t.Errorf("charge = %+v, want succeeded=%v decline=%q", c, tt.succeeded, tt.declineCode)
			}
		})
	}
}

func TestSameKeyChargesOnce(t *testing.T) {
	pool := openPool(t)
	sim := simulator.New(pool, 0, 0)
	req := payment.ChargeRequest{IdempotencyKey: "order-1", AmountCents: 4348, Currency: "EUR", PaymentMethod: "tok_visa"}
	first, err := sim.Charge(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := sim.Charge(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("second charge = %+v, want the first one back %+v", again, first)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM provider_charges`).Scan(&n); err != nil || n != 1 {
		t.Errorf("ledger holds %d charges (%v), want 1", n, err)
	}
	req.AmountCents = 1
	if _, err := sim.Charge(context.Background(), req); !errors.Is(err, payment.ErrIdempotencyMismatch) {
		t.Errorf("same key, other amount: err = %v, want ErrIdempotencyMismatch", err)
	}
}

// Charges that come while a write is under way share the ledger's statements, and each is as it would be alone:
// one charge per key, its outcome by its token, every request under a key answered with
// the one charge (or asked to try again while another under its key is not committed).
func TestConcurrentChargesEachOncePerKey(t *testing.T) {
	pool := openPool(t)
	sim := simulator.New(pool, 0, 0)
	const keys, perKey = 100, 3
	type answer struct {
		key    string
		charge payment.Charge
	}
	answers := make(chan answer, keys*perKey)
	release := testenv.HoldWrites(t, pool, "provider_charges") // the charges queue behind a write under way
	var wg sync.WaitGroup
	for i := range keys * perKey {
		wg.Go(func() {
			k, token := fmt.Sprintf("order-%d", i%keys), "tok_visa"
			if i%keys%4 == 0 {
				token = "tok_chargeDeclined"
			}
			for {
				c, err := sim.Charge(context.Background(), payment.ChargeRequest{IdempotencyKey: k, AmountCents: 100, Currency: "EUR", PaymentMethod: token})
				if errors.Is(err, payment.ErrTransient) {
					continue // another charge under the key was not committed yet
				}
				if err != nil {
					t.Errorf("charge %s: %v", k, err)
					return
				}
				answers <- answer{k, c}
				return
			}
		})
	}
	release()
	wg.Wait()
	close(answers)
	first := map[string]payment.Charge{}
	for a := range answers {
		if f, ok := first[a.key]; ok && f != a.charge {
			t.Errorf("key %s answered %+v and %+v", a.key, f, a.charge)
		}
		first[a.key] = a.charge
		var k int
		fmt.Sscanf(a.key, "order-%d", &k)
		if declined := k%4 == 0; declined == a.charge.Succeeded || declined != (a.charge.DeclineCode == "card_declined") {
			t.Errorf("key %s (declined: %v): %+v", a.key, declined, a.charge)
		}
	}
	var n, distinct, transactions int
	if err := pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT idempotency_key), count(DISTINCT xmin::text) FROM provider_charges`).
		Scan(&n, &distinct, &transactions); err != nil || n != keys || distinct != keys {
		t.Errorf("ledger holds %d charges under %d keys (%v), want %d under %d", n, distinct, err, keys, keys)
	}
	if transactions > 8 {
		t.Errorf("%d charges made while a write was under way took %d transactions: they were not written together", keys, transactions)
	}
}

func TestTransientFailures(t *testing.T) {
	sim := simulator.New(openPool(t), 0, 0.99)
	transient := 0
	for range 10 {
		_, err := sim.Charge(context.Background(), payment.ChargeRequest{IdempotencyKey: "k", AmountCents: 1, Currency: "EUR", PaymentMethod: "tok_visa"})
		if errors.Is(err, payment.ErrTransient) {
			transient++
		}
	}
	if transient == 0 {
		t.Error("a 99% transient failure rate produced no transient failure in 10 charges")
	}
}

// Latency is a lower bound, so this cannot flake on a slow machine.
func TestLatency(t *testing.T) {
	sim := simulator.New(openPool(t), 20*time.Millisecond, 0)
	start := time.Now()
	for i := range 5 {
		if _, err := sim.Charge(context.Background(), payment.ChargeRequest{
			IdempotencyKey: fmt.Sprint("k", i), AmountCents: 1, Currency: "EUR", PaymentMethod: "tok_visa",
		}); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("5 charges at 20ms latency took %s", took)
	}
}

// A hanging provider answers nothing: a charge waits until its context ends and fails
// transiently, charging nothing, and so does a lookup; once it answers again, a charge
// waiting meanwhile goes through.
func TestHang(t *testing.T) {
	sim := simulator.New(openPool(t), 0, 0)
	req := payment.ChargeRequest{IdempotencyKey: "hang-1", AmountCents: 100, Currency: "EUR", PaymentMethod: simulator.TokenVisa}
	sim.Hang()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := sim.Charge(ctx, req); !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("a charge while hanging: %v, want a transient failure once its context ends", err)
	}
	if _, _, err := sim.Lookup(ctx, req.IdempotencyKey); !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("a lookup while hanging: %v, want a transient failure", err)
	}
	if entries, _ := sim.Ledger(context.Background(), req.IdempotencyKey); len(entries) != 0 {
		t.Fatalf("a charge that got no answer charged: %v", entries)
	}
	done := make(chan error, 1)
	go func() {
		_, err := sim.Charge(context.Background(), req)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	sim.Answer()
	if err := <-done; err != nil {
		t.Fatalf("the charge waiting when the provider answered again: %v", err)
	}
	if entries, _ := sim.Ledger(context.Background(), req.IdempotencyKey); len(entries) != 1 {
		t.Errorf("%d charges, want 1", len(entries))
	}
}

// The ledger is the simulator's own schema, migrated apart from payment-service's: the
// service's migrations make no ledger, Migrate does, again and again without harm, and
// adopts a ledger that an older payments migration made.
func TestTheLedgerIsTheSimulatorsOwn(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	var tables int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'provider_%'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("payment-service's own migrations made %d ledger tables (%v), want none", tables, err)
	}
	// As the payments migrations before the move left a database: the charges table there.
	if _, err := pool.Exec(ctx, `CREATE TABLE provider_charges (idempotency_key text PRIMARY KEY, charge_id text NOT NULL UNIQUE,
		amount_cents bigint NOT NULL, currency char(3) NOT NULL, payment_method text NOT NULL, outcome text NOT NULL,
		decline_code text, created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := simulator.Migrate(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'provider_%'`).Scan(&tables); err != nil || tables != 2 {
		t.Fatalf("after Migrate: %d ledger tables (%v), want 2", tables, err)
	}
	if _, err := simulator.New(pool, 0, 0).Charge(ctx, payment.ChargeRequest{IdempotencyKey: events.NewID(time.Now()), AmountCents: 100, Currency: "EUR", PaymentMethod: simulator.TokenVisa}); err != nil {
		t.Errorf("a charge on the adopted ledger: %v", err)
	}
}

// The ledger's charge is written by a statement PostgreSQL plans once and keeps: after
// its first five calls, each of one charge, on a ledger of many, a plan made for the
// arguments would look no cheaper than the generic one.
func TestAChargeIsPlannedOnce(t *testing.T) {
	ctx := context.Background()
	pool := testenv.SessionPool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if err := simulator.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO provider_charges (charge_id, idempotency_key, amount_cents, currency, payment_method, outcome)
		SELECT 'ch_' || g, 'key-' || g, 100, 'EUR', 'tok_visa', 'succeeded' FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE provider_charges`); err != nil {
		t.Fatal(err)
	}
	sim := simulator.New(pool, 0, 0)
	for i := range testenv.PlannedCalls {
		if _, err := sim.Charge(ctx, payment.ChargeRequest{IdempotencyKey: fmt.Sprintf("order-%d", i), AmountCents: 100,
			Currency: "EUR", PaymentMethod: "tok_visa"}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WantGenericPlans(t, pool, "INSERT INTO provider_charges (idempotency_key")
}
