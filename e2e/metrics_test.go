package e2e

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/orderflow/devstack/testenv"
)

// Every service serves its metrics at GET /metrics without a token, named and typed as
// Prometheus's own lint wants them, with the series an operator reads: HTTP, database
// pool, outbox backlog, consumer records and lag, the Go runtime and the process, and
// each service's orders, payments or emails by status.
func TestEveryServiceServesItsMetrics(t *testing.T) {
	s := newStack(t, testenv.Kafka(t).Addrs, nil)
	o := s.placeOrder("tok_visa", "metrics@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	common := []string{
		"orderflow_http_requests_total", "orderflow_http_request_duration_seconds", "orderflow_db_pool_connections",
		"orderflow_outbox_rows_waiting", "orderflow_outbox_oldest_row_age_seconds", "orderflow_consumer_records_total",
		"orderflow_consumer_handler_duration_seconds", "orderflow_consumer_records_in_flight", "orderflow_consumer_lag_records",
		"go_goroutines", "process_cpu_seconds_total",
	}
	want := map[string][]string{
		"order": append(common, "orderflow_outbox_events_published_total", "orderflow_outbox_publish_latency_seconds",
			`orderflow_orders{service="order-service",status="CONFIRMED"} 1`, `orderflow_orders_oldest_pending_age_seconds{service="order-service"} 0`),
		"payment": append(common, "orderflow_outbox_events_published_total", "orderflow_outbox_publish_latency_seconds",
			`orderflow_payments{service="payment-service",status="COMPLETED"} 1`),
		"notification": append(common, `orderflow_notifications{kind="order_confirmed",service="notification-service",status="SENT"} 1`),
	}
	for name, names := range want {
		// The email goes out after the order is confirmed: scrape until every series is
		// there, or 10 s have passed.
		var body []byte
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			resp, err := http.Get(s.url(name, "/metrics")) // no token: open, as the README says
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s-service GET /metrics = %d", name, resp.StatusCode)
			}
			if !slices.ContainsFunc(names, func(n string) bool { return !strings.Contains(string(body), "\n"+n) }) || time.Now().After(deadline) {
				break
			}
		}
		problems, err := promlint.New(bytes.NewReader(body)).Lint()
		if err != nil {
			t.Fatalf("%s-service metrics do not parse: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s-service: %s: %s", name, p.Metric, p.Text)
		}
		text := string(body)
		for _, n := range names {
			if !strings.Contains(text, "\n"+n) {
				t.Errorf("%s-service does not serve %s", name, n)
			}
		}
		if !strings.Contains(text, `service="`+name+`-service"`) {
			t.Errorf("%s-service's series are not labelled with the service", name)
		}
		if !strings.Contains(text, `orderflow_consumer_records_total{group=`) || !strings.Contains(text, `outcome="applied"`) {
			t.Errorf("%s-service counted no applied record", name)
		}
	}
}
