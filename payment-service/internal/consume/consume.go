// Package consume charges for orders as they are created and refunds them when they are
// cancelled after all.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/tracing"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
)

// Handlers returns the handler of each topic payment-service consumes, on settle.Store.
// A charge that keeps failing transiently is retried until deadline after the order's
// creation (0: forever); then the provider's records decide. settle also records the
// outcome of a charge that was pending at the provider when its order is cancelled.
func Handlers(provider payment.Provider, deadline time.Duration, settle Settler) map[string]consumer.Handler {
	store := settle.Store
	c := charger{store: store, provider: provider, now: time.Now, charged: chargedSet{}.set(),
		deadline: deadline, settler: settle}
	return map[string]consumer.Handler{
		events.TopicOrderCreated:   c.handle,
		events.TopicOrderCancelled: c.cancel,
	}
}

type charger struct {
	store    *postgres.Store
	provider payment.Provider
	now      func() time.Time
	charged  consumer.Set
	deadline time.Duration
	settler  Settler
}

// chargedSet makes the consumer.Set that records a batch's charges, the inbox rows of
// their records and their outcome events in one statement.
type chargedSet struct{}

func (c chargedSet) set() consumer.Set {
	return consumer.NewStatementSet(c.statement, c.emits, c.recorded)
}

// charged is the provider's answer to a claimed payment: the payment, COMPLETED or
// FAILED, and its outcome event.
type charged struct {
	payment payment.Payment
	event   events.Envelope
	log     *slog.Logger
}

func (chargedSet) statement(rows []charged, first int, fresh string) (string, []any) {
	ps := make([]payment.Payment, len(rows))
	for i, r := range rows {
		ps[i] = r.payment
	}
	return postgres.ChargedStatement(ps, first, fresh)
}

func (chargedSet) emits(r charged) []events.Envelope { return []events.Envelope{r.event} }

func (chargedSet) recorded(rows []charged, recorded []bool) {
	for i, r := range rows {
		if p := r.payment; recorded[i] {
			r.log.Info("payment recorded", "status", p.Status, "failure_reason", p.FailureReason, "charge_id", p.ChargeID, "payment_id", p.ID)
		}
	}
}

// errChargeUnderWay makes a cancellation wait, through the runner's retries, for the
// outcome of a charge that has been claimed and not yet recorded.
var errChargeUnderWay = errors.New("the order's charge is under way; waiting for its outcome")

// handle charges for a new order. It claims the payment (CHARGING) first, on its own, so a
// cancellation that comes meanwhile waits for the outcome, and one that came before
// stops it; then asks the provider, outside any transaction; then the returned Apply
// records the outcome with its event, in one statement with the batch's other outcomes. The
// provider call is idempotent on the order id, so a retry or a redelivery after a crash
// gets the first charge back instead of a second one. Every claim ends: a charge that
// keeps failing until the payment deadline, a redelivery past it, and a charge the
// provider refuses as such (ErrIdempotencyMismatch) are settled by what the provider
// holds, and a decline without a code fails as declined.
func (c charger) handle(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
	ev, ok := msg.Event.(events.OrderCreated)
	if !ok {
		return consumer.Apply{}, unexpected(msg)
	}
	if err := checkIDs(ev.OrderID, ev.CustomerID); err != nil {
		return consumer.Apply{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return consumer.Apply{}, err
	}
	p, err := c.store.Claim(ctx, payment.Payment{
		ID: id.String(), OrderID: ev.OrderID, CustomerID: ev.CustomerID, CustomerEmail: ev.CustomerEmail,
		AmountCents: ev.TotalCents, Currency: ev.Currency, Status: payment.Charging, CauseEventID: msg.ID, CreatedAt: c.now().UTC(),
	})
	if err != nil {
		return consumer.Apply{}, err
	}
	if p.Status != payment.Charging {
		msg.Log.Info("order already paid for, refused or cancelled; nothing to do", "status", p.Status)
		return consumer.Apply{}, nil
	}

	var charge payment.Charge
	if c.pastDeadline(ev) {
		// A redelivery past the deadline (the answer to an earlier attempt was lost, or
		// never came) is not charged again: the provider's records decide. Its
		// idempotency window may have closed by then, so a charge now could be a second.
		charge, err = c.decide(ctx, msg, ev.OrderID, errPastDeadline, events.ReasonProviderUnavailable)
	} else {
		charge, err = c.charge(ctx, ev)
		switch {
		case errors.Is(err, payment.ErrPending) && !c.pastDeadline(ev):
			// The outcome comes later: the payment waits, claimed, and the partition goes
			// on. A webhook settles it (Settler), or past the deadline the sweep does.
			msg.Log.Info("the provider tells the charge's outcome later; the payment waits for it", "err", err, "payment_id", p.ID)
			return consumer.Func(func(ctx context.Context, tx consumer.Tx) error {
				return c.store.Pending(ctx, tx, p.ID, c.now().UTC())
			}), nil
		case errors.Is(err, payment.ErrIdempotencyMismatch) || errors.Is(err, payment.ErrRejected):
			// The provider refused the request as such (its idempotency key was used with
			// other parameters, say): a bug, and no reason to leave the order pending.
			// What it holds decides, as past the deadline.
			msg.Log.Error("the provider refused the charge as such", "err", err)
			charge, err = c.decide(ctx, msg, ev.OrderID, err, events.ReasonProviderRejected)
		case err != nil && c.pastDeadline(ev):
			charge, err = c.decide(ctx, msg, ev.OrderID, err, events.ReasonProviderUnavailable)
		}
	}
	if err != nil {
		return consumer.Apply{}, err // transient: the runner retries with backoff
	}
	if charge.ProviderCode != "" {
		msg.Log.Info("the provider declined the charge", "reason", charge.DeclineCode, "provider_code", charge.ProviderCode)
	}
	p, env, err := Outcome(p, charge, msg.Meta(), c.now())
	if err != nil {
		return consumer.Apply{}, consumer.Poison(err)
	}
	return consumer.Row(c.charged, charged{payment: p, event: env, log: msg.Log}), nil
}

// Outcome is claimed payment p as the provider's answer charge decides it, COMPLETED or
// FAILED, and its event, which inherits meta: for an answer at once, and for one that
// comes later (a webhook).
func Outcome(p payment.Payment, charge payment.Charge, meta events.Meta, now time.Time) (payment.Payment, events.Envelope, error) {
	now = now.UTC()
	if !charge.Succeeded && charge.DeclineCode == "" {
		charge.DeclineCode = events.ReasonDeclined // a payment.failed says why, if only that
	}
	p.ChargeID = charge.ID
	var outcome events.Event
	if charge.Succeeded {
		p.Status = payment.Completed
		outcome = events.PaymentCompleted{
			OrderID: p.OrderID, PaymentID: p.ID, ChargeID: charge.ID, CustomerID: p.CustomerID,
			CustomerEmail: p.CustomerEmail, AmountCents: p.AmountCents, Currency: p.Currency, CompletedAt: now,
		}
	} else {
		p.Status, p.FailureReason = payment.Failed, charge.DeclineCode
		outcome = events.PaymentFailed{
			OrderID: p.OrderID, PaymentID: p.ID, CustomerID: p.CustomerID, CustomerEmail: p.CustomerEmail,
			AmountCents: p.AmountCents, Currency: p.Currency, Reason: charge.DeclineCode, FailedAt: now,
		}
	}
	env, err := events.New(outcome, meta, now)
	return p, env, err
}

// charge asks the provider to charge for ev, idempotently on the order id.
func (c charger) charge(ctx context.Context, ev events.OrderCreated) (payment.Charge, error) {
	ctx, span := tracing.Start(ctx, "provider charge", trace.SpanKindClient, tracing.OrderID(ev.OrderID),
		attribute.Int64("amount_cents", ev.TotalCents), attribute.String("currency", ev.Currency))
	charge, err := c.provider.Charge(ctx, payment.ChargeRequest{
		IdempotencyKey: ev.OrderID, AmountCents: ev.TotalCents, Currency: ev.Currency, PaymentMethod: ev.PaymentMethod,
	})
	span.SetAttributes(attribute.Bool("succeeded", charge.Succeeded))
	tracing.End(span, err)
	return charge, err
}

// pastDeadline reports whether ev's order was created longer than the deadline ago.
func (c charger) pastDeadline(ev events.OrderCreated) bool {
	return c.deadline > 0 && c.now().Sub(ev.CreatedAt) >= c.deadline
}

// errPastDeadline is why a claim past its deadline is settled without a charge.
var errPastDeadline = errors.New("the payment deadline passed before the charge was recorded")

// lookupTimeout bounds asking the provider what it holds, on a context of its own: the
// attempt's may have been used up by a charge that hung.
const lookupTimeout = 10 * time.Second

// decide decides a payment whose charging failed for good (past the deadline, or refused
// as such) by what the provider holds under the order's key — never a guess: its charge
// if it made one (it then went through after all), else a failure with reason, and the
// order is not charged. No charge is attempted for the order afterwards: the payment is
// decided. When the provider cannot say either, the error is returned and the runner
// asks again.
func (c charger) decide(ctx context.Context, msg consumer.Message, orderID string, chargeErr error, reason string) (payment.Charge, error) {
	charge, found, err := askProvider(ctx, c.provider, orderID, reason)
	if err != nil {
		return payment.Charge{}, fmt.Errorf("charging failed for good (%w), and so did asking the provider for the charge: %w", chargeErr, err)
	}
	msg.Log.Warn("charging failed for good; the provider's records decide", "err", chargeErr, "charge_found", found, "succeeded", charge.Succeeded)
	return charge, nil
}

// askProvider asks provider what it holds for the order (Lookup), within lookupTimeout of
// its own: its charge, or, when it holds none, a failure with reason.
func askProvider(ctx context.Context, provider payment.Provider, orderID, reason string) (payment.Charge, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	ctx, span := tracing.Start(ctx, "provider lookup", trace.SpanKindClient, tracing.OrderID(orderID))
	charge, found, err := provider.Lookup(ctx, orderID)
	tracing.End(span, err)
	if err == nil && !found {
		charge = payment.Charge{DeclineCode: reason}
	}
	return charge, found, err
}

// cancel answers order.cancelled. An order not charged yet gets a CANCELLED payment, on
// its own, at once, so its order.created, should it come later, never charges; a charge
// under way is waited for; a completed payment is refunded through the provider
// (idempotent on the order id, outside any transaction) and payment.refunded published.
// The order's unique payment decides which of the two came first, so every interleaving
// of one order's creation and cancellation ends refunded or never charged.
func (c charger) cancel(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
	ev, ok := msg.Event.(events.OrderCancelled)
	if !ok {
		return consumer.Apply{}, unexpected(msg)
	}
	if err := checkIDs(ev.OrderID, ev.CustomerID); err != nil {
		return consumer.Apply{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return consumer.Apply{}, err
	}
	p, err := c.store.Claim(ctx, payment.Payment{
		ID: id.String(), OrderID: ev.OrderID, CustomerID: ev.CustomerID, CustomerEmail: ev.CustomerEmail,
		AmountCents: ev.TotalCents, Currency: ev.Currency, Status: payment.Cancelled, CauseEventID: msg.ID, CreatedAt: c.now().UTC(),
	})
	switch {
	case err != nil:
		return consumer.Apply{}, err
	case p.Status == payment.Cancelled:
		msg.Log.Info("order cancelled before it was charged; it never will be", "payment_id", p.ID)
		return consumer.Apply{}, nil
	case p.Status == payment.Charging && !p.PendingSince.IsZero():
		// The charge's outcome was to come later: the cancellation decides it now by what
		// the provider holds (calling off what still waits there), then is tried again
		// and refunds what was charged. The outcome is recorded here, outside the Apply,
		// through the Settler: once, by this record's id in the inbox, and before the
		// refund that needs it; the retry's Apply is this record's own.
		charge, err := c.decide(ctx, msg, p.OrderID, errors.New("the order was cancelled while its charge was pending"), events.ReasonDeclined)
		if err != nil {
			return consumer.Apply{}, err
		}
		if _, err := c.settler.ChargedWith(ctx, "cancel-"+msg.ID, p.OrderID, charge, msg.Meta()); err != nil {
			return consumer.Apply{}, err
		}
		return consumer.Apply{}, errChargeUnderWay
	case p.Status == payment.Charging:
		return consumer.Apply{}, errChargeUnderWay
	case p.Status != payment.Completed:
		msg.Log.Info("cancelled order has nothing to refund", "status", p.Status)
		return consumer.Apply{}, nil
	}

	now := c.now().UTC()
	pctx, span := tracing.Start(ctx, "provider refund", trace.SpanKindClient, tracing.OrderID(p.OrderID),
		attribute.Int64("amount_cents", p.AmountCents), attribute.String("currency", p.Currency))
	refund, err := c.provider.Refund(pctx, payment.RefundRequest{
		IdempotencyKey: p.OrderID, ChargeID: p.ChargeID, AmountCents: p.AmountCents, Currency: p.Currency,
	})
	tracing.End(span, err)
	if errors.Is(err, payment.ErrIdempotencyMismatch) || errors.Is(err, payment.ErrNotRefundable) {
		return consumer.Apply{}, consumer.Poison(err)
	}
	if err != nil {
		return consumer.Apply{}, err // transient: the runner retries with backoff
	}
	p, env, err := Refunded(p, refund.ID, msg.Meta(), now)
	if err != nil {
		return consumer.Apply{}, consumer.Poison(err)
	}
	return consumer.Func(func(ctx context.Context, tx consumer.Tx) error {
		recorded, err := c.store.Refunded(ctx, tx, p)
		if err != nil || !recorded {
			return err
		}
		tx.Emit(env)
		msg.Log.Info("payment refunded", "payment_id", p.ID, "charge_id", p.ChargeID, "refund_id", refund.ID)
		return nil
	}), nil
}

// Refunded is completed payment p refunded by the provider's refund refundID, and its
// payment.refunded event, which inherits meta.
func Refunded(p payment.Payment, refundID string, meta events.Meta, now time.Time) (payment.Payment, events.Envelope, error) {
	now = now.UTC()
	p.Status, p.RefundID, p.RefundedAt = payment.Refunded, refundID, now
	env, err := events.New(events.PaymentRefunded{
		OrderID: p.OrderID, PaymentID: p.ID, ChargeID: p.ChargeID, RefundID: refundID, CustomerID: p.CustomerID,
		CustomerEmail: p.CustomerEmail, AmountCents: p.AmountCents, Currency: p.Currency, RefundedAt: now,
	}, meta, now)
	return p, env, err
}

func unexpected(msg consumer.Message) error {
	return consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
}

// checkIDs refuses, as poison, ids the payments table could not hold.
func checkIDs(orderID, customerID string) error {
	if !events.IsUUID(orderID) {
		return consumer.Poison(fmt.Errorf("order id %q is not a UUID", orderID))
	}
	if !events.IsUUID(customerID) {
		return consumer.Poison(fmt.Errorf("customer id %q is not a UUID", customerID))
	}
	return nil
}
