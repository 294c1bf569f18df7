package consume

import (
	"context"
	"log/slog"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/payment-service/internal/payment"
)

// Sweeper ends the payments whose outcome the provider was to tell later and has not by
// the payment deadline: what the provider holds decides (Lookup, which calls off a charge
// still waiting there), recorded through the Settler like a webhook, once per payment.
// Without it a payment left pending — a webhook lost, or none configured — would keep its
// order waiting for ever. Each sweep goes on where the last left off, so payments the
// provider cannot settle yet do not keep the others waiting.
type Sweeper struct {
	Settle   Settler // its Store finds the payments
	Provider payment.Provider
	Deadline time.Duration // after the payment's claim, when its order.created was first handled
	Every    time.Duration // how often to look; default a tenth of Deadline, 1 s to 1 min
	Log      *slog.Logger

	afterAt time.Time // the last payment swept, where the next sweep goes on
	afterID string
}

// sweepBatch bounds the payments one sweep settles.
const sweepBatch = 100

// Run sweeps until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	every := s.Every
	if every <= 0 {
		every = min(max(s.Deadline/10, time.Second), time.Minute)
	}
	return platform.Every(ctx, every, func(ctx context.Context) { s.Sweep(ctx) })
}

// Sweep settles the payments waiting past the deadline now, and says how many moved.
func (s *Sweeper) Sweep(ctx context.Context) int {
	ps, err := s.Settle.Store.Waiting(ctx, time.Now().Add(-s.Deadline), s.afterAt, s.afterID, sweepBatch)
	if err != nil {
		s.Log.Warn("sweep of pending payments", "err", err)
		return 0
	}
	if len(ps) < sweepBatch { // round: the next sweep starts from the first again
		s.afterAt, s.afterID = time.Time{}, ""
	} else {
		s.afterAt, s.afterID = ps[len(ps)-1].CreatedAt, ps[len(ps)-1].ID
	}
	moved := 0
	for _, p := range ps {
		charge, found, err := askProvider(ctx, s.Provider, p.OrderID, events.ReasonProviderUnavailable)
		if err != nil {
			s.Log.Warn("a pending payment past its deadline: the provider cannot say yet", "order_id", p.OrderID, "payment_id", p.ID, "err", err)
			continue
		}
		ok, err := s.Settle.Charged(ctx, "deadline-"+p.ID, p.OrderID, charge)
		if err != nil {
			s.Log.Warn("a pending payment past its deadline: recording its outcome", "order_id", p.OrderID, "payment_id", p.ID, "err", err)
			continue
		}
		if ok {
			moved++
			s.Log.Warn("a pending payment past its deadline, settled by the provider's records", "order_id", p.OrderID,
				"payment_id", p.ID, "charge_found", found, "succeeded", charge.Succeeded)
		}
	}
	return moved
}
