package kafka

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

// ReadAll hands fn every record of topic that the cluster keeps, from the oldest to the
// end each partition had when ReadAll began, and returns those ends: where a consumer
// group goes on from. The partitions are read at once, fn called from one goroutine with
// each partition's records in order. It reads without a group, so it needs only the
// topic's Read. A partition that sends nothing for silence is an error.
func ReadAll(ctx context.Context, client sarama.Client, topic string, silence time.Duration, fn func(*sarama.ConsumerMessage) error) (map[int32]int64, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", topic, err)
	}
	ends := map[int32]int64{}
	froms := map[int32]int64{}
	for _, p := range parts {
		if froms[p], err = client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
			return nil, fmt.Errorf("%s/%d: %w", topic, p, err)
		}
		if ends[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("%s/%d: %w", topic, p, err)
		}
	}
	c, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, done := make(chan *sarama.ConsumerMessage), make(chan error, len(parts))
	for _, p := range parts {
		go func() {
			if froms[p] >= ends[p] {
				done <- nil
				return
			}
			done <- readPartition(ctx, c, topic, p, froms[p], ends[p], silence, func(m *sarama.ConsumerMessage) error {
				select {
				case msgs <- m:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
	}
	var first error
	for left := len(parts); left > 0; {
		select {
		case m := <-msgs:
			if first == nil {
				if first = fn(m); first != nil {
					cancel()
				}
			}
		case err := <-done:
			left--
			if err != nil && first == nil {
				first = err
				cancel()
			}
		}
	}
	if first != nil {
		return nil, first
	}
	return ends, nil
}

func readPartition(ctx context.Context, c sarama.Consumer, topic string, p int32, from, end int64, silence time.Duration, fn func(*sarama.ConsumerMessage) error) error {
	pc, err := c.ConsumePartition(topic, p, from)
	if err != nil {
		return fmt.Errorf("%s/%d: %w", topic, p, err)
	}
	defer pc.Close()
	quiet := time.NewTimer(silence)
	defer quiet.Stop()
	for {
		select {
		case m := <-pc.Messages():
			// Silence is the broker's: the time fn takes (waiting its turn, a batch being
			// written) does not count.
			quiet.Stop() // (Go 1.23 timers: no stale tick is received after Stop)
			if err := fn(m); err != nil {
				return err
			}
			if m.Offset+1 >= end {
				return nil
			}
			quiet.Reset(silence)
		case err := <-pc.Errors():
			return fmt.Errorf("%s/%d: %w", topic, p, err)
		case <-quiet.C:
			// The offsets left may hold no record (compacted away, or control records).
			if pc.HighWaterMarkOffset() >= end {
				return nil
			}
			return fmt.Errorf("%s/%d: offsets %d to %d not all read: nothing came for %s", topic, p, from, end-1, silence)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
