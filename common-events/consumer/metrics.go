package consumer

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
)

// Outcomes of a record, as Metrics counts them.
const (
	OutcomeApplied      = "applied"       // its effect committed
	OutcomeDuplicate    = "duplicate"     // the inbox had it already: skipped
	OutcomeRetried      = "retried"       // an attempt failed transiently (counted per retry)
	OutcomeDeadLettered = "dead_lettered" // copied to the dead-letter topic
)

// Metrics are the consumer groups' of a service: records by outcome, handling time,
// records in flight, and each group's lag behind its partitions' ends.
type Metrics struct {
	records  *prometheus.CounterVec
	handling *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	paused   *prometheus.GaugeVec
	reg      prometheus.Registerer
}

// NewMetrics registers the consumer metrics with reg; Watch adds a group's lag.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "consumer", Name: "records_total",
			Help: "Records a consumer group handled, by group, topic and outcome (applied, duplicate, retried, dead_lettered).",
		}, []string{"group", "topic", "outcome"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "consumer", Name: "handler_duration_seconds",
			Help:    "One attempt at a record: the handler and the commit of its effect, by group and topic.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"group", "topic"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "consumer", Name: "records_in_flight",
			Help: "Records being handled, by group: their handler running, or waiting to retry.",
		}, []string{"group"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "consumer", Name: "partitions_paused",
			Help: "Partitions whose fetching is paused by back-pressure, by group: Concurrency records in flight, or MaxUncommitted taken past a stuck record.",
		}, []string{"group"}),
		reg: reg,
	}
	return m, metrics.Register(reg, m.records, m.handling, m.inFlight, m.paused)
}

// Watch registers the lag of group on the topics it reads, read through client when
// scraped: each partition's end (high-water mark) minus the group's committed offset.
// Every outcome's series of those topics starts at 0, so the first record of an outcome
// shows as an increase (a dead letter included) rather than as a new series.
func (m *Metrics) Watch(group string, topics []string, client sarama.Client) error {
	for _, t := range topics {
		for _, o := range []string{OutcomeApplied, OutcomeDuplicate, OutcomeRetried, OutcomeDeadLettered} {
			m.records.WithLabelValues(group, t, o)
		}
	}
	return metrics.Register(m.reg, &lag{group: group, topics: topics, client: client})
}

func (m *Metrics) outcome(group, topic, outcome string, n int) {
	if m != nil && n > 0 {
		m.records.WithLabelValues(group, topic, outcome).Add(float64(n))
	}
}

func (m *Metrics) handled(group, topic string, took time.Duration) {
	if m != nil {
		m.handling.WithLabelValues(group, topic).Observe(took.Seconds())
	}
}

func (m *Metrics) flight(group string, delta float64) {
	if m != nil {
		m.inFlight.WithLabelValues(group).Add(delta)
	}
}

func (m *Metrics) pause(group string, delta float64) {
	if m != nil {
		m.paused.WithLabelValues(group).Add(delta)
	}
}

type lag struct {
	group  string
	topics []string
	client sarama.Client

	// A reading runs in the background, one at a time: a scrape waits for it at most
	// lagWait, then serves the last reading that succeeded, so a slow broker delays the
	// lag by a scrape instead of failing it; a reading that fails (the broker is down)
	// clears it, so no stale lag is shown.
	running atomic.Bool
	mu      sync.Mutex
	last    []prometheus.Metric
}

// lagWait bounds how long a scrape waits for the broker's offsets, well inside
// Prometheus's default scrape timeout (10 s).
const lagWait = 3 * time.Second

var lagDesc = prometheus.NewDesc(metrics.Namespace+"_consumer_lag_records",
	"Records a consumer group has still to commit on a partition: its end (high-water mark) minus the committed offset.",
	[]string{"group", "topic", "partition"}, nil)

func (l *lag) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (l *lag) Collect(ch chan<- prometheus.Metric) {
	if l.running.CompareAndSwap(false, true) {
		done := make(chan struct{})
		go func() { // ends when the broker answers or the client's own timeouts pass
			defer l.running.Store(false)
			defer close(done)
			ms, err := l.read()
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.last = ms; err != nil {
				l.last = nil
			}
		}()
		select {
		case <-done:
		case <-time.After(lagWait):
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.last {
		ch <- m
	}
}

// read returns the lag of every partition of the group's topics.
func (l *lag) read() ([]prometheus.Metric, error) {
	fail := func(err error) ([]prometheus.Metric, error) { return nil, err }
	parts := map[string][]int32{}
	for _, t := range l.topics {
		ps, err := l.client.Partitions(t)
		if err != nil {
			return fail(err)
		}
		parts[t] = ps
	}
	coord, err := l.client.Coordinator(l.group)
	if err != nil {
		return fail(err)
	}
	resp, err := coord.FetchOffset(sarama.NewOffsetFetchRequest(l.client.Config().Version, l.group, parts))
	if err != nil {
		return fail(err)
	}
	var out []prometheus.Metric
	for t, ps := range parts {
		for _, p := range ps {
			end, err := l.client.GetOffset(t, p, sarama.OffsetNewest)
			if err != nil {
				return fail(err)
			}
			committed := int64(-1)
			if b := resp.GetBlock(t, p); b != nil && b.Err == sarama.ErrNoError {
				committed = b.Offset
			}
			if committed < 0 { // nothing committed yet: all that is kept is to do
				if committed, err = l.client.GetOffset(t, p, sarama.OffsetOldest); err != nil {
					return fail(err)
				}
			}
			out = append(out, metrics.Const(lagDesc, prometheus.GaugeValue, float64(max(end-committed, 0)), l.group, t, itoa(p)))
		}
	}
	return out, nil
}

func itoa(p int32) string { return strconv.FormatInt(int64(p), 10) }
