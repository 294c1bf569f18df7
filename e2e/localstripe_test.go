package e2e

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderflow/devstack/testenv"
)

// stripeFault is what the way to the Stripe stand-in does to payment-service's calls.
type stripeFault int32

const (
	faultNone stripeFault = iota
	// faultServerError answers 500 api_error without passing the call on.
	faultServerError
	// faultSlow passes the call on after longer than STRIPE_TIMEOUT: the stand-in acts
	// on it, the adapter has given up waiting.
	faultSlow
	// faultAnswerLost passes every confirm on and cuts the connection instead of
	// answering: Stripe charged, payment-service never heard.
	faultAnswerLost
	// faultChargedUnheard is faultAnswerLost with every read answered 500: Stripe
	// charges, and payment-service cannot find out until the fault ends.
	faultChargedUnheard
)

// stripeWay is a reverse proxy to a Stripe stand-in that injects a fault, for
// payment-service's STRIPE_API_BASE.
type stripeWay struct {
	URL   string
	fault atomic.Int32
	cut   atomic.Int32 // answers cut so far
}

const slowBy = 2 * time.Second // faultSlow's delay; the stack's STRIPE_TIMEOUT is less

func newStripeWay(t *testing.T, upstream string) *stripeWay {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a stand-in killed is one of the faults
	w := &stripeWay{}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		f := stripeFault(w.fault.Load())
		confirm := strings.HasSuffix(r.URL.Path, "/confirm")
		switch {
		case f == faultServerError || f == faultChargedUnheard && r.Method == http.MethodGet:
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(rw, `{"error":{"type":"api_error","message":"An unknown error occurred"}}`)
			return
		case f == faultSlow:
			time.Sleep(slowBy)
		case (f == faultAnswerLost || f == faultChargedUnheard) && confirm:
			proxy.ServeHTTP(&discard{header: http.Header{}}, r) // Stripe acts on it…
			w.cut.Add(1)
			if conn, _, err := http.NewResponseController(rw).Hijack(); err == nil {
				_ = conn.Close() // …and the answer never arrives
			}
			return
		}
		proxy.ServeHTTP(rw, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	w.URL = "http://" + ln.Addr().String()
	return w
}

// set has the way do f until t ends or the next set.
func (w *stripeWay) set(t *testing.T, f stripeFault) {
	w.fault.Store(int32(f))
	t.Cleanup(func() { w.fault.Store(int32(faultNone)) })
}

// discard is a ResponseWriter that throws the answer away.
type discard struct {
	header http.Header
}

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// The pipeline with PAYMENT_PROVIDER=stripe on localstripe, a stateful Stripe stand-in
// others wrote, on either broker: an order is charged and confirmed, a declined card
// fails it, a cancelled order is refunded once, and a card that wants 3-D Secure waits
// until the customer authenticates, when localstripe's own signed webhook confirms it.
// Then the faults between payment-service and Stripe — Stripe answering 500, answering
// slowly, killed and started again, and an answer lost after Stripe charged — each end
// with the order CONFIRMED and charged exactly once: the adapter takes the intent it
// recorded instead of making another (localstripe ignores Idempotency-Key, so nothing
// else would save a second charge).
func TestStripeOnLocalstripe(t *testing.T) {
	parallel(t)
	const secret = "whsec_e2e_localstripe"
	ls := testenv.StartLocalstripe(t)
	way := newStripeWay(t, ls.URL)
	s := newStack(t, testenv.Kafka(t), map[string]map[string]string{
		"payment": {"PAYMENT_PROVIDER": "stripe", "STRIPE_API_KEY": "sk_test_123", "STRIPE_API_BASE": way.URL,
			"STRIPE_TIMEOUT": "1s", "STRIPE_WEBHOOK_SECRET": secret},
		// reconciliation-service reads Stripe's records (its list of PaymentIntents).
		"reconciliation": {"PAYMENT_PROVIDER": "stripe", "STRIPE_API_KEY": "sk_test_123", "STRIPE_API_BASE": ls.URL,
			"RECONCILE_GRACE": "2s", "RECONCILE_EVERY": "200ms"},
	})
	webhooks := func() {
		ls.Webhook(t, s.url("payment", "/webhooks/stripe"), secret, "payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded")
	}
	intents := func(orderID string) []string { return ls.Intents(t, orderID) }
	chargedOnce := func(t *testing.T, orderID string) {
		t.Helper()
		if got := s.waitStatus(orderID, 60*time.Second); got.Status != "CONFIRMED" {
			t.Fatalf("order = %s, want CONFIRMED", got.Status)
		}
		// One intent succeeded, no other charged. A create whose answer was lost leaves
		// another intent, never confirmed (requires_confirmation), on localstripe alone:
		// Stripe answers a retried create with the first intent (Idempotency-Key).
		succeeded := 0
		for _, st := range intents(orderID) {
			switch st {
			case "succeeded":
				succeeded++
			case "requires_confirmation":
			default:
				t.Errorf("localstripe holds an intent %s for the order", st)
			}
		}
		if succeeded != 1 {
			t.Errorf("localstripe holds %d succeeded intents for the order, want 1: %v", succeeded, intents(orderID))
		}
		if ps := s.payments(orderID); len(ps) != 1 || ps[0].Status != "COMPLETED" || !strings.HasPrefix(ps[0].ChargeID, "pi_") {
			t.Errorf("payments = %+v, want one COMPLETED on its intent", ps)
		}
	}

	t.Run("charged and confirmed", func(t *testing.T) {
		chargedOnce(t, s.placeOrder("tok_visa", "ls-visa@example.com").ID)
	})
	t.Run("a declined card", func(t *testing.T) {
		o := s.placeOrder("tok_chargeDeclined", "ls-declined@example.com")
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "PAYMENT_FAILED" || got.FailureReason != "card_declined" {
			t.Fatalf("order = %s (%q), want PAYMENT_FAILED card_declined", got.Status, got.FailureReason)
		}
	})
	t.Run("charged while cancelled, refunded once", func(t *testing.T) {
		// Stripe charges but payment-service cannot hear it: the order is still
		// PENDING_PAYMENT when the customer cancels it, and the charge is found after.
		way.set(t, faultChargedUnheard)
		o := s.placeOrder("tok_visa", "ls-cancel@example.com")
		if !testenv.Eventually(20*time.Second, 100*time.Millisecond, func() bool { return slices.Contains(intents(o.ID), "succeeded") }) {
			t.Fatal("Stripe never charged the order")
		}
		if status, _, body := send(t, http.MethodPost, s.url("order", "/orders/"+o.ID+"/cancel"), ""); status != http.StatusOK {
			t.Fatalf("cancel = %d %s", status, body)
		}
		way.set(t, faultNone)
		var refunds struct{ Data []struct{ Status string } }
		if !testenv.Eventually(30*time.Second, 100*time.Millisecond, func() bool {
			ps := s.payments(o.ID)
			return len(ps) == 1 && ps[0].Status == "REFUNDED"
		}) {
			t.Fatalf("payments = %+v, want REFUNDED", s.payments(o.ID))
		}
		ls.API(t, http.MethodGet, "/v1/refunds?payment_intent="+s.payments(o.ID)[0].ChargeID, nil, &refunds)
		if len(refunds.Data) != 1 || refunds.Data[0].Status != "succeeded" {
			t.Errorf("localstripe holds refunds %+v, want one succeeded", refunds.Data)
		}
	})
	for _, f := range []struct {
		name  string
		fault stripeFault
		holds bool // no answer gets through: the order waits until the fault ends
	}{
		{"Stripe answering 500", faultServerError, true},
		{"Stripe answering after the timeout", faultSlow, true},
		{"an answer lost after Stripe charged", faultAnswerLost, false},
	} {
		t.Run(f.name, func(t *testing.T) {
			way.set(t, f.fault)
			o := s.placeOrder("tok_visa", "ls-fault@example.com")
			time.Sleep(3 * time.Second) // a few attempts
			if got := s.getOrder(o.ID); f.holds && got.Status != "PENDING_PAYMENT" {
				t.Errorf("during the fault the order is %s, want PENDING_PAYMENT", got.Status)
			}
			way.set(t, faultNone)
			chargedOnce(t, o.ID)
		})
	}
	if way.cut.Load() == 0 {
		t.Error("no answer was cut: the lost-answer case tried nothing")
	}
	t.Run("Stripe killed and started again", func(t *testing.T) {
		ls.Kill()
		o := s.placeOrder("tok_visa", "ls-killed@example.com")
		time.Sleep(2 * time.Second)
		ls.Start()
		chargedOnce(t, o.ID)
	})
	t.Run("3-D Secure, authenticated later, confirmed by localstripe's webhook", func(t *testing.T) {
		webhooks() // only now: until here every outcome came without one
		o := s.placeOrder(ls.Card(t, cardThreeDSecure), "ls-3ds@example.com")
		intent := s.waitPending(o.ID)
		var pi struct {
			ClientSecret string `json:"client_secret"`
		}
		ls.API(t, http.MethodGet, "/v1/payment_intents/"+intent, nil, &pi)
		ls.API(t, http.MethodPost, "/v1/payment_intents/"+intent+"/_authenticate",
			url.Values{"client_secret": {pi.ClientSecret}, "success": {"true"}}, &struct{}{})
		chargedOnce(t, o.ID)
	})
	// reconciliation-service, reading Stripe's list of intents, finds every order's charge
	// where payment-service said it is: no charge without its payment, no payment without
	// its charge (and no other mismatch), once the grace has passed.
	t.Run("reconciliation agrees with Stripe's records", func(t *testing.T) {
		o := s.placeOrder("tok_visa", "ls-reconciled@example.com")
		chargedOnce(t, o.ID)
		charge := s.payments(o.ID)[0].ChargeID
		type said struct {
			EventID string `json:"event_id"`
		}
		if !testenv.Eventually(10*time.Second, 200*time.Millisecond, func() bool {
			// 404 until reconciliation-service heard of the order: its group lingers
			// (CONSUMER_LINGER), so it may hear a little after the order is charged.
			var tl struct{ Items []said }
			err := getJSON(s.url("reconciliation", "/orders/"+o.ID+"/timeline"), &tl)
			return err == nil && slices.ContainsFunc(tl.Items, func(x said) bool { return x.EventID == "provider/"+charge })
		}) {
			t.Errorf("the order's timeline has no provider.charge for its intent %s", charge)
		}
		// Every charge above read or looked up by now; past the grace, nothing disagrees
		// (the 3-D Secure intent succeeded after its window was listed: looked up).
		time.Sleep(3 * time.Second)
		if !testenv.Eventually(20*time.Second, 200*time.Millisecond, func() bool { return len(s.mismatches()) == 0 }) {
			t.Errorf("mismatches %v, want none", s.mismatches())
		}
	})
}
