package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
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
	var got int
	if !testenv.Eventually(30*time.Second, 20*time.Millisecond, func() bool { got = tg.charging(); return got >= n }) {
		tg.t.Fatalf("%d charges in flight, want at least %d", got, n)
	}
	return got
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

// Orders created and cancelled back to back, many at once, while charges take a while:
// payment-service reads order.created and order.cancelled from different partitions,
// concurrently. Each cancelled order ends never charged (a CANCELLED payment, no charge
// at the provider) or charged and refunded exactly once; an order the cancel came too
// late for is confirmed and charged once.
func TestScenarioCreateAndCancelBackToBack(t *testing.T) {
	parallel(t)
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": "150ms"}})
	const n = 120
	ids := make([]string, n)
	cancelled := make([]bool, n)
	placeAndCancel := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() {
				if i%2 == 1 {
					time.Sleep(time.Duration(i%7) * 20 * time.Millisecond) // some while the charge is under way
				}
				p, err := tg.place("tok_visa")
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = p.ID
				status, _, body := send(t, http.MethodPost, tg.order+"/orders/"+p.ID+"/cancel", "")
				switch status {
				case http.StatusOK:
					cancelled[i] = true
				case http.StatusConflict: // confirmed before the cancel arrived
				default:
					t.Errorf("cancel = %d %s", status, body)
				}
			})
		}
		wg.Wait()
	}
	// Half while payment-service is down: both events of each order wait for it, and it
	// reads the two topics at once when it starts. Half while it runs.
	tg.stopService("payment-service")
	placeAndCancel(0, n/2)
	tg.startService("payment-service")
	placeAndCancel(n/2, n)
	if t.Failed() {
		t.FailNow()
	}
	var never, refunded, confirmed int
	for i, id := range ids {
		eventually(t, func() string {
			ps := tg.paymentsOf(id)
			charges := tg.chargesOf(id)
			var refunds listResp[json.RawMessage]
			tg.list(tg.payment+"/provider/refunds?order_id="+id, &refunds)
			switch {
			case len(ps) != 1:
				return fmt.Sprintf("order %s has %d payments", id, len(ps))
			case !cancelled[i] && ps[0].Status == "COMPLETED" && charges == 1 && len(refunds.Items) == 0:
				confirmed++
			case cancelled[i] && ps[0].Status == "CANCELLED" && charges == 0:
				never++
			case cancelled[i] && ps[0].Status == "REFUNDED" && charges == 1 && len(refunds.Items) == 1:
				refunded++
			default:
				return fmt.Sprintf("order %s (cancelled: %v): payment %s with %d charges and %d refunds",
					id, cancelled[i], ps[0].Status, charges, len(refunds.Items))
			}
			return ""
		})
	}
	t.Logf("%d never charged, %d charged and refunded, %d confirmed before the cancel", never, refunded, confirmed)
	if never+refunded < n/2 {
		t.Errorf("only %d of %d orders were cancelled: the race was not exercised", never+refunded, n)
	}
}
