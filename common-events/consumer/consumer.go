// Package consumer runs a Kafka consumer group whose handlers apply each event at least
// once and effectively once:
//
//   - records of one key (the order id) are handled one after the other, in offset order;
//     records of different keys run concurrently, up to Concurrency per partition;
//   - a handler may do slow, idempotent work first, outside any transaction (charge a
//     card, send an email), then records its effect in a transaction that also writes
//     (group, event id) to the inbox, so a redelivered event is skipped;
//   - effects that are ready together commit together: one transaction, one inbox
//     statement, for many records; and where a record's whole outcome is known before it
//     is recorded (NewStatementSet), its inbox row, its effect and its events are one
//     statement, which is the transaction when the batch holds nothing else;
//   - a partition's committed offset is the lowest one not yet finished, never beyond it,
//     so a crash redelivers only unfinished work and the inbox absorbs the rest;
//   - a transient failure is retried with capped exponential backoff, never skipped; it
//     holds back its own key and the commit point, nothing else;
//   - a poison record (undecodable, unknown type, invalid payload, or one a handler
//     rejects with Poison) is copied unchanged to the dead-letter topic, then finished.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/internal/backoff"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/prune"
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

// Handler handles one record in two steps. First, outside any transaction, it does the
// slow work the record calls for, if any: a provider's charge, an email. That work must
// be idempotent (a provider's idempotency key, a stable Message-ID) and must check for
// itself whether it was done already: a record is handled again after a crash, a
// rebalance or a failed commit. Then it returns the Apply that records the outcome, which
// the runner runs in a transaction with the record's inbox row, together with the other
// records ready at the same time (the zero Apply: nothing to record beyond the inbox row).
// An error wrapped with Poison dead-letters the record; any other error, from either
// step, retries it from the start.
type Handler func(ctx context.Context, msg Message) (Apply, error)

// Apply records a handled record's outcome: a function of the transaction (Func), or a
// row that a Set records together with the rows of the other records in the batch (Row).
// Either should be quick and touch only its records' orders: an error makes the runner
// apply the batch's records one by one instead. Either may emit events (Tx.Emit): the
// runner stores them in the outbox in the same transaction and wakes the relay once it
// committed, so a service never writes the outbox itself.
type Apply struct {
	fn  func(ctx context.Context, tx Tx) error
	set Set
	row any
}

// Tx is an Apply's transaction, which also takes the events the Apply emits.
type Tx interface {
	pgx.Tx
	// Emit has envs stored in the outbox with the transaction, each bound for its kind's
	// topic, in the order emitted.
	Emit(envs ...events.Envelope)
}

// emitTx is a transaction that keeps what its Applies emit, for the one outbox statement
// that stores them all before it commits.
type emitTx struct {
	pgx.Tx
	rows outbox.Rows
}

func (t *emitTx) Emit(envs ...events.Envelope) {
	for _, env := range envs {
		t.rows.Add(t.rows.Len(), env)
	}
}

// flush stores the events emitted, in one statement, and says how many.
func (t *emitTx) flush(ctx context.Context) (int, error) {
	n := t.rows.Len()
	if n == 0 {
		return 0, nil
	}
	sql, args := t.rows.SQL(1, "")
	if _, err := t.Exec(ctx, sql, args...); err != nil {
		return 0, fmt.Errorf("outbox insert: %w", err)
	}
	t.rows = outbox.Rows{}
	return n, nil
}

// Func is an Apply that runs fn in the transaction.
func Func(fn func(ctx context.Context, tx Tx) error) Apply { return Apply{fn: fn} }

// Row is an Apply that has set record row, in one call with the other rows of the batch
// bound for the same set.
func Row(set Set, row any) Apply { return Apply{set: set, row: row} }

// Run records a alone in tx, with the events it emits, as the runner does when a batch
// fails; handy in a handler's tests. It returns the events emitted.
func (a Apply) Run(ctx context.Context, tx pgx.Tx) ([]events.Envelope, error) {
	return RunBatch(ctx, tx, a)
}

// RunBatch records applies together in tx, as the runner records a batch whose records
// the inbox all took as new, and returns the events they emitted; handy in a handler's
// tests.
func RunBatch(ctx context.Context, tx pgx.Tx, applies ...Apply) ([]events.Envelope, error) {
	t := &recordingTx{emitTx: emitTx{Tx: tx}}
	if _, _, err := applyEach(ctx, t, applies); err != nil {
		return nil, err
	}
	_, err := t.flush(ctx)
	return t.emitted, err
}

// recordingTx is an emitTx that also keeps what was emitted, for Run's caller.
type recordingTx struct {
	emitTx
	emitted []events.Envelope
}

func (t *recordingTx) Emit(envs ...events.Envelope) {
	t.emitted = append(t.emitted, envs...)
	t.emitTx.Emit(envs...)
}

// A Set records many records' outcomes at once, with one statement per table for a whole
// batch (arrays and unnest) instead of one round trip per record. rows holds what the
// batch's handlers passed to Row, in the batch's order; Apply logs each row's outcome.
type Set interface {
	Apply(ctx context.Context, tx Tx, rows []any) error
}

// NewSet returns a Set whose rows are all of type T, handed to apply as such.
func NewSet[T any](apply func(ctx context.Context, tx Tx, rows []T) error) Set {
	return &typedSet[T]{apply: apply} // a pointer: the runner groups rows by Set
}

// NewSetThen is NewSet, plus then, called with the rows once their transaction committed:
// for what may only be told of an outcome that holds, such as a metric. A row applied
// again after a failed batch is told once.
func NewSetThen[T any](apply func(ctx context.Context, tx Tx, rows []T) error, then func(rows []T)) Set {
	return &typedSet[T]{apply: apply, then: then}
}

type typedSet[T any] struct {
	apply func(ctx context.Context, tx Tx, rows []T) error
	then  func(rows []T)
}

// committer is a Set told of its rows after they committed.
type committer interface{ committed(rows []any) }

func (s *typedSet[T]) Apply(ctx context.Context, tx Tx, rows []any) error {
	return s.apply(ctx, tx, typed[T](rows))
}

func (s *typedSet[T]) committed(rows []any) {
	if s.then != nil {
		s.then(typed[T](rows))
	}
}

func typed[T any](rows []any) []T {
	ts := make([]T, len(rows))
	for i, r := range rows {
		ts[i] = r.(T)
	}
	return ts
}

// NewStatementSet returns a Set that records its rows (of type T), the inbox rows of
// their records and the events they emit in one statement: build's, which the runner
// completes with the inbox's and the outbox's in one WITH clause. When a batch holds
// nothing but one such Set's rows and records with only an inbox row to write, that
// statement runs on its own, with no BEGIN and no COMMIT (a statement is a transaction of
// its own): a record costs one statement and one round trip instead of five. Otherwise
// it runs in the batch's transaction, beside the other Applies.
//
// For a Set whose outcome is known before the statement runs: what each row emits
// (emits) is decided by the handler, and stored if the statement records the row.
//
// build returns a data-modifying statement and its parameters' values, the parameters
// numbered from first on. With fresh, the name of a relation with an int column tag, it
// records only the rows whose index in rows fresh holds; with fresh empty, every row (for
// a caller outside the runner). Either way it returns the tag (index) of each row it
// recorded. then, if not nil, is told once the statement committed which rows it
// recorded: for a log line or a metric. opts add to the statement (AlsoWrite).
func NewStatementSet[T any](build func(rows []T, first int, fresh string) (string, []any),
	emits func(row T) []events.Envelope, then func(rows []T, recorded []bool), opts ...StatementOption) Set {
	s := &typedStatementSet[T]{build: build, emit: emits, then: then}
	for _, opt := range opts {
		opt(&s.statementOptions)
	}
	return s
}

// StatementOption adds to a NewStatementSet's statement.
type StatementOption func(*statementOptions)

type statementOptions struct {
	also func(recorded string) string
}

// AlsoWrite writes more, in the same statement, of the rows build's statement recorded
// (a history entry of each, say): with is given the name of the relation that holds what
// that statement returned, and gives more clauses of the statement's WITH, each starting
// with a comma (", hist AS (INSERT … SELECT … FROM <recorded>)"). A data-modifying
// statement inside build's own cannot do it: PostgreSQL allows those only at the top of
// the WITH.
func AlsoWrite(with func(recorded string) string) StatementOption {
	return func(o *statementOptions) { o.also = with }
}

// statementSet is a Set made by NewStatementSet.
type statementSet interface {
	Set
	statement(rows []any, first int, fresh string) (string, []any)
	// alsoWrites is more clauses of the WITH that read recorded: AlsoWrite's, or none.
	alsoWrites(recorded string) string
	emits(row any) []events.Envelope
	recorded(rows []any, recorded []bool)
}

type typedStatementSet[T any] struct {
	build func(rows []T, first int, fresh string) (string, []any)
	emit  func(row T) []events.Envelope
	then  func(rows []T, recorded []bool)
	statementOptions
}

// Apply records rows in tx as if the inbox took each as new, and emits in tx what the
// rows it recorded emit: for a caller outside the runner (RunBatch), whose transaction
// stores the events.
func (s *typedStatementSet[T]) Apply(ctx context.Context, tx Tx, rows []any) error {
	ids := make([]string, len(rows))
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	res, err := runStatement(ctx, tx, s, "", ids, ids, rows, outbox.Rows{})
	if err != nil {
		return err
	}
	for i, row := range rows {
		if res.recorded[i] {
			tx.Emit(s.emits(row)...)
		}
	}
	return nil
}

func (s *typedStatementSet[T]) statement(rows []any, first int, fresh string) (string, []any) {
	return s.build(typed[T](rows), first, fresh)
}

func (s *typedStatementSet[T]) alsoWrites(recorded string) string {
	if s.also == nil {
		return ""
	}
	return s.also(recorded)
}

func (s *typedStatementSet[T]) emits(row any) []events.Envelope { return s.emit(row.(T)) }

func (s *typedStatementSet[T]) recorded(rows []any, recorded []bool) {
	if s.then != nil {
		s.then(typed[T](rows), recorded)
	}
}

// InTx is a Handler whose whole work is quick database work, done in the transaction.
func InTx(apply func(ctx context.Context, tx Tx, msg Message) error) Handler {
	return func(_ context.Context, msg Message) (Apply, error) {
		return Func(func(ctx context.Context, tx Tx) error { return apply(ctx, tx, msg) }), nil
	}
}

// Dead-letter headers, added to the record's own.
const (
	HeaderDLQTopic     = "dlq_original_topic"
	HeaderDLQPartition = "dlq_original_partition"
	HeaderDLQOffset    = "dlq_original_offset"
	HeaderDLQGroup     = "dlq_group"
	HeaderDLQError     = "dlq_error"
	HeaderDLQTime      = "dlq_time"
	// HeaderDLQTruncated marks a copy cut short because the record itself could not be
	// dead-lettered (too large once the headers above are added, or refused for another
	// reason that retrying cannot change), and says what was cut.
	HeaderDLQTruncated = "dlq_truncated"
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
	HandlerTimeout time.Duration  // one attempt, both steps; default DefaultHandlerTimeout
	BatchSize      int            // records applied in one transaction at most; default 100, or LingerBatchSize with a Linger
	InboxRetention time.Duration  // inbox rows older than this are pruned; default 7 days
	// Idempotent says that every Apply of the group has the effect of one however often it
	// is applied: its statements insert what is keyed by the event and do nothing the
	// second time, or keep the highest of what they are told. Such a group needs no inbox:
	// it writes no inbox rows, and counts none of its records a duplicate.
	Idempotent bool
	// Linger is how long a record ready to commit may wait for others to share its
	// transaction, unless BatchSize of them are ready sooner: 0, none — the group's
	// records commit as soon as they are ready, for a group on the customer's path; a
	// few tens of milliseconds turn the many small commits of a light load into a few
	// large ones, for a group whose records may wait.
	Linger time.Duration

	// Concurrency bounds the records of one partition taken and not yet finished:
	// running, or waiting behind an earlier record of their key. At the bound the
	// partition pauses until one finishes. Default DefaultConcurrency.
	Concurrency int
	// MaxUncommitted bounds how far the records taken may run ahead of the commit point
	// (the oldest unfinished record), so a key stuck in retries holds a bounded amount of
	// bookkeeping; at the bound the partition pauses. Default 100 × Concurrency.
	MaxUncommitted int
	// Metrics, when set, counts the records by outcome, times them, and keeps the records
	// in flight.
	Metrics *Metrics
	// Tracer makes a span of each record's handling, in its event's trace; nil: none.
	Tracer trace.Tracer
	// Waker wakes the outbox relay after a transaction that stored events committed;
	// nil: the relay finds them at its next poll. With WakeSoon, the events may wait up to
	// outbox.Soon for the relay's next round (Waker.WakeSoon): for a group whose events
	// are off the customer's way.
	Waker    *outbox.Waker
	WakeSoon bool

	applier *applier // shared by the partitions, so their ready records commit together
}

// DefaultHandlerTimeout bounds one attempt at a record unless configured.
const DefaultHandlerTimeout = 30 * time.Second

// LingerBatchSize is the records a group with a Linger commits in one transaction at
// most, unless configured: what its linger gathers under load, so that more of what one
// order's records say is folded into one write.
const LingerBatchSize = 500

// DefaultConcurrency is the records in flight per partition unless configured: enough
// for 1,000 orders/s on six partitions with a provider that takes half a second.
const DefaultConcurrency = 128

func (r *Runner) defaults() {
	if r.Retry.Min <= 0 {
		r.Retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	}
	if r.HandlerTimeout <= 0 {
		r.HandlerTimeout = DefaultHandlerTimeout
	}
	if r.BatchSize <= 0 {
		r.BatchSize = 100
		if r.Linger > 0 {
			r.BatchSize = LingerBatchSize
		}
	}
	if r.InboxRetention <= 0 {
		r.InboxRetention = 7 * 24 * time.Hour
	}
	if r.Concurrency <= 0 {
		r.Concurrency = DefaultConcurrency
	}
	if r.MaxUncommitted <= 0 {
		r.MaxUncommitted = 100 * r.Concurrency
	}
	if r.Tracer == nil {
		r.Tracer = noop.NewTracerProvider().Tracer("")
	}
}

// Run consumes until ctx is done. On return the records in flight are finished and the
// finished prefix of each partition is committed.
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

	r.applier = newApplier(r)
	var wg sync.WaitGroup
	wg.Go(r.applier.run)
	wg.Go(func() {
		for err := range group.Errors() {
			r.Log.Warn("consumer group error", "group", r.Group, "err", err)
		}
	})
	wg.Go(func() { r.pruneInbox(ctx) }) // an Idempotent group's too, for rows written before it was one

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
	r.applier.stop()    // every claim has returned: nothing more to apply
	wg.Wait()
	if err != nil {
		return fmt.Errorf("consumer group %s: close: %w", r.Group, err)
	}
	return nil
}

// deadLetter copies rec unchanged, plus headers saying where it came from and why, to the
// dead-letter topic. It retries until the broker takes it: a poison record is marked only
// once it is safely parked. A copy that can never be taken — too large, or refused for
// another reason retrying cannot change — is parked cut short instead (truncated), so one
// record cannot stall its partition in every session.
func (r *Runner) deadLetter(ctx context.Context, log *slog.Logger, rec *sarama.ConsumerMessage, cause error) error {
	topic := events.DeadLetterTopic(rec.Topic, r.Group)
	var hs []sarama.RecordHeader
	for _, h := range rec.Headers {
		if h != nil {
			hs = append(hs, *h)
		}
	}
	out := r.deadLetterCopy(topic, rec, hs, rec.Value, cause)
	for attempt := 1; ; attempt++ {
		_, _, err := r.DeadLetters.SendMessage(out)
		if err == nil {
			log.Error("poison record dead-lettered", "err", cause, "dlq_topic", topic, "truncated", headerOf(out, HeaderDLQTruncated))
			return nil
		}
		if refusedForGood(err) && headerOf(out, HeaderDLQTruncated) == "" {
			log.Warn("dead-letter topic refused the record for good; parking a truncated copy", "err", err, "value_bytes", len(rec.Value))
			out = r.truncatedCopy(topic, rec, hs, cause)
			continue
		}
		d := r.Retry.Delay(attempt)
		log.Warn("dead-letter publish failed; retrying", "err", err, "retry_in", d)
		if !backoff.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// deadLetterCopy is the dead-letter record of rec: its key, value and the headers hs, then
// where it came from and why.
func (r *Runner) deadLetterCopy(topic string, rec *sarama.ConsumerMessage, hs []sarama.RecordHeader, value []byte, cause error, extra ...sarama.RecordHeader) *sarama.ProducerMessage {
	hs = append(slices.Clip(hs),
		sarama.RecordHeader{Key: []byte(HeaderDLQTopic), Value: []byte(rec.Topic)},
		sarama.RecordHeader{Key: []byte(HeaderDLQPartition), Value: []byte(strconv.Itoa(int(rec.Partition)))},
		sarama.RecordHeader{Key: []byte(HeaderDLQOffset), Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		sarama.RecordHeader{Key: []byte(HeaderDLQGroup), Value: []byte(r.Group)},
		sarama.RecordHeader{Key: []byte(HeaderDLQError), Value: []byte(cause.Error())},
		sarama.RecordHeader{Key: []byte(HeaderDLQTime), Value: []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	out := &sarama.ProducerMessage{Topic: topic, Headers: append(hs, extra...)}
	if rec.Key != nil {
		out.Key = sarama.ByteEncoder(rec.Key)
	}
	if value != nil {
		out.Value = sarama.ByteEncoder(value)
	}
	return out
}

// truncatedCopy is the dead-letter record of rec cut short: the first truncatedValue
// bytes of its value, its own headers only if they are small, and a header saying what
// was cut. Its key and the dlq_* headers (the original offset among them) are whole.
func (r *Runner) truncatedCopy(topic string, rec *sarama.ConsumerMessage, hs []sarama.RecordHeader, cause error) *sarama.ProducerMessage {
	value := rec.Value
	what := "value of " + strconv.Itoa(len(value)) + " bytes"
	if len(value) > truncatedValue {
		value = value[:truncatedValue]
		what += ", the first " + strconv.Itoa(truncatedValue) + " kept"
	}
	size := 0
	for _, h := range hs {
		size += len(h.Key) + len(h.Value)
	}
	if size > truncatedHeaders {
		what += "; " + strconv.Itoa(len(hs)) + " headers of " + strconv.Itoa(size) + " bytes dropped"
		hs = nil
	}
	return r.deadLetterCopy(topic, rec, hs, value, cause, sarama.RecordHeader{Key: []byte(HeaderDLQTruncated), Value: []byte(what)})
}

// What a truncated copy keeps of the record: enough to tell what it was.
const (
	truncatedValue   = 64 << 10
	truncatedHeaders = 16 << 10
)

// refusedForGood reports whether the producer or the broker refused a record for what it
// is — its size, its form, the client's settings — so that sending it again cannot help.
func refusedForGood(err error) bool {
	var ce sarama.ConfigurationError // the producer's own checks: larger than Producer.MaxMessageBytes
	return errors.As(err, &ce) || errors.Is(err, sarama.ErrMessageSizeTooLarge) ||
		errors.Is(err, sarama.ErrMessageSetSizeTooLarge) || errors.Is(err, sarama.ErrInvalidRecord) || errors.Is(err, sarama.ErrInvalidMessage)
}

func headerOf(m *sarama.ProducerMessage, key string) string {
	for _, h := range m.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// pruneInbox deletes inbox rows past retention once an hour, a batch at a time
// (prune.Rows): redeliveries come within minutes, never weeks. A prune takes pruneTimeout
// at most, so one on a connection gone silent ends, and the next hour's runs; what it
// deleted by then stays deleted.
func (r *Runner) pruneInbox(ctx context.Context) {
	const pruneTimeout = 5 * time.Minute
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, pruneTimeout)
		_, err := prune.Rows(pctx, r.Pool, "processed_events", "consumer_group = $1 AND processed_at < now() - $2::interval", "processed_at",
			r.Group, fmt.Sprintf("%d seconds", int(r.InboxRetention.Seconds())))
		cancel()
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
