package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/devstack/testenv"
)

// A database the service cannot reach is its trouble, not the request's: every endpoint
// of every service answers 503 problem+json with Retry-After and a code naming the kind of
// failure, never the address; once the database is back, the same requests work, and an
// order placed again with its Idempotency-Key exists once.
func TestADatabaseOutageIsAnHonest503(t *testing.T) {
	parallel(t)
	proxies, extra := map[string]*testenv.Proxy{}, map[string]map[string]string{}
	for _, name := range []string{"order", "payment", "notification"} {
		u, err := url.Parse(testenv.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		proxies[name] = testenv.NewProxy(t, u.Host)
		u.Host = proxies[name].Addr
		extra[name] = map[string]string{"DATABASE_URL": u.String()}
	}
	s := newStack(t, testenv.Kafka(t), extra)
	o := s.placeOrder("tok_visa", "outage@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}

	type call struct{ service, method, path, body string }
	calls := []call{
		{"order", http.MethodPost, "/orders", orderBody("outage@example.com", "tok_visa")},
		{"order", http.MethodGet, "/orders", ""},
		{"order", http.MethodGet, "/orders/" + o.ID, ""},
		{"order", http.MethodGet, "/orders/" + o.ID + "/history", ""},
		{"order", http.MethodGet, "/orders/" + o.ID + "/events", ""},
		{"order", http.MethodPost, "/orders/" + o.ID + "/cancel", ""},
		{"payment", http.MethodGet, "/payments?order_id=" + o.ID, ""},
		{"payment", http.MethodGet, "/provider/charges?order_id=" + o.ID, ""},
		{"payment", http.MethodGet, "/provider/refunds?order_id=" + o.ID, ""},
		{"notification", http.MethodGet, "/notifications?order_id=" + o.ID, ""},
	}
	for _, p := range proxies {
		p.Cut()
	}
	for _, c := range calls {
		status, h, body := send(t, c.method, s.url(c.service, c.path), c.body, "Content-Type", "application/json", "Idempotency-Key", "outage-1")
		var p struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &p)
		if status != http.StatusServiceUnavailable || h.Get("Content-Type") != "application/problem+json" ||
			h.Get("Retry-After") == "" || p.Code != "database_unavailable" {
			t.Errorf("%s %s on %s-service with its database cut = %d %q (Retry-After %q), want 503 database_unavailable with Retry-After",
				c.method, c.path, c.service, status, body, h.Get("Retry-After"))
		}
		if addr := proxies[c.service].Addr; strings.Contains(string(body), addr) || strings.Contains(string(body), "postgres") {
			t.Errorf("%s %s: the answer names the database: %s", c.method, c.path, body)
		}
	}
	if status, _, _ := send(t, http.MethodGet, s.url("order", "/healthz"), ""); status != http.StatusOK {
		t.Errorf("GET /healthz = %d while the database is cut, want 200: the process is alive", status)
	}

	for _, p := range proxies {
		p.Restore()
	}
	// The pool reconnects on the next request; the client retries as told.
	var placed string
	testenv.Eventually(30*time.Second, 500*time.Millisecond, func() bool {
		status, h, _ := send(t, http.MethodPost, s.url("order", "/orders"), orderBody("outage@example.com", "tok_visa"),
			"Content-Type", "application/json", "Idempotency-Key", "outage-1")
		if status == http.StatusAccepted {
			placed = strings.TrimPrefix(h.Get("Location"), "/orders/")
		}
		return placed != ""
	})
	if placed == "" {
		t.Fatal("POST /orders did not succeed within 30 s of the database coming back")
	}
	if got := s.waitStatus(placed, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("the order placed after the outage = %s, want CONFIRMED", got.Status)
	}
	for _, c := range calls[1:] {
		if c.method != http.MethodGet || strings.HasSuffix(c.path, "/events") {
			continue
		}
		// A connection the pool held from before the outage may be found dead by the
		// first request to take it (the pool pings only those idle for over a second): an
		// honest 503, which the client retries as told.
		status, _, body := send(t, c.method, s.url(c.service, c.path), "")
		testenv.Eventually(10*time.Second, 500*time.Millisecond, func() bool {
			if status == http.StatusServiceUnavailable {
				status, _, body = send(t, c.method, s.url(c.service, c.path), "")
			}
			return status != http.StatusServiceUnavailable
		})
		if status != http.StatusOK {
			t.Errorf("%s %s after the outage = %d %s, want 200", c.method, c.path, status, body)
		}
	}
}
