package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/events"
)

// Record is one record to apply: its envelope and its event.
type Record struct {
	Env   events.Envelope
	Event events.Event
}

// ApplyBatch records what recs say, in tx, in two statements however many they are: the
// facts of each order they are about folded into one row, upserted by the same rules as
// Apply (an order.state only if its version is higher than the one held; a payment
// refunded stays refunded, completed stays completed), and every record's line of the
// timeline. recs are in the runner's order, each order's records in the order they came.
func (s *Store) ApplyBatch(ctx context.Context, tx pgx.Tx, recs []Record) error {
	var orders []string
	folds := map[string]*fold{}
	var tl timelineRows
	for _, r := range recs {
		id := r.Event.Subject()
		f, ok := folds[id]
		if !ok {
			f = &fold{emails: map[string]time.Time{}}
			folds[id] = f
			orders = append(orders, id)
		}
		summary, err := f.add(r.Env, r.Event)
		if err != nil {
			return err
		}
		tl.add(r.Env, id, summary)
	}
	var a factRows
	for _, id := range orders {
		a.add(id, folds[id])
	}
	if _, err := tx.Exec(ctx, `INSERT INTO order_facts (order_id, status, version, failure_reason, placed_at, changed_at,
			payment, charge_id, payment_at, refund_id, refunded_at, emails)
		SELECT o, nullif(st, ''), v, nullif(fr, ''), pl, ch, nullif(pay, ''), nullif(c, ''), pa, nullif(rf, ''), ra, e
		FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::timestamptz[], $6::timestamptz[],
			$7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::timestamptz[], $12::jsonb[])
			AS b(o, st, v, fr, pl, ch, pay, c, pa, rf, ra, e)
		ON CONFLICT (order_id) DO UPDATE SET
			status = CASE WHEN EXCLUDED.version > order_facts.version THEN EXCLUDED.status ELSE order_facts.status END,
			failure_reason = CASE WHEN EXCLUDED.version > order_facts.version THEN EXCLUDED.failure_reason ELSE order_facts.failure_reason END,
			placed_at = CASE WHEN EXCLUDED.version > order_facts.version THEN EXCLUDED.placed_at ELSE order_facts.placed_at END,
			changed_at = CASE WHEN EXCLUDED.version > order_facts.version THEN EXCLUDED.changed_at ELSE order_facts.changed_at END,
			version = greatest(order_facts.version, EXCLUDED.version),
			payment = CASE greatest(`+rank("order_facts.payment")+`, `+rank("EXCLUDED.payment")+`)
				WHEN 3 THEN 'REFUNDED' WHEN 2 THEN 'COMPLETED' WHEN 1 THEN 'FAILED' END,
			-- a completion's time replaces the one held, a failure's only fills it in
			payment_at = CASE WHEN EXCLUDED.payment = 'FAILED' THEN coalesce(order_facts.payment_at, EXCLUDED.payment_at)
				ELSE coalesce(EXCLUDED.payment_at, order_facts.payment_at) END,
			charge_id = coalesce(EXCLUDED.charge_id, order_facts.charge_id),
			refund_id = coalesce(EXCLUDED.refund_id, order_facts.refund_id),
			refunded_at = coalesce(EXCLUDED.refunded_at, order_facts.refunded_at),
			provider_asked = CASE WHEN EXCLUDED.charge_id IS NULL THEN order_facts.provider_asked ELSE `+askedFor("EXCLUDED.charge_id")+` END,
			emails = order_facts.emails || EXCLUDED.emails,
			settled = false`,
		a.orders, a.status, a.version, a.reason, a.placed, a.changed, a.payment, a.charge, a.paymentAt,
		a.refund, a.refundedAt, a.emails); err != nil {
		return fmt.Errorf("apply %d records to %d orders: %w", len(recs), len(orders), err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO timeline (event_id, order_id, at, source, event_type, summary)
		SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::json[])
		ON CONFLICT (event_id) DO NOTHING`, tl.ids, tl.orders, tl.at, tl.sources, tl.types, tl.summaries); err != nil {
		return fmt.Errorf("timeline of %d records: %w", len(recs), err)
	}
	return nil
}

// rank orders the payment statuses as the rules let one follow another.
func rank(col string) string {
	return fmt.Sprintf(`CASE %s WHEN 'REFUNDED' THEN 3 WHEN 'COMPLETED' THEN 2 WHEN 'FAILED' THEN 1 ELSE 0 END`, col)
}

// fold is what one batch says about one order, folded as the rules fold it.
type fold struct {
	state                *events.OrderState // the highest version
	payment              int                // rank: 0 none, 1 failed, 2 completed, 3 refunded
	charge, refund       string
	completedAt          *time.Time // the last completion's
	failedAt, refundedAt *time.Time
	emails               map[string]time.Time
}

// add folds in one record and returns its timeline summary.
func (f *fold) add(env events.Envelope, ev events.Event) (map[string]any, error) {
	summary := map[string]any{}
	switch e := ev.(type) {
	case events.OrderState:
		if f.state == nil || e.Version > f.state.Version {
			f.state = &e
		}
		summary["status"], summary["version"] = e.Status, e.Version
		if e.FailureReason != "" {
			summary["failure_reason"] = e.FailureReason
		}
	case events.PaymentCompleted:
		f.payment, f.charge, f.completedAt = max(f.payment, 2), e.ChargeID, &e.CompletedAt
		summary["charge_id"], summary["amount_cents"], summary["currency"] = e.ChargeID, e.AmountCents, e.Currency
	case events.PaymentFailed:
		f.payment = max(f.payment, 1)
		if f.failedAt == nil {
			f.failedAt = &e.FailedAt
		}
		summary["reason"] = e.Reason
	case events.PaymentRefunded:
		f.payment, f.charge, f.refund, f.refundedAt = 3, e.ChargeID, e.RefundID, &e.RefundedAt
		summary["refund_id"] = e.RefundID
	case events.NotificationSent:
		f.emails[e.Kind] = e.SentAt
		summary["kind"], summary["message_id"], summary["recipient_domain"] = e.Kind, e.MessageID, e.RecipientDomain
	default:
		return nil, fmt.Errorf("reconciliation does not keep %s", env.Type)
	}
	return summary, nil
}

// factRows are the folds as the upsert's arrays, one element per order.
type factRows struct {
	orders, status, reason, payment, charge, refund []string
	version                                         []int64
	placed, changed, paymentAt, refundedAt          []*time.Time
	emails                                          []string
}

func (a *factRows) add(id string, f *fold) {
	var st events.OrderState
	if f.state != nil {
		st = *f.state
	}
	a.orders = append(a.orders, id)
	a.status, a.version, a.reason = append(a.status, st.Status), append(a.version, st.Version), append(a.reason, st.FailureReason)
	a.placed, a.changed = append(a.placed, stateTime(f.state, st.CreatedAt)), append(a.changed, stateTime(f.state, st.UpdatedAt))
	a.payment = append(a.payment, []string{"", "FAILED", "COMPLETED", "REFUNDED"}[f.payment])
	a.charge, a.refund, a.refundedAt = append(a.charge, f.charge), append(a.refund, f.refund), append(a.refundedAt, f.refundedAt)
	// A completion's time, or a failure's when the batch tells no completion and no refund
	// (with a refund and no completion, the time held stays).
	pa := f.completedAt
	if pa == nil && f.payment == 1 {
		pa = f.failedAt
	}
	a.paymentAt = append(a.paymentAt, pa)
	emails, _ := json.Marshal(f.emails)
	a.emails = append(a.emails, string(emails))
}

func stateTime(st *events.OrderState, t time.Time) *time.Time {
	if st == nil {
		return nil
	}
	return &t
}

// timelineRows are the records' timeline lines as arrays.
type timelineRows struct {
	ids, orders, sources, types, summaries []string
	at                                     []time.Time
}

func (t *timelineRows) add(env events.Envelope, order string, summary map[string]any) {
	b, _ := json.Marshal(summary)
	t.ids, t.orders, t.at = append(t.ids, env.ID), append(t.orders, order), append(t.at, env.Time)
	t.sources, t.types, t.summaries = append(t.sources, env.Source), append(t.types, env.Type), append(t.summaries, string(b))
}
