package stripepay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/stripepay"
	"github.com/stripe/stripe-go/v82/webhook"
)

// stand is a provider on localstripe, and a way to ask localstripe what it holds.
type stand struct {
	*stripepay.Provider
	ls  *testenv.Localstripe
	rec *recorder
}

func newOnLocalstripe(t *testing.T) stand {
	t.Helper()
	ls := testenv.StartLocalstripe(t)
	rec := &recorder{}
	p := stripepay.New(stripepay.Config{APIKey: "sk_test_123", BaseURL: ls.URL, HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}}, openPool(t))
	return stand{p, ls, rec}
}

func (s stand) refunds(t *testing.T, intent string) int {
	var list struct{ Data []struct{ ID string } }
	s.ls.API(t, http.MethodGet, "/v1/refunds?payment_intent="+intent, nil, &list)
	return len(list.Data)
}

func charge(order, method string) payment.ChargeRequest {
	return payment.ChargeRequest{IdempotencyKey: order, AmountCents: 4348, Currency: "EUR", PaymentMethod: method}
}

// The behaviour, on a Stripe stand-in that keeps state: a charge completes and the lookup
// finds it; asked again (an answer lost), the adapter takes the intent it recorded and
// charges nothing more — localstripe ignores Idempotency-Key, so this holds without it; a
// refund refunds, and asked again finds the refund instead of making a second.
func TestOnLocalstripeAChargeCompletesAndARefundRefundsOnce(t *testing.T) {
	s := newOnLocalstripe(t)
	ctx := context.Background()
	order := events.NewID(time.Now())
	got, err := s.Charge(ctx, charge(order, "tok_visa"))
	if err != nil || !got.Succeeded || !strings.HasPrefix(got.ID, "pi_") {
		t.Fatalf("charge = %+v, %v; want succeeded on an intent", got, err)
	}
	again, err := s.Charge(ctx, charge(order, "tok_visa"))
	if err != nil || again != got {
		t.Fatalf("charge again = %+v, %v; want %+v", again, err, got)
	}
	if in := s.ls.Intents(t, order); len(in) != 1 || in[0] != "succeeded" {
		t.Fatalf("localstripe holds %v for the order, want the one succeeded intent %s", in, got.ID)
	}
	found, ok, err := s.Lookup(ctx, order)
	if err != nil || !ok || found != got {
		t.Fatalf("lookup = %+v, %v, %v; want %+v", found, ok, err, got)
	}
	refund, err := s.Refund(ctx, payment.RefundRequest{IdempotencyKey: order, ChargeID: got.ID, AmountCents: 4348, Currency: "EUR"})
	if err != nil || !strings.HasPrefix(refund.ID, "re_") {
		t.Fatalf("refund = %+v, %v", refund, err)
	}
	second, err := s.Refund(ctx, payment.RefundRequest{IdempotencyKey: order, ChargeID: got.ID, AmountCents: 4348, Currency: "EUR"})
	if err != nil || second != refund {
		t.Fatalf("refund again = %+v, %v; want %+v", second, err, refund)
	}
	if n := s.refunds(t, got.ID); n != 1 {
		t.Fatalf("localstripe holds %d refunds of %s, want 1", n, got.ID)
	}
}

// A card declined at the charge is a decline, with the contract's reason and Stripe's
// code; the lookup agrees that nothing was charged.
func TestOnLocalstripeADeclineIsADecline(t *testing.T) {
	s := newOnLocalstripe(t)
	ctx := context.Background()
	order := events.NewID(time.Now())
	got, err := s.Charge(ctx, charge(order, "tok_chargeDeclined"))
	if err != nil || got.Succeeded || got.DeclineCode != events.ReasonCardDeclined || got.ProviderCode != "card_declined" {
		t.Fatalf("charge = %+v, %v; want declined card_declined", got, err)
	}
	if _, ok, err := s.Lookup(ctx, order); err != nil || ok {
		t.Fatalf("lookup = %v, %v; want nothing charged", ok, err)
	}
}

// A card that wants 3-D Secure leaves the intent requires_action: the charge is pending,
// its outcome to come by webhook. The lookup that decides it past the deadline cancels
// the intent, so it can never be charged after the lookup said nothing was.
func TestOnLocalstripeThreeDSecureIsPendingUntilTheLookupCallsItOff(t *testing.T) {
	s := newOnLocalstripe(t)
	ctx := context.Background()
	order := events.NewID(time.Now())
	_, err := s.Charge(ctx, charge(order, s.ls.Card(t, "4000002500003155")))
	if !errors.Is(err, payment.ErrPending) {
		t.Fatalf("charge = %v, want ErrPending", err)
	}
	if in := s.ls.Intents(t, order); len(in) != 1 || in[0] != "requires_action" {
		t.Fatalf("localstripe holds %v, want one intent requires_action", in)
	}
	if _, ok, err := s.Lookup(ctx, order); err != nil || ok {
		t.Fatalf("lookup = %v, %v; want nothing charged", ok, err)
	}
	if in := s.ls.Intents(t, order); len(in) != 1 || in[0] != "canceled" {
		t.Fatalf("after the lookup localstripe holds %v, want the intent canceled", in)
	}
}

// settled records what a webhook settled.
type settled struct {
	mu       sync.Mutex
	refunded []string // order refund
}

func (s *settled) Charged(context.Context, string, string, payment.Charge) (bool, error) {
	return true, nil
}

func (s *settled) Refunded(_ context.Context, _, orderID, refundID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refunded = append(s.refunded, orderID+" "+refundID)
	return true, nil
}

// A charge.refunded whose Charge does not list its refunds — Stripe's since API version
// 2022-11-15, unless expanded, which webhooks never are — is settled with the refund
// Stripe holds for the intent, asked for; one for an intent with no refund settles
// nothing and fails, so Stripe delivers it again.
func TestAChargeRefundedWebhookFindsItsRefund(t *testing.T) {
	const secret = "whsec_test"
	s := newOnLocalstripe(t)
	ctx := context.Background()
	order, other := events.NewID(time.Now()), events.NewID(time.Now())
	var intents [2]string
	for i, o := range []string{order, other} {
		got, err := s.Charge(ctx, charge(o, "tok_visa"))
		if err != nil || !got.Succeeded {
			t.Fatalf("charge = %+v, %v", got, err)
		}
		intents[i] = got.ID
	}
	var refund struct{ ID string }
	s.ls.API(t, http.MethodPost, "/v1/refunds", url.Values{"payment_intent": {intents[0]}}, &refund) // from the dashboard
	got := &settled{}
	e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
	e.POST(stripepay.WebhookPath, stripepay.Webhook{Provider: s.Provider, Secrets: []string{secret}, Settle: got, Log: slog.New(slog.DiscardHandler)}.Handle)
	deliver := func(intent string) int {
		body := fmt.Appendf(nil, `{"id":"evt_%s","object":"event","type":"charge.refunded","data":{"object":{"id":"ch_1","object":"charge","payment_intent":%q,"refunded":true}}}`, intent, intent)
		req := httptest.NewRequest(http.MethodPost, stripepay.WebhookPath, bytes.NewReader(body))
		req.Header.Set("Stripe-Signature", webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: time.Now()}).Header)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := deliver(intents[0]); code != http.StatusNoContent {
		t.Fatalf("charge.refunded = %d, want 204", code)
	}
	if code := deliver(intents[1]); code < 500 {
		t.Errorf("charge.refunded of an intent with no refund = %d, want a failure Stripe retries", code)
	}
	if want := []string{order + " " + refund.ID}; !slices.Equal(got.refunded, want) {
		t.Errorf("settled %v, want %v", got.refunded, want)
	}
}

// After a partial refund from the dashboard, the order's refund pays back the rest, not
// the whole again, and a retry pays back nothing more.
func TestARefundAfterAPartialOneRefundsTheRest(t *testing.T) {
	s := newOnLocalstripe(t)
	ctx := context.Background()
	order := events.NewID(time.Now())
	got, err := s.Charge(ctx, charge(order, "tok_visa"))
	if err != nil || !got.Succeeded {
		t.Fatalf("charge = %+v, %v", got, err)
	}
	var partial struct{ ID string }
	s.ls.API(t, http.MethodPost, "/v1/refunds", url.Values{"payment_intent": {got.ID}, "amount": {"1000"}}, &partial)
	req := payment.RefundRequest{IdempotencyKey: order, ChargeID: got.ID, AmountCents: 4348, Currency: "EUR"}
	rest, err := s.Refund(ctx, req)
	if err != nil || rest.ID == "" || rest.ID == partial.ID {
		t.Fatalf("refund = %+v, %v; want a refund of its own for the rest", rest, err)
	}
	again, err := s.Refund(ctx, req)
	if err != nil || again != rest {
		t.Fatalf("refund again = %+v, %v; want %+v", again, err, rest)
	}
	var list struct{ Data []struct{ Amount int64 } }
	s.ls.API(t, http.MethodGet, "/v1/refunds?payment_intent="+got.ID, nil, &list)
	var sum int64
	for _, r := range list.Data {
		sum += r.Amount
	}
	if len(list.Data) != 2 || sum != 4348 {
		t.Errorf("localstripe holds %d refunds of %d in all, want 2 of 4348", len(list.Data), sum)
	}
}
