package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/devstack/testenv"
)

// A slow provider keeps hundreds of charges in flight at once (issue 13: records of
// different orders run concurrently inside a partition). Whatever happens to the
// payment-service instances meanwhile, every order is charged exactly once and ends
// terminal: the commit point never passes an unfinished record, the charge is claimed
// before it is made, and the provider's idempotency key absorbs a repeat.

// charging counts the payments claimed and not yet recorded: charges at the provider.
func (tg *target) charging() int {
	tg.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, tg.control().Postgres.URL("payments"))
	if err != nil {
		tg.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM payments WHERE status = 'CHARGING'`).Scan(&n); err != nil {
		tg.t.Fatal(err)
	}
	return n
}

// waitCharging waits until at least n charges are in flight.
func (tg *target) waitCharging(n int) int {
	tg.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := tg.charging()
		if got >= n {
			return got
		}
		if time.Now().After(deadline) {
			tg.t.Fatalf("%d charges in flight, want at least %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const slowProvider = "1500ms"

func TestScenarioPaymentServiceKilledWithHundredsInFlight(t *testing.T) {
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": slowProvider}})
	orders := tg.placeMany(300, 30, func(int) string { return "tok_visa" })
	t.Logf("%d charges in flight when payment-service is killed", tg.waitCharging(200))
	tg.killService("payment-service")
	tg.startService("payment-service")
	tg.checkOutcomes(orders, tg.waitTerminal(orders, 60*time.Second))
}

func TestScenarioRebalanceWithHundredsInFlight(t *testing.T) {
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": slowProvider}})
	orders := tg.placeMany(200, 30, func(int) string { return "tok_visa" })
	t.Logf("%d charges in flight when a second instance joins", tg.waitCharging(100))
	second, err := tg.control().AddInstance(context.Background(), "payment-service", testenv.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	orders = append(orders, tg.placeMany(200, 30, func(int) string { return "tok_visa" })...)
	t.Logf("%d charges in flight when the first instance leaves", tg.waitCharging(100))
	tg.stopService("payment-service")
	tg.payment = second.URL // the payments views, from the instance still running
	tg.checkOutcomes(orders, tg.waitTerminal(orders, 60*time.Second))
}
