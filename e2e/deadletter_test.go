package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/deadletter"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

// The operators' dead-letter tool against the real broker and the real consumers: it
// lists the dead-letter topics with their depth and shows a poison record's error; a
// poison record replayed goes back to the dead-letter topic once, and a second run
// replays nothing; a valid event replayed twice changes nothing — one payment, one charge.
func TestDeadLettersCanBeShownAndReplayedSafely(t *testing.T) {
	parallel(t)
	b := testenv.Kafka(t)
	brokers := b.Addrs
	s := newStack(t, b, nil)
	dlq := events.DeadLetterTopic(events.TopicOrderCreated, "payment-service")

	// A poison record: payment-service dead-letters it.
	testenv.Produce(t, brokers, &sarama.ProducerMessage{Topic: events.TopicOrderCreated,
		Key: sarama.StringEncoder("poison-1"), Value: sarama.StringEncoder("not an event")})
	// A valid order, paid once; then its order.created put on the dead-letter topic by
	// hand, as a consumer bug that has since been fixed would have left it.
	o := s.placeOrder("tok_visa", "replay@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	var created *sarama.ConsumerMessage
	for _, m := range testenv.Records(t, brokers, events.TopicOrderCreated, 2, 10*time.Second) {
		if string(m.Key) == o.ID {
			created = m
		}
	}
	if created == nil {
		t.Fatal("the order's order.created is not on its topic")
	}
	hs := []sarama.RecordHeader{
		{Key: []byte(consumer.HeaderDLQTopic), Value: []byte(events.TopicOrderCreated)},
		{Key: []byte(consumer.HeaderDLQError), Value: []byte("a bug, since fixed")},
	}
	for _, h := range created.Headers {
		hs = append(hs, *h)
	}
	testenv.Produce(t, brokers, &sarama.ProducerMessage{Topic: dlq, Key: sarama.ByteEncoder(created.Key),
		Value: sarama.ByteEncoder(created.Value), Headers: hs})
	testenv.Records(t, brokers, dlq, 2, 15*time.Second) // both are there

	// The tool logs in as the operators' principal: on Apache Kafka it may do only what
	// the services' kafka-setup granted it.
	client, err := sarama.NewClient(brokers, b.ConfigAs(kafka.OperatorPrincipal, "dlq-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	tool := &deadletter.Tool{Client: client, Producer: producer, By: "test@e2e", Now: time.Now}
	depth := func() int64 {
		t.Helper()
		depths, err := tool.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range depths {
			if d.Topic == dlq {
				return d.Records
			}
		}
		t.Fatalf("list does not name %s: %+v", dlq, depths)
		return 0
	}
	if n := depth(); n != 2 {
		t.Fatalf("depth of %s = %d, want 2", dlq, n)
	}
	recs, err := tool.Records(context.Background(), dlq, deadletter.All)
	if err != nil || len(recs) != 2 {
		t.Fatalf("show = %d records, %v; want 2", len(recs), err)
	}
	if e := recs[0].Headers[consumer.HeaderDLQError]; string(recs[0].Value) != "not an event" || !strings.Contains(e, "missing header") {
		t.Errorf("the poison record shows %q with error %q", recs[0].Value, e)
	}

	dry, err := tool.Replay(context.Background(), dlq, deadletter.All, true)
	if err != nil || len(dry) != 2 || dry[0].Outcome != "would replay" || depth() != 2 {
		t.Fatalf("dry run = %+v, %v; want 2 that would be replayed and nothing sent", dry, err)
	}
	first, err := tool.Replay(context.Background(), dlq, deadletter.All, false)
	if err != nil || len(first) != 2 || first[0].Outcome != "replayed" || first[1].Outcome != "replayed" || !strings.Contains(first[1].Audit, `"by":"test@e2e"`) {
		t.Fatalf("replay = %+v, %v; want both replayed with an audit line", first, err)
	}
	// The poison comes back once; the valid event is a duplicate to payment-service.
	testenv.Records(t, brokers, dlq, 3, 15*time.Second)
	second, err := tool.Replay(context.Background(), dlq, deadletter.All, false)
	outcomes := map[string]string{}
	for _, rp := range second {
		outcomes[rp.Record.ID()] = rp.Outcome
	}
	if err != nil || len(second) != 3 || outcomes[first[0].Record.ID()] != "already replayed" || outcomes[first[1].Record.ID()] != "already replayed" {
		t.Fatalf("second replay = %v, %v; want the two replayed before skipped", outcomes, err)
	}
	// The poison's return is a dead letter of its own, which the second run replayed: it
	// comes back once more, and that is all.
	testenv.Records(t, brokers, dlq, 4, 15*time.Second)
	if n := depth(); n != 4 {
		t.Errorf("depth after two runs = %d, want 4: the poison back once per run, nothing else", n)
	}
	var charges struct{ Items []struct{ ChargeID string } }
	s.getJSON("payment", "/provider/charges?order_id="+o.ID, &charges)
	var payments struct{ Items []struct{ Status string } }
	s.getJSON("payment", "/payments?order_id="+o.ID, &payments)
	if len(charges.Items) != 1 || len(payments.Items) != 1 || payments.Items[0].Status != "COMPLETED" {
		t.Errorf("after replaying its order.created twice: charges %+v, payments %+v; want one of each", charges.Items, payments.Items)
	}
}
