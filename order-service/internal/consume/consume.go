// Package consume applies payment outcomes to orders.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/order-service/internal/order"
	"github.com/orderflow/order-service/internal/postgres"
)

// Handlers returns the handler of each topic order-service consumes; reg gets the
// histogram of the time from an order's POST to its payment decision.
func Handlers(store *postgres.Store, reg prometheus.Registerer) (map[string]consumer.Handler, error) {
	decided := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Subsystem: "order", Name: "decision_seconds",
		Help: "Time from placing an order (its POST) to its payment decision, by the status it reached " +
			"(CONFIRMED, PAYMENT_FAILED), observed once the decision committed.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
	}, []string{"status"})
	if err := metrics.Register(reg, decided); err != nil {
		return nil, err
	}
	for _, s := range []order.Status{order.Confirmed, order.PaymentFailed} { // served from the first scrape
		decided.WithLabelValues(string(s))
	}
	t := transitions{store: store}
	set := consumer.NewSetThen(t.apply, func(rows []*transition) {
		for _, r := range rows {
			if r.decidedAfter > 0 {
				decided.WithLabelValues(string(r.change.To)).Observe(r.decidedAfter.Seconds())
			}
		}
	})
	h := paymentOutcome{set: set, now: time.Now}
	return map[string]consumer.Handler{
		events.TopicPaymentCompleted: h.handle,
		events.TopicPaymentFailed:    h.handle,
	}, nil
}

type paymentOutcome struct {
	set consumer.Set
	now func() time.Time
}

// handle asks for a pending order to move to CONFIRMED or PAYMENT_FAILED; the orders of a
// batch move together, in one statement.
func (h paymentOutcome) handle(_ context.Context, msg consumer.Message) (consumer.Apply, error) {
	c := postgres.Change{OrderID: msg.Subject, CauseEventID: msg.ID, At: h.now()}
	switch ev := msg.Event.(type) {
	case events.PaymentCompleted:
		c.To = order.Confirmed
	case events.PaymentFailed:
		c.To, c.Reason = order.PaymentFailed, ev.Reason
	default:
		return consumer.Apply{}, consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if !events.IsUUID(msg.Subject) {
		return consumer.Apply{}, consumer.Poison(fmt.Errorf("order id %q is not a UUID", msg.Subject))
	}
	return consumer.Row(h.set, &transition{change: c, meta: msg.Meta(), log: msg.Log}), nil
}

// transitions makes the consumer.Set of order-service: a batch's status changes in one
// statement.
type transitions struct {
	store *postgres.Store
}

type transition struct {
	change postgres.Change
	meta   events.Meta // what the order.state it causes inherits
	log    *slog.Logger
	// decidedAfter is the time from the order's POST to this decision, when apply made
	// it; 0 when it did not apply.
	decidedAfter time.Duration
}

// apply moves the orders, each with its order.state. An outcome that does not apply
// (unknown order, order no longer pending) is logged and acknowledged: retrying it could
// never succeed, and it is a valid event, so it is no dead letter either.
func (t transitions) apply(ctx context.Context, tx consumer.Tx, rows []*transition) error {
	changes := make([]postgres.Change, len(rows))
	for i, r := range rows {
		changes[i], r.decidedAfter = r.change, 0 // a batch that failed may have set it
	}
	outcomes, err := t.store.TransitionAll(ctx, tx, changes)
	if err != nil {
		return err
	}
	for i, out := range outcomes {
		log, to, o := rows[i].log, changes[i].To, out.Order
		switch {
		case errors.Is(out.Err, order.ErrNotFound):
			log.Warn("payment outcome for an unknown order ignored", "to", to)
		case errors.Is(out.Err, order.ErrInvalidTransition) && o.Status == order.Cancelled:
			// Cancelled while payment was under way: payment-service refunds it.
			log.Info("payment outcome for a cancelled order ignored", "to", to)
		case errors.Is(out.Err, order.ErrInvalidTransition):
			log.Warn("payment outcome does not apply; ignored", "status", o.Status, "to", to)
		case out.Err != nil:
			return out.Err
		default:
			state, err := events.New(o.StateEvent(), rows[i].meta, changes[i].At)
			if err != nil {
				return err
			}
			tx.Emit(state)
			rows[i].decidedAfter = changes[i].At.Sub(o.CreatedAt)
			log.Info("order status changed", "status", o.Status, "failure_reason", o.FailureReason)
		}
	}
	return nil
}
