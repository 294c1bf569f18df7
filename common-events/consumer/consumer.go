// Package consumer runs a Kafka consumer group whose handlers apply each event inside a
// database transaction, at least once and effectively once:
//
//   - the handler's transaction also records (group, event id) in the inbox, so a
//     redelivered event is skipped;
//   - the offset is marked only after that transaction committed;
//   - a transient failure is retried with capped exponential backoff, never skipped;
//   - a poison record (undecodable, unknown type, invalid payload, or one a handler
//     rejects with Poison) is copied unchanged to the dead-letter topic, then marked.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/internal/backoff"
	"github.com/orderflow/common-events/kafka"
)

// ErrPoison marks an error as permanent: retrying the record can never succeed.
var ErrPoison = errors.New("poison record")

// Poison wraps err so the runner dead-letters the record instead of retrying it.
func Poison(err error) error { return fmt.Errorf("%w: %w", ErrPoison, err) }

// Message is a decoded record handed to a handler.
type Message struct {
	events.Envelope
	Event     events.Event
	Topic     string
	Partition int32
	Offset    int64
	Log       *slog.Logger // carries topic, partition, offset, event_id, order_id, correlation_id
}

// Handler applies one event inside tx. A nil return commits tx and marks the record;
// an error wrapped with Poison dead-letters it; any other error rolls back and retries.
type Handler func(ctx context.Context, tx pgx.Tx, msg Message) error

// Dead-letter headers, added to the record's own.
const (
	HeaderDLQTopic     = "dlq_original_topic"
	HeaderDLQPartition = "dlq_original_partition"
	HeaderDLQOffset    = "dlq_original_offset"
	HeaderDLQGroup     = "dlq_group"
	HeaderDLQError     = "dlq_error"
	HeaderDLQTime      = "dlq_time"
)

// DeadLetterTopics names the dead-letter topics group needs for the topics it consumes;
// create them at start-up with the rest.
func DeadLetterTopics(group string, topics ...string) []string {
	out := make([]string, len(topics))
	for i, t := range topics {
		out[i] = events.DeadLetterTopic(t, group)
	}
	return out
}

// Runner consumes Handlers' topics as consumer group Group.
type Runner struct {
	Group       string
	Client      sarama.Client // this runner's own: sarama wants one client per group
	Pool        *pgxpool.Pool
	Handlers    map[string]Handler // by topic
	DeadLetters sarama.SyncProducer
	Log         *slog.Logger

	Retry          backoff.Policy // transient failures; default 100ms doubling to 10s
	HandlerTimeout time.Duration  // one attempt; default 30s
	BatchSize      int            // records applied in one transaction at most; default 100
	InboxRetention time.Duration  // inbox rows older than this are pruned; default 7 days
}

func (r *Runner) defaults() {
	if r.Retry.Min <= 0 {
		r.Retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	}
	if r.HandlerTimeout <= 0 {
		r.HandlerTimeout = 30 * time.Second
	}
	if r.BatchSize <= 0 {
		r.BatchSize = 100
	}
	if r.InboxRetention <= 0 {
		r.InboxRetention = 7 * 24 * time.Hour
	}
}

// Run consumes until ctx is done. On return the in-flight record is finished and the
// marked offsets are committed.
func (r *Runner) Run(ctx context.Context) error {
	r.defaults()
	group, err := sarama.NewConsumerGroupFromClient(r.Group, r.Client)
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", r.Group, err)
	}
	topics := make([]string, 0, len(r.Handlers))
	for t := range r.Handlers {
		topics = append(topics, t)
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		for err := range group.Errors() {
			r.Log.Warn("consumer group error", "group", r.Group, "err", err)
		}
	})
	wg.Go(func() { r.pruneInbox(ctx) })

	for attempt := 1; ctx.Err() == nil; {
		err := group.Consume(ctx, topics, groupHandler{r})
		if errors.Is(err, sarama.ErrClosedConsumerGroup) || ctx.Err() != nil {
			break
		}
		if err != nil {
			d := r.Retry.Delay(attempt)
			r.Log.Warn("consumer group session failed; rejoining", "group", r.Group, "err", err, "retry_in", d)
			backoff.Sleep(ctx, d)
			attempt++
			continue
		}
		attempt = 1 // a rebalance ended the session: join the next one
	}
	err = group.Close() // commits marked offsets, closes Errors()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("consumer group %s: close: %w", r.Group, err)
	}
	return nil
}

type groupHandler struct{ r *Runner }

func (groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim handles one partition's records one after the other, so the order of an
// order's events holds; no goroutines here. Records that have already arrived are applied
// together in one transaction (up to BatchSize): one commit instead of one per record. If
// that batch fails for any reason, its records are taken one by one, each with its own
// retries or dead-lettering, so batching never changes what happens to a record.
func (h groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			batch := h.r.collect(msg, claim.Messages())
			if len(batch) > 1 && h.r.applyBatch(sess.Context(), batch) {
				sess.MarkMessage(batch[len(batch)-1], "")
				continue
			}
			for _, m := range batch {
				if err := h.r.process(sess.Context(), m); err != nil {
					return nil // session over (rebalance or shutdown): the record is not marked
				}
				sess.MarkMessage(m, "")
			}
		case <-sess.Context().Done():
			return nil
		}
	}
}

// collect returns first and the records already waiting behind it, up to BatchSize.
func (r *Runner) collect(first *sarama.ConsumerMessage, more <-chan *sarama.ConsumerMessage) []*sarama.ConsumerMessage {
	batch := []*sarama.ConsumerMessage{first}
	for len(batch) < r.BatchSize {
		select {
		case m, ok := <-more:
			if !ok {
				return batch
			}
			batch = append(batch, m)
		default:
			return batch
		}
	}
	return batch
}

type item struct {
	handler Handler
	msg     Message
}

// decode turns a record into a message for its handler, or says why it is poison.
func (r *Runner) decode(rec *sarama.ConsumerMessage) (item, *slog.Logger, error) {
	log := r.Log.With("group", r.Group, "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset)
	env, err := kafka.Envelope(rec)
	if err != nil {
		return item{}, log, err
	}
	ev, err := events.Decode(env)
	if err != nil {
		return item{}, log, err
	}
	log = log.With("event_id", env.ID, "event_type", env.Type, "order_id", env.Subject, "correlation_id", env.CorrelationID)
	handler, ok := r.Handlers[rec.Topic]
	if !ok {
		return item{}, log, fmt.Errorf("no handler for topic %s", rec.Topic)
	}
	msg := Message{Envelope: env, Event: ev, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Log: log}
	return item{handler: handler, msg: msg}, log, nil
}

// applyBatch applies every record of batch in one transaction, once, and reports whether
// that worked. Any poison record or error makes it decline, leaving nothing applied.
func (r *Runner) applyBatch(ctx context.Context, batch []*sarama.ConsumerMessage) bool {
	items := make([]item, 0, len(batch))
	for _, rec := range batch {
		it, _, err := r.decode(rec)
		if err != nil {
			return false
		}
		items = append(items, it)
	}
	if err := r.apply(ctx, items...); err != nil {
		r.Log.Debug("batch declined; applying its records one by one", "group", r.Group, "records", len(items), "err", err)
		return false
	}
	return true
}

// process returns nil once the record is dealt with (applied, skipped as a duplicate, or
// dead-lettered) and ctx's error if the session ended first.
func (r *Runner) process(ctx context.Context, rec *sarama.ConsumerMessage) error {
	it, log, err := r.decode(rec)
	if err != nil {
		return r.deadLetter(ctx, log, rec, err)
	}
	for attempt := 1; ; attempt++ {
		err := r.apply(ctx, it)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrPoison) {
			return r.deadLetter(ctx, log, rec, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := r.Retry.Delay(attempt)
		log.Warn("handler failed; retrying", "err", err, "attempt", attempt, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// apply runs the items' handlers in one transaction, each guarded by the inbox. It is not
// cut short when the session ends: the records in flight finish, within HandlerTimeout.
func (r *Runner) apply(ctx context.Context, items ...item) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.HandlerTimeout)
	defer cancel()
	return pgx.BeginFunc(actx, r.Pool, func(tx pgx.Tx) error {
		for _, it := range items {
			tag, err := tx.Exec(actx,
				`INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
				r.Group, it.msg.ID)
			if err != nil {
				return fmt.Errorf("inbox: %w", err)
			}
			if tag.RowsAffected() == 0 {
				it.msg.Log.Info("duplicate event skipped")
				continue
			}
			if err := it.handler(actx, tx, it.msg); err != nil {
				return err
			}
		}
		return nil
	})
}

// deadLetter copies rec unchanged, plus headers saying where it came from and why, to the
// dead-letter topic. It retries until the broker takes it: a poison record is marked only
// once it is safely parked.
func (r *Runner) deadLetter(ctx context.Context, log *slog.Logger, rec *sarama.ConsumerMessage, cause error) error {
	topic := events.DeadLetterTopic(rec.Topic, r.Group)
	hs := make([]sarama.RecordHeader, 0, len(rec.Headers)+6)
	for _, h := range rec.Headers {
		if h != nil {
			hs = append(hs, *h)
		}
	}
	hs = append(hs,
		sarama.RecordHeader{Key: []byte(HeaderDLQTopic), Value: []byte(rec.Topic)},
		sarama.RecordHeader{Key: []byte(HeaderDLQPartition), Value: []byte(strconv.Itoa(int(rec.Partition)))},
		sarama.RecordHeader{Key: []byte(HeaderDLQOffset), Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		sarama.RecordHeader{Key: []byte(HeaderDLQGroup), Value: []byte(r.Group)},
		sarama.RecordHeader{Key: []byte(HeaderDLQError), Value: []byte(cause.Error())},
		sarama.RecordHeader{Key: []byte(HeaderDLQTime), Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	out := &sarama.ProducerMessage{Topic: topic, Headers: hs}
	if rec.Key != nil {
		out.Key = sarama.ByteEncoder(rec.Key)
	}
	if rec.Value != nil {
		out.Value = sarama.ByteEncoder(rec.Value)
	}
	for attempt := 1; ; attempt++ {
		_, _, err := r.DeadLetters.SendMessage(out)
		if err == nil {
			log.Error("poison record dead-lettered", "err", cause, "dlq_topic", topic)
			return nil
		}
		d := r.Retry.Delay(attempt)
		log.Warn("dead-letter publish failed; retrying", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// pruneInbox deletes inbox rows past retention once an hour: redeliveries come within
// minutes, never weeks.
func (r *Runner) pruneInbox(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		_, err := r.Pool.Exec(ctx, `DELETE FROM processed_events WHERE consumer_group = $1 AND processed_at < now() - $2::interval`,
			r.Group, fmt.Sprintf("%d seconds", int(r.InboxRetention.Seconds())))
		if err != nil && ctx.Err() == nil {
			r.Log.Warn("inbox prune failed", "group", r.Group, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
