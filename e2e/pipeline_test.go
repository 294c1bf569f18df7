package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

func TestHappyPathConfirmsChargesOnceAndEmailsOnce(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), nil)
	o := s.placeOrder("tok_visa", "ada@example.com")

	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order status = %s, want CONFIRMED", got.Status)
	}
	if ps := s.payments(o.ID); len(ps) != 1 || ps[0].Status != "COMPLETED" || ps[0].AmountCents != 4348 || ps[0].ChargeID == "" {
		t.Errorf("payments = %+v, want one COMPLETED of 4348 with a charge id", ps)
	}
	emails := s.waitEmails("ada@example.com", 1, 10*time.Second)
	if len(emails) != 1 || !strings.Contains(emails[0].Subject, "confirmed") || !strings.Contains(emails[0].Body, "43.48 EUR") {
		t.Fatalf("emails = %+v, want one order confirmation for 43.48 EUR", emails)
	}
	if emails[0].MessageID != fmt.Sprintf("<%s.order_confirmed@orderflow.local>", o.ID) {
		t.Errorf("Message-ID = %q, want a stable one derived from the order", emails[0].MessageID)
	}
	if ns := s.notifications(o.ID); len(ns) != 1 || ns[0].Kind != "order_confirmed" || ns[0].Recipient != "ada@example.com" || ns[0].Status != "SENT" {
		t.Errorf("notifications = %+v, want one order_confirmed SENT", ns)
	}
}

func TestDeclinedCardFailsThePaymentAndSaysWhy(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), nil)
	declined := s.placeOrder("tok_chargeDeclined", "bob@example.com")
	broke := s.placeOrder("tok_chargeDeclinedInsufficientFunds", "cy@example.com")
	unknown := s.placeOrder("tok_nonsense", "di@example.com")

	for _, tc := range []struct {
		id, email, reason string
	}{
		{declined.ID, "bob@example.com", "card_declined"},
		{broke.ID, "cy@example.com", "insufficient_funds"},
		{unknown.ID, "di@example.com", "invalid_payment_method"},
	} {
		got := s.waitStatus(tc.id, 30*time.Second)
		if got.Status != "PAYMENT_FAILED" || got.FailureReason != tc.reason {
			t.Errorf("order %s = %s (%q), want PAYMENT_FAILED (%s)", tc.email, got.Status, got.FailureReason, tc.reason)
		}
		if ps := s.payments(tc.id); len(ps) != 1 || ps[0].Status != "FAILED" || ps[0].FailureReason != tc.reason {
			t.Errorf("payments of %s = %+v, want one FAILED %s", tc.email, ps, tc.reason)
		}
		emails := s.waitEmails(tc.email, 1, 10*time.Second)
		if len(emails) != 1 || !strings.Contains(emails[0].Subject, "failed") || !strings.Contains(emails[0].Body, tc.reason) {
			t.Errorf("emails to %s = %+v, want one 'payment failed' naming %s", tc.email, emails, tc.reason)
		}
		for _, e := range emails {
			if strings.Contains(e.Subject, "confirmed") {
				t.Errorf("%s got a confirmation email for a failed payment", tc.email)
			}
		}
	}
}

// The same order.created and payment.completed records delivered twice change nothing:
// one charge, one transition, one email.
func TestRedeliveredEventsChangeNothing(t *testing.T) {
	parallel(t)
	b := testenv.Kafka(t)
	s := newStack(t, b, nil)
	o := s.placeOrder("tok_visa", "eve@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order status = %s, want CONFIRMED", got.Status)
	}
	s.waitEmails("eve@example.com", 1, 10*time.Second)

	redeliver := func(topic string) {
		t.Helper()
		var orig *sarama.ConsumerMessage
		for _, m := range testenv.Records(t, b.Addrs, topic, 1, 5*time.Second) {
			if string(m.Key) == o.ID {
				orig = m
			}
		}
		if orig == nil {
			t.Fatalf("no %s record for the order", topic)
		}
		dup := &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(orig.Key), Value: sarama.ByteEncoder(orig.Value)}
		for _, h := range orig.Headers {
			dup.Headers = append(dup.Headers, *h)
		}
		testenv.Produce(t, b.Addrs, dup)
		// Wait until every group reading the topic is past the duplicate.
		last := testenv.Records(t, b.Addrs, topic, 2, 5*time.Second)
		var dupOffset int64 = -1
		for _, m := range last {
			if m.Partition == orig.Partition && m.Offset > dupOffset {
				dupOffset = m.Offset
			}
		}
		groups := map[string][]string{
			events.TopicOrderCreated:     {"payment-service"},
			events.TopicPaymentCompleted: {"order-service", "notification-service"},
		}[topic]
		for _, g := range groups {
			testenv.WaitCommitted(t, b.Addrs, g, topic, orig.Partition, dupOffset, 15*time.Second)
		}
	}
	redeliver(events.TopicOrderCreated)
	redeliver(events.TopicPaymentCompleted)

	if ps := s.payments(o.ID); len(ps) != 1 {
		t.Errorf("%d payments after redelivery, want 1", len(ps))
	}
	if n := count(t, s.dbs["payment"], `SELECT count(*) FROM provider_charges WHERE idempotency_key = $1`, o.ID); n != 1 {
		t.Errorf("the provider charged %d times, want 1", n)
	}
	if n := count(t, s.dbs["order"], `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_status = 'CONFIRMED'`, o.ID); n != 1 {
		t.Errorf("%d CONFIRMED transitions, want 1", n)
	}
	if emails := s.waitEmails("eve@example.com", 1, time.Second); len(emails) != 1 {
		t.Errorf("%d emails after redelivery, want 1", len(emails))
	}
}

// The dual-write window: an order accepted while the broker is unreachable is stored with
// its event, published when the broker returns, and goes through; none is lost.
func TestOrdersAcceptedDuringABrokerOutageAreNotLost(t *testing.T) {
	parallel(t)
	b := testenv.RestartableKafka(t)
	s := newStack(t, *b, nil)
	before := s.placeOrder("tok_visa", "fay@example.com")
	if got := s.waitStatus(before.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order before the outage = %s, want CONFIRMED", got.Status)
	}

	b.Stop()
	var during []orderResp
	for i := range 5 {
		during = append(during, s.placeOrder("tok_visa", fmt.Sprintf("gus%d@example.com", i)))
	}
	time.Sleep(time.Second)
	for _, o := range during {
		if got := s.getOrder(o.ID); got.Status != "PENDING_PAYMENT" {
			t.Fatalf("order %s = %s while the broker is down, want PENDING_PAYMENT", o.ID, got.Status)
		}
	}
	if n := count(t, s.dbs["order"], `SELECT count(*) FROM outbox`); n != 10 {
		t.Fatalf("outbox holds %d events while the broker is down, want 10 (order.created and order.state of each)", n)
	}

	b.Start()
	for _, o := range during {
		if got := s.waitStatus(o.ID, 60*time.Second); got.Status != "CONFIRMED" {
			t.Errorf("order %s accepted during the outage = %s, want CONFIRMED", o.ID, got.Status)
		}
		if ps := s.payments(o.ID); len(ps) != 1 {
			t.Errorf("order %s has %d payments, want 1", o.ID, len(ps))
		}
	}
}

// A garbage record on order.created is parked in payment-service's dead-letter topic with
// where it came from and why; the next valid order is still paid.
func TestPoisonRecordIsDeadLetteredAndTheFlowGoesOn(t *testing.T) {
	parallel(t)
	b := testenv.Kafka(t)
	s := newStack(t, b, nil)
	testenv.Produce(t, b.Addrs, &sarama.ProducerMessage{
		Topic: events.TopicOrderCreated, Key: sarama.StringEncoder("not-an-order"), Value: sarama.StringEncoder("{garbage"),
		Headers: []sarama.RecordHeader{{Key: []byte("ce_type"), Value: []byte("order.created")}},
	})
	o := s.placeOrder("tok_visa", "hal@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order after the poison record = %s, want CONFIRMED", got.Status)
	}
	dlq := testenv.Records(t, b.Addrs, events.DeadLetterTopic(events.TopicOrderCreated, "payment-service"), 1, 10*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(dlq))
	}
	m := dlq[0]
	if string(m.Key) != "not-an-order" || string(m.Value) != "{garbage" {
		t.Errorf("dead letter changed the record: %q %q", m.Key, m.Value)
	}
	for k, want := range map[string]string{
		consumer.HeaderDLQTopic: events.TopicOrderCreated, consumer.HeaderDLQGroup: "payment-service", "ce_type": "order.created",
	} {
		if got := testenv.Header(m, k); got != want {
			t.Errorf("dead letter header %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{consumer.HeaderDLQPartition, consumer.HeaderDLQOffset, consumer.HeaderDLQError, consumer.HeaderDLQTime} {
		if testenv.Header(m, k) == "" {
			t.Errorf("dead letter lacks header %s", k)
		}
	}
}

// Transient provider failures are retried, never turned into failed payments, and never
// charge twice.
func TestTransientProviderFailuresAreRetried(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), map[string]map[string]string{
		"payment": {"PROVIDER_TRANSIENT_FAILURE_RATE": "0.5", "PROVIDER_LATENCY": "5ms"},
	})
	var ids []string
	for i := range 6 {
		ids = append(ids, s.placeOrder("tok_mastercard", fmt.Sprintf("ivy%d@example.com", i)).ID)
	}
	for _, id := range ids {
		if got := s.waitStatus(id, 60*time.Second); got.Status != "CONFIRMED" {
			t.Errorf("order %s = %s, want CONFIRMED despite transient failures", id, got.Status)
		}
		if n := count(t, s.dbs["payment"], `SELECT count(*) FROM provider_charges WHERE idempotency_key = $1`, id); n != 1 {
			t.Errorf("order %s charged %d times, want 1", id, n)
		}
	}
}

// count runs a count(*) query on a service's database.
func count(t *testing.T, dbURL, query string, args ...any) int {
	t.Helper()
	var n int
	withDB(t, dbURL, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, query, args...).Scan(&n)
	})
	return n
}

func withDB(t *testing.T, dbURL string, fn func(context.Context, *pgx.Conn) error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := fn(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

// The provider charged, then payment-service died before recording the payment and its
// event. The redelivered order.created must find the provider's charge, not make another.
func TestACrashBetweenChargingAndPublishingDoesNotChargeTwice(t *testing.T) {
	parallel(t)
	s := newStack(t, testenv.Kafka(t), nil)
	s.stop("payment")
	o := s.placeOrder("tok_visa", "joe@example.com")

	// What the provider recorded before the crash; the consumer's transaction never committed.
	exec(t, s.dbs["payment"], `INSERT INTO provider_charges (idempotency_key, charge_id, amount_cents, currency, payment_method, outcome)
		VALUES ($1, 'ch_before_the_crash', 4348, 'EUR', 'tok_visa', 'succeeded')`, o.ID)

	s.start("payment")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	ps := s.payments(o.ID)
	if len(ps) != 1 || ps[0].ChargeID != "ch_before_the_crash" {
		t.Errorf("payments = %+v, want one recording the charge made before the crash", ps)
	}
	if n := count(t, s.dbs["payment"], `SELECT count(*) FROM provider_charges WHERE idempotency_key = $1`, o.ID); n != 1 {
		t.Errorf("the provider charged %d times, want 1", n)
	}
}

func exec(t *testing.T, dbURL, query string, args ...any) {
	t.Helper()
	withDB(t, dbURL, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, query, args...)
		return err
	})
}

// A payment outcome that no longer applies (the order is already CONFIRMED) is a logged
// no-op: the order keeps its status, its history does not grow, and the valid event is
// not dead-lettered.
func TestAnOutcomeThatDoesNotApplyChangesNothing(t *testing.T) {
	parallel(t)
	b := testenv.Kafka(t)
	s := newStack(t, b, nil)
	o := s.placeOrder("tok_visa", "kim@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	completed := testenv.Records(t, b.Addrs, events.TopicPaymentCompleted, 1, 5*time.Second)
	if len(completed) != 1 {
		t.Fatalf("%d payment.completed records, want 1", len(completed))
	}
	cause := testenv.Header(completed[0], events.HeaderID)
	if n := count(t, s.dbs["order"], `SELECT count(*) FROM order_history WHERE order_id = $1 AND to_status = 'CONFIRMED' AND cause_event_id = $2`, o.ID, cause); n != 1 {
		t.Fatalf("history does not record payment.completed %s as the cause of CONFIRMED", cause)
	}

	late, err := events.New(events.PaymentFailed{
		OrderID: o.ID, PaymentID: "p-late", CustomerEmail: "kim@example.com", AmountCents: 4348, Currency: "EUR",
		Reason: events.ReasonCardDeclined, FailedAt: time.Now(),
	}, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Produce(t, b.Addrs, kafka.Message(events.TopicPaymentFailed, late))
	failed := testenv.Records(t, b.Addrs, events.TopicPaymentFailed, 1, 5*time.Second)
	testenv.WaitCommitted(t, b.Addrs, "order-service", events.TopicPaymentFailed, failed[0].Partition, failed[0].Offset, 15*time.Second)

	if got := s.getOrder(o.ID); got.Status != "CONFIRMED" || got.FailureReason != "" {
		t.Errorf("order = %s (%q) after a late payment.failed, want CONFIRMED", got.Status, got.FailureReason)
	}
	if n := count(t, s.dbs["order"], `SELECT count(*) FROM order_history WHERE order_id = $1`, o.ID); n != 2 {
		t.Errorf("history has %d entries, want 2 (PENDING_PAYMENT, CONFIRMED)", n)
	}
	if dlq := testenv.Records(t, b.Addrs, events.DeadLetterTopic(events.TopicPaymentFailed, "order-service"), 0, 500*time.Millisecond); len(dlq) != 0 {
		t.Errorf("a valid event was dead-lettered")
	}
}
