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
	d := decisions{store: store, decided: decided}
	known := consumer.NewStatementSet(d.statement, d.emits, d.recorded, consumer.AlsoWrite(postgres.DecidedHistory))
	h := paymentOutcome{set: set, known: known, store: store, now: time.Now}
	return map[string]consumer.Handler{
		events.TopicPaymentCompleted: h.handle,
		events.TopicPaymentFailed:    h.handle,
	}, nil
}

type paymentOutcome struct {
	set   consumer.Set // transitions
	known consumer.Set // decisions: the outcomes of orders the store placed
	store *postgres.Store
	now   func() time.Time
}

// handle asks for a pending order to move to CONFIRMED or PAYMENT_FAILED; the orders of a
// batch move together, in one statement. An order this process placed (postgres.Store's
// Placed) is moved from what it wrote, its order.state built before the statement, which
// then records the decision, its history entry, its inbox row and its event at once
// (consumer.NewStatementSet); any other is read back by the update, its order.state
// built from the row and stored after it (transitions).
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
	if o, ok := h.store.Placed(msg.Subject); ok && o.Transition(c.To, c.Reason, c.At) == nil {
		state, err := events.New(o.StateEvent(), msg.Meta(), c.At)
		if err != nil {
			return consumer.Apply{}, err
		}
		return consumer.Row(h.known, decision{Decided: postgres.Decided{Order: o, CauseEventID: msg.ID}, state: state, at: c.At, log: msg.Log}), nil
	}
	return consumer.Row(h.set, &transition{change: c, meta: msg.Meta(), log: msg.Log}), nil
}

// decisions makes the consumer.Set of the decisions on orders the store placed: a batch's
// moves, their history entries, inbox rows and order.state events in one statement.
type decisions struct {
	store   *postgres.Store
	decided *prometheus.HistogramVec
}

// decision is a payment decision on an order the store placed: the order as it stands
// once moved, and its order.state.
type decision struct {
	postgres.Decided
	state events.Envelope
	at    time.Time // of the outcome, as the handler took it
	log   *slog.Logger
}

func (decisions) statement(rows []decision, first int, fresh string) (string, []any) {
	ds := make([]postgres.Decided, len(rows))
	for i, r := range rows {
		ds[i] = r.Decided
	}
	return postgres.DecidedStatement(ds, first, fresh)
}

func (decisions) emits(r decision) []events.Envelope { return []events.Envelope{r.state} }

// recorded forgets the orders decided, and those that were not pending any more: either
// way, what the store remembers of them is not how they stand. The latter, cancelled
// while payment was under way, payment-service refunds.
func (d decisions) recorded(rows []decision, recorded []bool) {
	for i, r := range rows {
		o := r.Order
		d.store.Forget(o.ID)
		if !recorded[i] {
			r.log.Info("payment outcome ignored: the order is no longer pending (cancelled meanwhile), or the outcome was seen before", "to", o.Status)
			continue
		}
		d.decided.WithLabelValues(string(o.Status)).Observe(r.at.Sub(o.CreatedAt).Seconds())
		r.log.Info("order status changed", "status", o.Status, "failure_reason", o.FailureReason)
	}
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
