package consumer

import (
	"context"
	"fmt"
	"strconv"
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

// Watch registers the lag of group on the topics it reads, read through client in the
// background (metrics.Background; m's Registerer must be a Registry's): each partition's
// end (high-water mark) minus the group's committed offset. Every outcome's series of
// those topics starts at 0, so the first record of an outcome shows as an increase (a
// dead letter included) rather than as a new series; the handling time, the records in
// flight and the paused partitions are there from the start too.
func (m *Metrics) Watch(group string, topics []string, client sarama.Client) error {
	for _, t := range topics {
		for _, o := range []string{OutcomeApplied, OutcomeDuplicate, OutcomeRetried, OutcomeDeadLettered} {
			m.records.WithLabelValues(group, t, o)
		}
		m.handling.WithLabelValues(group, t)
	}
	m.inFlight.WithLabelValues(group)
	m.paused.WithLabelValues(group)
	l := &lag{group: group, topics: topics, client: client, parts: map[string][]int32{}}
	for _, t := range topics {
		// The client has just read the cluster's metadata: the partitions come from it.
		if ps, err := client.Partitions(t); err == nil {
			l.parts[t] = ps
		}
	}
	return metrics.Background(m.reg, metrics.Reading{
		Name: "consumer_lag:" + group, Descs: []*prometheus.Desc{lagDesc}, Read: l.read, Unread: l.unknown(),
	})
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
	parts  map[string][]int32 // the partitions of the last reading; only read touches it after Watch
}

var lagDesc = prometheus.NewDesc(metrics.Namespace+"_consumer_lag_records",
	"Records a consumer group has still to commit on a partition: its end (high-water mark) minus the committed offset, "+
		"as of the last reading; NaN while it cannot be read.",
	[]string{"group", "topic", "partition"}, nil)

// unknown is the lag of every partition known, at NaN. A reading that fails serves it
// rather than the last values: the recording rule in deploy/prometheus/alerts.yml takes
// each partition's max over the replicas, and PromQL's max skips NaN, so a replica that
// cannot read shows nothing there while another reads the partition; an old number kept
// would win the max whenever it is the larger and hide a lag that grows.
func (l *lag) unknown() []prometheus.Metric {
	var out []prometheus.Metric
	for _, t := range l.topics {
		for _, p := range l.parts[t] {
			out = append(out, metrics.NaN(lagDesc, l.group, t, itoa(p)))
		}
	}
	return out
}

// read returns the lag of every partition of the group's topics: the committed offsets
// in one request to the coordinator, the ends (and, where nothing is committed, the
// starts) in one request to each leader, not one a partition — a request may wait
// behind a consumer's fetch on the same connection. The client takes no context: its
// own timeouts bound the reading.
func (l *lag) read(context.Context) ([]prometheus.Metric, error) {
	parts := map[string][]int32{}
	for _, t := range l.topics {
		ps, err := l.client.Partitions(t)
		if err != nil {
			return l.unknown(), err
		}
		parts[t] = ps
	}
	l.parts = parts
	coord, err := l.client.Coordinator(l.group)
	if err != nil {
		return l.unknown(), err
	}
	resp, err := coord.FetchOffset(sarama.NewOffsetFetchRequest(l.client.Config().Version, l.group, parts))
	if err != nil {
		return l.unknown(), err
	}
	committed := map[string]map[int32]int64{}
	var unset map[string][]int32
	for t, ps := range parts {
		committed[t] = map[int32]int64{}
		for _, p := range ps {
			if b := resp.GetBlock(t, p); b != nil && b.Err == sarama.ErrNoError && b.Offset >= 0 {
				committed[t][p] = b.Offset
				continue
			}
			if unset == nil {
				unset = map[string][]int32{}
			}
			unset[t] = append(unset[t], p)
		}
	}
	ends, err := l.offsets(parts, sarama.OffsetNewest)
	if err != nil {
		return l.unknown(), err
	}
	// Nothing committed yet: all that is kept is to do.
	starts, err := l.offsets(unset, sarama.OffsetOldest)
	if err != nil {
		return l.unknown(), err
	}
	var out []prometheus.Metric
	for _, t := range l.topics {
		for _, p := range parts[t] {
			c, ok := committed[t][p]
			if !ok {
				c = starts[t][p]
			}
			out = append(out, metrics.Const(lagDesc, prometheus.GaugeValue, float64(max(ends[t][p]-c, 0)), l.group, t, itoa(p)))
		}
	}
	return out, nil
}

// offsets asks each partition's leader for its offset at (newest or oldest), one
// request a leader.
func (l *lag) offsets(parts map[string][]int32, at int64) (map[string]map[int32]int64, error) {
	reqs := map[*sarama.Broker]*sarama.OffsetRequest{}
	for t, ps := range parts {
		for _, p := range ps {
			b, err := l.client.Leader(t, p)
			if err != nil {
				return nil, err
			}
			if reqs[b] == nil {
				reqs[b] = sarama.NewOffsetRequest(l.client.Config().Version)
			}
			reqs[b].AddBlock(t, p, at, 1)
		}
	}
	out := map[string]map[int32]int64{}
	for b, req := range reqs {
		resp, err := b.GetAvailableOffsets(req)
		if err != nil {
			_ = b.Close() // as the client's own GetOffset does: the next use reconnects
			return nil, err
		}
		for t, ps := range parts {
			for _, p := range ps {
				blk := resp.GetBlock(t, p)
				if blk == nil {
					continue // another leader's
				}
				if blk.Err != sarama.ErrNoError {
					return nil, fmt.Errorf("offset of %s/%d: %w", t, p, blk.Err)
				}
				if len(blk.Offsets) != 1 {
					return nil, fmt.Errorf("offset of %s/%d: %w", t, p, sarama.ErrIncompleteResponse)
				}
				if out[t] == nil {
					out[t] = map[int32]int64{}
				}
				out[t][p] = blk.Offsets[0]
			}
		}
	}
	for t, ps := range parts {
		for _, p := range ps {
			if _, ok := out[t][p]; !ok {
				return nil, fmt.Errorf("offset of %s/%d: %w", t, p, sarama.ErrIncompleteResponse)
			}
		}
	}
	return out, nil
}

func itoa(p int32) string { return strconv.FormatInt(int64(p), 10) }
