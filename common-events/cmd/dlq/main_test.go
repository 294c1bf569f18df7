package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
)

// The commands as an operator types them: list, show and a dry run name the dead letter
// and its error; a replay prints its audit line; bad arguments are one clear line.
func TestCommands(t *testing.T) {
	brokers := testenv.Kafka(t).Addrs
	dlq := events.DeadLetterTopic(events.TopicOrderCreated, "payment-service")
	if err := kafka.EnsureTopics(brokers, testenv.KafkaConfig("t"), kafka.TopicSpec{Partitions: 1}, events.TopicOrderCreated, dlq); err != nil {
		t.Fatal(err)
	}
	testenv.Produce(t, brokers, &sarama.ProducerMessage{Topic: dlq, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder("junk"),
		Headers: []sarama.RecordHeader{
			{Key: []byte(consumer.HeaderDLQTopic), Value: []byte(events.TopicOrderCreated)},
			{Key: []byte(consumer.HeaderDLQError), Value: []byte("invalid payload")},
		}})
	// A copy cut short (its record too large to park whole) is never replayed as if whole.
	testenv.Produce(t, brokers, &sarama.ProducerMessage{Topic: dlq, Key: sarama.StringEncoder("big"), Value: sarama.StringEncoder("xxxx"),
		Headers: []sarama.RecordHeader{
			{Key: []byte(consumer.HeaderDLQTopic), Value: []byte(events.TopicOrderCreated)},
			{Key: []byte(consumer.HeaderDLQTruncated), Value: []byte("value of 1048500 bytes, the first 4 kept")},
		}})
	getenv := func(k string) string {
		if k == "KAFKA_BROKERS" {
			return strings.Join(brokers, ",")
		}
		return ""
	}
	dlqRun := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), args, getenv, &out)
		return out.String(), err
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"list"}, []string{dlq, " 2\n"}},
		{[]string{"show", dlq}, []string{dlq + "/0/0", "error: invalid payload", `payload: "junk"`, "2 records"}},
		{[]string{"replay", dlq, "-dry-run"}, []string{dlq + "/0/0 → order.created: would replay", dlq + "/0/1 → order.created: truncated copy"}},
		{[]string{"replay", dlq, "-offsets", "0"}, []string{dlq + "/0/0 → order.created: replayed  audit {", `"error":"invalid payload"`}},
		{[]string{"replay", dlq}, []string{"already replayed", "truncated copy"}},
	} {
		out, err := dlqRun(tc.args...)
		if err != nil {
			t.Fatalf("dlq %v: %v", tc.args, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("dlq %v printed %q, want it to contain %q", tc.args, out, w)
			}
		}
	}
	for _, bad := range [][]string{{}, {"show"}, {"replay", "order.created"}, {"show", dlq, "-offsets", "5-2"}, {"purge", dlq}} {
		if _, err := dlqRun(bad...); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("dlq %v: err = %v, want one line", bad, err)
		}
	}
}
