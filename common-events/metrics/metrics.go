// Package metrics is a service's Prometheus registry and what every service measures the
// same way: its HTTP requests, its database pool, the Go runtime and the process. Served
// at GET /metrics (open: a scraper has no credentials, and nothing there names a
// customer). The outbox, the consumers and each service's domain register their own
// metrics on the same registry, next to the code they measure.
package metrics

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/orderflow/common-events/web"
)

// Namespace prefixes every orderflow metric.
const Namespace = "orderflow"

// Path is where every service serves its metrics.
const Path = "/metrics"

// Registry is one service's metrics.
type Registry struct {
	*prometheus.Registry
	// Interval is how often Run takes the readings registered with Background;
	// DefaultInterval when 0. Set it before Run.
	Interval time.Duration

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	readings readings
}

// New returns a registry holding the Go runtime's and the process's metrics and the HTTP
// request metrics, every series labelled with service.
func New(service string) (*Registry, error) {
	reg := prometheus.NewRegistry()
	r := &Registry{Registry: reg}
	wrapped := r.Registerer(service)
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests answered, by route (the pattern, not the path), method and status code.",
	}, []string{"route", "method", "code"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
		Help:    "Time to answer an HTTP request, by route and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "method"})
	return r, Register(wrapped, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.requests, r.latency, &r.readings)
}

// Register registers every collector with reg.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// Registerer is where a service's own metrics go: on this registry, labelled with the
// service like the rest. A Reading registered through it with Background is read by r's Run.
func (r *Registry) Registerer(service string) prometheus.Registerer {
	return registerer{prometheus.WrapRegistererWith(prometheus.Labels{"service": service}, r.Registry), r}
}

// registerer is a Registry's Registerer: Background finds the Registry through it.
type registerer struct {
	prometheus.Registerer
	r *Registry
}

// Serve adds the HTTP request metrics to e and serves the registry at Path.
func (r *Registry) Serve(e *echo.Echo) {
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err) // answer now, so the status is the one the client gets
			}
			route, method := web.Route(c), web.Method(c.Request())
			r.requests.WithLabelValues(route, method, strconv.Itoa(c.Response().Status)).Inc()
			r.latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return nil
		}
	})
	e.GET(Path, r.exposition())
}

// gatherFresh is how long one rendering of the registry serves the scrapes that follow it
// (at most Interval): a flood of scrapes costs one rendering a second, not one each, and a
// counter is at most that much behind.
const gatherFresh = time.Second

// exposition serves the registry in Prometheus's text format, rendered at most once every
// gatherFresh, one rendering at a time; the scrapes meanwhile are answered the last
// rendering's bytes. A collector that cannot give its series leaves them out; the rest
// are served. (What costs a query or a broker round trip is a Reading, served from
// memory.)
func (r *Registry) exposition() echo.HandlerFunc {
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var (
		mu   sync.Mutex
		at   time.Time
		body []byte
	)
	render := func() []byte {
		mu.Lock()
		defer mu.Unlock()
		fresh := gatherFresh
		if r.Interval > 0 {
			fresh = min(fresh, r.Interval)
		}
		if body != nil && time.Since(at) < fresh {
			return body
		}
		families, _ := r.Registry.Gather() // ContinueOnError: what could be gathered
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range families {
			_ = enc.Encode(mf)
		}
		body, at = buf.Bytes(), time.Now()
		return body
	}
	return func(c echo.Context) error {
		return c.Blob(http.StatusOK, string(format), render())
	}
}

// Pool registers pool's statistics: connections in use, idle and opening, the limit, how
// many were acquired, and how often and how long acquiring one waited.
func Pool(reg prometheus.Registerer, pool *pgxpool.Pool) error {
	return Register(reg, poolCollector{pool})
}

type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolConns = prometheus.NewDesc(Namespace+"_db_pool_connections", "Database connections in the pool, by state.", []string{"state"}, nil)
	poolMax   = prometheus.NewDesc(Namespace+"_db_pool_max_connections", "The most connections the pool opens.", nil, nil)
	poolTaken = prometheus.NewDesc(Namespace+"_db_pool_acquires_total", "Connections acquired from the pool: every query or transaction takes one.", nil, nil)
	poolWaits = prometheus.NewDesc(Namespace+"_db_pool_acquire_waits_total", "Acquisitions that had to wait for a connection.", nil, nil)
	poolWait  = prometheus.NewDesc(Namespace+"_db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection.", nil, nil)
)

func (p poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConns
	ch <- poolMax
	ch <- poolTaken
	ch <- poolWaits
	ch <- poolWait
}

func (p poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.pool.Stat()
	ch <- Const(poolConns, prometheus.GaugeValue, float64(s.AcquiredConns()), "in_use")
	ch <- Const(poolConns, prometheus.GaugeValue, float64(s.IdleConns()), "idle")
	ch <- Const(poolConns, prometheus.GaugeValue, float64(s.ConstructingConns()), "opening")
	ch <- Const(poolMax, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- Const(poolTaken, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- Const(poolWaits, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- Const(poolWait, prometheus.CounterValue, s.EmptyAcquireWaitTime().Seconds())
}

// Const is a metric of desc with value v, for a collector that reads its values when
// scraped; a mistake in its labels shows as a scrape error rather than a panic.
func Const(desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

// Tally registers a gauge read from the database in the background (a Reading named
// name): query returns one row per series, its label values (text) and then its value.
// Meant for counts a service keeps in its tables anyway (orders by status), which survive
// restarts, unlike counters. known are label values always served, at 0 when the query
// has no row for them, so that the first order of a status shows as a change of a series
// rather than as a new one; until the first reading they are NaN.
//
// A count is a scan of every row, whose cost grows with the table a long run fills:
// taken every Interval, it would take a growing share of the database's CPU. So a count
// that took d is taken again no sooner than 50·d after it started (at most 10 minutes
// later), keeping the database busy 2% of the time at most however large the table, its
// values as old as that; it runs in one backend, not with parallel workers, and may take
// 30 s.
func Tally(reg prometheus.Registerer, pool *pgxpool.Pool, name, help string, labels []string, query string, known ...[]string) error {
	t := &tally{pool: pool, query: query, labels: len(labels), known: known,
		desc: prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)}
	for _, k := range known {
		if len(k) != len(labels) {
			return fmt.Errorf("metrics: tally %s: known label values %q do not match the labels %q", name, k, labels)
		}
	}
	var unread []prometheus.Metric
	if len(labels) == 0 {
		unread = []prometheus.Metric{NaN(t.desc)}
	}
	for _, k := range known {
		unread = append(unread, NaN(t.desc, k...))
	}
	return Background(reg, Reading{Name: name, Descs: []*prometheus.Desc{t.desc}, Read: t.read, Unread: unread,
		Timeout: tallyTimeout, Spacing: t.spacing})
}

type tally struct {
	pool   *pgxpool.Pool
	query  string
	labels int
	known  [][]string
	desc   *prometheus.Desc
	took   atomic.Int64 // the last count's duration, waits for a connection aside
}

// tallyIdle is how many times a count's duration a tally rests after it started, up to
// tallyMaxSpacing; tallyTimeout bounds a count.
const (
	tallyIdle       = 50
	tallyMaxSpacing = 10 * time.Minute
	tallyTimeout    = 30 * time.Second
)

func (t *tally) spacing() time.Duration {
	return min(tallyIdle*time.Duration(t.took.Load()), tallyMaxSpacing)
}

// read counts in one backend: parallel workers would take several cores' time where the
// spacing counts one's. It times the count alone, whatever its outcome: a wait for a
// connection costs the database nothing.
func (t *tally) read(ctx context.Context) (out []prometheus.Metric, err error) {
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL max_parallel_workers_per_gather = 0`); err != nil {
			return err
		}
		start := time.Now()
		defer func() { t.took.Store(int64(time.Since(start))) }()
		rows, _ := tx.Query(ctx, t.query)
		out, err = t.scan(rows)
		return err
	})
	return out, err
}

func (t *tally) scan(rows pgx.Rows) ([]prometheus.Metric, error) {
	defer rows.Close()
	var out []prometheus.Metric
	seen := map[string]bool{}
	for rows.Next() {
		labels := make([]string, t.labels)
		var v float64
		dest := make([]any, 0, t.labels+1)
		for i := range labels {
			dest = append(dest, &labels[i])
		}
		if err := rows.Scan(append(dest, &v)...); err != nil {
			return nil, err
		}
		seen[strings.Join(labels, "\x00")] = true
		out = append(out, Const(t.desc, prometheus.GaugeValue, v, labels...))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, k := range t.known {
		if !seen[strings.Join(k, "\x00")] {
			out = append(out, Const(t.desc, prometheus.GaugeValue, 0, k...))
		}
	}
	return out, nil
}
