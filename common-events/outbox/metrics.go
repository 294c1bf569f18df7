package outbox

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// Metrics are the outbox's: what waits in it, and what the relay published and how long
// after it was written.
type Metrics struct {
	events  *prometheus.CounterVec
	latency prometheus.Histogram
}

// NewMetrics registers the outbox metrics of the database behind pool with reg.
func NewMetrics(reg prometheus.Registerer, pool *pgxpool.Pool) (*Metrics, error) {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "outbox", Name: "events_published_total",
			Help: "Events the relay published (acknowledged by the broker), by topic.",
		}, []string{"topic"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "outbox", Name: "publish_latency_seconds",
			Help:    "From an event's outbox row being written to the broker acknowledging it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	return m, metrics.Register(reg, m.events, m.latency, backlog{pool})
}

func (m *Metrics) published(topic string, after time.Duration) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(topic).Inc()
	m.latency.Observe(after.Seconds())
}

// backlog reads, when scraped, how many rows wait in the outbox and how old the oldest
// is. Rows the broker acknowledged are deleted with the relay's next read, within 50 ms,
// so both count them for that long at most.
type backlog struct{ pool *pgxpool.Pool }

var (
	waitingDesc = prometheus.NewDesc(metrics.Namespace+"_outbox_rows_waiting", "Rows in the outbox not yet published.", nil, nil)
	oldestDesc  = prometheus.NewDesc(metrics.Namespace+"_outbox_oldest_row_age_seconds",
		"Age of the oldest row in the outbox; 0 when it is empty. Growing: the relay is not publishing.", nil, nil)
)

func (b backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- waitingDesc
	ch <- oldestDesc
}

func (b backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var n int64
	var age float64
	err := b.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM outbox`).Scan(&n, &age)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(waitingDesc, err)
		ch <- prometheus.NewInvalidMetric(oldestDesc, err)
		return
	}
	ch <- metrics.Const(waitingDesc, prometheus.GaugeValue, float64(n))
	ch <- metrics.Const(oldestDesc, prometheus.GaugeValue, age)
}
