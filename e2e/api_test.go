package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/devstack/testenv"
)

// consumerOf returns the instance whose log says it moved the order: the one that
// consumed its payment event.
func consumerOf(b *testenv.LogBuffer, orderID string) []string {
	var who []string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, line, ok := strings.Cut(sc.Text(), " | ")
		if !ok {
			continue
		}
		var rec struct {
			Msg     string `json:"msg"`
			OrderID string `json:"order_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "order status changed" && rec.OrderID == orderID {
			who = append(who, strings.TrimSpace(name))
		}
	}
	return who
}

// send makes one request with headers given as name, value pairs and returns the status,
// the headers and the body.
func send(t *testing.T, method, url, body string, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := client.Do(newRequest(t, context.Background(), method, url, body, headers...))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// newRequest builds a request with headers given as name, value pairs.
func newRequest(t *testing.T, ctx context.Context, method, url, body string, headers ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// Two order-service instances share the database and the consumer group. A request
// waiting on one instance is answered when the other consumes the payment event: each
// order's GET waits on both instances, so for every order one of the two waits on the
// instance that did not consume.
func TestScenarioPreferWaitAcrossInstances(t *testing.T) {
	parallel(t)
	logs := &testenv.LogBuffer{}
	tg := newLoggedTarget(t, map[string]map[string]string{
		"order-service":   {"LOG_LEVEL": "info"},
		"payment-service": {"PROVIDER_LATENCY": "1s"}, // orders stay pending long enough to wait on
	}, logs)
	second, err := tg.control().AddInstance(context.Background(), "order-service", testenv.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	instances := map[string]string{"order-service": tg.order, second.Name: second.URL}

	type answer struct {
		status  int
		order   orderResp
		applied string
	}
	const orders = 6
	answers := make([]map[string]answer, orders)
	ids := make([]string, orders)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range orders {
		p, err := tg.place("tok_visa")
		if err != nil {
			t.Fatal(err)
		}
		ids[i], answers[i] = p.ID, map[string]answer{}
		for name, url := range instances {
			wg.Go(func() {
				status, h, body := send(t, http.MethodGet, url+"/orders/"+p.ID, "", "Prefer", "wait=30")
				var o orderResp
				_ = json.Unmarshal(body, &o)
				mu.Lock()
				answers[i][name] = answer{status, o, h.Get("Preference-Applied")}
				mu.Unlock()
			})
		}
	}
	wg.Wait()

	crossed := 0
	for i, id := range ids {
		// The line is logged once the decision committed, so it may come a moment after
		// the answers that the commit woke.
		var consumers []string
		testenv.Eventually(5*time.Second, 50*time.Millisecond, func() bool { consumers = consumerOf(logs, id); return len(consumers) > 0 })
		if len(consumers) != 1 {
			t.Fatalf("order %s was moved by %v, want exactly one instance", id, consumers)
		}
		for name, a := range answers[i] {
			if a.status != http.StatusOK || a.order.Status != "CONFIRMED" || a.applied != "wait=30" {
				t.Errorf("order %s on %s (consumer %s): %d %s, Preference-Applied %q; want 200 CONFIRMED, wait=30",
					id, name, consumers[0], a.status, a.order.Status, a.applied)
			}
			if name != consumers[0] {
				crossed++
			}
		}
	}
	if crossed != orders {
		t.Errorf("%d of %d waits were on the instance that did not consume, want all", crossed, orders)
	}

	// The POST can wait too, on either instance: 201 with the final order.
	for name, url := range instances {
		status, h, body := send(t, http.MethodPost, url+"/orders", orderBody("wait@example.com", "tok_chargeDeclined"),
			"Content-Type", "application/json", "Prefer", "wait=30")
		var o orderResp
		_ = json.Unmarshal(body, &o)
		if status != http.StatusCreated || o.Status != "PAYMENT_FAILED" || o.FailureReason != "card_declined" ||
			h.Get("Location") != "/orders/"+o.ID || h.Get("Preference-Applied") != "wait=30" {
			t.Errorf("POST on %s with Prefer: wait=30 = %d %+v, headers %v", name, status, o, h)
		}
	}
}

type statusEvent struct {
	ID   string
	From string `json:"from"`
	To   string `json:"to"`
}

// readStream reads a Server-Sent Events stream to its end.
func readStream(t *testing.T, url string, headers ...string) []statusEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := client.Do(newRequest(t, ctx, http.MethodGet, url, "", headers...))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var out []statusEvent
	var ev statusEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatal(err)
			}
		case line == "" && ev.To != "":
			out = append(out, ev)
			ev = statusEvent{}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("stream %s: %v", url, err)
	}
	return out
}

// A customer watching an order sees each change as it happens; the stream ends with the
// final one.
func TestScenarioLiveStatusStream(t *testing.T) {
	parallel(t)
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": "1s"}})
	p, err := tg.place("tok_visa")
	if err != nil {
		t.Fatal(err)
	}
	got := readStream(t, tg.order+"/orders/"+p.ID+"/events")
	if fmt.Sprint(got) != fmt.Sprint([]statusEvent{{"1", "", "PENDING_PAYMENT"}, {"2", "PENDING_PAYMENT", "CONFIRMED"}}) {
		t.Errorf("events = %+v, want PENDING_PAYMENT then CONFIRMED", got)
	}
	if again := readStream(t, tg.order+"/orders/"+p.ID+"/events", "Last-Event-ID", "1"); len(again) != 1 || again[0].To != "CONFIRMED" {
		t.Errorf("resumed after event 1: %+v, want only CONFIRMED", again)
	}
}

// eventually retries check for up to 30 s; it reports the last complaint.
func eventually(t *testing.T, check func() string) {
	t.Helper()
	var complaint string
	if !testenv.Eventually(30*time.Second, 200*time.Millisecond, func() bool { complaint = check(); return complaint == "" }) {
		t.Fatal(complaint)
	}
}

// The customer cancels while the provider is already charging: the order stays
// CANCELLED, the charge is refunded once, and the customer hears "cancelled" and
// "cancelled and refunded", never "confirmed".
func TestScenarioCancelAfterPaymentIsRefunded(t *testing.T) {
	parallel(t)
	tg := newTarget(t, map[string]map[string]string{"payment-service": {"PROVIDER_LATENCY": "3s"}})
	p, err := tg.place("tok_visa")
	if err != nil {
		t.Fatal(err)
	}
	// Half way through the provider's latency the charge is on its ledger, but payment
	// has not recorded it yet: the order is still pending.
	eventually(t, func() string {
		if n := tg.chargesOf(p.ID); n != 1 {
			return fmt.Sprintf("the provider has %d charges for the order, want 1", n)
		}
		return ""
	})
	status, _, body := send(t, http.MethodPost, tg.order+"/orders/"+p.ID+"/cancel", "")
	if status != http.StatusOK || !strings.Contains(string(body), `"status":"CANCELLED"`) {
		t.Fatalf("cancel = %d %s", status, body)
	}

	eventually(t, func() string {
		ps := tg.paymentsOf(p.ID)
		if len(ps) != 1 || ps[0].Status != "REFUNDED" {
			return fmt.Sprintf("payments = %+v, want one REFUNDED", ps)
		}
		ns := map[string]string{}
		for _, n := range tg.notificationsOf(p.ID) {
			ns[n.Kind] = n.Status
		}
		if ns["order_cancelled"] != "SENT" || ns["payment_refunded"] != "SENT" || ns["order_confirmed"] != "SUPPRESSED" {
			return fmt.Sprintf("notifications = %v, want cancelled and refunded sent, confirmed suppressed", ns)
		}
		return ""
	})
	if o := tg.status(p.ID); o.Status != "CANCELLED" {
		t.Errorf("order = %s, want CANCELLED", o.Status)
	}
	if n := tg.chargesOf(p.ID); n != 1 {
		t.Errorf("%d charges, want 1", n)
	}
	var refunds listResp[json.RawMessage]
	tg.list(tg.payment+"/provider/refunds?order_id="+p.ID, &refunds)
	if len(refunds.Items) != 1 {
		t.Errorf("%d refunds at the provider, want 1", len(refunds.Items))
	}
	if tg.mail != nil {
		var subjects []string
		for _, e := range tg.mail.To(p.Email) {
			subjects = append(subjects, e.Subject)
		}
		if len(subjects) != 2 || !strings.HasSuffix(subjects[0], "is cancelled") || !strings.HasSuffix(subjects[1], "is cancelled and refunded") {
			t.Errorf("emails = %q, want cancelled, then cancelled and refunded", subjects)
		}
	}

	// A decided order cannot be cancelled.
	status, h, body := send(t, http.MethodPost, tg.order+"/orders", orderBody("kept@example.com", "tok_visa"),
		"Content-Type", "application/json", "Prefer", "wait=30")
	var o orderResp
	_ = json.Unmarshal(body, &o)
	if status != http.StatusCreated || o.Status != "CONFIRMED" {
		t.Fatalf("POST with wait = %d %s %v", status, body, h)
	}
	status, h, body = send(t, http.MethodPost, tg.order+"/orders/"+o.ID+"/cancel", "")
	if status != http.StatusConflict || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "order_not_cancellable") {
		t.Errorf("cancel of a CONFIRMED order = %d %s", status, body)
	}
}

// Cancelled before payment-service ever saw it: whichever of order.created and
// order.cancelled it reads first, the customer is never charged, or charged and refunded
// once; never confirmed.
func TestScenarioCancelBeforePayment(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	tg.stopService("payment-service")
	p, err := tg.place("tok_visa")
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := send(t, http.MethodPost, tg.order+"/orders/"+p.ID+"/cancel", ""); status != http.StatusOK {
		t.Fatalf("cancel = %d %s", status, body)
	}
	tg.startService("payment-service")
	eventually(t, func() string {
		ps := tg.paymentsOf(p.ID)
		charges := tg.chargesOf(p.ID)
		switch {
		case len(ps) == 1 && ps[0].Status == "CANCELLED" && charges == 0:
		case len(ps) == 1 && ps[0].Status == "REFUNDED" && charges == 1:
		default:
			return fmt.Sprintf("payments %+v with %d charges, want never charged or refunded", ps, charges)
		}
		for _, n := range tg.notificationsOf(p.ID) {
			if n.Kind == "order_confirmed" && n.Status == "SENT" {
				return "a cancelled order was confirmed"
			}
		}
		return ""
	})
	if o := tg.status(p.ID); o.Status != "CANCELLED" {
		t.Errorf("order = %s, want CANCELLED", o.Status)
	}
}

// Bad input to any endpoint of the running stack is a problem+json with a 4xx status,
// never a 500, and changes nothing.
func TestScenarioBadInputIsAProblem(t *testing.T) {
	parallel(t)
	tg := newTarget(t, nil)
	const unknown = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	huge := strings.Repeat("x", 2<<20)
	tests := []struct {
		name, method, url, body string
		headers                 []string
		status                  int
		code                    string
	}{
		{"malformed JSON", "POST", tg.order + "/orders", `{"customer_id":`, []string{"Content-Type", "application/json"}, 400, "malformed_json"},
		{"missing body", "POST", tg.order + "/orders", ``, []string{"Content-Type", "application/json"}, 400, "malformed_json"},
		{"not JSON", "POST", tg.order + "/orders", `customer_id=1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"oversized body", "POST", tg.order + "/orders", `{"customer_id":"` + huge + `"}`, []string{"Content-Type", "application/json"}, 413, "body_too_large"},
		{"wrong types", "POST", tg.order + "/orders", `{"customer_id":1,"items":"many"}`, []string{"Content-Type", "application/json"}, 422, "validation"},
		{"missing fields", "POST", tg.order + "/orders", `{}`, []string{"Content-Type", "application/json"}, 422, "validation"},
		{"bad idempotency key", "POST", tg.order + "/orders", orderBody("a@example.com", "tok_visa"), []string{"Content-Type", "application/json", "Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid_idempotency_key"},
		{"listing: wrong types", "GET", tg.order + "/orders?limit=lots&status=SHIPPED&customer_id=7&cursor=%25%25", "", nil, 422, "validation"},
		{"order: malformed id", "GET", tg.order + "/orders/not-an-id", "", nil, 404, "not_found"},
		{"order: unknown id", "GET", tg.order + "/orders/" + unknown, "", []string{"Prefer", "wait=5"}, 404, "not_found"},
		{"history: unknown id", "GET", tg.order + "/orders/" + unknown + "/history", "", nil, 404, "not_found"},
		{"events: unknown id", "GET", tg.order + "/orders/" + unknown + "/events", "", nil, 404, "not_found"},
		{"cancel: unknown id", "POST", tg.order + "/orders/" + unknown + "/cancel", "", nil, 404, "not_found"},
		{"cancel: wrong method", "DELETE", tg.order + "/orders/" + unknown + "/cancel", "", nil, 405, "method_not_allowed"},
		{"unknown route", "GET", tg.order + "/nope", "", nil, 404, "not_found"},
		{"payments: missing order id", "GET", tg.payment + "/payments", "", nil, 422, "validation"},
		{"payments: malformed order id", "GET", tg.payment + "/payments?order_id=" + strings.Repeat("9", 10000), "", nil, 422, "validation"},
		{"charges: malformed order id", "GET", tg.payment + "/provider/charges?order_id=true", "", nil, 422, "validation"},
		{"refunds: malformed order id", "GET", tg.payment + "/provider/refunds?order_id='--", "", nil, 422, "validation"},
		{"notifications: missing order id", "GET", tg.notification + "/notifications", "", nil, 422, "validation"},
		{"notifications: wrong method", "POST", tg.notification + "/notifications?order_id=" + unknown, "{}", nil, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := send(t, tt.method, tt.url, tt.body, tt.headers...)
			var p struct {
				Status int    `json:"status"`
				Code   string `json:"code"`
				Title  string `json:"title"`
				Detail string `json:"detail"`
			}
			if err := json.Unmarshal(body, &p); err != nil || status != tt.status || h.Get("Content-Type") != "application/problem+json" ||
				p.Status != tt.status || p.Code != tt.code || p.Title == "" || p.Detail == "" {
				t.Errorf("%s %s = %d %s %s, want a %d %s problem", tt.method, tt.url[:min(len(tt.url), 80)], status, h.Get("Content-Type"), body[:min(len(body), 300)], tt.status, tt.code)
			}
		})
	}
	// The API describes itself, as the document the tests keep true.
	status, h, spec := send(t, http.MethodGet, tg.order+"/openapi.yaml", "")
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/yaml") ||
		!bytes.Contains(spec, []byte("openapi: 3.1.0")) || !bytes.Contains(spec, []byte("/orders/{id}/cancel:")) {
		t.Errorf("GET /openapi.yaml = %d %s, %d bytes", status, h.Get("Content-Type"), len(spec))
	}

	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	tg.list(tg.order+"/orders", &page)
	if len(page.Items) != 0 {
		t.Errorf("bad requests created %d orders", len(page.Items))
	}
}
