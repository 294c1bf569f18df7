package reconcile_test

import (
	"slices"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

var (
	t0    = time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	grace = reconcile.Grace{Settle: 2 * time.Minute, PaymentDeadline: 10 * time.Minute}
)

// Each healthy end of an order, told by every service and the provider: no mismatch,
// however long after.
func healthy() map[string]reconcile.Facts {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Second) }
	return map[string]reconcile.Facts{
		"confirmed": {OrderID: "confirmed", Status: events.StatusConfirmed, Version: 2, PlacedAt: at(0), ChangedAt: at(2),
			Payment: reconcile.PaymentCompleted, ChargeID: "ch_1", PaymentAt: at(1),
			Emails:        map[string]time.Time{"order_confirmed": at(3)},
			ProviderAsked: true, ProviderCharge: "ch_1", ProviderChargedAt: at(1)},
		"failed": {OrderID: "failed", Status: events.StatusPaymentFailed, Version: 2, FailureReason: "card_declined",
			PlacedAt: at(0), ChangedAt: at(2), Payment: reconcile.PaymentFailed, PaymentAt: at(1),
			Emails: map[string]time.Time{"payment_failed": at(3)}, ProviderAsked: true},
		"cancelled before the charge": {OrderID: "cancelled", Status: events.StatusCancelled, Version: 2, PlacedAt: at(0),
			ChangedAt: at(1), Emails: map[string]time.Time{"order_cancelled": at(2)}, ProviderAsked: true},
		"cancelled and refunded": {OrderID: "refunded", Status: events.StatusCancelled, Version: 2, PlacedAt: at(0),
			ChangedAt: at(1), Payment: reconcile.PaymentRefunded, ChargeID: "ch_2", RefundID: "re_2", PaymentAt: at(2), RefundedAt: at(3),
			Emails:        map[string]time.Time{"order_cancelled": at(2), "payment_refunded": at(4)},
			ProviderAsked: true, ProviderCharge: "ch_2", ProviderChargedAt: at(2)},
		"pending, within the deadline": {OrderID: "pending", Status: events.StatusPendingPayment, Version: 1, PlacedAt: t0.Add(50 * time.Minute)},
	}
}

func TestHealthyOrdersHaveNoMismatch(t *testing.T) {
	for name, f := range healthy() {
		if got := reconcile.Mismatches(f, grace, t0.Add(55*time.Minute)); len(got) != 0 {
			t.Errorf("%s: %+v", name, got)
		}
	}
}

// A planted fault per kind: each is a mismatch of that kind alone, with the facts that
// disagree, once its grace has passed and not before; and it clears when the facts catch
// up.
func TestEachFaultIsItsKindOfMismatch(t *testing.T) {
	h := healthy()
	for _, tt := range []struct {
		kind   reconcile.Kind
		from   string
		plant  func(f *reconcile.Facts)
		since  time.Time
		facts  map[string]string
		repair func(f *reconcile.Facts) // the facts catching up
	}{
		{reconcile.ConfirmedWithoutPayment, "failed", func(f *reconcile.Facts) {
			// A transition written behind the services' backs in order-service's database.
			f.Status, f.Version, f.FailureReason, f.ChangedAt = events.StatusConfirmed, 3, "", t0.Add(5*time.Second)
			f.Emails["order_confirmed"] = t0.Add(6 * time.Second)
		}, t0.Add(5 * time.Second), map[string]string{"order": "CONFIRMED", "payment": "FAILED"}, nil},
		{reconcile.PaidNotConfirmed, "confirmed", func(f *reconcile.Facts) {
			f.Status, f.Version, f.ChangedAt = events.StatusPendingPayment, 1, time.Time{}
			f.Emails = nil
		}, t0.Add(time.Second), map[string]string{"order": "PENDING_PAYMENT", "payment": "COMPLETED", "charge": "ch_1"},
			func(f *reconcile.Facts) { *f = healthy()["confirmed"] }},
		{reconcile.CancelledNotRefunded, "cancelled and refunded", func(f *reconcile.Facts) {
			f.Payment, f.RefundID, f.RefundedAt = reconcile.PaymentCompleted, "", time.Time{}
			delete(f.Emails, "payment_refunded")
		}, t0.Add(2 * time.Second), map[string]string{"order": "CANCELLED", "payment": "COMPLETED", "charge": "ch_2"},
			func(f *reconcile.Facts) { *f = healthy()["cancelled and refunded"] }},
		{reconcile.RefundedNotCancelled, "confirmed", func(f *reconcile.Facts) {
			f.Payment, f.RefundID, f.RefundedAt = reconcile.PaymentRefunded, "re_9", t0.Add(5*time.Second) // refunded from the provider's dashboard
		}, t0.Add(5 * time.Second), map[string]string{"order": "CONFIRMED", "payment": "REFUNDED", "refund": "re_9"}, nil},
		{reconcile.PendingPastDeadline, "pending, within the deadline", func(f *reconcile.Facts) {
			f.PlacedAt = t0
		}, t0.Add(10 * time.Minute), map[string]string{"order": "PENDING_PAYMENT", "placed_at": "2026-12-03T09:00:00Z", "payment": "none"}, nil},
		{reconcile.ChargeWithoutPayment, "cancelled before the charge", func(f *reconcile.Facts) {
			f.ProviderCharge, f.ProviderChargedAt = "ch_lost", t0.Add(time.Second) // the provider's answer dropped after it charged
		}, t0.Add(time.Second), map[string]string{"provider_charge": "ch_lost", "payment": "none", "order": "CANCELLED"}, nil},
		{reconcile.CompletedWithoutCharge, "confirmed", func(f *reconcile.Facts) {
			f.ProviderCharge, f.ProviderChargedAt = "", time.Time{}
		}, t0.Add(time.Second), map[string]string{"payment": "COMPLETED", "charge": "ch_1", "provider_charge": "none"}, nil},
		{reconcile.FinalWithoutEmail, "failed", func(f *reconcile.Facts) {
			f.Emails = nil // suppressed by mistake
		}, t0.Add(2 * time.Second), map[string]string{"order": "PAYMENT_FAILED", "email": "payment_failed"},
			func(f *reconcile.Facts) { f.Emails = map[string]time.Time{"payment_failed": t0.Add(time.Hour)} }},
		{reconcile.DeadLetterUnresolved, "confirmed", func(f *reconcile.Facts) {
			f.DeadLetters = []reconcile.DeadLetter{{Topic: "payment.completed.notification-service.dlq", Offset: 7, At: t0.Add(3 * time.Second)}}
		}, t0.Add(3 * time.Second), map[string]string{"topic": "payment.completed.notification-service.dlq", "partition": "0", "offset": "7", "records": "1"},
			func(f *reconcile.Facts) { f.DeadLetters = nil }},
	} {
		t.Run(string(tt.kind), func(t *testing.T) {
			f, ok := h[tt.from]
			if !ok {
				t.Fatalf("no healthy order %q", tt.from)
			}
			f.Emails = cloneEmails(f.Emails)
			tt.plant(&f)
			if got := reconcile.Mismatches(f, grace, tt.since.Add(grace.Settle-time.Second)); len(got) != 0 {
				t.Errorf("within the grace: %+v, want none", got)
			}
			got := reconcile.Mismatches(f, grace, tt.since.Add(grace.Settle))
			if len(got) != 1 || got[0].Kind != tt.kind || got[0].OrderID != f.OrderID || !got[0].Since.Equal(tt.since) {
				t.Fatalf("past the grace: %+v, want one %s since %s", got, tt.kind, tt.since)
			}
			if !mapsEqual(got[0].Facts, tt.facts) {
				t.Errorf("facts = %v, want %v", got[0].Facts, tt.facts)
			}
			if tt.repair != nil {
				tt.repair(&f)
				if got := reconcile.Mismatches(f, grace, t0.Add(2*time.Hour)); len(got) != 0 {
					t.Errorf("once the facts caught up: %+v, want none", got)
				}
			}
		})
	}
}

// Every kind is listed, once.
func TestKinds(t *testing.T) {
	ks := reconcile.Kinds()
	if len(ks) != 9 || len(slices.Compact(slices.Sorted(slices.Values(ks)))) != 9 {
		t.Errorf("kinds %v, want the nine, each once", ks)
	}
}

func cloneEmails(m map[string]time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// An order is settled once it ended, its emails went, and — when the provider's records
// are read — they were read past its payment; not before, nor while a dead letter or a
// refund is to come.
func TestSettled(t *testing.T) {
	withProvider := grace
	withProvider.Provider = true
	late := t0.Add(time.Hour)
	for name, f := range healthy() {
		want := name != "pending, within the deadline"
		if got := reconcile.Settled(f, withProvider, late); got != want {
			t.Errorf("%s: settled = %v, want %v", name, got, want)
		}
	}
	confirmed := healthy()["confirmed"]
	if reconcile.Settled(confirmed, withProvider, confirmed.ChangedAt.Add(grace.Settle-time.Second)) {
		t.Error("settled within the grace")
	}
	confirmed.ProviderAsked = false
	if reconcile.Settled(confirmed, withProvider, late) {
		t.Error("a paid order settled before the provider's records were read past its payment")
	}
	if !reconcile.Settled(confirmed, grace, late) {
		t.Error("without the provider's records, a paid order never settles")
	}
	confirmed = healthy()["confirmed"]
	confirmed.DeadLetters = []reconcile.DeadLetter{{Topic: "x.dlq", At: t0}}
	if reconcile.Settled(confirmed, withProvider, late) {
		t.Error("settled with a dead letter")
	}
	dashboard := healthy()["confirmed"] // refunded from the provider's dashboard a moment ago
	dashboard.Payment, dashboard.RefundID, dashboard.RefundedAt = reconcile.PaymentRefunded, "re_9", late.Add(-time.Second)
	if reconcile.Settled(dashboard, withProvider, late) {
		t.Error("settled with a disagreement still within its grace")
	}
	refunding := healthy()["cancelled and refunded"]
	refunding.Payment, refunding.RefundID, refunding.RefundedAt = reconcile.PaymentCompleted, "", time.Time{}
	delete(refunding.Emails, "payment_refunded")
	if reconcile.Settled(refunding, withProvider, late) {
		t.Error("a cancelled order settled before its refund")
	}
}
