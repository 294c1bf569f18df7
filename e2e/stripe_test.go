package e2e

import (
	"testing"
	"time"

	"github.com/orderflow/devstack/testenv"
)

// payment-service charges through the Stripe adapter when PAYMENT_PROVIDER=stripe: an
// order's charge goes to the Stripe API at STRIPE_API_BASE (stripe-mock here, which checks
// every request against Stripe's OpenAPI document) and its answer is recorded and
// published like the simulator's. stripe-mock answers its fixture to every confirm — an
// intent back at requires_payment_method with no error — which is a decline without a
// reason: the order fails "declined", having been through the create, the recording of
// its intent and the confirm. What Stripe does over time is a stateful stand-in's part.
func TestPaymentServiceChargesThroughStripe(t *testing.T) {
	s := newStack(t, testenv.Kafka(t), map[string]map[string]string{
		"payment": {"PAYMENT_PROVIDER": "stripe", "STRIPE_API_KEY": "sk_test_123", "STRIPE_API_BASE": testenv.StripeMock(t)},
	})
	o := s.placeOrder("tok_visa", "stripe@example.com")
	got := s.waitStatus(o.ID, 30*time.Second)
	if got.Status != "PAYMENT_FAILED" || got.FailureReason != "declined" {
		t.Fatalf("order = %s (%q), want PAYMENT_FAILED (declined), as stripe-mock's fixture answers", got.Status, got.FailureReason)
	}
	if n := count(t, s.dbs["payment"], `SELECT count(*) FROM stripe_intents WHERE idempotency_key = $1`, o.ID); n != 1 {
		t.Errorf("%d intents recorded for the order, want 1", n)
	}
	if ps := s.payments(o.ID); len(ps) != 1 || ps[0].Status != "FAILED" || ps[0].ChargeID == "" {
		t.Errorf("payments = %+v, want one FAILED with the intent's id", ps)
	}
}
