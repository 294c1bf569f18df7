package testenv

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewHashPartitioner
	return LogIn(c)
}

// Produce writes raw records, in order, as a misbehaving or foreign producer might.
func Produce(t testing.TB, brokers []string, msgs ...*sarama.ProducerMessage) {
	t.Helper()
	p, err := sarama.NewSyncProducer(brokers, saramaConfig())
	if err != nil {
		t.Fatalf("testenv: producer: %v", err)
	}
	defer p.Close()
	if err := p.SendMessages(msgs); err != nil {
		t.Fatalf("testenv: produce %d records: %v", len(msgs), err)
	}
}

// Records reads topic from the start of every partition until it has seen at least want
// records and no more arrive for a short while, or until timeout. It returns what it saw,
// so a test can also assert that nothing more than expected was published.
func Records(t testing.TB, brokers []string, topic string, want int, timeout time.Duration) []*sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, saramaConfig())
	if err != nil {
		t.Fatalf("testenv: consumer: %v", err)
	}
	defer c.Close()
	parts, err := c.Partitions(topic)
	if err != nil {
		t.Fatalf("testenv: partitions of %s: %v", topic, err)
	}
	msgs := make(chan *sarama.ConsumerMessage, 1024)
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("testenv: consume %s/%d: %v", topic, p, err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				msgs <- m
			}
		}()
	}
	var got []*sarama.ConsumerMessage
	deadline := time.After(timeout)
	quiet := 300 * time.Millisecond
	for {
		wait := timeout
		if len(got) >= want {
			wait = quiet // enough: linger briefly to catch extras
		}
		select {
		case m := <-msgs:
			got = append(got, m)
		case <-time.After(wait):
			return got
		case <-deadline:
			return got
		}
	}
}

// Header returns the value of a record header.
func Header(m *sarama.ConsumerMessage, key string) string {
	for _, h := range m.Headers {
		if h != nil && string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// WaitCommitted waits until group has committed an offset past offset on topic/partition,
// that is, until it has finished with the record at offset.
func WaitCommitted(t testing.TB, brokers []string, group, topic string, partition int32, offset int64, timeout time.Duration) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, saramaConfig())
	if err != nil {
		t.Fatalf("testenv: admin: %v", err)
	}
	defer admin.Close()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {partition}})
		if err == nil {
			if b := resp.GetBlock(topic, partition); b != nil && b.Offset > offset {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: group %s did not commit past %s/%d@%d within %s", group, topic, partition, offset, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
