package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

type mismatchResp struct {
	Kind    string            `json:"kind"`
	OrderID string            `json:"order_id"`
	Since   time.Time         `json:"since"`
	Facts   map[string]string `json:"facts"`
}

// mismatches is what reconciliation-service holds open, kind → orders.
func (s *inproc) mismatches() map[string][]string {
	var l listResp[mismatchResp]
	s.getJSON("reconciliation", "/mismatches?limit=1000", &l)
	got := map[string][]string{}
	for _, m := range l.Items {
		got[m.Kind] = append(got[m.Kind], m.OrderID)
	}
	return got
}

// waitMismatch waits until reconciliation holds a mismatch of kind for order (want) or
// holds none for it (!want), and says how long that took.
func (s *inproc) waitMismatch(kind, orderID string, want bool, within time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	if !testenv.Eventually(within, 100*time.Millisecond, func() bool {
		return slices.Contains(s.mismatches()[kind], orderID) == want
	}) {
		s.t.Fatalf("after %s: mismatches %v, want %s of %s: %v", within, s.mismatches(), kind, orderID, want)
	}
	return time.Since(start)
}

// reconciliation-service watches what the services say and reports where they disagree,
// once the disagreement outlasts its grace, and clears it when the facts catch up:
//   - orders that go through, fail or are cancelled and refunded leave no mismatch, and
//     their timeline holds what each service said;
//   - payment-service stopped while an order is placed: pending past the deadline, until
//     it is started again and the order settles;
//   - notification-service stopped: the confirmed order without its email, until it is
//     started again and sends it;
//   - an order.state a buggy release writes behind the services' backs (a declined order
//     CONFIRMED): confirmed without payment.
func TestReconciliationReportsWhatDisagrees(t *testing.T) {
	const grace = 2 * time.Second
	b := testenv.Kafka(t)
	s := newStack(t, b, map[string]map[string]string{
		"reconciliation": {"RECONCILE_GRACE": grace.String(), "RECONCILE_EVERY": "200ms", "PAYMENT_DEADLINE": "4s"},
	})

	confirmed := s.placeOrder("tok_visa", "rec-ok@example.com")
	failed := s.placeOrder("tok_chargeDeclined", "rec-declined@example.com")
	for id, want := range map[string]string{confirmed.ID: "CONFIRMED", failed.ID: "PAYMENT_FAILED"} {
		if got := s.waitStatus(id, 30*time.Second); got.Status != want {
			t.Fatalf("order = %s, want %s", got.Status, want)
		}
	}
	time.Sleep(grace + time.Second) // past the grace: anything still disagreeing shows
	if !testenv.Eventually(10*time.Second, 200*time.Millisecond, func() bool { return len(s.mismatches()) == 0 }) {
		t.Fatalf("a healthy run: mismatches %v, want none", s.mismatches())
	}
	var tl struct {
		Items []struct {
			Source    string `json:"source"`
			EventType string `json:"event_type"`
		} `json:"items"`
	}
	s.getJSON("reconciliation", "/orders/"+confirmed.ID+"/timeline", &tl)
	var said []string
	for _, x := range tl.Items {
		said = append(said, x.EventType)
	}
	slices.Sort(said)
	if want := []string{"notification.sent", "order.state", "order.state", "payment.completed"}; !slices.Equal(said, want) {
		t.Errorf("the confirmed order's timeline: %v, want %v", said, want)
	}
	if status, _, _ := send(t, http.MethodGet, s.url("reconciliation", "/mismatches"), "", "Authorization", "Bearer forged"); status != http.StatusUnauthorized {
		t.Errorf("GET /mismatches with a forged token = %d, want 401", status)
	}

	t.Run("pending past the deadline, until payment-service is back", func(t *testing.T) {
		s.stop("payment")
		o := s.placeOrder("tok_visa", "rec-pending@example.com")
		took := s.waitMismatch("pending_past_deadline", o.ID, true, 30*time.Second)
		t.Logf("reported %.1f s after the order was placed (deadline 4 s, grace %s)", took.Seconds(), grace)
		s.start("payment")
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
			t.Fatalf("order = %s once payment-service is back, want CONFIRMED", got.Status)
		}
		s.waitMismatch("pending_past_deadline", o.ID, false, 15*time.Second)
	})
	t.Run("no email, until notification-service is back", func(t *testing.T) {
		s.stop("notification")
		o := s.placeOrder("tok_visa", "rec-email@example.com")
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
			t.Fatalf("order = %s, want CONFIRMED", got.Status)
		}
		s.waitMismatch("final_without_email", o.ID, true, 15*time.Second)
		s.start("notification")
		s.waitMismatch("final_without_email", o.ID, false, 30*time.Second)
	})
	t.Run("a state written behind the services' backs", func(t *testing.T) {
		forged := events.OrderState{OrderID: failed.ID, CustomerID: "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93", Status: events.StatusConfirmed,
			Items: []events.Item{{SKU: "BOOK-42", Quantity: 1, UnitPriceCents: 100}}, TotalCents: 100, Currency: "EUR", Version: 3,
			CreatedAt: time.Now(), UpdatedAt: time.Now()}
		env, err := events.New(forged, events.Meta{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p, err := sarama.NewSyncProducer(b.Addrs, b.ConfigAs("order-service", "forger"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if _, _, err := p.SendMessage(kafka.Message(events.TopicOrderState, env)); err != nil {
			t.Fatal(err)
		}
		took := s.waitMismatch("confirmed_without_payment", failed.ID, true, 15*time.Second)
		t.Logf("reported %.1f s after the forged record (grace %s)", took.Seconds(), grace)
		var l listResp[mismatchResp]
		s.getJSON("reconciliation", "/mismatches?kind=confirmed_without_payment", &l)
		if len(l.Items) != 1 || l.Items[0].Facts["order"] != "CONFIRMED" || l.Items[0].Facts["payment"] != "FAILED" {
			b, _ := json.Marshal(l.Items)
			t.Errorf("the mismatch: %s, want the order CONFIRMED against the payment FAILED", b)
		}
	})
}
