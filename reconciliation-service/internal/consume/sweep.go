package consume

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// Sweeper looks, every Every, at the orders not settled: their mismatches past the grace
// are stored (and cleared when the facts caught up); an order with none, final, with
// nothing more to come, is settled and not looked at again until a new fact comes.
type Sweeper struct {
	Store *postgres.Store
	Grace reconcile.Grace
	Every time.Duration
	Log   *slog.Logger
	Now   func() time.Time // default time.Now

	open, oldest *prometheus.GaugeVec
	after        string // where the next pass goes on: more than a batch unsettled are looked at in turn
}

// sweepBatch bounds the orders one pass reads.
const sweepBatch = 1000

// Register adds the sweeper's gauges to reg: the open mismatches by kind, and the age of
// the oldest of each kind.
func (s *Sweeper) Register(reg prometheus.Registerer) error {
	s.open = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "reconciliation",
		Name: "mismatches", Help: "Open mismatches between what the services said about an order, by kind."}, []string{"kind"})
	s.oldest = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metrics.Namespace, Subsystem: "reconciliation",
		Name: "oldest_mismatch_seconds", Help: "How long the oldest open mismatch of each kind has held (0: none)."}, []string{"kind"})
	for _, k := range reconcile.Kinds() { // served from the first scrape
		s.open.WithLabelValues(string(k))
		s.oldest.WithLabelValues(string(k))
	}
	return metrics.Register(reg, s.open, s.oldest)
}

// Run sweeps until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	return every(ctx, s.Every, s.Log, "sweep", s.Sweep)
}

// All sweeps every order not settled, however many batches that takes: what a rebuild
// ends with.
func (s *Sweeper) All(ctx context.Context) error {
	s.after = ""
	for {
		if err := s.Sweep(ctx); err != nil {
			return err
		}
		if s.after == "" {
			return nil
		}
	}
}

// Sweep looks at the orders not settled once.
func (s *Sweeper) Sweep(ctx context.Context) error {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	reads, err := s.Store.Unsettled(ctx, s.after, sweepBatch)
	if err != nil {
		return err
	}
	s.after = ""
	if len(reads) == sweepBatch {
		s.after = reads[len(reads)-1].OrderID
	}
	var orders []string
	var settled []postgres.Read
	var found []reconcile.Mismatch
	for _, r := range reads {
		orders = append(orders, r.OrderID)
		ms := reconcile.Mismatches(r.Facts, s.Grace, now)
		found = append(found, ms...)
		if len(ms) == 0 && reconcile.Settled(r.Facts, s.Grace, now) {
			settled = append(settled, r)
		}
	}
	if err := s.Store.Found(ctx, orders, found, settled); err != nil {
		return err
	}
	if s.open == nil {
		return nil
	}
	counts, oldest, err := s.Store.Open(ctx)
	if err != nil {
		return err
	}
	for _, k := range reconcile.Kinds() {
		s.open.WithLabelValues(string(k)).Set(float64(counts[k]))
		age := 0.0
		if t, ok := oldest[k]; ok {
			age = now.Sub(t).Seconds()
		}
		s.oldest.WithLabelValues(string(k)).Set(age)
	}
	return nil
}
