package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/internal/backoff"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const group = "test-group"

type fixture struct {
	pool    *pgxpool.Pool
	brokers []string
}

func setup(t *testing.T) fixture {
	t.Helper()
	return setupOn(t, testenv.Kafka(t).Addrs, testenv.KafkaConfig("t"))
}

// setupOn is setup on the broker at brokers, reached with conf.
func setupOn(t *testing.T, brokers []string, conf *sarama.Config) fixture {
	t.Helper()
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (seq serial, order_id text NOT NULL, n bigint)`); err != nil {
		t.Fatal(err)
	}
	topics := append([]string{events.TopicOrderCreated}, consumer.DeadLetterTopics(group, events.TopicOrderCreated)...)
	if err := kafka.EnsureTopics(brokers, conf, kafka.TopicSpec{Partitions: 1}, topics...); err != nil {
		t.Fatal(err)
	}
	return fixture{pool: pool, brokers: brokers}
}

// run starts a runner with handler, configured by the options; the returned stop ends it
// and waits.
func (f fixture) run(t *testing.T, handler consumer.Handler, options ...func(*consumer.Runner)) (stop func()) {
	t.Helper()
	client, err := sarama.NewClient(f.brokers, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := sarama.NewSyncProducer(f.brokers, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	r := &consumer.Runner{
		Group: group, Client: client, Pool: f.pool, DeadLetters: dlq,
		Handlers: map[string]consumer.Handler{events.TopicOrderCreated: handler},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry:    backoff.Policy{Min: 50 * time.Millisecond, Max: 400 * time.Millisecond},
	}
	for _, o := range options {
		o(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() { cancel(); wg.Wait(); dlq.Close(); client.Close() })
	}
	t.Cleanup(stop)
	return stop
}

// recordEffect is a handler whose effect is a row in effects.
func recordEffect(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
	_, err := tx.Exec(ctx, `INSERT INTO effects (order_id) VALUES ($1)`, msg.Subject)
	return err
}

func (f fixture) effects(t *testing.T) []string {
	t.Helper()
	rows, _ := f.pool.Query(context.Background(), `SELECT order_id FROM effects ORDER BY seq`)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f fixture) waitEffects(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	var got []string
	testenv.Eventually(within, 25*time.Millisecond, func() bool { got = f.effects(t); return len(got) >= n })
	return got
}

func orderCreated(t *testing.T, id string) *sarama.ProducerMessage {
	t.Helper()
	env, err := events.New(events.OrderCreated{
		OrderID: id, CustomerID: "c", CustomerEmail: "a@b.c",
		Items:      []events.Item{{SKU: "S", Quantity: 2, UnitPriceCents: 50}},
		TotalCents: 100, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: time.Now(),
	}, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message(events.TopicOrderCreated, env)
}

func TestAppliesEachEventOnceAndCommitsOffsets(t *testing.T) {
	f := setup(t)
	a, b := orderCreated(t, "order-a"), orderCreated(t, "order-b")
	testenv.Produce(t, f.brokers, a)
	testenv.Produce(t, f.brokers, a) // the same event redelivered: same ce_id
	testenv.Produce(t, f.brokers, b)

	stop := f.run(t, consumer.InTx(recordEffect))
	f.waitEffects(t, 2, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	got := f.effects(t)
	slices.Sort(got) // different keys: applied concurrently, in any order
	if fmt.Sprint(got) != "[order-a order-b]" {
		t.Fatalf("effects = %v, want [order-a order-b]: a duplicate must be skipped", got)
	}
	stop()

	// A new runner of the same group resumes after the committed offsets.
	var calls atomic.Int32
	f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
		calls.Add(1)
		return recordEffect(ctx, tx, msg)
	}))
	testenv.Produce(t, f.brokers, orderCreated(t, "order-c"))
	got = f.waitEffects(t, 3, 15*time.Second)
	slices.Sort(got)
	if fmt.Sprint(got) != "[order-a order-b order-c]" || calls.Load() != 1 {
		t.Fatalf("after restart effects = %v with %d handler calls, want order-c alone handled", got, calls.Load())
	}
}

// An Idempotent group keeps no inbox: it writes no inbox row, and a redelivered event is
// applied again (the group's Applies have the effect of one however often they run; this
// one's does not, to show it).
func TestAnIdempotentGroupKeepsNoInbox(t *testing.T) {
	f := setup(t)
	a := orderCreated(t, "order-a")
	testenv.Produce(t, f.brokers, a)
	testenv.Produce(t, f.brokers, a) // the same event redelivered: same ce_id
	testenv.Produce(t, f.brokers, orderCreated(t, "order-b"))

	f.run(t, consumer.InTx(recordEffect), func(r *consumer.Runner) { r.Idempotent = true })
	got := f.waitEffects(t, 3, 15*time.Second)
	slices.Sort(got)
	if fmt.Sprint(got) != "[order-a order-a order-b]" {
		t.Errorf("effects = %v, want [order-a order-a order-b]: no inbox skips the redelivery", got)
	}
	var rows int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM processed_events`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("%d inbox rows (%v), want none", rows, err)
	}
}

func TestPoisonRecordsGoToTheDeadLetterTopicAndTheNextIsApplied(t *testing.T) {
	f := setup(t)
	garbage := &sarama.ProducerMessage{Topic: events.TopicOrderCreated, Key: sarama.StringEncoder("k-1"),
		Value: sarama.ByteEncoder("\x00not json at all")}
	badPayload := orderCreated(t, "order-bad")
	badPayload.Value = sarama.StringEncoder(`{"order_id":"order-bad"}`)
	rejected := orderCreated(t, "order-rejected")
	testenv.Produce(t, f.brokers, garbage)
	testenv.Produce(t, f.brokers, badPayload)
	testenv.Produce(t, f.brokers, rejected)
	testenv.Produce(t, f.brokers, orderCreated(t, "order-good"))

	f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
		if msg.Subject == "order-rejected" {
			return consumer.Poison(errors.New("amount exceeds the provider's limit"))
		}
		return recordEffect(ctx, tx, msg)
	}))
	if got := f.waitEffects(t, 1, 15*time.Second); fmt.Sprint(got) != "[order-good]" {
		t.Fatalf("effects = %v, want [order-good]", got)
	}
	dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 3, 10*time.Second)
	if len(dlq) != 3 {
		t.Fatalf("dead-letter topic holds %d records, want 3", len(dlq))
	}
	// Records of different keys are handled side by side, so they may be dead-lettered in
	// any order: each names its offset.
	slices.SortFunc(dlq, func(a, b *sarama.ConsumerMessage) int {
		return strings.Compare(testenv.Header(a, consumer.HeaderDLQOffset), testenv.Header(b, consumer.HeaderDLQOffset))
	})
	wantErr := []string{"missing header", "invalid payload", "amount exceeds"}
	for i, m := range dlq {
		if testenv.Header(m, consumer.HeaderDLQTopic) != events.TopicOrderCreated ||
			testenv.Header(m, consumer.HeaderDLQPartition) != "0" ||
			testenv.Header(m, consumer.HeaderDLQOffset) != fmt.Sprint(i) ||
			testenv.Header(m, consumer.HeaderDLQGroup) != group ||
			testenv.Header(m, consumer.HeaderDLQTime) == "" {
			t.Errorf("dead letter %d has headers %v", i, m.Headers)
		}
		if e := testenv.Header(m, consumer.HeaderDLQError); !strings.Contains(e, wantErr[i]) {
			t.Errorf("dead letter %d error = %q, want it to mention %q", i, e, wantErr[i])
		}
	}
	if string(dlq[0].Key) != "k-1" || string(dlq[0].Value) != "\x00not json at all" {
		t.Errorf("dead letter changed the record: key %q value %q", dlq[0].Key, dlq[0].Value)
	}
	if testenv.Header(dlq[2], events.HeaderID) == "" {
		t.Errorf("dead letter lost the original headers: %v", dlq[2].Headers)
	}
}

// A real database error inside the handler (a lock wait that times out) is retried with
// backoff; the record is neither skipped nor overtaken by the next one of its key.
func TestTransientDatabaseErrorIsRetriedNotSkipped(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	blocker, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, `LOCK TABLE effects IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	var attempts atomic.Int32
	f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
		attempts.Add(1)
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
			return err
		}
		return recordEffect(ctx, tx, msg)
	}))
	testenv.Produce(t, f.brokers, orderCreated(t, "order-1"))
	testenv.Produce(t, f.brokers, orderCreated(t, "order-2"))
	testenv.Produce(t, f.brokers, orderCreated(t, "order-1"))

	testenv.Eventually(15*time.Second, 20*time.Millisecond, func() bool { return attempts.Load() >= 3 })
	if n := attempts.Load(); n < 3 {
		t.Fatalf("handler attempted %d times while the table was locked, want retries", n)
	}
	var applied int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM processed_events`).Scan(&applied); err != nil || applied != 0 {
		t.Fatalf("%d events recorded as processed while the table is locked (%v)", applied, err)
	}
	_ = blocker.Rollback(ctx) // the outage ends

	got := f.waitEffects(t, 3, 15*time.Second)
	slices.Sort(got)
	if fmt.Sprint(got) != "[order-1 order-1 order-2]" {
		t.Fatalf("effects = %v, want order-1 twice and order-2", got)
	}
	if dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 0, 500*time.Millisecond); len(dlq) != 0 {
		t.Fatalf("a transient failure sent %d records to the dead-letter topic", len(dlq))
	}
}

// numbered is an order.created of order id whose total is n+1 (n: the record's number
// within its key; a total must be positive).
func numbered(t *testing.T, id string, n int64) *sarama.ProducerMessage {
	t.Helper()
	env, err := events.New(events.OrderCreated{
		OrderID: id, CustomerID: "c", CustomerEmail: "a@b.c",
		Items:      []events.Item{{SKU: "S", Quantity: 1, UnitPriceCents: n + 1}},
		TotalCents: n + 1, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: time.Now(),
	}, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message(events.TopicOrderCreated, env)
}

// numbers is a Set writing records' keys and numbers to effects, a batch in one statement.
type numbers struct{}

type number struct {
	key string
	n   int64
}

func (numbers) Apply(ctx context.Context, tx consumer.Tx, rows []any) error {
	keys, ns := make([]string, len(rows)), make([]int64, len(rows))
	for i, r := range rows {
		keys[i], ns[i] = r.(number).key, r.(number).n
	}
	_, err := tx.Exec(ctx, `INSERT INTO effects (order_id, n) SELECT * FROM unnest($1::text[], $2::bigint[])`, keys, ns)
	return err
}

// recordNumber is an Apply writing the record's key and number to effects, with the other
// records of its batch.
func recordNumber(msg consumer.Message) consumer.Apply {
	return consumer.Row(numbers{}, number{key: msg.Subject, n: msg.Event.(events.OrderCreated).TotalCents - 1})
}

type effect struct {
	key string
	n   int64
}

func (f fixture) numberedEffects(t *testing.T) []effect {
	t.Helper()
	rows, _ := f.pool.Query(context.Background(), `SELECT order_id, n FROM effects ORDER BY seq`)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e effect, err error) {
		return e, r.Scan(&e.key, &e.n)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// One partition, many keys: records of different keys are handled concurrently, up to
// Concurrency at once, a slow key is overtaken by the fast ones, each key's records are
// applied in offset order, and a poison record in the middle is dead-lettered while its
// key's next record and every other key go on.
func TestKeysRunConcurrentlyEachInOffsetOrder(t *testing.T) {
	f := setup(t)
	const keys, perKey, concurrency = 12, 6, 8
	var msgs []*sarama.ProducerMessage
	for n := int64(0); n < perKey; n += 2 { // a key's records come in pairs, back to back
		msgs = append(msgs, numbered(t, "slow", n), numbered(t, "slow", n+1))
		for k := range keys {
			msgs = append(msgs, numbered(t, fmt.Sprintf("fast-%02d", k), n), numbered(t, fmt.Sprintf("fast-%02d", k), n+1))
		}
		if n == 2 {
			poison := numbered(t, "fast-03", 99)
			poison.Value = sarama.StringEncoder(`{"order_id":"fast-03"}`) // not a valid order.created
			msgs = append(msgs, poison)
		}
	}
	testenv.Produce(t, f.brokers, msgs...)

	var running, most atomic.Int32
	f.run(t, func(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
		now := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		d := time.Duration(1+rand.IntN(15)) * time.Millisecond // uneven, as real calls are
		if msg.Subject == "slow" {
			d = time.Duration(50+rand.IntN(150)) * time.Millisecond // the slow provider of one order
		}
		time.Sleep(d)
		return recordNumber(msg), nil
	}, func(r *consumer.Runner) { r.Concurrency = concurrency })

	want := (keys + 1) * perKey
	var got []effect
	testenv.Eventually(20*time.Second, 25*time.Millisecond, func() bool { got = f.numberedEffects(t); return len(got) >= want })
	if len(got) != want {
		t.Fatalf("%d effects, want %d", len(got), want)
	}
	next := map[string]int64{}
	lastFast, lastSlow := 0, 0
	for i, e := range got {
		if e.n != next[e.key] {
			t.Fatalf("effect %d: %s #%d applied when #%d was due: a key's records must apply in offset order", i, e.key, e.n, next[e.key])
		}
		next[e.key]++
		if e.key == "slow" {
			lastSlow = i
		} else {
			lastFast = i
		}
	}
	if lastFast > lastSlow {
		t.Errorf("the fast keys finished after the slow one (effect %d > %d): they were held behind it", lastFast, lastSlow)
	}
	if m := most.Load(); m < 2 || m > concurrency {
		t.Errorf("at most %d records were handled at once, want between 2 and Concurrency (%d)", m, concurrency)
	}
	dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 1, 10*time.Second)
	if len(dlq) != 1 || string(dlq[0].Key) != "fast-03" {
		t.Errorf("dead letters = %d records, want the one poison record", len(dlq))
	}
}

// committedOffset is the group's committed offset of partition 0 (-1: none).
func (f fixture) committedOffset(t *testing.T) int64 {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(f.brokers, testenv.KafkaConfig("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	res, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{events.TopicOrderCreated: {0}})
	if err != nil {
		t.Fatal(err)
	}
	if b := res.GetBlock(events.TopicOrderCreated, 0); b != nil {
		return b.Offset
	}
	return -1
}

// A key stuck in transient failures holds back only itself and the commit point: the other
// keys keep flowing until the partition runs MaxUncommitted records ahead of the stuck one,
// then it pauses, so memory stays bounded; the committed offset never passes the stuck
// record; when the failure clears everything completes and the commit point catches up.
func TestAStuckKeyHoldsBackOnlyItselfAndTheCommitPoint(t *testing.T) {
	f := setup(t)
	const others, window = 60, 20
	msgs := []*sarama.ProducerMessage{numbered(t, "stuck", 0)}
	for i := range others {
		msgs = append(msgs, numbered(t, fmt.Sprintf("key-%02d", i%30), int64(i/30)))
	}
	testenv.Produce(t, f.brokers, msgs...)

	var outage atomic.Bool
	outage.Store(true)
	var attempts atomic.Int32
	reg := prometheus.NewRegistry()
	m, err := consumer.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f.run(t, func(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
		if msg.Subject == "stuck" && outage.Load() {
			attempts.Add(1)
			return consumer.Apply{}, errors.New("provider unavailable")
		}
		return recordNumber(msg), nil
	}, func(r *consumer.Runner) { r.Concurrency, r.MaxUncommitted, r.Metrics = 4, window, m })

	testenv.Eventually(15*time.Second, 25*time.Millisecond, func() bool { return len(f.numberedEffects(t)) >= window-1 })
	time.Sleep(1500 * time.Millisecond) // more than the commit interval, and time to overrun the bound
	if n := len(f.numberedEffects(t)); n != window-1 {
		t.Fatalf("%d records applied behind the stuck one, want %d: the others must flow, up to MaxUncommitted (%d)", n, window-1, window)
	}
	if attempts.Load() < 3 {
		t.Fatalf("the stuck record was attempted %d times, want retries", attempts.Load())
	}
	if off := f.committedOffset(t); off > 0 {
		t.Fatalf("committed offset %d while offset 0 is unfinished", off)
	}
	// What an operator sees meanwhile: the partition paused, records in flight, retries.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP orderflow_consumer_partitions_paused Partitions whose fetching is paused by back-pressure, by group: Concurrency records in flight, or MaxUncommitted taken past a stuck record.
# TYPE orderflow_consumer_partitions_paused gauge
orderflow_consumer_partitions_paused{group="`+group+`"} 1
# HELP orderflow_consumer_records_in_flight Records being handled, by group: their handler running, or waiting to retry.
# TYPE orderflow_consumer_records_in_flight gauge
orderflow_consumer_records_in_flight{group="`+group+`"} 1
`), "orderflow_consumer_partitions_paused", "orderflow_consumer_records_in_flight"); err != nil {
		t.Error(err)
	}
	if n := counted(t, reg, "retried"); n < 2 {
		t.Errorf("retried = %v, want the stuck record's retries counted", n)
	}

	outage.Store(false)
	testenv.Eventually(15*time.Second, 25*time.Millisecond, func() bool { return len(f.numberedEffects(t)) >= others+1 })
	if n := len(f.numberedEffects(t)); n != others+1 {
		t.Fatalf("%d effects after the failure cleared, want %d", n, others+1)
	}
	testenv.Eventually(10*time.Second, 100*time.Millisecond, func() bool { return f.committedOffset(t) == others+1 })
	if off := f.committedOffset(t); off != others+1 {
		t.Fatalf("committed offset %d once everything finished, want %d", off, others+1)
	}
	if n := counted(t, reg, "applied"); n != others+1 {
		t.Errorf("applied = %v, want %d", n, others+1)
	}
}

// counted sums the records_total series of outcome in reg.
func counted(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, f := range fams {
		if f.GetName() != "orderflow_consumer_records_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					v += m.GetCounter().GetValue()
				}
			}
		}
	}
	return v
}

// Stopping the runner while records are in flight lets them finish and commits exactly
// the finished prefix: a new runner redelivers only what did not finish, and the inbox
// absorbs what finished but could not be committed behind an unfinished one.
func TestStopFinishesInFlightAndResumesWithoutLossOrRepeat(t *testing.T) {
	f := setup(t)
	const n = 120
	var msgs []*sarama.ProducerMessage
	for i := range n {
		msgs = append(msgs, numbered(t, fmt.Sprintf("order-%03d", i), 0))
	}
	testenv.Produce(t, f.brokers, msgs...)
	slow := func(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond) // a provider call, uneven
		return recordNumber(msg), nil
	}
	stop := f.run(t, slow, func(r *consumer.Runner) { r.Concurrency = 16 })
	for len(f.numberedEffects(t)) < n/4 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if got := len(f.numberedEffects(t)); got == n {
		t.Fatalf("all %d records were through before the stop; the test needs some in flight", n)
	}
	f.run(t, slow, func(r *consumer.Runner) { r.Concurrency = 16 })
	testenv.Eventually(20*time.Second, 25*time.Millisecond, func() bool { return len(f.numberedEffects(t)) >= n })
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	for _, e := range f.numberedEffects(t) {
		seen[e.key]++
	}
	for i := range n {
		if k := fmt.Sprintf("order-%03d", i); seen[k] != 1 {
			t.Errorf("%s applied %d times, want once", k, seen[k])
		}
	}
}

// pickyNumbers is numbers refusing, as poison, a batch holding the key "bad".
type pickyNumbers struct{ largest *atomic.Int32 }

func (p pickyNumbers) Apply(ctx context.Context, tx consumer.Tx, rows []any) error {
	if n := int32(len(rows)); n > p.largest.Load() {
		p.largest.Store(n)
	}
	for _, r := range rows {
		if r.(number).key == "bad" {
			return consumer.Poison(errors.New("the provider's limit is exceeded"))
		}
	}
	return numbers{}.Apply(ctx, tx, rows)
}

// Records ready together are recorded by one Set call; when that batch fails, its records
// are recorded one by one, so the one at fault is dead-lettered and the others applied:
// batching never changes a record's fate.
func TestAFailingBatchFallsBackToOneByOne(t *testing.T) {
	f := setup(t)
	var msgs []*sarama.ProducerMessage
	for i := range 40 {
		key := fmt.Sprintf("order-%02d", i)
		if i == 20 {
			key = "bad"
		}
		msgs = append(msgs, numbered(t, key, 0))
	}
	testenv.Produce(t, f.brokers, msgs...)
	var largest atomic.Int32
	set := pickyNumbers{largest: &largest}
	f.run(t, func(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
		time.Sleep(5 * time.Millisecond) // the slow step: lets the records' Applies meet
		return consumer.Row(set, number{key: msg.Subject}), nil
	})
	dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 1, 15*time.Second)
	testenv.Eventually(15*time.Second, 25*time.Millisecond, func() bool { return len(f.numberedEffects(t)) >= 39 })
	if n := len(f.numberedEffects(t)); n != 39 {
		t.Errorf("%d records applied, want the 39 good ones", n)
	}
	if len(dlq) != 1 || string(dlq[0].Key) != "bad" {
		t.Errorf("dead letters = %d, want the bad record alone", len(dlq))
	}
	if largest.Load() < 2 {
		t.Errorf("the set never got more than %d rows at once: nothing was batched", largest.Load())
	}
}

// A runner whose way to the broker went silent — its connections swallowed by the
// blackhole for good — consumes again soon after the broker answers, with the services'
// Kafka settings: its fetch, heartbeat and commit caught on the silent connections are
// given up after the client's read timeout, and sent again on fresh ones: within 20 s,
// which sarama's 30 s read timeout does not allow.
func TestARunnerWhoseBrokerWentSilentConsumesAgainOnceItAnswers(t *testing.T) {
	b, proxy := testenv.ProxiedKafka(t)
	conf := kafka.Config("t")
	f := setupOn(t, b.Addrs, conf)
	f.run(t, consumer.InTx(recordEffect))
	testenv.Produce(t, f.brokers, orderCreated(t, "before"))
	if got := f.waitEffects(t, 1, 15*time.Second); len(got) != 1 {
		t.Fatalf("effects = %v before the blackhole, want the record", got)
	}

	proxy.Blackhole()
	time.Sleep(3 * time.Second)
	proxy.Restore()
	start := time.Now()
	testenv.Produce(t, f.brokers, orderCreated(t, "after")) // on connections of its own, dialed now
	// The fetch under way, given up at the read timeout, then the next on a fresh
	// connection.
	if got := f.waitEffects(t, 2, 20*time.Second); len(got) != 2 {
		t.Fatalf("effects = %v 20 s after the broker answered again, want the record produced then (read timeout %s)", got, conf.Net.ReadTimeout)
	}
	t.Logf("consumed %s after the broker answered again (read timeout %s)", time.Since(start).Round(100*time.Millisecond), conf.Net.ReadTimeout)
}

// With the database's packets dropped (nothing refused, nothing closed), the runner
// stops within about one handler timeout: the batch under way fails at once when its
// time is up instead of record by record, and no record waits for the applier beyond its
// own attempt. The fallback used to give each record a fresh timeout of its own, and a
// record to wait for the applier without limit.
func TestABlackholedDatabaseDoesNotHoldUpTheStop(t *testing.T) {
	f := setup(t)
	proxied, proxy := testenv.ProxiedPool(t, f.pool)
	const timeout = 2 * time.Second
	stop := f.run(t, consumer.InTx(recordEffect), func(r *consumer.Runner) { r.Pool, r.HandlerTimeout = proxied, timeout })
	var msgs []*sarama.ProducerMessage
	for i := range 5 {
		msgs = append(msgs, orderCreated(t, fmt.Sprintf("before-%d", i)))
	}
	testenv.Produce(t, f.brokers, msgs...)
	if got := f.waitEffects(t, 5, 15*time.Second); len(got) != 5 {
		t.Fatalf("%d effects before the blackhole, want 5", len(got))
	}

	proxy.Blackhole()
	msgs = msgs[:0]
	for i := range 40 {
		msgs = append(msgs, orderCreated(t, fmt.Sprintf("during-%02d", i)))
	}
	testenv.Produce(t, f.brokers, msgs...)
	time.Sleep(time.Second) // handled, and waiting for the applier
	start := time.Now()
	stop()
	took := time.Since(start)
	t.Logf("stopped in %s with the database blackholed (handler timeout %s)", took.Round(10*time.Millisecond), timeout)
	if took > timeout+2*time.Second {
		t.Errorf("the stop took %s with the database blackholed, want about the handler timeout (%s)", took, timeout)
	}
}

// A poison record of about 1 MiB, written by another client, is too large for the
// dead-letter topic once the dlq_* headers are added: it is parked cut short, with a
// header saying so and the dlq_* headers naming its offset, and the partition goes on.
// It used to be retried for as long as the session lived, in every session.
func TestAPoisonRecordTooLargeToDeadLetterIsParkedCutShort(t *testing.T) {
	f := setup(t)
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.Producer.Return.Successes = true
	c.Producer.MaxMessageBytes = 1048588 // the broker's limit, over sarama's default of 1 MiB
	big, err := sarama.NewSyncProducer(f.brokers, testenv.LogIn(c))
	if err != nil {
		t.Fatal(err)
	}
	// Within the broker's limit; with the dlq_* headers, over the producer's.
	value := []byte(strings.Repeat("x", 1048500))
	_, offset, err := big.SendMessage(&sarama.ProducerMessage{Topic: events.TopicOrderCreated, Key: sarama.StringEncoder("big"), Value: sarama.ByteEncoder(value)})
	big.Close()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Produce(t, f.brokers, orderCreated(t, "after"))
	f.run(t, consumer.InTx(recordEffect))
	if got := f.waitEffects(t, 1, 20*time.Second); fmt.Sprint(got) != "[after]" {
		t.Fatalf("effects = %v, want the record after the large one applied", got)
	}
	// Past the large record and the one after it.
	if !testenv.Eventually(15*time.Second, 100*time.Millisecond, func() bool { return f.committedOffset(t) == offset+2 }) {
		t.Fatalf("committed offset %d, want %d: the large record holds back its partition", f.committedOffset(t), offset+2)
	}
	dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 1, 15*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dlq))
	}
	headers := map[string]string{}
	for _, h := range dlq[0].Headers {
		headers[string(h.Key)] = string(h.Value)
	}
	t.Logf("dead letter: %d bytes, %s: %q", len(dlq[0].Value), consumer.HeaderDLQTruncated, headers[consumer.HeaderDLQTruncated])
	if string(dlq[0].Key) != "big" || headers[consumer.HeaderDLQOffset] != strconv.FormatInt(offset, 10) ||
		!strings.HasPrefix(headers[consumer.HeaderDLQTruncated], "value of "+strconv.Itoa(len(value))+" bytes") ||
		len(dlq[0].Value) >= len(value) || !strings.HasPrefix(string(value), string(dlq[0].Value)) {
		t.Errorf("dead letter key %q, %d bytes, headers %v; want key big, the value's start, truncated, offset %d",
			dlq[0].Key, len(dlq[0].Value), headers, offset)
	}
}

// An Apply's events are stored in the outbox with its transaction: once for an event
// delivered twice, and not at all by an attempt that fails after emitting (its retry
// emits them again, once).
func TestEmittedEventsCommitWithTheirApply(t *testing.T) {
	f := setup(t)
	a := orderCreated(t, "order-a")
	testenv.Produce(t, f.brokers, a)
	testenv.Produce(t, f.brokers, a) // redelivered
	var attempts atomic.Int32
	f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
		env, err := events.New(events.PaymentFailed{OrderID: msg.Subject, PaymentID: "p", CustomerID: "c", CustomerEmail: "a@b.c",
			AmountCents: 100, Currency: "EUR", Reason: events.ReasonDeclined, FailedAt: time.Now()}, msg.Meta(), time.Now())
		if err != nil {
			return err
		}
		tx.Emit(env)
		if attempts.Add(1) == 1 {
			return errors.New("the first attempt fails after emitting")
		}
		return recordEffect(ctx, tx, msg)
	}))
	f.waitEffects(t, 1, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	rows, _ := f.pool.Query(context.Background(), `SELECT topic || ' ' || key FROM outbox ORDER BY id`)
	stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(stored) != "[payment.failed order-a]" {
		t.Errorf("outbox holds %v, want the one payment.failed of order-a, bound for its kind's topic", stored)
	}
}

// With a Linger, records that become ready one after another within it commit in one
// transaction; without one, each commits as soon as it is ready, alone when it comes alone.
func TestALingerGathersTheRecordsThatComeWithinItIntoOneCommit(t *testing.T) {
	for _, tc := range []struct {
		linger  time.Duration
		atLeast int // distinct transactions of the 5 spaced records, at least…
		atMost  int // …and at most
	}{
		{linger: 0, atLeast: 4, atMost: 5},
		{linger: 2 * time.Second, atLeast: 1, atMost: 1},
	} {
		t.Run(fmt.Sprint("linger ", tc.linger), func(t *testing.T) {
			f := setup(t)
			f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
				_, err := tx.Exec(ctx, `INSERT INTO effects (order_id, n) VALUES ($1, txid_current())`, msg.Subject)
				return err
			}), func(r *consumer.Runner) { r.Linger = tc.linger })
			testenv.Produce(t, f.brokers, orderCreated(t, "order-first")) // the group has joined once it is applied
			f.waitEffects(t, 1, 15*time.Second)
			for i := range 5 {
				time.Sleep(100 * time.Millisecond)
				testenv.Produce(t, f.brokers, orderCreated(t, fmt.Sprint("order-", i)))
			}
			f.waitEffects(t, 6, 15*time.Second)
			var txs int
			if err := f.pool.QueryRow(context.Background(),
				`SELECT count(DISTINCT n) FROM effects WHERE order_id <> 'order-first'`).Scan(&txs); err != nil {
				t.Fatal(err)
			}
			if txs < tc.atLeast || txs > tc.atMost {
				t.Errorf("5 records 100 ms apart committed in %d transactions with Linger %s, want %d to %d", txs, tc.linger, tc.atLeast, tc.atMost)
			}
		})
	}
}

// A group with a Linger commits what is ready together in larger transactions than one
// without: 300 records ready at once, in one transaction.
func TestALingeringGroupCommitsHundredsAtOnce(t *testing.T) {
	f := setup(t)
	f.run(t, consumer.InTx(func(ctx context.Context, tx consumer.Tx, msg consumer.Message) error {
		_, err := tx.Exec(ctx, `INSERT INTO effects (order_id, n) VALUES ($1, txid_current())`, msg.Subject)
		return err
	}), func(r *consumer.Runner) { r.Linger, r.Concurrency = time.Second, 1000 })
	testenv.Produce(t, f.brokers, orderCreated(t, "order-first")) // the group has joined once it is applied
	f.waitEffects(t, 1, 15*time.Second)
	msgs := make([]*sarama.ProducerMessage, 300)
	for i := range msgs {
		msgs[i] = orderCreated(t, fmt.Sprint("order-", i))
	}
	testenv.Produce(t, f.brokers, msgs...)
	f.waitEffects(t, 301, 15*time.Second)
	var txs int
	if err := f.pool.QueryRow(context.Background(),
		`SELECT count(DISTINCT n) FROM effects WHERE order_id <> 'order-first'`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	if txs != 1 {
		t.Errorf("300 records ready at once committed in %d transactions with a Linger, want 1", txs)
	}
}

// stamped is a row of the statement set below: an effect, stamped with its transaction,
// and the event it emits.
type stamped struct {
	key string
	env events.Envelope
}

// stampedSet records its rows in stamped_effects with their transaction's id, a line in
// stamped_log for each row it recorded (AlsoWrite), and emits each row's event, in one
// statement.
var stampedSet = consumer.NewStatementSet(func(rows []stamped, first int, fresh string) (string, []any) {
	keys, tags := make([]string, len(rows)), make([]int32, len(rows))
	for i, r := range rows {
		keys[i], tags[i] = r.key, int32(i)
	}
	guard := ""
	if fresh != "" {
		guard = "WHERE r.tag IN (SELECT tag FROM " + fresh + ")"
	}
	return fmt.Sprintf(`INSERT INTO stamped_effects (order_id, tag, tx)
		SELECT r.key, r.tag, txid_current() FROM unnest($%d::text[], $%d::int[]) AS r(key, tag) %s
		RETURNING tag`, first, first+1, guard), []any{keys, tags}
}, func(r stamped) []events.Envelope { return []events.Envelope{r.env} }, nil,
	consumer.AlsoWrite(func(recorded string) string {
		return ", logged AS (INSERT INTO stamped_log (tag, tx) SELECT tag, txid_current() FROM " + recorded + ")"
	}))

// A StatementSet's rows, their inbox rows and their events are one statement: on its own
// when the batch holds nothing else, with no BEGIN and no COMMIT; in the batch's
// transaction beside a Func's work otherwise. Either way an event delivered twice is
// recorded once and emits once.
func TestAStatementSetRecordsItsRowsInboxAndEventsInOneStatement(t *testing.T) {
	for _, withFunc := range []bool{false, true} {
		t.Run(fmt.Sprint("beside a Func ", withFunc), func(t *testing.T) {
			f := setup(t)
			ctx := context.Background()
			if _, err := f.pool.Exec(ctx, `CREATE TABLE stamped_effects (order_id text, tag int, tx bigint); CREATE TABLE stamped_log (tag int, tx bigint)`); err != nil {
				t.Fatal(err)
			}
			traced, tracer := testenv.TracedPool(t, f.pool)
			f.run(t, func(_ context.Context, msg consumer.Message) (consumer.Apply, error) {
				if msg.Subject == "order-func" {
					return consumer.Func(func(ctx context.Context, tx consumer.Tx) error {
						_, err := tx.Exec(ctx, `INSERT INTO effects (order_id, n) VALUES ($1, txid_current())`, msg.Subject)
						return err
					}), nil
				}
				env, err := events.New(events.PaymentFailed{OrderID: msg.Subject, PaymentID: "p", CustomerID: "c", CustomerEmail: "a@b.c",
					AmountCents: 100, Currency: "EUR", Reason: events.ReasonDeclined, FailedAt: time.Now()}, msg.Meta(), time.Now())
				return consumer.Row(stampedSet, stamped{key: msg.Subject, env: env}), err
			}, func(r *consumer.Runner) { r.Pool, r.Linger = traced, time.Second })

			a := orderCreated(t, "order-a")
			testenv.Produce(t, f.brokers, a)
			msgs := []*sarama.ProducerMessage{orderCreated(t, "order-b")}
			if withFunc {
				msgs = append(msgs, orderCreated(t, "order-func"))
			}
			testenv.Produce(t, f.brokers, msgs...)
			testenv.Produce(t, f.brokers, a) // the same event again (its ce_id): in the same batch, or a later one
			stampedEffects := func() ([]string, error) {
				rows, _ := f.pool.Query(ctx, `SELECT order_id FROM stamped_effects ORDER BY order_id`)
				return pgx.CollectRows(rows, pgx.RowTo[string])
			}
			testenv.Eventually(15*time.Second, 25*time.Millisecond, func() bool {
				got, err := stampedEffects()
				return err == nil && len(got) >= 2
			})
			time.Sleep(1500 * time.Millisecond) // a second linger: anything recorded twice is in
			if got, err := stampedEffects(); err != nil || fmt.Sprint(got) != "[order-a order-b]" {
				t.Errorf("stamped effects %v (%v), want order-a and order-b once each", got, err)
			}
			rows, _ := f.pool.Query(ctx, `SELECT topic || ' ' || key FROM outbox ORDER BY key`)
			stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil || fmt.Sprint(stored) != "[payment.failed order-a payment.failed order-b]" {
				t.Errorf("outbox holds %v (%v), want one payment.failed for each of order-a and order-b", stored, err)
			}
			var logged int
			if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM stamped_log l JOIN stamped_effects e USING (tag, tx)`).Scan(&logged); err != nil || logged != 2 {
				t.Errorf("%d lines in stamped_log, each in its row's statement (%v); want 2, one for each row recorded (AlsoWrite)", logged, err)
			}
			var inbox int
			if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM processed_events WHERE consumer_group = $1`, group).Scan(&inbox); err != nil {
				t.Fatal(err)
			}
			statements, begins := tracer.Count("stamped_effects", "processed_events", "outbox"), tracer.Count("begin")
			t.Logf("%d statements recording rows, inbox and events; %d BEGINs; %d inbox rows", statements, begins, inbox)
			if statements < 1 {
				t.Errorf("no statement recorded the rows, their inbox rows and events together")
			}
			if !withFunc {
				if inbox != 2 || begins != 0 {
					t.Errorf("%d inbox rows and %d BEGINs, want 2 and none: a statement set alone is its own transaction", inbox, begins)
				}
				return
			}
			var funcTx int64
			if err := f.pool.QueryRow(ctx, `SELECT n FROM effects WHERE order_id = 'order-func'`).Scan(&funcTx); err != nil {
				t.Fatal(err)
			}
			var shared int
			if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM stamped_effects WHERE tx = $1`, funcTx).Scan(&shared); err != nil {
				t.Fatal(err)
			}
			if inbox != 3 || begins == 0 || shared == 0 {
				t.Errorf("%d inbox rows, %d BEGINs, %d rows in the Func's transaction; want 3, some, some: the Func's record lingered with the others into one transaction",
					inbox, begins, shared)
			}
		})
	}
}

// A runner prunes its group's inbox rows past InboxRetention when it starts, and only
// those: not the recent ones, nor another group's.
func TestARunnerPrunesItsInboxPastRetention(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, `INSERT INTO processed_events (consumer_group, event_id, processed_at)
		SELECT g, g || '-' || n, now() - n * interval '1 hour' - interval '30 minutes'
		FROM generate_series(0, 47) n, unnest(ARRAY[$1, 'other-group']) g`, group); err != nil {
		t.Fatal(err)
	}
	f.run(t, consumer.InTx(recordEffect), func(r *consumer.Runner) { r.InboxRetention = 24 * time.Hour })
	left := func() (mine, others int) {
		err := f.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE consumer_group = $1), count(*) FILTER (WHERE consumer_group <> $1)
			FROM processed_events`, group).Scan(&mine, &others)
		if err != nil {
			t.Fatal(err)
		}
		return mine, others
	}
	if !testenv.Eventually(5*time.Second, 20*time.Millisecond, func() bool { mine, _ := left(); return mine == 24 }) {
		mine, _ := left()
		t.Fatalf("the group's inbox holds %d rows; want the 24 of the last day", mine)
	}
	if _, others := left(); others != 48 {
		t.Errorf("another group's inbox holds %d rows; want its 48 untouched", others)
	}
}
