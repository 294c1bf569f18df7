package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/common-events/web/webtest"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/httpapi"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
	"github.com/orderflow/payment-service/internal/simulator"
	"github.com/orderflow/payment-service/internal/stripepay"
)

// openAPIDoc is openapi.yaml, parsed, with a validator for requests and responses.
type openAPIDoc struct{ webtest.OpenAPI }

func loadOpenAPI(t *testing.T) openAPIDoc { return openAPIDoc{webtest.LoadOpenAPI(t, "openapi.yaml")} }

// asRun adds to api what payment-service adds to it when it runs: the Stripe webhook, as
// app.Run registers it (with PAYMENT_PROVIDER=stripe and a STRIPE_WEBHOOK_SECRET), when
// hook is not nil; GET /metrics, as platform.Stack.Serve does; and, with limits, the
// admission limits behind Identify, as Stack.Serve sets them.
func asRun(t *testing.T, api *echo.Echo, hook *stripepay.Webhook, v *auth.Verifier, limits *web.Limits) {
	t.Helper()
	if hook != nil {
		api.POST(stripepay.WebhookPath, hook.Handle)
	}
	reg, err := metrics.New(services.Payment.Name)
	if err != nil {
		t.Fatal(err)
	}
	reg.Serve(api)
	if limits != nil {
		api.Use(web.Identify(v), web.Admit(*limits))
	}
}

// The document describes every route the service serves, and nothing else: the API's
// routes with the simulator's ledger, the Stripe webhook and the metrics. No provider has
// both the ledger and the webhook; the document describes each, saying when it is there.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	d := loadOpenAPI(t)
	// Only the routes are read, so the API needs none of its dependencies.
	api := httpapi.New(slog.New(slog.DiscardHandler), postgres.NewStore(nil), simulator.New(nil, 0, 0), nil, nil)
	asRun(t, api, &stripepay.Webhook{}, nil, nil)
	var served []string
	for _, r := range api.Routes() {
		served = append(served, r.Method+" "+r.Path)
	}
	slices.Sort(served)
	documented := slices.Sorted(slices.Values(d.Operations()))
	if !slices.Equal(served, documented) {
		t.Errorf("routes served:\n  %s\noperations documented:\n  %s",
			strings.Join(served, "\n  "), strings.Join(documented, "\n  "))
	}
}

// The Stripe webhook's secrets: the current one and the one it replaces, both accepted
// during a rotation.
const (
	webhookSecret    = "whsec_spec_current"
	oldWebhookSecret = "whsec_spec_previous"
)

// server is one payment-service API for the cases: its database, the verifier of its
// tokens, its readiness, and its admission limits (none when nil).
type server struct {
	pool     *pgxpool.Pool
	verifier *auth.Verifier
	ready    func(context.Context) error
	limits   *web.Limits
}

// start serves s with the simulator's ledger and the Stripe webhook, and returns its URL.
func (s server) start(t *testing.T) string {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(t.Output(), nil))
	ready := s.ready
	if ready == nil {
		ready = func(context.Context) error { return nil }
	}
	store := postgres.NewStore(s.pool)
	api := httpapi.New(log, store, simulator.New(s.pool, 0, 0), ready, s.verifier)
	// The API base is never called: the webhook only reads the intents recorded here.
	provider := stripepay.New(stripepay.Config{APIKey: "sk_test_x", BaseURL: "http://127.0.0.1:1"}, s.pool)
	asRun(t, api, &stripepay.Webhook{
		Provider: provider, Secrets: []string{oldWebhookSecret, webhookSecret}, Log: log,
		Settle: consume.Settler{Store: store, Pool: s.pool, Log: log},
	}, s.verifier, s.limits)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv.URL
}

// newDatabase is a fresh payments database, with the simulator's ledger and the Stripe
// adapter's intents, which no deployment has both of: the cases use either.
func newDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if err := simulator.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := stripepay.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// openAPICase is one real request, whose answer must be what the document says.
type openAPICase struct {
	name   string
	url    string // the server; the API on the fixtures' database unless set
	method string
	route  string
	query  string
	header []string // name, value pairs; an operator's Authorization unless one is given
	body   string
	// anonymous: the request carries no Authorization header.
	anonymous bool

	status int
	code   string // a problem's code
	// outOfSpec: the request breaks the document, and the validator must say so. Otherwise
	// it must accept it: a request the server refuses for a reason the document cannot
	// express (a signature made with another secret) is still in the spec.
	outOfSpec bool
	check     func(t *testing.T, resp *http.Response, body []byte) // what the document cannot say
}

func TestOpenAPIDescribesTheAPI(t *testing.T) {
	d := loadOpenAPI(t)
	ctx := context.Background()
	is := testenv.Issuer(t)
	verifier := auth.NewVerifier(is.Config(), nil)
	pool := newDatabase(t)
	base := server{pool: pool, verifier: verifier}.start(t)
	operator := testenv.Token(t, is, issuer.Operator, auth.ScopeOperator)

	// The fixtures, each an order payment-service has done something about.
	sim := simulator.New(pool, 0, 0)
	completed := settle(t, pool, sim, simulator.TokenVisa, false)
	refunded := settle(t, pool, sim, simulator.TokenVisa, true)
	failed := settle(t, pool, sim, simulator.TokenDeclined, false)
	cancelled := claim(t, pool, payment.Cancelled)
	// A payment waiting for Stripe to tell its outcome, by webhook, about intent pi_waiting.
	waiting := claim(t, pool, payment.Charging)
	if _, err := pool.Exec(ctx, `INSERT INTO stripe_intents (idempotency_key, intent_id) VALUES ($1, 'pi_waiting')`, waiting); err != nil {
		t.Fatal(err)
	}
	const unknownID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"

	// The same API on a database whose tables are gone: every query fails.
	brokenPool := newDatabase(t)
	if _, err := brokenPool.Exec(ctx, `DROP TABLE payments, provider_refunds, provider_charges, stripe_intents CASCADE`); err != nil {
		t.Fatal(err)
	}
	broken := server{pool: brokenPool, verifier: verifier}.start(t)
	// The same API whose readiness check found the database down.
	unready := server{pool: pool, verifier: verifier, ready: func(context.Context) error {
		return &web.NotReady{Dependency: "database", Err: errors.New("connection refused")}
	}}.start(t)
	// The database cut off (a proxy in between, closed): a 503 naming it, to retry.
	cutPool, proxy := testenv.ProxiedPool(t, pool)
	proxy.Cut()
	cutOff := server{pool: cutPool, verifier: verifier}.start(t)
	// The issuer's keys cannot be fetched: no token can be checked.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	cfg := is.Config()
	cfg.JWKSURL = gone.URL
	keyless := server{pool: pool, verifier: auth.NewVerifier(cfg, nil)}.start(t)
	// Behind the admission limits as platform.Serve sets them, with a rate of one request
	// at once and a probe at once: each client's first request spends it, and its next is
	// 429. The operator and the anonymous sender of webhooks are two clients.
	limited := server{pool: pool, verifier: verifier, limits: &web.Limits{
		Working: 4, Waiting: 4, Rate: web.RatePolicy{Name: "default", Rate: 0.01, Burst: 1},
		Exempt: []string{metrics.Path, web.HealthPath, web.ReadyPath}, Probes: web.RatePolicy{Name: "probes", Rate: 0.01, Burst: 1},
	}}.start(t)
	for _, spend := range []struct{ path, token string }{{"/payments?order_id=" + unknownID, operator}, {"/asyncapi.yaml", ""}, {web.HealthPath, ""}} {
		req, _ := http.NewRequest(http.MethodGet, limited+spend.path, nil)
		if spend.token != "" {
			req.Header.Set("Authorization", "Bearer "+spend.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	signed := func(body, secret string, at time.Time) []string {
		sig := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: []byte(body), Secret: secret, Timestamp: at}).Header
		return []string{"Content-Type", "application/json", "Stripe-Signature", sig}
	}
	succeeded := stripeEvent(t, "evt_spec_1", "payment_intent.succeeded", paymentIntent("pi_waiting", nil))
	refundedCharge := stripeEvent(t, "evt_spec_2", "charge.refunded", map[string]any{
		"id": "ch_spec", "object": "charge", "payment_intent": "pi_waiting", "refunded": true,
		"refunds": map[string]any{"object": "list", "data": []any{map[string]any{"id": "re_spec", "object": "refund"}}},
	})
	notOurs := stripeEvent(t, "evt_spec_3", "payment_intent.payment_failed",
		paymentIntent("pi_someone_else", map[string]any{"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}))
	noIntentID := stripeEvent(t, "evt_spec_4", "payment_intent.succeeded", map[string]any{"object": "payment_intent", "status": "succeeded"})
	otherType := stripeEvent(t, "evt_spec_5", "customer.created", map[string]any{"id": "cus_spec", "object": "customer"})
	// A well-formed event, over the limit with the spaces JSON allows before its last brace.
	oversized := succeeded[:len(succeeded)-1] + strings.Repeat(" ", 256<<10) + "}"
	now := time.Now()

	cases := []openAPICase{
		{name: "a completed payment", method: "GET", route: "/payments", query: "order_id=" + completed, status: 200,
			check: itemIs(map[string]any{"order_id": completed, "status": "COMPLETED"})},
		{name: "a refunded payment", method: "GET", route: "/payments", query: "order_id=" + refunded, status: 200,
			check: itemIs(map[string]any{"status": "REFUNDED"}, "charge_id", "refund_id", "refunded_at")},
		{name: "a failed payment", method: "GET", route: "/payments", query: "order_id=" + failed, status: 200,
			check: itemIs(map[string]any{"status": "FAILED", "failure_reason": "card_declined"}, "charge_id")},
		{name: "a cancelled order's payment", method: "GET", route: "/payments", query: "order_id=" + cancelled, status: 200,
			check: itemIs(map[string]any{"status": "CANCELLED"})},
		{name: "a payment by its order id in capitals", method: "GET", route: "/payments", query: "order_id=" + strings.ToUpper(completed), status: 200,
			check: itemIs(map[string]any{"order_id": completed})},
		{name: "an order without payments", method: "GET", route: "/payments", query: "order_id=" + unknownID, status: 200, check: itemsAre(0)},
		{name: "payments, database gone", url: broken, method: "GET", route: "/payments", query: "order_id=" + completed, status: 500, code: "internal"},

		{name: "a charge", method: "GET", route: "/provider/charges", query: "order_id=" + completed, status: 200,
			check: itemIs(map[string]any{"idempotency_key": completed, "outcome": "succeeded"})},
		{name: "a declined charge", method: "GET", route: "/provider/charges", query: "order_id=" + failed, status: 200,
			check: itemIs(map[string]any{"outcome": "failed", "decline_code": "card_declined"})},
		{name: "an order without charges", method: "GET", route: "/provider/charges", query: "order_id=" + cancelled, status: 200, check: itemsAre(0)},
		{name: "charges, database gone", url: broken, method: "GET", route: "/provider/charges", query: "order_id=" + completed, status: 500, code: "internal"},

		{name: "a refund", method: "GET", route: "/provider/refunds", query: "order_id=" + refunded, status: 200,
			check: itemIs(map[string]any{"idempotency_key": refunded}, "refund_id", "charge_id")},
		{name: "an order without refunds", method: "GET", route: "/provider/refunds", query: "order_id=" + completed, status: 200, check: itemsAre(0)},
		{name: "refunds, database gone", url: broken, method: "GET", route: "/provider/refunds", query: "order_id=" + refunded, status: 500, code: "internal"},

		{name: "a signed payment_intent.succeeded settles the waiting payment", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now), body: succeeded, status: 204,
			check: paymentIs(base, operator, waiting, map[string]any{"status": "COMPLETED", "charge_id": "pi_waiting"})},
		{name: "the same event delivered again changes nothing", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now), body: succeeded, status: 204,
			check: paymentIs(base, operator, waiting, map[string]any{"status": "COMPLETED"})},
		{name: "charge.refunded, signed with the previous secret", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(refundedCharge, oldWebhookSecret, now), body: refundedCharge, status: 204,
			check: paymentIs(base, operator, waiting, map[string]any{"status": "REFUNDED", "refund_id": "re_spec"})},
		{name: "an event about an intent payment-service did not make", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(notOurs, webhookSecret, now), body: notOurs, status: 204},
		{name: "an event signed with another secret", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, "whsec_someone_else", now), body: succeeded, status: 400, code: "invalid_signature"},
		{name: "an event signed 10 minutes ago", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now.Add(-10*time.Minute)), body: succeeded, status: 400, code: "invalid_signature"},
		{name: "a malformed Stripe-Signature", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: []string{"Content-Type", "application/json", "Stripe-Signature", "v1=deadbeef"}, body: succeeded, status: 400, code: "invalid_signature"},
		{name: "an event without Stripe-Signature", method: "POST", route: "/webhooks/stripe", anonymous: true, outOfSpec: true,
			header: []string{"Content-Type", "application/json"}, body: succeeded, status: 400, code: "invalid_signature"},
		{name: "a PaymentIntent without an id", method: "POST", route: "/webhooks/stripe", anonymous: true, outOfSpec: true,
			header: signed(noIntentID, webhookSecret, now), body: noIntentID, status: 400, code: "invalid_event"},
		{name: "an event of a type not handled", method: "POST", route: "/webhooks/stripe", anonymous: true, outOfSpec: true,
			header: signed(otherType, webhookSecret, now), body: otherType, status: 400, code: "unhandled_event_type"},
		{name: "an event over 256 KiB", method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(oversized, webhookSecret, now), body: oversized, status: 413, code: "body_too_large"},
		{name: "an event, database gone", url: broken, method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now), body: succeeded, status: 500, code: "internal"},
		{name: "an event while the database cannot be reached", url: cutOff, method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now), body: succeeded, status: 503, code: "database_unavailable", check: headerIs("Retry-After", "2")},
		{name: "an event over the sender's rate", url: limited, method: "POST", route: "/webhooks/stripe", anonymous: true,
			header: signed(succeeded, webhookSecret, now), body: succeeded, status: 429, code: "rate_limited", check: headerIs("RateLimit-Policy", `"default";q=1;w=100`)},

		{name: "healthz", method: "GET", route: "/healthz", anonymous: true, status: 200},
		{name: "readyz", method: "GET", route: "/readyz", anonymous: true, status: 200},
		{name: "readyz, database down", url: unready, method: "GET", route: "/readyz", anonymous: true, status: 503},
		{name: "metrics", method: "GET", route: "/metrics", anonymous: true, status: 200,
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if !bytes.Contains(body, []byte("# TYPE orderflow_http_requests_total counter")) {
					t.Errorf("the metrics have no orderflow_http_requests_total: %.300s", body)
				}
			}},
	}
	for _, route := range []string{web.HealthPath, web.ReadyPath, metrics.Path} {
		cases = append(cases, openAPICase{name: "GET " + route + " over the client's rate of probes", url: limited, method: "GET", route: route,
			anonymous: true, status: 429, code: "rate_limited", check: headerIs("RateLimit-Policy", `"probes";q=1;w=100`)})
	}
	for _, doc := range []struct {
		route string
		raw   []byte
	}{{"/openapi.yaml", d.Raw}, {"/asyncapi.yaml", events.AsyncAPI()}} {
		cases = append(cases, openAPICase{name: "the document " + doc.route + ", without a token", method: "GET", route: doc.route, anonymous: true, status: 200,
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if !bytes.Equal(body, doc.raw) {
					t.Errorf("GET %s served %d bytes that are not the document (%d bytes)", doc.route, len(body), len(doc.raw))
				}
				if ct := resp.Header.Get("Content-Type"); ct != web.YAMLMediaType {
					t.Errorf("Content-Type = %q, want %s", ct, web.YAMLMediaType)
				}
			}},
			openAPICase{name: "the headers of " + doc.route, method: "HEAD", route: doc.route, anonymous: true, status: 200,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					if resp.Header.Get("Content-Type") != web.YAMLMediaType || resp.Header.Get("Content-Length") != strconv.Itoa(len(doc.raw)) || len(body) != 0 {
						t.Errorf("Content-Type %q, Content-Length %q, %d bytes of body; want %s, %d, none",
							resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"), len(body), web.YAMLMediaType, len(doc.raw))
					}
				}})
		// The documents are behind the admission limits like the views.
		for _, m := range []struct{ method, code string }{{"GET", "rate_limited"}, {"HEAD", ""}} { // a HEAD answer has no body
			cases = append(cases, openAPICase{name: m.method + " " + doc.route + " over the client's rate", url: limited, method: m.method, route: doc.route,
				anonymous: true, status: 429, code: m.code, check: headerIs("RateLimit-Policy", `"default";q=1;w=100`)})
		}
	}

	// Every view refuses, as documented, bad input, a request without a token or with a
	// bad one, a customer's token, every token while the issuer's keys cannot be fetched,
	// any request while the database cannot be reached, and a client over its rate.
	customer := testenv.Token(t, is, issuer.Customer, auth.ScopeCustomer)
	for _, route := range []string{"/payments", "/provider/charges", "/provider/refunds"} {
		r := openAPICase{method: "GET", route: route, query: "order_id=" + completed}
		malformed, notUUID, missing := r, r, r
		malformed.name, malformed.query, malformed.status, malformed.code = route+" with broken URL encoding", "order_id=%ZZ", 400, "malformed_query"
		malformed.outOfSpec = true // the validator drops the broken pair, and finds no order_id
		notUUID.name, notUUID.query, notUUID.status, notUUID.code, notUUID.outOfSpec = route+" by an order id that is not a UUID", "order_id=42", 422, "validation", true
		notUUID.check = fieldIs("order_id")
		missing.name, missing.query, missing.status, missing.code, missing.outOfSpec = route+" without an order id", "", 422, "validation", true
		missing.check = fieldIs("order_id")
		anonymous, badToken, unscoped, unavailable, cut, over := r, r, r, r, r, r
		anonymous.name, anonymous.anonymous, anonymous.outOfSpec = route+" without a token", true, true
		anonymous.status, anonymous.code = 401, "unauthenticated"
		anonymous.check = headerIs("WWW-Authenticate", `Bearer realm="orderflow"`)
		badToken.name, badToken.header = route+" with a token that is not one", []string{"Authorization", "Bearer not-a-jwt"}
		badToken.status, badToken.code = 401, "invalid_token"
		badToken.check = headerIs("WWW-Authenticate", `Bearer realm="orderflow", error="invalid_token"`)
		unscoped.name, unscoped.header = route+" with a customer's token", []string{"Authorization", "Bearer " + customer}
		unscoped.status, unscoped.code = 403, "insufficient_scope"
		unavailable.name, unavailable.url = route+" while the issuer's keys cannot be fetched", keyless
		unavailable.status, unavailable.code, unavailable.check = 503, "token_issuer_unavailable", headerIs("Retry-After", "5")
		cut.name, cut.url = route+" while the database cannot be reached", cutOff
		cut.status, cut.code, cut.check = 503, "database_unavailable", headerIs("Retry-After", "2")
		over.name, over.url = route+" over the operator's rate", limited
		over.status, over.code, over.check = 429, "rate_limited", headerIs("RateLimit-Policy", `"default";q=1;w=100`)
		cases = append(cases, malformed, notUUID, missing, anonymous, badToken, unscoped, unavailable, cut, over)
	}

	covered := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.url == "" {
				tc.url = base
			}
			status := d.run(t, operator, tc)
			covered[tc.method+" "+tc.route+" "+strconv.Itoa(status)] = true
		})
	}
	for _, want := range d.Documented() {
		if !covered[want] {
			t.Errorf("%s is documented, and no case shows it", want)
		}
	}
}

// run sends tc's request, with token as its bearer token unless tc says otherwise, and
// checks the answer against the document and tc. It returns the status the API answered.
func (d openAPIDoc) run(t *testing.T, token string, tc openAPICase) int {
	target := tc.url + tc.route
	if tc.query != "" {
		target += "?" + tc.query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newRequest := func() *http.Request {
		req, err := http.NewRequestWithContext(ctx, tc.method, target, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if tc.body == "" {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		for i := 0; i+1 < len(tc.header); i += 2 {
			req.Header.Add(tc.header[i], tc.header[i+1])
		}
		if !tc.anonymous && req.Header.Get("Authorization") == "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req
	}

	ok, errs := d.Validator.ValidateHttpRequest(newRequest())
	switch {
	case tc.outOfSpec && ok:
		t.Errorf("the document allows this request, which the case says breaks it")
	case !tc.outOfSpec && !ok:
		t.Errorf("the document does not allow this request:\n%s", webtest.ValidationErrors(errs))
	}

	req := newRequest()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != tc.status {
		t.Errorf("status = %d, want %d; body %.300s", resp.StatusCode, tc.status, body)
	}

	resp.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := d.Validator.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("%d answer not as documented:\n%s\nbody %.300s", resp.StatusCode, webtest.ValidationErrors(errs), body)
	}
	if tc.code != "" {
		var p web.Problem
		if err := json.Unmarshal(body, &p); err != nil || p.Code != tc.code {
			t.Errorf("problem code %q, want %q (%v)", p.Code, tc.code, err)
		}
	}
	if tc.check != nil {
		tc.check(t, resp, body)
	}
	return resp.StatusCode
}

// claim records a payment of a new order in status, as payment-service claims one when
// order.created (CHARGING) or order.cancelled (CANCELLED) comes first, and returns the
// order's id.
func claim(t *testing.T, pool *pgxpool.Pool, status payment.Status) string {
	t.Helper()
	now := time.Now()
	p := payment.Payment{
		ID: events.NewID(now), OrderID: events.NewID(now), CustomerID: issuer.Customer, CustomerEmail: "ada@example.com",
		AmountCents: 4348, Currency: "EUR", Status: status, CauseEventID: events.NewID(now), CreatedAt: now,
	}
	if _, err := postgres.NewStore(pool).Claim(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p.OrderID
}

// settle records the payment of a new order as payment-service would: claimed, charged by
// the simulator with method and the outcome recorded, then refunded when refund is set.
// It returns the order's id.
func settle(t *testing.T, pool *pgxpool.Pool, sim *simulator.Simulator, method string, refund bool) string {
	t.Helper()
	ctx := context.Background()
	store := postgres.NewStore(pool)
	orderID := claim(t, pool, payment.Charging)
	ps, err := store.ByOrder(ctx, orderID)
	if err != nil {
		t.Fatal(err)
	}
	charge, err := sim.Charge(ctx, payment.ChargeRequest{IdempotencyKey: orderID, AmountCents: ps[0].AmountCents, Currency: ps[0].Currency, PaymentMethod: method})
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := consume.Outcome(ps[0], charge, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	record := func(do func(tx pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, do); err != nil {
			t.Fatal(err)
		}
	}
	record(func(tx pgx.Tx) error { _, err := store.Charged(ctx, tx, []payment.Payment{p}); return err })
	if refund {
		r, err := sim.Refund(ctx, payment.RefundRequest{IdempotencyKey: orderID, ChargeID: charge.ID, AmountCents: p.AmountCents, Currency: p.Currency})
		if err != nil {
			t.Fatal(err)
		}
		if p, _, err = consume.Refunded(p, r.ID, events.Meta{}, time.Now()); err != nil {
			t.Fatal(err)
		}
		record(func(tx pgx.Tx) error { _, err := store.Refunded(ctx, tx, p); return err })
	}
	return orderID
}

// stripeEvent is a Stripe event of type typ about object, rendered as Stripe does.
func stripeEvent(t *testing.T, id, typ string, object map[string]any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": "2025-03-31.basil", "created": time.Now().Unix(), "livemode": false,
		"type": typ, "data": map[string]any{"object": object},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// paymentIntent is a PaymentIntent as an event renders it: lastError is nil unless it
// failed.
func paymentIntent(id string, lastError map[string]any) map[string]any {
	status := "succeeded"
	if lastError != nil {
		status = "requires_payment_method"
	}
	return map[string]any{"id": id, "object": "payment_intent", "status": status, "last_payment_error": lastError}
}

// itemsAre checks that a list has n items.
func itemsAre(n int) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, resp *http.Response, body []byte) {
		var list struct{ Items []map[string]any }
		if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != n {
			t.Errorf("want %d items, got %s (%v)", n, body, err)
		}
	}
}

// itemIs checks that a list has one item, with the fields want and the fields present.
func itemIs(want map[string]any, present ...string) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, resp *http.Response, body []byte) {
		var list struct{ Items []map[string]any }
		if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 1 {
			t.Fatalf("want one item, got %s (%v)", body, err)
		}
		item := list.Items[0]
		for k, v := range want {
			if item[k] != v {
				t.Errorf("%s = %v, want %v", k, item[k], v)
			}
		}
		for _, k := range present {
			if _, ok := item[k]; !ok {
				t.Errorf("%s is missing from %v", k, item)
			}
		}
	}
}

// paymentIs checks, after the answer, that the order's payment has the fields want,
// through GET /payments of the API at url with token.
func paymentIs(url, token, orderID string, want map[string]any) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, _ *http.Response, _ []byte) {
		req, _ := http.NewRequest(http.MethodGet, url+"/payments?order_id="+orderID, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		itemIs(want)(t, resp, body)
	}
}

func headerIs(name, want string) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, resp *http.Response, body []byte) {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// fieldIs checks that a validation problem names field, and only it.
func fieldIs(field string) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, resp *http.Response, body []byte) {
		var p web.Problem
		if err := json.Unmarshal(body, &p); err != nil || len(p.Errors) != 1 || p.Errors[0].Field != field {
			t.Errorf("errors = %+v, want one naming %s (%v)", p.Errors, field, err)
		}
	}
}
