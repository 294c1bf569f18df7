package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/orderflow/devstack/testenv"
	"github.com/stripe/stripe-go/v82/webhook"
)

// payment-service charges through the Stripe adapter when PAYMENT_PROVIDER=stripe: an
// order's charge goes to the Stripe API at STRIPE_API_BASE (stripe-mock here, which checks
// every request against Stripe's OpenAPI document) and its answer is recorded and
// published like the simulator's. stripe-mock answers its fixture to every confirm — an
// intent back at requires_payment_method with no error — which is a decline without a
// reason: the order fails "declined", having been through the create, the recording of
// its intent and the confirm. What Stripe does over time is a stateful stand-in's part.
func TestPaymentServiceChargesThroughStripe(t *testing.T) {
	parallel(t)
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

// A payment that waits on Stripe (3-D Secure: localstripe's confirm answers
// requires_action) is settled by Stripe's signed webhook through the same path as an
// answer at once: the order is confirmed, once. A redelivered webhook, and one that comes
// out of order about the settled payment, change nothing; every forgery tried is refused
// with a 400 and changes nothing either. The deliveries are signed by stripe-go's own
// test helper.
func TestAStripeWebhookSettlesAWaitingPayment(t *testing.T) {
	parallel(t)
	const secret, oldSecret = "whsec_e2e_current", "whsec_e2e_previous"
	ls := testenv.StartLocalstripe(t)
	s := newStack(t, testenv.Kafka(t), map[string]map[string]string{
		"payment": {"PAYMENT_PROVIDER": "stripe", "STRIPE_API_KEY": "sk_test_123", "STRIPE_API_BASE": ls.URL,
			"STRIPE_WEBHOOK_SECRET": oldSecret + "," + secret},
	})
	o := s.placeOrder(ls.Card(t, cardThreeDSecure), "3ds@example.com")
	intent := s.waitPending(o.ID)
	if got := s.getOrder(o.ID); got.Status != "PENDING_PAYMENT" {
		t.Fatalf("order = %s while Stripe wants 3-D Secure, want PENDING_PAYMENT", got.Status)
	}

	hook := s.url("payment", "/webhooks/stripe")
	event := func(id, typ string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"object":"event","type":%q,"api_version":"2025-01-27.acacia","data":{"object":{"id":%q,"object":"payment_intent","status":"succeeded","metadata":{"order_id":%q}}}}`,
			id, typ, intent, o.ID)
	}
	deliver := func(body []byte, signature string) (int, string) {
		status, _, b := send(t, http.MethodPost, hook, string(body), "Content-Type", "application/json", "Stripe-Signature", signature)
		return status, string(b)
	}
	signed := func(body []byte, secret string, at time.Time) string {
		return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: at}).Header
	}

	// Forgeries first: none moves the waiting payment.
	succeeded := event("evt_e2e_1", "payment_intent.succeeded")
	captured := signed(succeeded, secret, time.Now().Add(-10*time.Minute))
	replayed := regexp.MustCompile(`t=\d+`).ReplaceAllString(captured, fmt.Sprintf("t=%d", time.Now().Unix()))
	for _, f := range []struct{ name, signature, code string }{
		{"no signature", "", "invalid_signature"},
		{"another secret", signed(succeeded, "whsec_someone_else", time.Now()), "invalid_signature"},
		{"an old timestamp", captured, "invalid_signature"},
		{"a captured body replayed with a new timestamp", replayed, "invalid_signature"},
		{"a malformed header", "v1=deadbeef", "invalid_signature"},
	} {
		if status, body := deliver(succeeded, f.signature); status != http.StatusBadRequest || !strings.Contains(body, f.code) {
			t.Errorf("%s: %d %s, want 400 %s", f.name, status, body, f.code)
		}
	}
	if status, body := deliver(event("evt_e2e_x", "customer.created"), signed(event("evt_e2e_x", "customer.created"), secret, time.Now())); status != http.StatusBadRequest || !strings.Contains(body, "unhandled_event_type") {
		t.Errorf("an unknown event type: %d %s, want 400 unhandled_event_type", status, body)
	}
	if got := s.getOrder(o.ID); got.Status != "PENDING_PAYMENT" {
		t.Fatalf("after the forgeries the order is %s, want PENDING_PAYMENT still", got.Status)
	}

	// The real one, signed with either secret of the rotation, settles it, once.
	if status, body := deliver(succeeded, signed(succeeded, oldSecret, time.Now())); status != http.StatusNoContent {
		t.Fatalf("the webhook: %d %s, want 204", status, body)
	}
	if got := s.waitStatus(o.ID, 20*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s after payment_intent.succeeded, want CONFIRMED", got.Status)
	}
	if status, _ := deliver(succeeded, signed(succeeded, secret, time.Now())); status != http.StatusNoContent {
		t.Errorf("the webhook redelivered: %d, want 204", status)
	}
	failed := event("evt_e2e_2", "payment_intent.payment_failed")
	if status, _ := deliver(failed, signed(failed, secret, time.Now())); status != http.StatusNoContent {
		t.Errorf("a late payment_failed: %d, want 204", status)
	}
	time.Sleep(500 * time.Millisecond)
	if got := s.getOrder(o.ID); got.Status != "CONFIRMED" {
		t.Errorf("order = %s after a redelivery and a late payment_failed, want CONFIRMED still", got.Status)
	}
	if ps := s.payments(o.ID); len(ps) != 1 || ps[0].Status != "COMPLETED" || ps[0].ChargeID != intent {
		t.Errorf("payments = %+v, want one COMPLETED with the intent's id", ps)
	}
	if n := count(t, s.dbs["payment"], `SELECT count(*) FROM processed_events WHERE consumer_group = 'provider-webhooks'`); n != 1 {
		t.Errorf("%d webhook events recorded, want the one that settled the payment", n)
	}
}

// Stripe's test cards that localstripe knows by number only.
const cardThreeDSecure = "4000002500003155" // wants 3-D Secure (requires_action)

// waitPending waits until the order's payment is pending at Stripe — its intent recorded,
// the payment CHARGING and marked waiting for the outcome — and returns the intent.
func (s *inproc) waitPending(orderID string) string {
	s.t.Helper()
	var intent string
	if !testenv.Eventually(20*time.Second, 50*time.Millisecond, func() bool {
		withDB(s.t, s.dbs["payment"], func(ctx context.Context, conn *pgx.Conn) error {
			err := conn.QueryRow(ctx, `SELECT i.intent_id FROM stripe_intents i JOIN payments p ON p.order_id::text = i.idempotency_key
				WHERE i.idempotency_key = $1 AND p.status = 'CHARGING' AND p.pending_since IS NOT NULL`, orderID).Scan(&intent)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		})
		return intent != ""
	}) {
		s.t.Fatal("the order's payment never waited at Stripe for its outcome")
	}
	return intent
}
