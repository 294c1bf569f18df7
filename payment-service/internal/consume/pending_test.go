package consume_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/stripepay"
)

// onStripe is the fixture with payment-service's handlers on the Stripe adapter against
// localstripe, and a 3-D Secure card: a charge whose outcome comes later.
func onStripe(t *testing.T) (fixture, payment.Provider, *testenv.Localstripe, string) {
	f := newFixture(t)
	ls := testenv.StartLocalstripe(t)
	if err := stripepay.Migrate(context.Background(), f.pool); err != nil {
		t.Fatal(err)
	}
	sp := stripepay.New(stripepay.Config{APIKey: "sk_test_123", BaseURL: ls.URL}, f.pool)
	f.handlers = consume.Handlers(sp, 10*time.Minute, settler(f.pool, f.store))
	return f, sp, ls, ls.Card(t, "4000002500003155")
}

// A charge whose outcome comes later (3-D Secure) does not hold the partition: the record
// is done, the payment waits, claimed (CHARGING, pending since then). Before its deadline
// the sweep leaves it alone; past it, the sweep decides by what the provider holds —
// calling off the intent still waiting — and the payment fails as provider_unavailable,
// with its payment.failed, once however often it sweeps.
func TestAPendingChargeWaitsAndEndsAtItsDeadline(t *testing.T) {
	f, sp, _, card := onStripe(t)
	id := events.NewID(time.Now())
	f.deliver(t, events.TopicOrderCreated, created(id, card))
	ps, err := f.store.ByOrder(context.Background(), id)
	if err != nil || len(ps) != 1 || ps[0].Status != payment.Charging || ps[0].PendingSince.IsZero() {
		t.Fatalf("after a pending charge: payments %+v, %v; want one CHARGING, pending", ps, err)
	}
	log := slog.New(slog.NewJSONHandler(t.Output(), nil))
	sweep := &consume.Sweeper{Settle: settler(f.pool, f.store), Provider: sp, Deadline: time.Hour, Log: log}
	if n := sweep.Sweep(context.Background()); n != 0 {
		t.Fatalf("before the deadline the sweep settled %d payments, want none", n)
	}
	sweep.Deadline = time.Millisecond
	if n := sweep.Sweep(context.Background()); n != 1 {
		t.Fatalf("past the deadline the sweep settled %d payments, want 1", n)
	}
	if n := sweep.Sweep(context.Background()); n != 0 {
		t.Fatalf("a second sweep settled %d payments, want none", n)
	}
	ps, _ = f.store.ByOrder(context.Background(), id)
	if ps[0].Status != payment.Failed || ps[0].FailureReason != events.ReasonProviderUnavailable || !ps[0].PendingSince.IsZero() {
		t.Fatalf("after the sweep: %+v, want FAILED provider_unavailable, not pending", ps[0])
	}
	var failed int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox WHERE key = $1 AND topic = $2`, id, events.TopicPaymentFailed).Scan(&failed); err != nil || failed != 1 {
		t.Fatalf("payment.failed in the outbox: %d, %v; want 1", failed, err)
	}
}

// A cancellation of an order whose charge is pending does not wait for the webhook: it
// decides the charge by what the provider holds — calling off the intent still waiting,
// so nothing is charged — and, tried again, finds nothing to refund.
func TestACancellationDecidesAPendingCharge(t *testing.T) {
	f, _, ls, card := onStripe(t)
	id := events.NewID(time.Now())
	f.deliver(t, events.TopicOrderCreated, created(id, card))
	_, err := f.handle(t, events.TopicOrderCancelled, cancelled(id))
	if err == nil || errors.Is(err, consumer.ErrPoison) {
		t.Fatalf("the cancellation's first attempt: %v, want a retry", err)
	}
	f.deliver(t, events.TopicOrderCancelled, cancelled(id))
	ps, _ := f.store.ByOrder(context.Background(), id)
	if len(ps) != 1 || ps[0].Status != payment.Failed || !ps[0].PendingSince.IsZero() {
		t.Fatalf("after the cancellation: %+v, want FAILED, pending no more", ps)
	}
	if in := ls.Intents(t, id); len(in) != 1 || in[0] != "canceled" {
		t.Errorf("localstripe holds %v for the order, want its intent canceled", in)
	}
	if got := f.outcome(t, id); got.refund != 0 {
		t.Errorf("payment.refunded in the outbox %d times, want none: nothing was charged", got.refund)
	}
}

// A pending charge that the customer authenticated just before the cancellation came is
// decided charged, and then refunded once.
func TestACancellationRefundsAPendingChargeThatWentThrough(t *testing.T) {
	f, _, ls, card := onStripe(t)
	id := events.NewID(time.Now())
	f.deliver(t, events.TopicOrderCreated, created(id, card))
	ps, _ := f.store.ByOrder(context.Background(), id)
	var intent string
	if err := f.pool.QueryRow(context.Background(), `SELECT intent_id FROM stripe_intents WHERE idempotency_key = $1`, id).Scan(&intent); err != nil {
		t.Fatal(err)
	}
	var pi struct {
		ClientSecret string `json:"client_secret"`
	}
	ls.API(t, http.MethodGet, "/v1/payment_intents/"+intent, nil, &pi)
	ls.API(t, http.MethodPost, "/v1/payment_intents/"+intent+"/_authenticate", url.Values{"client_secret": {pi.ClientSecret}, "success": {"true"}}, &struct{}{})
	if _, err := f.handle(t, events.TopicOrderCancelled, cancelled(id)); err == nil {
		t.Fatal("the cancellation's first attempt went through, want a retry once the charge is decided")
	}
	f.deliver(t, events.TopicOrderCancelled, cancelled(id))
	ps, _ = f.store.ByOrder(context.Background(), id)
	if len(ps) != 1 || ps[0].Status != payment.Refunded || ps[0].ChargeID != intent {
		t.Fatalf("after the cancellation: %+v, want REFUNDED on intent %s", ps, intent)
	}
	var refunds struct{ Data []struct{ ID string } }
	ls.API(t, http.MethodGet, "/v1/refunds?payment_intent="+intent, nil, &refunds)
	if len(refunds.Data) != 1 {
		t.Errorf("localstripe holds %d refunds, want 1", len(refunds.Data))
	}
}
