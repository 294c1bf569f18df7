package e2e

// The event contract held against the running services: the AsyncAPI document names the
// consumer groups and dead-letter topics the services really have, every record they
// really publish is one of its messages, and an event another team writes with the
// official CloudEvents SDK is applied exactly like one of ours.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/events/eventstest"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
)

// consumersOf maps each service to its consumer groups and the topics they read.
var consumersOf = func() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, s := range services.All() {
		out[s.Name] = s.Groups()
	}
	return out
}()

// The document's receive operations are exactly the consumer groups in code, and its
// dead-letter channels exactly their dead-letter topics, each sent to by its group's service.
func TestAsyncAPIDocumentNamesTheServicesConsumerGroups(t *testing.T) {
	c, err := eventstest.Load()
	if err != nil {
		t.Fatal(err)
	}
	var want, got, wantDLQ, gotDLQ []string
	for service, groups := range consumersOf {
		for group, topics := range groups {
			for _, topic := range topics {
				want = append(want, fmt.Sprintf("%s reads %s as %s", service, topic, group))
				wantDLQ = append(wantDLQ, fmt.Sprintf("%s sends %s", service, events.DeadLetterTopic(topic, group)))
			}
		}
	}
	for _, op := range c.Operations {
		switch {
		case op.Action == "receive":
			for _, g := range op.Groups {
				got = append(got, fmt.Sprintf("%s reads %s as %s", strings.Join(op.Services, ","), op.Channel, g))
			}
		case slices.Equal(c.Channels[op.Channel].Messages, []string{eventstest.DeadLetter}):
			gotDLQ = append(gotDLQ, fmt.Sprintf("%s sends %s", strings.Join(op.Services, ","), op.Channel))
		}
	}
	for addr, ch := range c.Channels {
		if slices.Equal(ch.Messages, []string{eventstest.DeadLetter}) && !slices.ContainsFunc(gotDLQ, func(s string) bool { return strings.HasSuffix(s, " "+addr) }) {
			gotDLQ = append(gotDLQ, "nobody sends "+addr)
		}
	}
	for _, l := range [][]string{want, got, wantDLQ, gotDLQ} {
		sort.Strings(l)
	}
	if !slices.Equal(got, want) {
		t.Errorf("the document's receive operations:\n  %s\nthe consumer groups in code:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if !slices.Equal(gotDLQ, wantDLQ) {
		t.Errorf("the document's dead-letter channels:\n  %s\nin code:\n  %s", strings.Join(gotDLQ, "\n  "), strings.Join(wantDLQ, "\n  "))
	}
}

// Every record the services publish in a run that makes all five event types — confirmed,
// failed, cancelled and refunded — is a message of the document, with the correlation id
// as the CloudEvents extension and never the legacy header.
func TestEveryPublishedRecordIsAMessageOfTheAsyncAPIDocument(t *testing.T) {
	parallel(t)
	c, err := eventstest.Load()
	if err != nil {
		t.Fatal(err)
	}
	b := testenv.Kafka(t)
	s := newStack(t, b, map[string]map[string]string{"payment": {"PROVIDER_LATENCY": "2s"}})
	confirmed := s.placeOrder("tok_visa", "ann@example.com")
	failed := s.placeOrder("tok_chargeDeclined", "ben@example.com")
	refunded := s.placeOrder("tok_visa", "cat@example.com")
	// Once the provider holds the charge, payment-service has not recorded it yet: cancel.
	if !testenv.Eventually(20*time.Second, 20*time.Millisecond, func() bool { return s.charges(refunded.ID) > 0 }) {
		t.Fatal("the provider never charged the order to cancel")
	}
	resp, err := client.Post(s.url("order", "/orders/"+refunded.ID+"/cancel"), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel = %d", resp.StatusCode)
	}
	for _, tc := range []struct{ id, status string }{{confirmed.ID, "CONFIRMED"}, {failed.ID, "PAYMENT_FAILED"}} {
		if got := s.waitStatus(tc.id, 30*time.Second); got.Status != tc.status {
			t.Fatalf("order = %s, want %s", got.Status, tc.status)
		}
	}
	if !testenv.Eventually(30*time.Second, 50*time.Millisecond, func() bool {
		ps := s.payments(refunded.ID)
		return len(ps) == 1 && ps[0].Status == "REFUNDED"
	}) {
		t.Fatalf("payments of the cancelled order = %+v, want one REFUNDED", s.payments(refunded.ID))
	}

	// The records of each type the run makes: order.state, each order placed (version 1)
	// and ended (2); notification.sent, an email for each order's end (confirmed, failed,
	// cancelled) and the refund's, and the cancelled order's confirmation too unless the
	// cancellation's email came first and suppressed it.
	want := map[string][2]int{
		events.TypeOrderCreated: {3, 3}, events.TypePaymentCompleted: {2, 2}, events.TypePaymentFailed: {1, 1},
		events.TypeOrderCancelled: {1, 1}, events.TypePaymentRefunded: {1, 1}, events.TypeOrderState: {6, 6},
		events.TypeNotificationSent: {4, 5},
	}
	for _, k := range events.Kinds() {
		least, most := want[k.Type][0], want[k.Type][1]
		recs := testenv.Records(t, b.Addrs, k.Topic, most, 10*time.Second)
		if len(recs) < least || len(recs) > most {
			t.Errorf("%s: %d records, want %d to %d", k.Topic, len(recs), least, most)
		}
		if k.Entity {
			versions := map[string][]string{}
			for _, r := range recs {
				var st events.OrderState
				if err := json.Unmarshal(r.Value, &st); err != nil {
					t.Fatal(err)
				}
				versions[st.OrderID] = append(versions[st.OrderID], fmt.Sprintf("%d %s", st.Version, st.Status))
			}
			for id, end := range map[string]string{confirmed.ID: "CONFIRMED", failed.ID: "PAYMENT_FAILED", refunded.ID: "CANCELLED"} {
				if got, want := versions[id], []string{"1 PENDING_PAYMENT", "2 " + end}; !slices.Equal(got, want) {
					t.Errorf("order.state of %s: %v, want %v", id, got, want)
				}
			}
		}
		for _, r := range recs {
			hs := map[string]string{}
			for _, h := range r.Headers {
				hs[string(h.Key)] = string(h.Value)
			}
			if err := c.Check(k.Topic, hs, r.Value); err != nil {
				t.Errorf("a published record is not a message of the document: %v", err)
			}
			if _, legacy := hs[events.HeaderLegacyCorrelationID]; legacy || hs[events.HeaderCorrelationID] == "" {
				t.Errorf("%s record: headers %v, want ce_correlationid and not the legacy correlationid", k.Topic, hs)
			}
			if string(r.Key) != hs[events.HeaderSubject] {
				t.Errorf("%s record keyed %q, want its order id %q", k.Topic, r.Key, hs[events.HeaderSubject])
			}
		}
	}
}

func (s *inproc) charges(orderID string) int {
	var l listResp[map[string]any]
	s.getJSON("payment", "/provider/charges?order_id="+orderID, &l)
	return len(l.Items)
}

// A payment.completed that another team writes with the official CloudEvents SDK, straight
// to the broker, is applied like one of ours: the pending order is confirmed with that
// event as its cause, the customer is emailed, and both consumers carry its correlation id.
func TestAnEventWrittenWithTheCloudEventsSDKIsAppliedLikeOurs(t *testing.T) {
	parallel(t)
	b := testenv.Kafka(t)
	s := newStack(t, b, map[string]map[string]string{"order": {"LOG_LEVEL": "info"}, "notification": {"LOG_LEVEL": "info"}})
	s.stop("payment") // the other team's service pays instead
	o := s.placeOrder("tok_visa", "dee@example.com")

	const correlationID = "checkout-7f3a9c"
	e := cloudevents.NewEvent()
	e.SetID("019a8f3e-7d02-7c11-8a3b-000000000001")
	e.SetSource("payment-service")
	e.SetType(events.TypePaymentCompleted)
	e.SetSubject(o.ID)
	e.SetTime(time.Now().UTC())
	e.SetExtension("correlationid", correlationID)
	e.SetExtension("partitionkey", o.ID) // the SDK's way to key the record by the order id
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{
		"order_id": o.ID, "payment_id": "019a8f3e-7d01-7e20-b1c2-000000000001", "charge_id": "ch_other_team_1",
		"customer_id": issuer.Customer, "customer_email": "dee@example.com",
		"amount_cents": o.TotalCents, "currency": "EUR", "completed_at": time.Now().UTC().Format(time.RFC3339Nano),
	}); err != nil {
		t.Fatal(err)
	}
	msg := &sarama.ProducerMessage{Topic: events.TopicPaymentCompleted}
	if err := kafka_sarama.WriteProducerMessage(context.Background(), binding.ToMessage(&e), msg); err != nil {
		t.Fatal(err)
	}
	testenv.Produce(t, b.Addrs, msg)

	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	var history listResp[struct {
		To           string `json:"to"`
		CauseEventID string `json:"cause_event_id"`
	}]
	s.getJSON("order", "/orders/"+o.ID+"/history", &history)
	if n := len(history.Items); n != 2 || history.Items[1].To != "CONFIRMED" || history.Items[1].CauseEventID != e.ID() {
		t.Errorf("history = %+v, want CONFIRMED caused by the SDK's event %s", history.Items, e.ID())
	}
	if emails := s.waitEmails("dee@example.com", 1, 10*time.Second); len(emails) != 1 || !strings.Contains(emails[0].Subject, "confirmed") {
		t.Errorf("emails = %+v, want one confirmation", emails)
	}
	for service, msg := range map[string]string{"order": "order status changed", "notification": "customer notified"} {
		var lines []map[string]any
		testenv.Eventually(5*time.Second, 50*time.Millisecond, func() bool { // logged once committed
			lines = s.logs[service].Lines(map[string]string{"msg": msg, "order_id": o.ID})
			return len(lines) > 0
		})
		if len(lines) != 1 || lines[0]["correlation_id"] != correlationID || lines[0]["event_id"] != e.ID() {
			t.Errorf("%s-service logged %v, want one %q line with correlation_id %s and event_id %s", service, lines, msg, correlationID, e.ID())
		}
	}
}
