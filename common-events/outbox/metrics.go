package outbox

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/metrics"
)

// Metrics are the outbox's: what waits in it, and what the relay published and how long
// after it was written.
type Metrics struct {
	events  *prometheus.CounterVec
	latency prometheus.Histogram
}

// NewMetrics registers the outbox metrics of the database behind pool with reg, a
// Registry's Registerer: the backlog is read in the background (metrics.Background).
// source is the service whose events the relay publishes: each of its topics' count
// starts at 0, so its first event shows as an increase rather than as a new series.
func NewMetrics(reg prometheus.Registerer, pool *pgxpool.Pool, source string) (*Metrics, error) {
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
	for _, k := range events.Kinds() {
		if k.Source == source {
			m.events.WithLabelValues(k.Topic)
		}
	}
	if err := metrics.Register(reg, m.events, m.latency); err != nil {
		return nil, err
	}
	return m, metrics.Background(reg, metrics.Reading{
		Name: "outbox", Descs: []*prometheus.Desc{waitingDesc, oldestDesc}, Read: backlog{pool}.read,
		Unread: []prometheus.Metric{metrics.NaN(waitingDesc), metrics.NaN(oldestDesc)},
	})
}

func (m *Metrics) published(topic string, after time.Duration) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(topic).Inc()
	m.latency.Observe(after.Seconds())
}

// backlog reads how many rows wait in the outbox and how old the oldest is. Rows the
// broker acknowledged are deleted with the relay's next read, within 50 ms, so both
// count them for that long at most.
type backlog struct{ pool *pgxpool.Pool }

var (
	waitingDesc = prometheus.NewDesc(metrics.Namespace+"_outbox_rows_waiting", "Rows in the outbox not yet published, as of the last reading.", nil, nil)
	oldestDesc  = prometheus.NewDesc(metrics.Namespace+"_outbox_oldest_row_age_seconds",
		"Age of the oldest row in the outbox, as of the last reading; 0 when it is empty. Growing: the relay is not publishing.", nil, nil)
)

func (b backlog) read(ctx context.Context) ([]prometheus.Metric, error) {
	var n int64
	var age float64
	err := b.pool.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM outbox`).Scan(&n, &age)
	if err != nil {
		return nil, err
	}
	return []prometheus.Metric{
		metrics.Const(waitingDesc, prometheus.GaugeValue, float64(n)),
		metrics.Const(oldestDesc, prometheus.GaugeValue, age),
	}, nil
}
