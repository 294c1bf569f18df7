package stripepay_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/stripepay"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func openPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := testenv.Pool(t)
	if err := stripepay.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// call is one request the adapter made and the status it got.
type call struct {
	method, path, idempotencyKey string
	form                         url.Values
	status                       int
	body                         string
}

// recorder is a transport that keeps every request and its answer.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var form url.Values
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(strings.NewReader(string(b)))
		form, _ = url.ParseQuery(string(b))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	r.mu.Lock()
	r.calls = append(r.calls, call{req.Method, req.URL.Path, req.Header.Get("Idempotency-Key"), form, resp.StatusCode, string(b)})
	r.mu.Unlock()
	return resp, nil
}

func newOnStripeMock(t *testing.T) (*stripepay.Provider, *recorder) {
	t.Helper()
	rec := &recorder{}
	p := stripepay.New(stripepay.Config{APIKey: "sk_test_123", BaseURL: testenv.StripeMock(t), HTTPClient: &http.Client{Transport: rec, Timeout: 10 * time.Second}}, openPool(t))
	return p, rec
}

// Every request the adapter makes is one Stripe's OpenAPI document accepts: stripe-mock
// checks each (unknown parameters, wrong types) and answers with Stripe's shapes, which
// parse. Each mutating call carries its own Idempotency-Key, derived from the order id.
func TestEveryRequestIsOneStripeAccepts(t *testing.T) {
	p, rec := newOnStripeMock(t)
	ctx := context.Background()
	order := events.NewID(time.Now())
	if _, err := p.Charge(ctx, payment.ChargeRequest{IdempotencyKey: order, AmountCents: 4348, Currency: "EUR", PaymentMethod: "tok_visa"}); err != nil && !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("charge: %v", err)
	}
	if _, found, err := p.Lookup(ctx, order); err != nil && !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("lookup: %v (found %v)", err, found)
	}
	if _, err := p.Refund(ctx, payment.RefundRequest{IdempotencyKey: order, ChargeID: "pi_123", AmountCents: 4348, Currency: "EUR"}); err != nil {
		t.Fatalf("refund: %v", err)
	}
	want := []struct{ method, path, key string }{
		{"POST", "/v1/payment_intents", "orderflow-intent-" + order},
		{"POST", "/v1/payment_intents/{id}/confirm", "orderflow-confirm-" + order},
		{"GET", "/v1/payment_intents/{id}", ""},
		{"GET", "/v1/refunds", ""},
		{"POST", "/v1/refunds", "orderflow-refund-" + order},
	}
	if len(rec.calls) != len(want) {
		t.Fatalf("made %d calls, want %d: %+v", len(rec.calls), len(want), rec.calls)
	}
	for i, c := range rec.calls {
		w := want[i]
		path := c.path
		if parts := strings.Split(path, "/"); len(parts) > 3 && parts[2] == "payment_intents" {
			parts[3] = "{id}"
			path = strings.Join(parts, "/")
		}
		if c.method != w.method || path != w.path || c.idempotencyKey != w.key {
			t.Errorf("call %d = %s %s (Idempotency-Key %q), want %s %s (%q)", i, c.method, c.path, c.idempotencyKey, w.method, w.path, w.key)
		}
		if c.status >= 400 {
			t.Errorf("stripe-mock refused %s %s: %d %s", c.method, c.path, c.status, c.body)
		}
	}
	create := rec.calls[0].form
	for k, v := range map[string]string{"amount": "4348", "currency": "eur", "payment_method": "pm_card_visa", "metadata[order_id]": order} {
		if create.Get(k) != v {
			t.Errorf("the create's %s = %q, want %q", k, create.Get(k), v)
		}
	}
	if rec.calls[1].form.Get("off_session") != "true" {
		t.Errorf("the confirm's off_session = %q, want true", rec.calls[1].form.Get("off_session"))
	}
}

// stripe-mock refuses what Stripe would, so the test above can fail: a parameter Stripe
// does not know is a 400 invalid_request_error, which the adapter does not take for an
// answer.
func TestStripeMockRefusesAnUnknownParameter(t *testing.T) {
	base := testenv.StripeMock(t)
	req, err := http.NewRequest(http.MethodPost, base+"/v1/payment_intents", strings.NewReader(url.Values{"amount": {"100"}, "currency": {"eur"}, "bogus": {"1"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer sk_test_123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "invalid_request_error") {
		t.Fatalf("an unknown parameter: %d %s, want 400 invalid_request_error", resp.StatusCode, b)
	}
}

// An order with no intent recorded was never charged: Lookup says so without asking.
func TestLookupWithoutAnIntentIsNotFound(t *testing.T) {
	p, rec := newOnStripeMock(t)
	_, found, err := p.Lookup(context.Background(), events.NewID(time.Now()))
	if err != nil || found {
		t.Fatalf("lookup = %v, %v; want not found", found, err)
	}
	if len(rec.calls) != 0 {
		t.Errorf("made %d calls to say nothing was charged, want none", len(rec.calls))
	}
}

// Stripe's answers, as its API documents them, and what each becomes: recorded
// responses served by a test server, for what stripe-mock's fixtures never answer.
func TestStripesAnswersMapToOutcomes(t *testing.T) {
	const succeeded = `{"id":"pi_1","object":"payment_intent","status":"succeeded"}`
	tests := []struct {
		name    string
		status  int
		body    string
		charged bool
		decline string
		err     error
		header  map[string]string
		after   time.Duration // the least wait before the next attempt
	}{
		{"succeeded", 200, succeeded, true, "", nil, nil, 0},
		{"a card declined", 402, `{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","payment_intent":{"id":"pi_1","object":"payment_intent","status":"requires_payment_method"}}}`, false, "insufficient_funds", nil, nil, 0},
		{"a card declined without a decline code", 402, `{"error":{"type":"card_error","code":"expired_card","message":"Your card has expired."}}`, false, "invalid_payment_method", nil, nil, 0},
		{"a decline under another type, as localstripe answers", 402, `{"error":{"type":"invalid_request_error","code":"card_declined","charge":"ch_1","message":"Your card was declined."}}`, false, "card_declined", nil, nil, 0},
		{"refused after confirmation", 200, `{"id":"pi_1","object":"payment_intent","status":"requires_payment_method","last_payment_error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline"}}`, false, "card_declined", nil, nil, 0},
		{"3-D Secure wanted", 200, `{"id":"pi_1","object":"payment_intent","status":"requires_action"}`, false, "", payment.ErrPending, nil, 0},
		{"processing", 200, `{"id":"pi_1","object":"payment_intent","status":"processing"}`, false, "", payment.ErrPending, nil, 0},
		{"the key reused", 400, `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters they were first used with."}}`, false, "", payment.ErrIdempotencyMismatch, nil, 0},
		{"rate limited", 429, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`, false, "", payment.ErrTransient, nil, 0},
		{"Stripe's trouble", 500, `{"error":{"type":"api_error","message":"Something went wrong on Stripe's end."}}`, false, "", payment.ErrTransient, nil, 0},
		{"rate limited, with Retry-After", 429, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`, false, "", payment.ErrTransient,
			map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"a conflict Stripe says to retry", 409, `{"error":{"type":"invalid_request_error","code":"lock_timeout","message":"This object cannot be accessed right now."}}`, false, "", payment.ErrTransient,
			map[string]string{"Stripe-Should-Retry": "true"}, 0},
		{"a failure Stripe says not to retry", 500, `{"error":{"type":"api_error","message":"Something went wrong."}}`, false, "", payment.ErrRejected,
			map[string]string{"Stripe-Should-Retry": "false"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.URL.Path == "/v1/payment_intents" { // the create
					_, _ = io.WriteString(w, `{"id":"pi_1","object":"payment_intent","status":"requires_confirmation"}`)
					return
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			p := stripepay.New(stripepay.Config{APIKey: "sk_test_123", BaseURL: srv.URL}, openPool(t))
			got, err := p.Charge(context.Background(), payment.ChargeRequest{IdempotencyKey: events.NewID(time.Now()), AmountCents: 100, Currency: "EUR", PaymentMethod: "tok_visa"})
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("charge error = %v, want %v", err, tt.err)
			}
			if err == nil && (got.Succeeded != tt.charged || got.DeclineCode != tt.decline) {
				t.Errorf("charge = %+v, want succeeded %v, decline %q", got, tt.charged, tt.decline)
			}
			var after time.Duration
			if ra, ok := errors.AsType[consumer.RetryAfter](err); ok {
				after = ra.RetryAfter()
			}
			if after != tt.after {
				t.Errorf("the next attempt waits at least %v, want %v", after, tt.after)
			}
		})
	}
}

// A refund of a charge refunded already is not refundable, never retried.
func TestARefundTwiceIsNotRefundable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"charge_already_refunded","message":"Charge ch_1 has already been refunded."}}`)
	}))
	defer srv.Close()
	p := stripepay.New(stripepay.Config{APIKey: "sk_test_123", BaseURL: srv.URL}, openPool(t))
	if _, err := p.Refund(context.Background(), payment.RefundRequest{IdempotencyKey: "o", ChargeID: "pi_1", AmountCents: 100, Currency: "EUR"}); !errors.Is(err, payment.ErrNotRefundable) {
		t.Fatalf("refund = %v, want ErrNotRefundable", err)
	}
}
