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
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.Log.Warn("reconciliation sweep", "err", err)
			}
		}
	}
}

// Sweep looks at the orders not settled once.
func (s *Sweeper) Sweep(ctx context.Context) error {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	facts, err := s.Store.Unsettled(ctx, sweepBatch)
	if err != nil {
		return err
	}
	var orders, settled []string
	var found []reconcile.Mismatch
	for _, f := range facts {
		orders = append(orders, f.OrderID)
		ms := reconcile.Mismatches(f, s.Grace, now)
		found = append(found, ms...)
		if len(ms) == 0 && reconcile.Settled(f, s.Grace, now) {
			settled = append(settled, f.OrderID)
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
