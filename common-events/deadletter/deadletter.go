// Package deadletter is what an operator does with dead-lettered records: list the
// dead-letter topics with their depth, show their records (headers, error, payload), and
// replay them to the topic they came from. Replaying is safe because every consumer is
// idempotent (its inbox skips an event it applied); a record that is still poison is
// dead-lettered again. Each replay is written to a ledger topic, Ledger, which is the
// audit trail and what keeps a record from being replayed twice.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/kafka"
)

// Ledger is the topic every replay is recorded on, keyed by the record replayed.
const Ledger = "orderflow.dlq.replayed"

// Headers a replayed record carries besides its own.
const (
	HeaderReplayedFrom = "dlq_replayed_from" // topic/partition/offset of the dead letter
	HeaderReplayedAt   = "dlq_replayed_at"
)

// Tool works on the dead-letter topics of one cluster.
type Tool struct {
	Client   sarama.Client
	Producer sarama.SyncProducer
	By       string // who replays, for the audit (user@host)
	Now      func() time.Time
}

// Depth is a dead-letter topic and how many records it holds.
type Depth struct {
	Topic   string
	Records int64
}

// IsDeadLetterTopic reports whether topic is a dead-letter topic (events.DeadLetterTopic).
func IsDeadLetterTopic(topic string) bool { return strings.HasSuffix(topic, ".dlq") }

// List returns every dead-letter topic with the records it holds, by name.
func (t *Tool) List() ([]Depth, error) {
	if err := t.Client.RefreshMetadata(); err != nil {
		return nil, err
	}
	topics, err := t.Client.Topics()
	if err != nil {
		return nil, err
	}
	var out []Depth
	for _, topic := range topics {
		if !IsDeadLetterTopic(topic) {
			continue
		}
		d := Depth{Topic: topic}
		bounds, err := t.bounds(topic)
		if err != nil {
			return nil, err
		}
		for _, b := range bounds {
			d.Records += b[1] - b[0]
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Depth) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

// bounds are each partition's oldest offset kept and its end.
func (t *Tool) bounds(topic string) (map[int32][2]int64, error) {
	parts, err := t.Client.Partitions(topic)
	if err != nil {
		return nil, err
	}
	out := map[int32][2]int64{}
	for _, p := range parts {
		oldest, err := t.Client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, err
		}
		end, err := t.Client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, err
		}
		out[p] = [2]int64{oldest, end}
	}
	return out, nil
}

// Selection picks records of a dead-letter topic: on Partition (-1: every one), the
// offsets From to To, both included (To -1: to the end).
type Selection struct {
	Partition int32
	From, To  int64
}

// All selects every record.
var All = Selection{Partition: -1, From: 0, To: -1}

// Record is a dead letter.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
	headers   []*sarama.RecordHeader
}

// ID names the record: topic/partition/offset.
func (r Record) ID() string { return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset) }

// Records reads the selected records of topic.
func (t *Tool) Records(ctx context.Context, topic string, sel Selection) ([]Record, error) {
	if !IsDeadLetterTopic(topic) {
		return nil, fmt.Errorf("%s is not a dead-letter topic (they end in .dlq; see list)", topic)
	}
	out, err := t.read(ctx, topic, sel)
	slices.SortFunc(out, func(a, b Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out, err
}

// read reads the selected records of any topic.
func (t *Tool) read(ctx context.Context, topic string, sel Selection) ([]Record, error) {
	bounds, err := t.bounds(topic)
	if err != nil {
		return nil, err
	}
	c, err := sarama.NewConsumerFromClient(t.Client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out []Record
	for p, b := range bounds {
		if sel.Partition >= 0 && p != sel.Partition {
			continue
		}
		from, end := max(sel.From, b[0]), b[1]
		if sel.To >= 0 {
			end = min(end, sel.To+1)
		}
		if from >= end {
			continue
		}
		recs, err := readPartition(ctx, c, topic, p, from, end)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// readPartition reads offsets [from, end) of one partition, within 10 s.
func readPartition(ctx context.Context, c sarama.Consumer, topic string, p int32, from, end int64) ([]Record, error) {
	pc, err := c.ConsumePartition(topic, p, from)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	// Reading may take long on a big topic; a broker that sends nothing for 10 s is gone.
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	var out []Record
	for {
		select {
		case m := <-pc.Messages():
			timeout.Reset(10 * time.Second)
			hs := map[string]string{}
			for _, h := range m.Headers {
				hs[string(h.Key)] = string(h.Value)
			}
			out = append(out, Record{Topic: topic, Partition: p, Offset: m.Offset, Key: m.Key, Value: m.Value, Headers: hs, headers: m.Headers})
			if m.Offset+1 >= end {
				return out, nil
			}
		case err := <-pc.Errors():
			return nil, err
		case <-timeout.C:
			if len(out) > 0 && pc.HighWaterMarkOffset() >= end { // the offsets left hold no record (compacted)
				return out, nil
			}
			return nil, fmt.Errorf("%s/%d: offsets %d to %d not all read: nothing came for 10s", topic, p, from, end-1)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Replay is what became of one record: replayed now, replayed before (skipped), or
// unreplayable (no original topic; a copy cut short, its record too large to park whole).
type Replay struct {
	Record  Record
	To      string // the original topic
	Outcome string // "replayed", "would replay" (dry run), "already replayed", "no original topic", "truncated copy"
	Audit   string // the audit line written to the ledger, for a replay
}

// Replay sends the selected records of topic back to their original topics, each with
// its key, value and headers (less the dead-letter ones) and HeaderReplayedFrom and
// HeaderReplayedAt, and writes each to the ledger; records the ledger has are skipped.
// dryRun sends and writes nothing.
func (t *Tool) Replay(ctx context.Context, topic string, sel Selection, dryRun bool) ([]Replay, error) {
	recs, err := t.Records(ctx, topic, sel)
	if err != nil {
		return nil, err
	}
	done, err := t.replayed(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Replay, 0, len(recs))
	for _, r := range recs {
		rp := Replay{Record: r, To: r.Headers[consumer.HeaderDLQTopic]}
		switch {
		case rp.To == "":
			rp.Outcome = "no original topic"
		case r.Headers[consumer.HeaderDLQTruncated] != "":
			rp.Outcome = "truncated copy" // the record itself is at its original offset
		case done[r.ID()]:
			rp.Outcome = "already replayed"
		case dryRun:
			rp.Outcome = "would replay"
		default:
			if rp.Audit, err = t.replay(r, rp.To); err != nil {
				if rp.Audit != "" { // sent, but not in the ledger: say it went
					rp.Outcome = "replayed"
					out = append(out, rp)
				}
				return out, fmt.Errorf("replay %s: %w", r.ID(), err)
			}
			rp.Outcome = "replayed"
		}
		out = append(out, rp)
	}
	return out, nil
}

func (t *Tool) replay(r Record, to string) (string, error) {
	now := t.Now().UTC()
	hs := make([]sarama.RecordHeader, 0, len(r.headers)+2)
	for _, h := range r.headers {
		if h != nil && !strings.HasPrefix(string(h.Key), "dlq_") {
			hs = append(hs, *h)
		}
	}
	hs = append(hs,
		sarama.RecordHeader{Key: []byte(HeaderReplayedFrom), Value: []byte(r.ID())},
		sarama.RecordHeader{Key: []byte(HeaderReplayedAt), Value: []byte(now.Format(time.RFC3339Nano))})
	msg := &sarama.ProducerMessage{Topic: to, Headers: hs}
	if r.Key != nil {
		msg.Key = sarama.ByteEncoder(r.Key)
	}
	if r.Value != nil {
		msg.Value = sarama.ByteEncoder(r.Value)
	}
	p, off, err := t.Producer.SendMessage(msg)
	if err != nil {
		return "", err
	}
	audit, _ := json.Marshal(map[string]string{
		"replayed": r.ID(), "to": fmt.Sprintf("%s/%d/%d", to, p, off), "error": r.Headers[consumer.HeaderDLQError],
		"group": r.Headers[consumer.HeaderDLQGroup], "by": t.By, "at": now.Format(time.RFC3339Nano),
	})
	// The replay is out: if the ledger write fails, say so loudly, since a second run
	// would replay the record again (harmless, the consumers being idempotent).
	if _, _, err := t.Producer.SendMessage(&sarama.ProducerMessage{Topic: Ledger, Key: sarama.StringEncoder(r.ID()), Value: sarama.ByteEncoder(audit)}); err != nil {
		return string(audit), fmt.Errorf("replayed, but not written to the ledger %s: %w", Ledger, err)
	}
	return string(audit), nil
}

// replayed makes sure of the ledger and reads it.
func (t *Tool) replayed(ctx context.Context) (map[string]bool, error) {
	if err := kafka.EnsureTopics(brokerAddrs(t.Client), t.Client.Config(), kafka.TopicSpec{Partitions: 1}, Ledger); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", Ledger, err)
	}
	return t.Replayed(ctx)
}

// Replayed reads the ledger: the ids (Record.ID) of the records replayed so far. No
// ledger yet is none replayed.
func (t *Tool) Replayed(ctx context.Context) (map[string]bool, error) {
	recs, err := t.read(ctx, Ledger, All)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", Ledger, err)
	}
	done := make(map[string]bool, len(recs))
	for _, r := range recs {
		done[string(r.Key)] = true
	}
	return done, nil
}

func brokerAddrs(c sarama.Client) []string {
	var out []string
	for _, b := range c.Brokers() {
		out = append(out, b.Addr())
	}
	return out
}

// ParseSelection reads "all", "N" (one offset), "A-B" (a range) or "A-" (from A), on
// partition (-1: every one).
func ParseSelection(s string, partition int32) (Selection, error) {
	sel := Selection{Partition: partition, To: -1}
	if s == "all" {
		return sel, nil
	}
	from, to, isRange := strings.Cut(s, "-")
	var err error
	if sel.From, err = strconv.ParseInt(from, 10, 64); err != nil || sel.From < 0 {
		return sel, errors.New(`want "all", an offset N, a range A-B or A-`)
	}
	switch {
	case !isRange:
		sel.To = sel.From
	case to != "":
		if sel.To, err = strconv.ParseInt(to, 10, 64); err != nil || sel.To < sel.From {
			return sel, errors.New(`want "all", an offset N, a range A-B (A ≤ B) or A-`)
		}
	}
	return sel, nil
}
