// Package reconcile is what reconciliation watches: the facts each service has told about
// one order, and the mismatches among them that a healthy stack never shows for long.
//
// It is pure: Mismatches reads Facts and a clock, nothing else, so a mismatch clears by
// itself as soon as the facts that made it catch up, and a read model rebuilt by replay
// gives the same answer as the one that watched live.
package reconcile

import (
	"fmt"
	"slices"
	"time"

	"github.com/orderflow/common-events/events"
)

// Kind is a kind of mismatch.
type Kind string

// The kinds of mismatch, each a disagreement among what the services and the payment
// provider say about one order.
const (
	// ConfirmedWithoutPayment: order-service confirmed the order, and payment-service says
	// it was not paid (failed, or nothing at all): shipped, never charged.
	ConfirmedWithoutPayment Kind = "confirmed_without_payment"
	// PaidNotConfirmed: payment-service charged the order, and order-service neither
	// confirmed nor cancelled it.
	PaidNotConfirmed Kind = "paid_not_confirmed"
	// CancelledNotRefunded: the order is cancelled and its payment completed, not
	// refunded: the customer paid for nothing.
	CancelledNotRefunded Kind = "cancelled_not_refunded"
	// RefundedNotCancelled: the payment was refunded, and the order is not cancelled.
	RefundedNotCancelled Kind = "refunded_not_cancelled"
	// PendingPastDeadline: the order still waits for payment after the payment deadline,
	// by which payment-service decides every payment.
	PendingPastDeadline Kind = "pending_past_deadline"
	// ChargeWithoutPayment: the provider holds a charge for the order, and no payment
	// says so (an answer lost after the provider charged, say).
	ChargeWithoutPayment Kind = "charge_without_payment"
	// CompletedWithoutCharge: payment-service published payment.completed, and the
	// provider holds no charge for the order.
	CompletedWithoutCharge Kind = "completed_without_charge"
	// FinalWithoutEmail: the order ended, and the email its end calls for was not sent.
	FinalWithoutEmail Kind = "final_without_email"
	// DeadLetterUnresolved: a record about the order sits in a dead-letter topic and was
	// not replayed.
	DeadLetterUnresolved Kind = "dead_letter_unresolved"
)

// Kinds lists every kind, in the order reports list them.
func Kinds() []Kind {
	return []Kind{ConfirmedWithoutPayment, PaidNotConfirmed, CancelledNotRefunded, RefundedNotCancelled,
		PendingPastDeadline, ChargeWithoutPayment, CompletedWithoutCharge, FinalWithoutEmail, DeadLetterUnresolved}
}

// The payment's status as payment-service's events tell it (Facts.Payment).
const (
	PaymentNone      = ""
	PaymentCompleted = "COMPLETED"
	PaymentFailed    = "FAILED"
	PaymentRefunded  = "REFUNDED"
)

// Facts is everything the services and the provider have said about one order, each
// with when it was said. A zero time is "not said".
type Facts struct {
	OrderID string

	// order-service, from order.state: the record with the highest version.
	Status        string // events.Status…; "" when order.state told nothing yet
	Version       int64
	FailureReason string
	PlacedAt      time.Time
	ChangedAt     time.Time // when the order reached Status

	// payment-service, from payment.completed, payment.failed and payment.refunded.
	Payment    string // Payment…
	ChargeID   string
	RefundID   string
	PaymentAt  time.Time // completed or failed
	RefundedAt time.Time

	// notification-service, from notification.sent: when each kind of email went.
	Emails map[string]time.Time

	// The provider's own records: its charge for the order ("" when it holds none), and
	// whether they were read past the order's payment, so that none there means none made
	// (a charge is made before payment.completed says so).
	ProviderAsked     bool
	ProviderCharge    string
	ProviderChargedAt time.Time

	// Records about the order in dead-letter topics, not replayed.
	DeadLetters []DeadLetter
}

// DeadLetter is one record in a dead-letter topic.
type DeadLetter struct {
	Topic     string
	Partition int32
	Offset    int64
	At        time.Time // when it was dead-lettered
}

// Mismatch is one disagreement: its kind, the order, since when it holds (when the later
// of the facts that disagree was said), and the facts that disagree, by name.
type Mismatch struct {
	Kind    Kind
	OrderID string
	Since   time.Time
	Facts   map[string]string
}

// Grace is how long each disagreement may last before it is a mismatch: the normal lag of
// a healthy stack (an event on its way, an email being sent) is never one.
type Grace struct {
	// Settle is how long the services may take to agree after one of them spoke.
	Settle time.Duration
	// PaymentDeadline is payment-service's PAYMENT_DEADLINE: an order pending longer is a
	// mismatch once Settle more has passed.
	PaymentDeadline time.Duration
	// Provider says the provider's records are read: a paid order is settled only once
	// they were read past its payment.
	Provider bool
}

// Mismatches are the disagreements in f that have lasted longer than their grace at now,
// in the order of Kinds.
func Mismatches(f Facts, g Grace, now time.Time) []Mismatch {
	var out []Mismatch
	add := func(k Kind, since time.Time, facts ...string) {
		if since.IsZero() || now.Sub(since) < g.Settle {
			return
		}
		m := Mismatch{Kind: k, OrderID: f.OrderID, Since: since, Facts: map[string]string{}}
		for i := 0; i+1 < len(facts); i += 2 {
			m.Facts[facts[i]] = facts[i+1]
		}
		out = append(out, m)
	}
	status, payment := f.Status, f.Payment
	paid := payment == PaymentCompleted || payment == PaymentRefunded

	if status == events.StatusConfirmed && !paid {
		add(ConfirmedWithoutPayment, later(f.ChangedAt, f.PaymentAt), "order", status, "payment", orNone(payment))
	}
	if payment == PaymentCompleted && (status == events.StatusPendingPayment || status == events.StatusPaymentFailed) {
		add(PaidNotConfirmed, later(f.PaymentAt, f.ChangedAt), "order", status, "payment", payment, "charge", f.ChargeID)
	}
	if status == events.StatusCancelled && payment == PaymentCompleted {
		add(CancelledNotRefunded, later(f.ChangedAt, f.PaymentAt), "order", status, "payment", payment, "charge", f.ChargeID)
	}
	if payment == PaymentRefunded && status != events.StatusCancelled {
		add(RefundedNotCancelled, later(f.RefundedAt, f.ChangedAt), "order", orNone(status), "payment", payment, "refund", f.RefundID)
	}
	if status == events.StatusPendingPayment && g.PaymentDeadline > 0 {
		add(PendingPastDeadline, f.PlacedAt.Add(g.PaymentDeadline), "order", status, "placed_at", stamp(f.PlacedAt), "payment", orNone(payment))
	}
	if f.ProviderCharge != "" && !paid {
		add(ChargeWithoutPayment, f.ProviderChargedAt, "provider_charge", f.ProviderCharge, "payment", orNone(payment), "order", orNone(status))
	}
	if f.ProviderAsked && f.ProviderCharge == "" && paid {
		add(CompletedWithoutCharge, f.PaymentAt, "payment", payment, "charge", f.ChargeID, "provider_charge", "none")
	}
	for _, kind := range emailsFor(status, payment) {
		if _, sent := f.Emails[kind]; !sent {
			since := f.ChangedAt
			if kind == "payment_refunded" {
				since = f.RefundedAt
			}
			add(FinalWithoutEmail, since, "order", status, "email", kind)
		}
	}
	if len(f.DeadLetters) > 0 {
		first := slices.MinFunc(f.DeadLetters, func(a, b DeadLetter) int { return a.At.Compare(b.At) })
		add(DeadLetterUnresolved, first.At, "topic", first.Topic, "partition", fmt.Sprint(first.Partition),
			"offset", fmt.Sprint(first.Offset), "records", fmt.Sprint(len(f.DeadLetters)))
	}
	return out
}

// Settled reports whether nothing more is to come for f at now: the order ended, the
// payment's story with it, every email its end calls for sent, and longer ago than the
// grace, so a late fact about it would be news. (A fact that comes anyway unsettles it.)
func Settled(f Facts, g Grace, now time.Time) bool {
	final := f.Status == events.StatusConfirmed || f.Status == events.StatusPaymentFailed || f.Status == events.StatusCancelled
	if !final || now.Sub(f.ChangedAt) < g.Settle || len(f.DeadLetters) > 0 {
		return false
	}
	if f.Status == events.StatusCancelled && f.Payment == PaymentCompleted {
		return false // the refund is to come
	}
	paid := f.Payment == PaymentCompleted || f.Payment == PaymentRefunded
	if g.Provider && paid && !f.ProviderAsked {
		return false // the provider's records are to be read
	}
	eager := g
	eager.Settle = 0
	if len(Mismatches(f, eager, now)) > 0 {
		return false // a disagreement within its grace is one all the same
	}
	for _, kind := range emailsFor(f.Status, f.Payment) {
		if _, sent := f.Emails[kind]; !sent {
			return false
		}
	}
	return true
}

// emailsFor is the kinds of email an order's end calls for: its status's, and the
// refund's when its payment was refunded.
func emailsFor(status, payment string) []string {
	var kinds []string
	switch status {
	case events.StatusConfirmed:
		kinds = append(kinds, "order_confirmed")
	case events.StatusPaymentFailed:
		kinds = append(kinds, "payment_failed")
	case events.StatusCancelled:
		kinds = append(kinds, "order_cancelled")
		if payment == PaymentRefunded {
			kinds = append(kinds, "payment_refunded")
		}
	}
	return kinds
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
