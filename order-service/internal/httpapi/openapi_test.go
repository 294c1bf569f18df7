package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/common-events/web/webtest"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/orders"
	"github.com/orderflow/order-service/internal/postgres"
)

// openAPIDoc is openapi.yaml, parsed, with a validator for requests and responses.
type openAPIDoc struct{ webtest.OpenAPI }

func loadOpenAPI(t *testing.T) openAPIDoc { return openAPIDoc{webtest.LoadOpenAPI(t, "openapi.yaml")} }

// The document describes every route the API serves, and nothing else.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	d := loadOpenAPI(t)
	var served []string
	// Only the routes are read, so the API needs none of its dependencies.
	for _, r := range httpapi.New(slog.New(slog.DiscardHandler), nil, nil, nil, nil).Routes() {
		segs := strings.Split(r.Path, "/")
		for i, seg := range segs {
			if name, ok := strings.CutPrefix(seg, ":"); ok {
				segs[i] = "{" + name + "}"
			}
		}
		served = append(served, r.Method+" "+strings.Join(segs, "/"))
	}
	slices.Sort(served)
	documented := slices.Sorted(slices.Values(d.Operations()))
	if !slices.Equal(served, documented) {
		t.Errorf("routes served:\n  %s\noperations documented:\n  %s",
			strings.Join(served, "\n  "), strings.Join(documented, "\n  "))
	}
}

// openAPICase is one real request, whose answer must be what the document says.
type openAPICase struct {
	name   string
	url    string // the server; the API on a fresh database unless set
	method string
	route  string // as the document names it: /orders/{id}
	id     string // {id}
	query  string
	header []string // name, value pairs; the demo customer's Authorization unless one is given
	body   string
	// anonymous: the request carries no Authorization header.
	anonymous bool

	status int
	code   string // a problem's code
	// outOfSpec: the request breaks the document, and the validator must say so. Otherwise
	// it must accept it: a request the server refuses for a reason the document cannot
	// express (an unknown currency, a cursor it never gave out) is still in the spec.
	outOfSpec bool
	before    func(t *testing.T)                                   // runs before the request
	meanwhile func(t *testing.T)                                   // runs while the request is in flight
	check     func(t *testing.T, resp *http.Response, body []byte) // what the document cannot say
}

func TestOpenAPIDescribesTheAPI(t *testing.T) {
	d := loadOpenAPI(t)
	ctx := context.Background()
	a := newAPI(t)

	// The same API on a database whose order tables are gone: every query fails.
	broken := newAPIWith(t, a.issuer)
	if _, err := broken.pool.Exec(ctx, `DROP TABLE orders, order_history CASCADE`); err != nil {
		t.Fatal(err)
	}
	// The same API whose readiness check finds its database down.
	down, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/orders?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	unready := httptest.NewServer(httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(a.pool), nil), a.changes, down.Ping, auth.NewVerifier(a.issuer.Config(), nil)))
	t.Cleanup(unready.Close)

	pending := a.place(t, customerID)
	confirmed := a.place(t, customerID)
	settleOrder(t, a, confirmed.ID, order.Confirmed, "")
	failed := a.place(t, customerID)
	settleOrder(t, a, failed.ID, order.PaymentFailed, "card_declined")
	const unknownID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	valid := validOrder().JSON(t)
	postJSON := func(key string) []string {
		h := []string{"Content-Type", jsonType}
		if key != "" {
			h = append(h, "Idempotency-Key", key)
		}
		return h
	}
	firstPost := func(key, body string) func(t *testing.T) {
		return func(t *testing.T) { decodeOrder(t, a.postKey(t, key, body), http.StatusAccepted) }
	}
	fieldsAre := func(want map[string]any) func(t *testing.T, resp *http.Response, body []byte) {
		return func(t *testing.T, resp *http.Response, body []byte) {
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		}
	}
	headerIs := func(name, want string) func(t *testing.T, resp *http.Response, body []byte) {
		return func(t *testing.T, resp *http.Response, body []byte) {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	}

	cases := []openAPICase{
		{name: "place an order", method: "POST", route: "/orders", header: postJSON(""), body: valid, status: 202,
			check: fieldsAre(map[string]any{"status": "PENDING_PAYMENT"})},
		{name: "place an order with an Idempotency-Key", method: "POST", route: "/orders", header: postJSON("spec-first"), body: valid, status: 202,
			check: headerIs("Idempotent-Replayed", "")},
		{name: "the same request again is replayed", method: "POST", route: "/orders", header: postJSON("spec-replay"), body: valid, status: 202,
			before: firstPost("spec-replay", valid), check: headerIs("Idempotent-Replayed", "true")},
		{name: "malformed JSON", method: "POST", route: "/orders", header: postJSON(""), body: `{"items":`, status: 400, code: "malformed_json", outOfSpec: true},
		{name: "empty body", method: "POST", route: "/orders", header: postJSON(""), status: 400, code: "malformed_json", outOfSpec: true},
		{name: "Idempotency-Key with a space", method: "POST", route: "/orders", header: postJSON("two words"), body: valid, status: 400, code: "invalid_idempotency_key", outOfSpec: true},
		{name: "Idempotency-Key of 256 characters", method: "POST", route: "/orders", header: postJSON(strings.Repeat("k", 256)), body: valid, status: 400, code: "invalid_idempotency_key", outOfSpec: true},
		{name: "Idempotency-Key in flight", method: "POST", route: "/orders", header: postJSON("spec-busy"), body: valid, status: 409, code: "idempotency_key_in_flight",
			before: func(t *testing.T) { a.holdKey(t, "spec-busy") }},
		{name: "body over 1 MiB", method: "POST", route: "/orders", header: postJSON(""), status: 413, code: "body_too_large", outOfSpec: true,
			body: validOrder().with("payment_method", strings.Repeat("x", httpapi.MaxBodyBytes)).JSON(t)},
		{name: "body as text/plain", method: "POST", route: "/orders", header: []string{"Content-Type", "text/plain"}, body: valid, status: 415, code: "unsupported_media_type", outOfSpec: true},
		{name: "invalid fields", method: "POST", route: "/orders", header: postJSON(""), status: 422, code: "validation", outOfSpec: true,
			body: validOrder().with("currency", "eur").withItem(0, itemReq{SKU: "A", Quantity: 0, UnitPriceCents: 100}).JSON(t)},
		{name: "an unknown field", method: "POST", route: "/orders", header: postJSON(""), status: 422, code: "validation", outOfSpec: true,
			body: validOrder().with("coupon", "FREE").JSON(t)},
		{name: "more invalid fields than are listed", method: "POST", route: "/orders", header: postJSON(""), status: 422, code: "validation", outOfSpec: true,
			body:  validOrder().with("items", make([]itemReq, order.MaxItems)).JSON(t),
			check: fieldsAre(map[string]any{"errors_omitted": float64(3*order.MaxItems - order.MaxFieldErrors)})},
		{name: "a currency that is not ISO 4217", method: "POST", route: "/orders", header: postJSON(""), status: 422, code: "validation",
			body: validOrder().with("currency", "XYZ").JSON(t)},
		{name: "Idempotency-Key reused for another order", method: "POST", route: "/orders", header: postJSON("spec-reused"), status: 422, code: "idempotency_key_reused",
			before: firstPost("spec-reused", valid), body: validOrder().with("currency", "USD").JSON(t)},
		{name: "place an order, database gone", url: broken.url, method: "POST", route: "/orders", header: postJSON(""), body: valid, status: 500, code: "internal"},

		{name: "list orders", method: "GET", route: "/orders", status: 200},
		{name: "list a customer's pending orders, a page of 1", method: "GET", route: "/orders", query: "customer_id=" + customerID + "&status=PENDING_PAYMENT&limit=1", status: 200,
			check: func(t *testing.T, resp *http.Response, body []byte) {
				var p page
				if err := json.Unmarshal(body, &p); err != nil || len(p.Items) != 1 || p.NextCursor == "" {
					t.Errorf("want one order and a next_cursor, got %s (%v)", body, err)
				}
			}},
		{name: "list the next page", method: "GET", route: "/orders", status: 200,
			query: "limit=2&cursor=" + a.list(t, map[string][]string{"limit": {"1"}}).NextCursor},
		{name: "list with bad parameters", method: "GET", route: "/orders", query: "limit=0&status=SHIPPED&customer_id=42", status: 422, code: "validation", outOfSpec: true},
		{name: "list with something that is not a cursor", method: "GET", route: "/orders", query: "cursor=not-a-cursor", status: 422, code: "validation", outOfSpec: true},
		{name: "list with a cursor never given out", method: "GET", route: "/orders", query: "cursor=zzzzzzzzzzzzzzzzzzzzzz", status: 200},
		{name: "list with an empty filter", method: "GET", route: "/orders", query: "customer_id=", status: 422, code: "validation", outOfSpec: true},
		{name: "list with an empty cursor: the first page", method: "GET", route: "/orders", query: "cursor=&limit=1", status: 200},
		{name: "list orders, database gone", url: broken.url, method: "GET", route: "/orders", status: 500, code: "internal"},

		{name: "get a pending order", method: "GET", route: "/orders/{id}", id: pending.ID, status: 200, check: headerIs("Preference-Applied", "")},
		{name: "get a failed order", method: "GET", route: "/orders/{id}", id: failed.ID, status: 200,
			check: fieldsAre(map[string]any{"status": "PAYMENT_FAILED", "failure_reason": "card_declined"})},
		{name: "get an order by its id in capitals", method: "GET", route: "/orders/{id}", id: strings.ToUpper(confirmed.ID), status: 200},
		{name: "get an unknown order", method: "GET", route: "/orders/{id}", id: unknownID, status: 404, code: "not_found"},
		{name: "get an order by a malformed id", method: "GET", route: "/orders/{id}", id: "not-a-uuid", status: 404, code: "not_found", outOfSpec: true},
		{name: "get an order, database gone", url: broken.url, method: "GET", route: "/orders/{id}", id: pending.ID, status: 500, code: "internal"},

		{name: "history", method: "GET", route: "/orders/{id}/history", id: failed.ID, status: 200,
			check: func(t *testing.T, resp *http.Response, body []byte) {
				var h struct{ Items []map[string]any }
				if err := json.Unmarshal(body, &h); err != nil || len(h.Items) != 2 || h.Items[1]["reason"] != "card_declined" {
					t.Errorf("want two changes, the second for card_declined; got %s (%v)", body, err)
				}
			}},
		{name: "history of an unknown order", method: "GET", route: "/orders/{id}/history", id: unknownID, status: 404, code: "not_found"},
		{name: "history, database gone", url: broken.url, method: "GET", route: "/orders/{id}/history", id: pending.ID, status: 500, code: "internal"},

		{name: "healthz", method: "GET", route: "/healthz", status: 200},
		{name: "readyz", method: "GET", route: "/readyz", status: 200},
		{name: "readyz, database down", url: unready.URL, method: "GET", route: "/readyz", status: 503},
	}
	for _, doc := range []struct {
		route string
		raw   []byte
	}{{"/openapi.yaml", d.Raw}, {"/asyncapi.yaml", events.AsyncAPI()}} {
		cases = append(cases, openAPICase{name: "the document " + doc.route, method: "GET", route: doc.route, status: 200,
			check: func(t *testing.T, resp *http.Response, body []byte) {
				if !bytes.Equal(body, doc.raw) {
					t.Errorf("GET %s served %d bytes that are not the document (%d bytes)", doc.route, len(body), len(doc.raw))
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
					t.Errorf("Content-Type = %q, want application/yaml", ct)
				}
			}},
			openAPICase{name: "the headers of " + doc.route, method: "HEAD", route: doc.route, status: 200,
				check: func(t *testing.T, resp *http.Response, body []byte) {
					if resp.Header.Get("Content-Type") != "application/yaml" || resp.Header.Get("Content-Length") != strconv.Itoa(len(doc.raw)) || len(body) != 0 {
						t.Errorf("Content-Type %q, Content-Length %q, %d bytes of body; want application/yaml, %d, none",
							resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"), len(body), len(doc.raw))
					}
				}})
	}

	// Being added alongside: Prefer: wait, cancelling, the event stream, and a strict
	// query string for the listing.
	waiter := uuid.NewString() // the customer whose order payment decides during a POST's wait
	toCancel := a.place(t, customerID)
	liveCases := []openAPICase{
		{name: "place an order and wait: payment decides in time", method: "POST", route: "/orders", status: 201,
			header: append(postJSON(""), "Prefer", "wait=20", "Authorization", "Bearer "+testenv.Token(t, a.issuer, waiter, auth.ScopeCustomer)),
			body:   validOrder().with("customer_id", nil).JSON(t),
			meanwhile: func(t *testing.T) {
				if !testenv.Eventually(10*time.Second, 10*time.Millisecond, func() bool { return a.changes.Waiting() > 0 }) {
					t.Error("the POST never waited")
					return
				}
				var id string
				if err := a.pool.QueryRow(ctx, `SELECT id::text FROM orders WHERE customer_id = $1`, waiter).Scan(&id); err != nil {
					t.Error(err)
					return
				}
				if err := transitionOrder(a, id, order.Confirmed, ""); err != nil {
					t.Error(err)
				}
			},
			check: func(t *testing.T, resp *http.Response, body []byte) {
				var o orderResp
				_ = json.Unmarshal(body, &o)
				if o.Status != "CONFIRMED" || resp.Header.Get("Location") != "/orders/"+o.ID || resp.Header.Get("Preference-Applied") != "wait=20" {
					t.Errorf("status %s, Location %q, Preference-Applied %q; want CONFIRMED, /orders/%s, wait=20",
						o.Status, resp.Header.Get("Location"), resp.Header.Get("Preference-Applied"), o.ID)
				}
			}},
		{name: "place an order and wait: payment does not decide in time", method: "POST", route: "/orders", status: 202,
			header: append(postJSON(""), "Prefer", "wait=1"), body: valid, check: headerIs("Preference-Applied", "wait=1")},
		{name: "get a pending order and wait: it stays pending", method: "GET", route: "/orders/{id}", id: pending.ID, status: 202,
			header: []string{"Prefer", "respond-async, wait=1"}, check: headerIs("Preference-Applied", "wait=1")},
		{name: "get a final order and wait: answered at once, 30 s at most", method: "GET", route: "/orders/{id}", id: confirmed.ID, status: 200,
			header: []string{"Prefer", "wait=3600"}, check: headerIs("Preference-Applied", "wait=30")},
		{name: "get with a malformed Prefer: ignored", method: "GET", route: "/orders/{id}", id: pending.ID, status: 200,
			header: []string{"Prefer", "wait=soon"}, check: headerIs("Preference-Applied", "")},

		// Not outOfSpec: the validator, as echo did, drops the broken pair and sees no status.
		{name: "list with broken URL encoding", method: "GET", route: "/orders", query: "status=%ZZ", status: 400, code: "malformed_query"},
		{name: "list with a parameter given twice", method: "GET", route: "/orders", query: "limit=1&limit=2", status: 422, code: "validation"},

		{name: "cancel a pending order", method: "POST", route: "/orders/{id}/cancel", id: toCancel.ID, status: 200,
			check: fieldsAre(map[string]any{"status": "CANCELLED", "id": toCancel.ID})},
		{name: "cancel a confirmed order", method: "POST", route: "/orders/{id}/cancel", id: confirmed.ID, status: 409, code: "order_not_cancellable"},
		{name: "cancel an unknown order", method: "POST", route: "/orders/{id}/cancel", id: unknownID, status: 404, code: "not_found"},
		{name: "cancel, database gone", url: broken.url, method: "POST", route: "/orders/{id}/cancel", id: pending.ID, status: 500, code: "internal"},

		{name: "events of a final order: its whole history, then the end", method: "GET", route: "/orders/{id}/events", id: confirmed.ID, status: 200,
			check: eventsAre("1:PENDING_PAYMENT", "2:CONFIRMED")},
		{name: "events after Last-Event-ID", method: "GET", route: "/orders/{id}/events", id: failed.ID, status: 200,
			header: []string{"Last-Event-ID", "1"}, check: eventsAre("2:PAYMENT_FAILED")},
		{name: "events of an unknown order", method: "GET", route: "/orders/{id}/events", id: unknownID, status: 404, code: "not_found"},
		{name: "events by a malformed id", method: "GET", route: "/orders/{id}/events", id: "nope", status: 404, code: "not_found", outOfSpec: true},
		{name: "events, database gone", url: broken.url, method: "GET", route: "/orders/{id}/events", id: pending.ID, status: 500, code: "internal"},
	}

	// Every order route refuses, as documented, a request without a token, a token
	// without the scope it needs, and every token while the issuer's keys cannot be
	// fetched.
	noScope := testenv.Token(t, a.issuer, customerID)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	cfg := a.issuer.Config()
	cfg.JWKSURL = gone.URL
	keyless := httptest.NewServer(httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(a.pool), nil), a.changes,
		func(context.Context) error { return nil }, auth.NewVerifier(cfg, nil)))
	t.Cleanup(keyless.Close)
	// The database cut off (a proxy in between, closed): a 503 naming it, to retry.
	dbURL, err := url.Parse(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, dbURL.Host)
	dbURL.Host = proxy.Addr
	cutPool, err := pgxpool.New(ctx, dbURL.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cutPool.Close)
	if err := migrations.UpPool(ctx, cutPool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	cutOff := httptest.NewServer(httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(cutPool), nil), a.changes,
		func(context.Context) error { return nil }, auth.NewVerifier(a.issuer.Config(), nil)))
	t.Cleanup(cutOff.Close)
	var doorCases []openAPICase
	for _, r := range []openAPICase{
		{method: "POST", route: "/orders", header: postJSON(""), body: valid},
		{method: "GET", route: "/orders"},
		{method: "GET", route: "/orders/{id}", id: pending.ID},
		{method: "GET", route: "/orders/{id}/history", id: pending.ID},
		{method: "GET", route: "/orders/{id}/events", id: pending.ID},
		{method: "POST", route: "/orders/{id}/cancel", id: pending.ID},
	} {
		anonymous, unscoped, unavailable := r, r, r
		anonymous.name, anonymous.anonymous, anonymous.outOfSpec = r.method+" "+r.route+" without a token", true, true
		anonymous.status, anonymous.code = 401, "unauthenticated"
		anonymous.check = headerIs("WWW-Authenticate", `Bearer realm="orderflow"`)
		unscoped.name, unscoped.header = r.method+" "+r.route+" with a token without the scope", append(slices.Clone(r.header), "Authorization", "Bearer "+noScope)
		unscoped.status, unscoped.code = 403, "insufficient_scope"
		unavailable.name, unavailable.url = r.method+" "+r.route+" while the issuer's keys cannot be fetched", keyless.URL
		unavailable.status, unavailable.code = 503, "token_issuer_unavailable"
		cut := r
		cut.name, cut.url = r.method+" "+r.route+" while the database cannot be reached", cutOff.URL
		cut.status, cut.code, cut.check = 503, "database_unavailable", headerIs("Retry-After", "2")
		// Behind the admission limits as platform.Serve sets them, with a rate of one
		// request at once: the customer's first request spends it, the case's is 429.
		limitedAPI := httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(a.pool), nil), a.changes,
			func(context.Context) error { return nil }, auth.NewVerifier(a.issuer.Config(), nil))
		limitedAPI.Use(web.Identify(auth.NewVerifier(a.issuer.Config(), nil)),
			web.Admit(web.Limits{Working: 4, Waiting: 4, Rate: web.RatePolicy{Name: "default", Rate: 0.01, Burst: 1}}))
		limited := httptest.NewServer(limitedAPI)
		t.Cleanup(limited.Close)
		spend, _ := http.NewRequest(http.MethodGet, limited.URL+"/orders", nil)
		spend.Header.Set("Authorization", "Bearer "+a.token)
		if resp, err := http.DefaultClient.Do(spend); err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
		over := r
		over.name, over.url = r.method+" "+r.route+" over the customer's rate", limited.URL
		over.status, over.code, over.check = 429, "rate_limited", headerIs("RateLimit-Policy", `"default";q=1;w=100`)
		doorCases = append(doorCases, anonymous, unscoped, unavailable, cut, over)
	}
	// The probes, paced as platform.Serve sets them up, at one at once: the first
	// probe spends it, the case's waits its second and is 429.
	pacedAPI := httpapi.New(slog.New(slog.DiscardHandler), orders.New(postgres.NewStore(a.pool), nil), a.changes,
		func(context.Context) error { return nil }, auth.NewVerifier(a.issuer.Config(), nil))
	pacedAPI.Use(web.Admit(web.Limits{Working: 4, Waiting: 4, Exempt: []string{web.HealthPath, web.ReadyPath},
		Probes: web.RatePolicy{Name: "probes", Rate: 0.01, Burst: 1}}))
	paced := httptest.NewServer(pacedAPI)
	t.Cleanup(paced.Close)
	if resp, err := http.Get(paced.URL + web.HealthPath); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	for _, route := range []string{web.HealthPath, web.ReadyPath} {
		doorCases = append(doorCases, openAPICase{name: "GET " + route + " over the client's rate of probes", method: "GET",
			route: route, url: paced.URL, status: 429, code: "rate_limited", check: headerIs("RateLimit-Policy", `"probes";q=1;w=100`)})
	}

	covered := map[string]bool{}
	for _, tc := range slices.Concat(cases, liveCases, doorCases) {
		t.Run(tc.name, func(t *testing.T) {
			status := d.run(t, a, tc)
			covered[tc.method+" "+tc.route+" "+strconv.Itoa(status)] = true
		})
	}
	for _, want := range d.Documented() {
		if !covered[want] {
			t.Errorf("%s is documented, and no case shows it", want)
		}
	}
}

// run sends tc's request and checks the answer against the document and tc. It returns the
// status the API answered.
func (d openAPIDoc) run(t *testing.T, a api, tc openAPICase) int {
	base := tc.url
	if base == "" {
		base = a.url
	}
	target := base + strings.Replace(tc.route, "{id}", tc.id, 1)
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
			req.Header.Set("Authorization", "Bearer "+a.token)
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

	if tc.before != nil {
		tc.before(t)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tc.meanwhile != nil {
			tc.meanwhile(t)
		}
	}()
	req := newRequest()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != tc.status {
		t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tc.status, body)
	}

	resp.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := d.Validator.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("%d answer not as documented:\n%s\nbody %s", resp.StatusCode, webtest.ValidationErrors(errs), body)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		d.checkEvents(t, tc.route, resp.StatusCode, body)
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

// checkEvents validates each event of a text/event-stream body against the schema the
// document gives for one event: OpenAPI validators do not read streams.
func (d openAPIDoc) checkEvents(t *testing.T, route string, status int, body []byte) {
	t.Helper()
	mt := d.Model.Paths.PathItems.GetOrZero(route).Get.Responses.Codes.GetOrZero(strconv.Itoa(status)).Content.GetOrZero("text/event-stream")
	if mt == nil || mt.Schema == nil {
		t.Fatalf("GET %s %d documents no text/event-stream schema", route, status)
	}
	events, err := parseEvents(body)
	if err != nil {
		t.Fatalf("%v in stream %q", err, body)
	}
	// data is a line of JSON, its contentSchema StatusEvent: the validator checks the
	// string, and the decoded value is checked against StatusEvent here.
	statusEvent := d.Model.Components.Schemas.GetOrZero("StatusEvent")
	for _, ev := range events {
		if ok, errs := d.Schemas.ValidateSchemaObject(mt.Schema.Schema(), ev); !ok {
			t.Errorf("event %v not as documented:\n%s", ev, webtest.ValidationErrors(errs))
		}
		var data any
		if err := json.Unmarshal([]byte(ev["data"].(string)), &data); err != nil {
			t.Fatalf("data %q: %v", ev["data"], err)
		}
		if ok, errs := d.Schemas.ValidateSchemaObject(statusEvent.Schema(), data); !ok {
			t.Errorf("event data %v not a StatusEvent:\n%s", data, webtest.ValidationErrors(errs))
		}
	}
}

// parseEvents reads a whole SSE stream: each event as its fields, data as sent, a line
// that must be JSON. Comments are skipped.
func parseEvents(stream []byte) ([]map[string]any, error) {
	var events []map[string]any
	for block := range strings.SplitSeq(strings.TrimSpace(string(stream)), "\n\n") {
		ev := map[string]any{}
		for line := range strings.SplitSeq(block, "\n") {
			if line == "" || strings.HasPrefix(line, ":") {
				continue
			}
			name, value, _ := strings.Cut(line, ": ")
			if _, dup := ev[name]; dup {
				return nil, fmt.Errorf("field %s twice in one event", name)
			}
			ev[name] = value
			if name == "data" && !json.Valid([]byte(value)) {
				return nil, fmt.Errorf("data %q is not JSON", value)
			}
		}
		if len(ev) > 0 {
			events = append(events, ev)
		}
	}
	return events, nil
}

// eventsAre checks a stream's events as "id:to".
func eventsAre(want ...string) func(t *testing.T, resp *http.Response, body []byte) {
	return func(t *testing.T, resp *http.Response, body []byte) {
		events, err := parseEvents(body)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ev := range events {
			var data struct{ To string }
			_ = json.Unmarshal([]byte(ev["data"].(string)), &data)
			got = append(got, fmt.Sprint(ev["id"], ":", data.To))
		}
		if !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	}
}

// transitionOrder moves order id to status to, as the payment consumer would.
func transitionOrder(a api, id string, to order.Status, reason string) error {
	ctx := context.Background()
	return pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		_, err := postgres.NewStore(a.pool).Transition(ctx, tx, id, to, reason, uuid.NewString(), time.Now())
		return err
	})
}

func settleOrder(t *testing.T, a api, id string, to order.Status, reason string) {
	t.Helper()
	if err := transitionOrder(a, id, to, reason); err != nil {
		t.Fatal(err)
	}
}
