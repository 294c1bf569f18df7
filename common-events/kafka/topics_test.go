package kafka_test

import (
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

// The topics are made as the code says: an entity topic compacted and kept for ever, an
// event topic deleting what is older than the retention asked for, one made without a
// retention with the broker's defaults.
func TestTopicsAreMadeWithTheirSettings(t *testing.T) {
	b := testenv.Kafka(t)
	spec := kafka.TopicSpec{Partitions: 2, Retention: 2 * time.Hour}
	if err := kafka.EnsureTopics(b.Addrs, testenv.KafkaConfig("t"), spec, events.TopicOrderState, events.TopicOrderCreated); err != nil {
		t.Fatal(err)
	}
	if err := kafka.EnsureTopics(b.Addrs, testenv.KafkaConfig("t"), kafka.TopicSpec{Partitions: 1}, "plain"); err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(b.Addrs, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	config := func(topic, name string) string {
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{name}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name == name {
				return e.Value
			}
		}
		return ""
	}
	for _, c := range []struct{ topic, name, want string }{
		{events.TopicOrderState, "cleanup.policy", "compact"},
		{events.TopicOrderState, "retention.ms", "-1"},
		{events.TopicOrderCreated, "cleanup.policy", "delete"},
		{events.TopicOrderCreated, "retention.ms", "7200000"},
	} {
		if got := config(c.topic, c.name); got != c.want {
			t.Errorf("%s: %s = %q, want %q", c.topic, c.name, got, c.want)
		}
	}
	if got := config("plain", "cleanup.policy"); got == "compact" {
		t.Errorf("a topic that is no entity topic is compacted")
	}
}
