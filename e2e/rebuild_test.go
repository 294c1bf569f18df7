package e2e

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
	reconciliationapp "github.com/orderflow/reconciliation-service/app"
)

// readModel is reconciliation's read model as rows of text, table by table: what a rebuild
// must give back. Whether an order is settled is the sweep's bookkeeping, not the model,
// and how far the provider was read is when it looked; both are left out.
func (s *inproc) readModel(t *testing.T) map[string][]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.dbs["reconciliation"])
	must(t, err)
	defer conn.Close(ctx)
	out := map[string][]string{}
	for table, query := range map[string]string{
		"order_facts":  `SELECT (to_jsonb(f) - 'settled')::text FROM order_facts f ORDER BY order_id`,
		"timeline":     `SELECT to_jsonb(x)::text FROM timeline x ORDER BY event_id`,
		"mismatches":   `SELECT to_jsonb(m)::text FROM mismatches m ORDER BY kind, order_id`,
		"dead_letters": `SELECT to_jsonb(d)::text FROM dead_letters d ORDER BY topic, partition, "offset"`,
	} {
		rows, _ := conn.Query(ctx, query)
		out[table], err = pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
	}
	return out
}

// Stopped, its read model dropped and rebuilt by `reconciliation-service rebuild` from the
// topics (order.state from the start, the event topics and dead letters within their
// retention) and the provider's records, reconciliation-service ends with exactly the
// rows and mismatches it had when it stopped; started again, it goes on from where the
// replay ended. On both brokers.
func TestRebuildByReplayGivesTheLiveReadModel(t *testing.T) {
	parallel(t)
	const grace = 2 * time.Second
	b := testenv.Kafka(t)
	s := newStack(t, b, map[string]map[string]string{
		"reconciliation": {"RECONCILE_GRACE": grace.String(), "RECONCILE_EVERY": "200ms", "PAYMENT_DEADLINE": "4s"},
	})

	// An order cancelled while payment-service was away: its charge, if it came first, is
	// refunded.
	s.stop("payment")
	cancelled := s.placeOrder("tok_visa", "rebuild-cancelled@example.com")
	if status, _, body := send(t, "POST", s.url("order", "/orders/"+cancelled.ID+"/cancel"), ""); status != 200 {
		t.Fatalf("cancel = %d %s", status, body)
	}
	s.start("payment")
	orders := []orderResp{cancelled}
	for i, token := range []string{"tok_visa", "tok_visa", "tok_chargeDeclined", "tok_visa", "tok_chargeDeclinedInsufficientFunds"} {
		orders = append(orders, s.placeOrder(token, fmt.Sprintf("rebuild-%d@example.com", i)))
	}
	for _, o := range orders {
		if got := s.waitStatus(o.ID, 30*time.Second); got.Status == "PENDING_PAYMENT" {
			t.Fatalf("order %s still pending", o.ID)
		}
	}
	// A declined order forged CONFIRMED, a poison record dead-lettered: the model holds
	// mismatches and dead letters too.
	forge(t, b, "order-service", events.TopicOrderState, state(orders[3], events.StatusConfirmed, 3))
	produce(t, b, "order-service", &sarama.ProducerMessage{Topic: events.TopicOrderCreated, Key: sarama.StringEncoder(orders[2].ID),
		Value: sarama.StringEncoder("{not json")})
	s.waitMismatch(t, "confirmed_without_payment", orders[3].ID, true, grace+15*time.Second)
	s.waitMismatch(t, "dead_letter_unresolved", orders[2].ID, true, grace+15*time.Second)

	// The live model, once it stopped moving.
	var live map[string][]string
	if !testenv.Eventually(30*time.Second, time.Second, func() bool {
		before := live
		live = s.readModel(t)
		return before != nil && equalModels(before, live)
	}) {
		t.Fatal("the live read model did not stop moving")
	}
	s.stop("reconciliation")
	live = s.readModel(t)
	// What comes while it is stopped is beyond its group's offsets; the rebuild reads it
	// too, and commits past it. (Its facts are left out of the comparison.)
	late := s.placeOrder("tok_visa", "rebuild-late@example.com")
	if got := s.waitStatus(late.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	time.Sleep(time.Second) // its email, and notification.sent

	var out bytes.Buffer
	env := s.env["reconciliation"]
	must(t, reconciliationapp.Rebuild(context.Background(), func(k string) string { return env[k] }, &out))
	t.Log(strings.TrimSpace(out.String()))
	rebuilt := s.readModel(t)
	for table, rows := range rebuilt {
		rebuilt[table] = slices.DeleteFunc(rows, func(r string) bool { return strings.Contains(r, late.ID) })
	}
	for table, rows := range live {
		if !slices.Equal(rows, rebuilt[table]) {
			t.Errorf("%s: the rebuild differs from the live model:\n%s", table, diffRows(rows, rebuilt[table]))
		} else {
			t.Logf("%s: %d rows, as the live model's", table, len(rows))
		}
	}
	if len(live["mismatches"]) < 2 || len(live["dead_letters"]) == 0 || len(live["timeline"]) < 20 {
		t.Errorf("the live model is too thin to prove much: %d mismatches, %d dead letters, %d timeline rows",
			len(live["mismatches"]), len(live["dead_letters"]), len(live["timeline"]))
	}

	// Its group's offsets are the topics' ends: started again, it goes on from there.
	conf := b.ConfigAs("reconciliation-service", "rebuild-test")
	admin, err := sarama.NewClusterAdmin(b.Addrs, conf)
	must(t, err)
	defer admin.Close()
	client, err := sarama.NewClient(b.Addrs, conf)
	must(t, err)
	defer client.Close()
	committed, err := admin.ListConsumerGroupOffsets(services.Reconciliation.Group, nil)
	must(t, err)
	for _, topic := range services.Reconciliation.Consumes {
		parts, err := client.Partitions(topic)
		must(t, err)
		for _, p := range parts {
			end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			must(t, err)
			if got := committed.GetBlock(topic, p); got == nil || got.Offset != end {
				t.Errorf("%s/%d: the group's offset after the rebuild is %+v, want the end, %d", topic, p, got, end)
			}
		}
	}
	s.start("reconciliation")
	o := s.placeOrder("tok_visa", "rebuild-after@example.com")
	if got := s.waitStatus(o.ID, 30*time.Second); got.Status != "CONFIRMED" {
		t.Fatalf("order = %s, want CONFIRMED", got.Status)
	}
	if !testenv.Eventually(15*time.Second, 200*time.Millisecond, func() bool {
		return slices.ContainsFunc(s.readModel(t)["order_facts"], func(r string) bool {
			return strings.Contains(r, o.ID) && strings.Contains(r, `"status": "CONFIRMED"`)
		})
	}) {
		t.Error("after the rebuild, the service did not go on with new records")
	}
}

func equalModels(a, b map[string][]string) bool {
	for table, rows := range a {
		if !slices.Equal(rows, b[table]) {
			return false
		}
	}
	return len(a) == len(b)
}

// diffRows lists the rows only one side has.
func diffRows(want, got []string) string {
	var out []string
	for _, r := range want {
		if !slices.Contains(got, r) {
			out = append(out, "  live only: "+r)
		}
	}
	for _, r := range got {
		if !slices.Contains(want, r) {
			out = append(out, "  rebuilt only: "+r)
		}
	}
	return strings.Join(out, "\n")
}
