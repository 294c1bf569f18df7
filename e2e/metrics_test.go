package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orderflow/devstack/testenv"
)

// Every service serves its metrics at GET /metrics without a token, named and typed as
// Prometheus's own lint wants them, with the series an operator reads: HTTP, database
// pool, outbox backlog, consumer records and lag, the Go runtime and the process, and
// each service's orders, payments or emails by status. Every metric the compose stack's
// alert rules and dashboard read is among them.
func TestEveryServiceServesItsMetrics(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), nil)
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
			`orderflow_orders{service="order-service",status="CONFIRMED"} 1`, `orderflow_orders_oldest_pending_age_seconds{service="order-service"} 0`,
			`orderflow_order_decision_seconds_count{service="order-service",status="CONFIRMED"} 1`),
		"payment": append(common, "orderflow_outbox_events_published_total", "orderflow_outbox_publish_latency_seconds",
			`orderflow_payments{service="payment-service",status="COMPLETED"} 1`),
		"notification": append(common, "orderflow_outbox_events_published_total",
			`orderflow_notifications{kind="order_confirmed",service="notification-service",status="SENT"} 1`),
		"reconciliation": append(common, `orderflow_reconciliation_mismatches{kind="confirmed_without_payment",service="reconciliation-service"} 0`,
			`orderflow_reconciliation_oldest_mismatch_seconds{kind="final_without_email",service="reconciliation-service"} 0`),
	}
	served := map[string]bool{}
	for name, names := range want {
		// GOGC and GOMEMLIMIT, the services' defaults (64 MiB)
		names = append(names, `go_gc_gogc_percent{service="`+name+`-service"} 300`, `go_gc_gomemlimit_bytes{service="`+name+`-service"} 6.7108864e+07`)
		// The email goes out after the order is confirmed, and reconciliation hears of it
		// after that: scrape until every series is there and a record was applied, or
		// 10 s have passed.
		var body []byte
		testenv.Eventually(10*time.Second, 100*time.Millisecond, func() bool {
			resp, err := http.Get(s.url(name, "/metrics")) // no token: open, as docs/security.md says
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s-service GET /metrics = %d", name, resp.StatusCode)
			}
			return !slices.ContainsFunc(names, func(n string) bool { return !strings.Contains(string(body), "\n"+n) }) &&
				appliedOne(string(body))
		})
		problems, err := promlint.New(bytes.NewReader(body)).Lint()
		if err != nil {
			t.Fatalf("%s-service metrics do not parse: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s-service: %s: %s", name, p.Metric, p.Text)
		}
		for n := range families(t, body) {
			served[n] = true
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
		if !appliedOne(text) {
			t.Errorf("%s-service counted no applied record", name)
		}
	}

	root := testenv.Root(t)
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range unserved(p, served) {
		t.Error(err)
	}
	// The check sees a rule that reads a metric no service serves.
	dir := copyContext(t, root)
	rules := filepath.Join(dir, "deploy", "prometheus", "alerts.yml")
	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	bogus := "      - record: orderflow:bogus\n        expr: sum(orderflow_no_such_metric_total)\n"
	if err := os.WriteFile(rules, append(b, bogus...), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err = loadCompose(t, dir, "docker-compose.yml"); err != nil {
		t.Fatal(err)
	}
	if errs := unserved(p, served); !slices.ContainsFunc(errs, func(err error) bool {
		return strings.Contains(err.Error(), "rule orderflow:bogus read orderflow_no_such_metric_total, which no service serves")
	}) {
		t.Errorf("a rule reading orderflow_no_such_metric_total passed the check: %v", errs)
	}
}

// families are the names of the series body serves: each family's, and a histogram's
// or a summary's _bucket, _sum and _count.
func families(t *testing.T, body []byte) map[string]bool {
	t.Helper()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	names := map[string]bool{}
	for name, f := range fams {
		names[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

// appliedOne reports whether metrics count an applied record: every outcome's series
// starts at 0, so one of the applied ones must have moved.
func appliedOne(metrics string) bool {
	return slices.ContainsFunc(strings.Split(metrics, "\n"), func(line string) bool {
		return strings.HasPrefix(line, "orderflow_consumer_records_total{") && strings.Contains(line, `outcome="applied"`) && !strings.HasSuffix(line, " 0")
	})
}
