package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/testenv"
)

// order.state is an entity topic: order-service makes it compacted, and once Apache
// Kafka compacts it, an order's older records are gone and its latest is kept. The
// compaction is forced: the topic's segments roll within 100 ms and are cleaned as soon
// as any of them is dirty.
func TestOrderStateIsCompactedToEachOrdersLatestState(t *testing.T) {
	if testenv.BrokerKind() != testenv.ApacheKafka {
		t.Skip("compaction is the broker's: the Apache Kafka pass (make test-kafka) proves it")
	}
	b := testenv.Kafka(t)
	s := newStack(t, b, nil)
	confirmed := s.placeOrder("tok_visa", "compact-a@example.com")
	failed := s.placeOrder("tok_chargeDeclined", "compact-b@example.com")
	for id, want := range map[string]string{confirmed.ID: "CONFIRMED", failed.ID: "PAYMENT_FAILED"} {
		if got := s.waitStatus(id, 30*time.Second); got.Status != want {
			t.Fatalf("order = %s, want %s", got.Status, want)
		}
	}
	// states reads order.state from the start: what each order's records say, in order.
	states := func() map[string][]string {
		got := map[string][]string{}
		for _, r := range testenv.Records(t, b.Addrs, events.TopicOrderState, 1000, 2*time.Second) {
			var st events.OrderState
			if err := json.Unmarshal(r.Value, &st); err != nil {
				t.Fatal(err)
			}
			got[st.OrderID] = append(got[st.OrderID], fmt.Sprintf("%d %s", st.Version, st.Status))
		}
		return got
	}
	before := states()
	if got := before[confirmed.ID]; !slices.Equal(got, []string{"1 PENDING_PAYMENT", "2 CONFIRMED"}) {
		t.Fatalf("before compaction, order.state holds %v for the confirmed order", got)
	}

	admin, err := sarama.NewClusterAdmin(b.Addrs, b.ConfigAs(kafkabroker.Admin, "compaction-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: events.TopicOrderState, ConfigNames: []string{"cleanup.policy"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Value != "compact" {
		t.Fatalf("order.state's cleanup.policy = %+v, want compact", entries)
	}
	{
		set := func(v string) sarama.IncrementalAlterConfigsEntry {
			return sarama.IncrementalAlterConfigsEntry{Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v}
		}
		if err := admin.IncrementalAlterConfig(sarama.TopicResource, events.TopicOrderState, map[string]sarama.IncrementalAlterConfigsEntry{
			"segment.ms": set("100"), "min.cleanable.dirty.ratio": set("0.001"),
		}, false); err != nil {
			t.Fatal(err)
		}
		if err := admin.IncrementalAlterConfig(sarama.BrokerResource, "", map[string]sarama.IncrementalAlterConfigsEntry{
			"log.cleaner.backoff.ms": set("200"),
		}, false); err != nil {
			t.Fatal(err)
		}
	}
	// The segment the latest records are in is never compacted: every so often, one more
	// order rolls it, until the first two are down to their latest state.
	var after map[string][]string
	if !testenv.Eventually(90*time.Second, 500*time.Millisecond, func() bool {
		s.placeOrder("tok_visa", "compact-roll@example.com")
		after = states()
		return len(after[confirmed.ID]) == 1 && len(after[failed.ID]) == 1
	}) {
		t.Fatalf("order.state was never compacted: %v", keysOf(after, confirmed.ID, failed.ID))
	}
	if got := after[confirmed.ID]; got[0] != "2 CONFIRMED" {
		t.Errorf("after compaction the confirmed order's state is %v, want its latest, 2 CONFIRMED", got)
	}
	if got := after[failed.ID]; got[0] != "2 PAYMENT_FAILED" {
		t.Errorf("after compaction the failed order's state is %v, want its latest, 2 PAYMENT_FAILED", got)
	}
}

func keysOf(m map[string][]string, ids ...string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprintf("%s: %v", id, m[id]))
	}
	sort.Strings(out)
	return out
}
