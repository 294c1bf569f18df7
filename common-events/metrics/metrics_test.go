package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// failing is a collector that cannot read what it measures, as the consumer lag cannot
// while the broker is down.
type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("broker down"))
}

// One collector that cannot read leaves out its own series, not the scrape: the others
// are served with 200.
func TestAFailingCollectorDoesNotFailTheScrape(t *testing.T) {
	r, err := metrics.New("svc")
	if err != nil {
		t.Fatal(err)
	}
	desc := prometheus.NewDesc("orderflow_unreadable", "Cannot be read.", nil, nil)
	if err := metrics.Register(r.Registerer("svc"), failing{desc}); err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	r.Serve(e)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, metrics.Path, nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK || !strings.Contains(string(body), "\ngo_goroutines{service=\"svc\"}") {
		t.Fatalf("GET /metrics = %d with a failing collector, want 200 with the other series:\n%.500s", rec.Code, body)
	}
	if strings.Contains(string(body), "orderflow_unreadable") {
		t.Error("the failing collector's series was served")
	}
}
