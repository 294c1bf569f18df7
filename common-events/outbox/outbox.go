// Package outbox closes the dual-write window: an event is stored in the same database
// transaction as the change it describes, and a relay publishes it to Kafka afterwards.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/internal/backoff"
	"github.com/orderflow/common-events/tracing"
)

// Channel is the LISTEN/NOTIFY channel that wakes the relay when a row is committed.
const Channel = "outbox"

// lockID is the advisory lock the leading relay holds. Each service has its own database,
// so one constant key suffices.
const lockID int64 = 0x6f7574626f78 // "outbox"

// Rows are the events a statement stores with the change that causes them: the one way
// anything writes the outbox. Each event's topic is its kind's (events.Envelope.Topic).
// Each row is tagged with its change's number, so the statement can keep only the rows of
// the changes that took place; see SQL.
//
// Writing the outbox never notifies the relay: the writer wakes it after its transaction
// committed, through a Waker (see Waker for why).
type Rows struct {
	// Topic, when set, is every row's topic instead of its kind's: for a bench or a test
	// that publishes to a topic of its own.
	Topic string

	topics, keys, headers []string
	payloads              [][]byte
	tags                  []int32
}

// Add adds env as the event of change number tag.
func (r *Rows) Add(tag int, env events.Envelope) {
	topic := r.Topic
	if topic == "" {
		topic = env.Topic()
	}
	h := appendHeaders(make([]byte, 0, 512), env.Headers())
	r.topics, r.keys, r.headers = append(r.topics, topic), append(r.keys, env.Subject), append(r.headers, string(h))
	r.payloads, r.tags = append(r.payloads, env.Data), append(r.tags, int32(tag))
}

// Len is how many events r holds.
func (r *Rows) Len() int { return len(r.tags) }

// SQL returns an INSERT, for a WITH clause of the caller's statement, with parameters
// numbered from first on, and their values. With from, the name of a relation (a WITH
// query of the same statement) with a column tag, it stores the rows whose tag is in from:
// the events of the changes that took place; with from empty, every row. It returns one
// row per event stored.
func (r *Rows) SQL(first int, from string) (string, []any) {
	join := ""
	if from != "" {
		join = "JOIN " + from + " USING (tag)"
	}
	sql := fmt.Sprintf(`
		INSERT INTO outbox (topic, key, headers, payload)
		SELECT r.topic, r.key, r.headers::json, r.payload
		FROM unnest($%d::text[], $%d::text[], $%d::text[], $%d::bytea[], $%d::int[]) AS r(topic, key, headers, payload, tag)
		%s
		ORDER BY r.tag
		RETURNING 1`, first, first+1, first+2, first+3, first+4, join)
	return sql, []any{r.topics, r.keys, r.headers, r.payloads, r.tags}
}

// Execer runs a statement (a pool, a connection, a transaction).
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Write stores envs in a statement of their own, in db (the caller's transaction): for a
// writer whose change took statements of its own already.
func Write(ctx context.Context, db Execer, envs ...events.Envelope) error {
	var r Rows
	for i, env := range envs {
		r.Add(i, env)
	}
	sql, args := r.SQL(1, "")
	if _, err := db.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("outbox insert: %w", err)
	}
	return nil
}

// Wake tells the relay, wherever it runs, that rows were committed. A lost wake-up costs
// at most the relay's poll interval.
func Wake(ctx context.Context, db Execer) error {
	_, err := db.Exec(ctx, `SELECT pg_notify($1, '')`, Channel)
	return err
}

// Waker wakes the relay after writers committed: the one NOTIFY policy of orderflow's
// outboxes. A writer never notifies inside its transaction: PostgreSQL serializes the
// commits of notifying transactions, WAL flush included, so a NOTIFY in every small
// transaction costs group commit on a busy server (docs/performance.md, "Waking the
// relay", measures it). A NOTIFY in a transaction of its own writes no WAL and holds that
// lock for microseconds.
//
// It coalesces: the first wake-up after a quiet spell notifies at once, the ones that
// follow within every share one NOTIFY at its end. Under load that is one NOTIFY (and one
// relay round) for many rows instead of one each. Run it as one of the service's workers;
// wake-ups while it does not run are dropped, which costs at most the relay's poll.
//
// While the relay of its own process leads (Relay.Waker is this Waker), a wake-up goes to
// that relay directly and costs the database nothing: a NOTIFY is for a relay elsewhere.
type Waker struct {
	// MayWait is how long WakeSoon's events may wait for the relay's next round; Soon
	// when 0. Set it before Run.
	MayWait time.Duration

	db     Execer
	every  time.Duration
	signal chan struct{}

	leading atomic.Bool   // this process's relay leads and takes local and soon
	local   chan struct{} // wakes it; one pending at most
	soon    chan struct{} // asks it for a round within MayWait; one pending at most
}

// WakeEvery is how often, at most, a Waker notifies: a burst of commits shares one NOTIFY
// and one relay round, and an event waits at most this long for it.
const WakeEvery = 5 * time.Millisecond

// NewWaker returns a waker on db that notifies at most once every every.
func NewWaker(db Execer, every time.Duration) *Waker {
	return &Waker{db: db, every: every, signal: make(chan struct{}, 1), local: make(chan struct{}, 1), soon: make(chan struct{}, 1)}
}

// Wake wakes the relay: this process's own while it leads, otherwise the leader wherever
// it runs, with a NOTIFY. It never blocks. A nil Waker does nothing.
func (w *Waker) Wake() {
	if w == nil {
		return
	}
	ch := w.signal
	if w.leading.Load() {
		ch = w.local
	}
	select {
	case ch <- struct{}{}:
	default: // one is pending already
	}
}

// WakeSoon wakes the relay within MayWait, for events off the customer's way (an order's
// new state, for the read models): while the relay of this process leads, they go out
// with the next round any writer wakes it for, or at the latest MayWait later, instead of
// taking a round of their own, a statement. Without the lead it is Wake: a NOTIFY is
// coalesced already. A nil Waker does nothing.
func (w *Waker) WakeSoon() {
	if w == nil {
		return
	}
	if !w.leading.Load() {
		w.Wake()
		return
	}
	select {
	case w.soon <- struct{}{}:
	default: // one is pending already
	}
}

// Soon is how long WakeSoon's events may wait for the relay's next round by default.
const Soon = 20 * time.Millisecond

// mayWait is how long WakeSoon's events may wait.
func (w *Waker) mayWait() time.Duration {
	if w.MayWait > 0 {
		return w.MayWait
	}
	return Soon
}

// lead tells w whether this process's relay leads and takes its wake-ups directly.
func (w *Waker) lead(leading bool) {
	if w != nil {
		w.leading.Store(leading)
	}
}

// woken are the channels on which this process's writers wake its leading relay, at once
// and within MayWait; nil for a nil Waker.
func (w *Waker) woken() (local, soon chan struct{}) {
	if w == nil {
		return nil, nil
	}
	return w.local, w.soon
}

// Run sends the NOTIFYs until ctx is done.
func (w *Waker) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.signal:
		}
		// A lost wake-up costs at most the relay's poll interval, and so does one held up
		// by a server gone silent.
		_ = within(ctx, func(ctx context.Context) error { return Wake(ctx, w.db) })
		if !backoff.Sleep(ctx, w.every) {
			return nil
		}
	}
}

// Relay publishes committed outbox rows in id order and deletes them once the broker
// acknowledged them. Any number of relays may run against one database: the one holding
// the advisory lock publishes, the others wait to take over.
type Relay struct {
	Pool     *pgxpool.Pool
	Producer sarama.SyncProducer
	Log      *slog.Logger

	BatchSize    int           // rows per publish; default 500
	PollInterval time.Duration // fallback when no NOTIFY arrives; default 1s
	Retry        backoff.Policy
	Metrics      *Metrics     // nil: none
	Tracer       trace.Tracer // a span per record published, in its event's trace; nil: none
	// Waker is the one this process's writers wake the relay with: while the relay leads,
	// their wake-ups come to it directly instead of as NOTIFYs. nil: NOTIFYs only.
	Waker *Waker
}

func (r *Relay) defaults() {
	if r.BatchSize <= 0 {
		r.BatchSize = 500
	}
	if r.PollInterval <= 0 {
		r.PollInterval = time.Second
	}
	if r.Retry.Min <= 0 {
		r.Retry = backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	}
	if r.Tracer == nil {
		r.Tracer = noop.NewTracerProvider().Tracer("")
	}
}

// Run relays until ctx is done. Database and broker outages are waited out with backoff;
// rows stay in the outbox until they are acknowledged, so nothing is lost.
func (r *Relay) Run(ctx context.Context) error {
	r.defaults()
	for attempt := 1; ; attempt++ {
		err := r.lead(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d := r.Retry.Delay(attempt)
		r.Log.Warn("outbox relay: lost its database connection; retrying", "err", err, "retry_in", d)
		backoff.Sleep(ctx, d)
	}
}

// lead takes a dedicated connection, waits for the lock, then publishes until the
// connection fails or ctx is done. Closing the connection releases the lock.
func (r *Relay) lead(ctx context.Context) error {
	var pooled *pgxpool.Conn
	if err := within(ctx, func(ctx context.Context) (err error) { pooled, err = r.Pool.Acquire(ctx); return err }); err != nil {
		return err
	}
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	// The lock is the session's, and a session outlives a client whose packets vanish
	// (a partition that loses the FIN) for as long as the server's TCP takes to notice:
	// hours by default. A leader is never idle for long — it reads the outbox at least
	// every PollInterval — so the server ends a session idle for a few of them, and with
	// it the lock: another relay takes over. The silent leader itself gives up when its
	// next statement times out.
	//
	// Every statement has a deadline: a connection the pool hands out may be one whose
	// packets vanish, and a statement on it would otherwise wait for ever.
	if err := within(ctx, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, "SET idle_session_timeout = "+strconv.FormatInt(r.silence().Milliseconds(), 10))
		return err
	}); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42704" { // undefined_object: before PostgreSQL 14
			return err
		}
		r.Log.Warn("outbox relay: this PostgreSQL has no idle_session_timeout (14 or later has it); a leader cut off silently keeps the lead until the server's TCP keepalives notice")
	}
	// The relay's only writes are the deletes of rows the broker acknowledged, and a
	// delete lost to a crash of the server costs a republication, which the consumers
	// absorb (as after a crash of the relay). So its commits do not wait for the WAL's
	// flush: the next batch is read without that wait, and the server flushes the deletes
	// with the writers' commits instead of once each.
	if err := within(ctx, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, "SET synchronous_commit = off")
		return err
	}); err != nil {
		return err
	}

	for {
		var leader bool
		if err := within(ctx, func(ctx context.Context) error {
			return conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockID).Scan(&leader)
		}); err != nil {
			return err
		}
		if leader {
			break
		}
		if !backoff.Sleep(ctx, r.PollInterval) {
			return ctx.Err()
		}
	}
	if err := within(ctx, func(ctx context.Context) error { _, err := conn.Exec(ctx, "LISTEN "+Channel); return err }); err != nil {
		return err
	}
	r.Log.Info("outbox relay: leading")
	r.Waker.lead(true)
	defer r.Waker.lead(false)

	// Rows published and not yet deleted: they are deleted by the statement that reads
	// the next batch, one round trip instead of two. A crash in between republishes them
	// (consumers' inboxes absorb the duplicates); a clean stop deletes them first.
	var published []int64
	defer func() {
		if len(published) > 0 {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.Exec(dctx, `DELETE FROM outbox WHERE id = ANY($1)`, published)
		}
	}()
	brokerFailures := 0
	for {
		batch, err := r.next(ctx, conn, published)
		if err != nil {
			return err
		}
		published = nil
		if len(batch) == 0 {
			if err := r.wait(ctx, conn, r.PollInterval); err != nil {
				return err
			}
			continue
		}
		published, err = r.publish(batch)
		var be brokerError
		if errors.As(err, &be) {
			brokerFailures++
			d := r.Retry.Delay(brokerFailures)
			r.Log.Warn("outbox relay: broker refused the batch; retrying", "err", be.err, "retry_in", d)
			if !backoff.Sleep(ctx, d) {
				return ctx.Err()
			}
			continue
		}
		brokerFailures = 0
		if len(batch) == r.BatchSize {
			continue // more rows are waiting
		}
		// Quiet: the published rows are deleted with the next read, which comes with the
		// next NOTIFY or soon after, so the outbox does not keep them for long.
		if err := r.wait(ctx, conn, min(r.PollInterval, deleteDelay)); err != nil {
			return err
		}
	}
}

// within runs step (a statement, the wait for a connection) with a deadline of
// statementTimeout.
func within(ctx context.Context, step func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, statementTimeout)
	defer cancel()
	return step(ctx)
}

// statementTimeout bounds each of the relay's statements: each is quick, and one that is
// not is on a connection gone silent.
const statementTimeout = 5 * time.Second

// silence is how long the leader's session may be idle before the server ends it:
// three polls, at least LeaderSilence.
func (r *Relay) silence() time.Duration { return max(LeaderSilence, 3*r.PollInterval) }

// LeaderSilence is the least time a leading relay's session may go silent before the
// server ends it and another relay takes the lead.
const LeaderSilence = 10 * time.Second

// deleteDelay bounds how long published rows stay in the outbox when nothing else comes.
const deleteDelay = 50 * time.Millisecond

// wait blocks until a NOTIFY arrives, this process's writers wake the relay, or d passes;
// a WakeSoon shortens d to the Waker's MayWait.
func (r *Relay) wait(ctx context.Context, conn *pgx.Conn, d time.Duration) error {
	local, soon := r.Waker.woken()
	if local != nil {
		select {
		case <-local:
			return nil
		case <-soon:
			d = min(d, r.Waker.mayWait())
		default:
		}
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if local != nil {
		waited := make(chan struct{})
		defer close(waited)
		ended := func() bool {
			select {
			case <-waited:
				return true
			default:
				return false
			}
		}
		go func() {
			var soonPassed <-chan time.Time
			for {
				select {
				case <-local:
					cancel()
					if ended() { // the wait ended first: keep the wake-up for the next
						r.Waker.Wake()
					}
					return
				case <-soon:
					if ended() {
						r.Waker.WakeSoon()
						return
					}
					if soonPassed == nil {
						soonPassed = time.After(r.Waker.mayWait())
					}
				case <-soonPassed:
					cancel()
					return
				case <-waited:
					return
				}
			}
		}()
	}
	_, err := conn.WaitForNotification(wctx)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return nil // the time passed, or a writer here woke the relay: look again
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

type brokerError struct{ err error }

func (e brokerError) Error() string { return e.err.Error() }

type row struct {
	id      int64
	topic   string
	key     string
	headers []sarama.RecordHeader
	payload []byte
	written time.Time
}

// next deletes the rows published (acknowledged by the broker) and reads up to
// BatchSize others, oldest first, in one statement. The ids come through a scalar
// subquery: one plan kept for every call (docs/performance.md, "Plans made once").
func (r *Relay) next(ctx context.Context, conn *pgx.Conn, published []int64) ([]row, error) {
	if published == nil {
		published = []int64{}
	}
	// Finish the delete even when shutting down, so a clean stop republishes nothing.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statementTimeout)
	defer cancel()
	rows, err := conn.Query(qctx, `
		WITH published AS (DELETE FROM outbox WHERE id = ANY(((SELECT $1::bigint[]))::bigint[]))
		SELECT id, topic, key, headers, payload, created_at FROM outbox WHERE NOT (id = ANY(((SELECT $1::bigint[]))::bigint[])) ORDER BY id LIMIT $2`,
		published, r.BatchSize)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(cr pgx.CollectableRow) (b row, err error) {
		var headers []byte
		if err = cr.Scan(&b.id, &b.topic, &b.key, &headers, &b.payload, &b.written); err == nil {
			b.headers, err = recordHeaders(headers)
		}
		return b, err
	})
}

// publish sends batch and returns the ids the broker acknowledged: all of them, or, with
// a brokerError, those that went through before it refused the rest. Each record is
// published in a span of its own, a child of the one that wrote its event, and carries
// that span as its traceparent: its consumers' spans follow its publication.
func (r *Relay) publish(batch []row) ([]int64, error) {
	msgs := make([]*sarama.ProducerMessage, len(batch))
	spans := make([]trace.Span, len(batch))
	for i, b := range batch {
		ctx := tracing.Remote(context.Background(), header(b.headers, events.HeaderTraceParent))
		ctx, spans[i] = r.Tracer.Start(ctx, "publish "+b.topic, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.String("messaging.system", "kafka"), attribute.String("messaging.operation.type", "send"),
				attribute.String("messaging.destination.name", b.topic), attribute.String("messaging.message.id", header(b.headers, events.HeaderID)),
				tracing.OrderID(b.key), tracing.CorrelationID(header(b.headers, events.HeaderCorrelationID))))
		if tp := tracing.TraceParent(ctx); tp != "" {
			b.headers = setHeader(b.headers, events.HeaderTraceParent, tp)
		}
		msgs[i] = &sarama.ProducerMessage{
			Topic: b.topic, Key: sarama.StringEncoder(b.key), Value: sarama.ByteEncoder(b.payload),
			Headers: b.headers, Metadata: b.id,
		}
	}
	sendErr := r.Producer.SendMessages(msgs)

	failed := map[int64]error{}
	var perrs sarama.ProducerErrors
	if errors.As(sendErr, &perrs) {
		for _, pe := range perrs {
			failed[pe.Msg.Metadata.(int64)] = pe.Err
		}
	} else if sendErr != nil {
		for i := range batch {
			tracing.End(spans[i], sendErr)
		}
		return nil, brokerError{sendErr}
	}
	acked := make([]int64, 0, len(batch))
	now := time.Now()
	for i, b := range batch {
		tracing.End(spans[i], failed[b.id])
		if failed[b.id] == nil {
			acked = append(acked, b.id)
			r.Metrics.published(b.topic, now.Sub(b.written))
		}
	}
	if sendErr != nil {
		return acked, brokerError{sendErr}
	}
	return acked, nil
}
