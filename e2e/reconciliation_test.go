package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/deadletter"
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
func (s *inproc) waitMismatch(t *testing.T, kind, orderID string, want bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if !testenv.Eventually(within, 100*time.Millisecond, func() bool {
		return slices.Contains(s.mismatches()[kind], orderID) == want
	}) {
		var tl json.RawMessage
		s.getJSON("reconciliation", "/orders/"+orderID+"/timeline", &tl)
		ctx := context.Background()
		var facts string
		if conn, err := pgx.Connect(ctx, s.dbs["reconciliation"]); err == nil {
			conn.QueryRow(ctx, `SELECT row_to_json(f)::text FROM order_facts f WHERE order_id = $1`, orderID).Scan(&facts)
			conn.Close(ctx)
		}
		t.Fatalf("after %s: mismatches %v, want %s of %s: %v; its facts: %s; its timeline: %s", within, s.mismatches(), kind, orderID, want, facts, tl)
	}
	return time.Since(start)
}

// forge sends env to topic as principal, behind the services' backs: a buggy release, a
// manual fix, a record from elsewhere.
func forge(t *testing.T, b testenv.Broker, principal, topic string, ev events.Event) {
	t.Helper()
	env, err := events.New(ev, events.Meta{}, time.Now())
	must(t, err)
	produce(t, b, principal, kafka.Message(topic, env))
}

func produce(t *testing.T, b testenv.Broker, principal string, msg *sarama.ProducerMessage) {
	t.Helper()
	p, err := sarama.NewSyncProducer(b.Addrs, b.ConfigAs(principal, "forger"))
	must(t, err)
	defer p.Close()
	_, _, err = p.SendMessage(msg)
	must(t, err)
}

// exec runs sql in service's database.
func (s *inproc) exec(t *testing.T, service, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.dbs[service])
	must(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	must(t, err)
}

// mismatchOf is reconciliation's open mismatch of kind for order.
func (s *inproc) mismatchOf(kind, orderID string) (mismatchResp, bool) {
	var l listResp[mismatchResp]
	s.getJSON("reconciliation", "/mismatches?limit=1000&kind="+kind, &l)
	for _, m := range l.Items {
		if m.OrderID == orderID {
			return m, true
		}
	}
	return mismatchResp{}, false
}

// state is an order.state for o at version, as order-service would write it.
func state(o orderResp, status string, version int64) events.OrderState {
	return events.OrderState{OrderID: o.ID, CustomerID: "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93", Status: status,
		Items: []events.Item{{SKU: "BOOK-42", Quantity: 1, UnitPriceCents: o.TotalCents}}, TotalCents: o.TotalCents, Currency: "EUR",
		Version: version, CreatedAt: time.Now().Add(-time.Minute), UpdatedAt: time.Now()}
}

// reconciliation-service watches what the services and the provider say and reports where
// they disagree, once the disagreement outlasts its grace, and clears it when the facts
// catch up:
//   - orders that go through, fail or are cancelled leave no mismatch, and their timeline
//     holds what each service said;
//   - the seed's story: payment-service stopped while customers place orders; each is
//     pending past the deadline until payment-service is back, then every one settles and
//     no mismatch is left;
//   - notification-service stopped: the confirmed order without its email, until it is
//     back and sends it;
//   - a planted fault of each kind is reported within its grace and a few seconds, with
//     the facts that disagree; a dead letter clears once the ledger says it was replayed.
func TestReconciliationReportsWhatDisagrees(t *testing.T) {
	parallel(t)
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
	var said []string
	want := []string{"notification.sent", "order.state", "order.state", "payment.completed", "provider.charge"}
	testenv.Eventually(10*time.Second, 200*time.Millisecond, func() bool { // the provider's records are read a little behind
		var tl struct {
			Items []struct {
				EventType string `json:"event_type"`
			} `json:"items"`
		}
		if getJSON(s.url("reconciliation", "/orders/"+confirmed.ID+"/timeline"), &tl) != nil {
			return false // not heard of yet
		}
		said = said[:0]
		for _, x := range tl.Items {
			said = append(said, x.EventType)
		}
		slices.Sort(said)
		return slices.Equal(said, want)
	})
	if !slices.Equal(said, want) {
		t.Errorf("the confirmed order's timeline: %v, want %v", said, want)
	}
	if status, _, _ := send(t, http.MethodGet, s.url("reconciliation", "/mismatches"), "", "Authorization", "Bearer forged"); status != http.StatusUnauthorized {
		t.Errorf("GET /mismatches with a forged token = %d, want 401", status)
	}

	s.stop("payment")
	t.Run("the seed's story: payment-service stopped while customers place orders", func(t *testing.T) {
		var placed []orderResp
		for i := range 10 {
			placed = append(placed, s.placeOrder("tok_visa", fmt.Sprintf("rec-story-%d@example.com", i)))
		}
		took := s.waitMismatch(t, "pending_past_deadline", placed[len(placed)-1].ID, true, 30*time.Second)
		t.Logf("reported %.1f s after the last order was placed (deadline 4 s, grace %s)", took.Seconds(), grace)
		for _, o := range placed {
			if _, ok := s.mismatchOf("pending_past_deadline", o.ID); !ok {
				t.Errorf("order %s: not pending past the deadline; mismatches %v", o.ID, s.mismatches())
			}
		}
		s.start("payment")
		for _, o := range placed {
			if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
				t.Fatalf("order = %s once payment-service is back, want CONFIRMED", got.Status)
			}
		}
		if !testenv.Eventually(30*time.Second, 200*time.Millisecond, func() bool { return len(s.mismatches()) == 0 }) {
			t.Fatalf("every order settled: mismatches %v, want none", s.mismatches())
		}
	})
	t.Run("no email, until notification-service is back", func(t *testing.T) {
		s.stop("notification")
		o := s.placeOrder("tok_visa", "rec-email@example.com")
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
			t.Fatalf("order = %s, want CONFIRMED", got.Status)
		}
		s.waitMismatch(t, "final_without_email", o.ID, true, 15*time.Second)
		s.start("notification")
		s.waitMismatch(t, "final_without_email", o.ID, false, 30*time.Second)
	})

	more := map[string]orderResp{}
	for _, name := range []string{"reverted", "cancelled behind", "refunded behind"} {
		more[name] = s.placeOrder("tok_visa", "rec-"+strings.ReplaceAll(name, " ", "-")+"@example.com")
	}
	for _, o := range more {
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
			t.Fatalf("order = %s, want CONFIRMED", got.Status)
		}
	}
	// Orders no service placed.
	stranger, charged := events.NewID(time.Now()), events.NewID(time.Now())
	for _, tt := range []struct {
		kind  string
		order string
		plant func(t *testing.T)
		facts map[string]string
	}{
		{"confirmed_without_payment", failed.ID, func(t *testing.T) { // a declined order made CONFIRMED by a buggy release
			forge(t, b, "order-service", events.TopicOrderState, state(failed, events.StatusConfirmed, 3))
		}, map[string]string{"order": "CONFIRMED", "payment": "FAILED"}},
		{"paid_not_confirmed", more["reverted"].ID, func(t *testing.T) { // a paid order put back to pending by hand
			forge(t, b, "order-service", events.TopicOrderState, state(more["reverted"], events.StatusPendingPayment, 3))
		}, map[string]string{"order": "PENDING_PAYMENT", "payment": "COMPLETED"}},
		{"cancelled_not_refunded", more["cancelled behind"].ID, func(t *testing.T) { // cancelled in the database, behind payment-service's back
			forge(t, b, "order-service", events.TopicOrderState, state(more["cancelled behind"], events.StatusCancelled, 3))
		}, map[string]string{"order": "CANCELLED", "payment": "COMPLETED"}},
		{"refunded_not_cancelled", more["refunded behind"].ID, func(t *testing.T) { // refunded from the provider's dashboard
			o := more["refunded behind"]
			forge(t, b, "payment-service", events.TopicPaymentRefunded, events.PaymentRefunded{OrderID: o.ID, PaymentID: events.NewID(time.Now()),
				ChargeID: "ch_dashboard", RefundID: "re_dashboard", CustomerID: "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93",
				CustomerEmail: "rec-refunded-behind@example.com", AmountCents: o.TotalCents, Currency: "EUR", RefundedAt: time.Now()})
		}, map[string]string{"order": "CONFIRMED", "payment": "REFUNDED", "refund": "re_dashboard"}},
		{"charge_without_payment", charged, func(t *testing.T) { // the provider charged, and its answer (and the order) were lost
			s.exec(t, "payment", `INSERT INTO provider_charges (idempotency_key, charge_id, amount_cents, currency, payment_method, outcome)
				VALUES ($1, 'ch_answer_lost', 100, 'EUR', 'tok_visa', 'succeeded')`, charged)
		}, map[string]string{"provider_charge": "ch_answer_lost", "payment": "none", "order": "none"}},
		{"completed_without_charge", stranger, func(t *testing.T) { // a payment.completed from elsewhere, for a charge the provider never made
			forge(t, b, "payment-service", events.TopicPaymentCompleted, events.PaymentCompleted{OrderID: stranger, PaymentID: events.NewID(time.Now()),
				ChargeID: "ch_nowhere", CustomerID: "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93", CustomerEmail: "rec-stranger@example.com",
				AmountCents: 100, Currency: "EUR", CompletedAt: time.Now()})
		}, map[string]string{"payment": "COMPLETED", "charge": "ch_nowhere", "provider_charge": "none"}},
		{"dead_letter_unresolved", confirmed.ID, func(t *testing.T) { // a record payment-service cannot read, left in its dead-letter topic
			produce(t, b, "order-service", &sarama.ProducerMessage{Topic: events.TopicOrderCreated, Key: sarama.StringEncoder(confirmed.ID),
				Value: sarama.StringEncoder("{not json")})
		}, map[string]string{"topic": events.DeadLetterTopic(events.TopicOrderCreated, "payment-service"), "records": "1"}},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			tt.plant(t)
			took := s.waitMismatch(t, tt.kind, tt.order, true, grace+10*time.Second)
			t.Logf("reported %.1f s after it was planted (grace %s)", took.Seconds(), grace)
			m, _ := s.mismatchOf(tt.kind, tt.order)
			for k, v := range tt.facts {
				if m.Facts[k] != v {
					b, _ := json.Marshal(m)
					t.Errorf("the mismatch: %s, want %s = %s", b, k, v)
				}
			}
		})
	}
	t.Run("a dead letter replayed clears", func(t *testing.T) {
		m, ok := s.mismatchOf("dead_letter_unresolved", confirmed.ID)
		if !ok {
			t.Fatal("no dead letter to replay")
		}
		// What the dead-letter tool writes to its ledger once it replayed the record (the
		// ledger made as the tool and each service's kafka-setup make it).
		must(t, kafka.EnsureTopics(b.Addrs, b.ConfigAs("dlq", "dlq"), kafka.TopicSpec{Partitions: 1}, deadletter.Ledger))
		id := fmt.Sprintf("%s/%s/%s", m.Facts["topic"], m.Facts["partition"], m.Facts["offset"])
		produce(t, b, "dlq", &sarama.ProducerMessage{Topic: deadletter.Ledger, Key: sarama.StringEncoder(id), Value: sarama.StringEncoder(`{"replayed":"` + id + `"}`)})
		s.waitMismatch(t, "dead_letter_unresolved", confirmed.ID, false, grace+10*time.Second)
	})
}
