package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Payments); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (seq serial, order_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	b := testenv.Kafka(t)
	topics := append([]string{events.TopicOrderCreated}, consumer.DeadLetterTopics(group, events.TopicOrderCreated)...)
	if err := kafka.EnsureTopics(b.Addrs, "t", 1, topics...); err != nil {
		t.Fatal(err)
	}
	return fixture{pool: pool, brokers: b.Addrs}
}

// run starts a runner with handler; the returned stop ends it and waits.
func (f fixture) run(t *testing.T, handler consumer.Handler) (stop func()) {
	t.Helper()
	client, err := sarama.NewClient(f.brokers, kafka.Config("t"))
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := sarama.NewSyncProducer(f.brokers, kafka.Config("t"))
	if err != nil {
		t.Fatal(err)
	}
	r := &consumer.Runner{
		Group: group, Client: client, Pool: f.pool, DeadLetters: dlq,
		Handlers: map[string]consumer.Handler{events.TopicOrderCreated: handler},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Retry:    backoff.Policy{Min: 50 * time.Millisecond, Max: 400 * time.Millisecond},
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
func recordEffect(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
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
	deadline := time.Now().Add(within)
	for {
		got := f.effects(t)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func orderCreated(t *testing.T, id string) *sarama.ProducerMessage {
	t.Helper()
	env, err := events.New(events.OrderCreated{
		OrderID: id, CustomerID: "c", CustomerEmail: "a@b.c",
		Items:      []events.Item{{SKU: "S", Quantity: 2, UnitPriceCents: 50}},
		TotalCents: 100, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: time.Now(),
	}, events.Meta{Source: "test"}, time.Now())
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

	stop := f.run(t, recordEffect)
	got := f.waitEffects(t, 2, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	got = f.effects(t)
	if fmt.Sprint(got) != "[order-a order-b]" {
		t.Fatalf("effects = %v, want [order-a order-b]: a duplicate must be skipped", got)
	}
	stop()

	// A new runner of the same group resumes after the committed offsets.
	var calls atomic.Int32
	f.run(t, func(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
		calls.Add(1)
		return recordEffect(ctx, tx, msg)
	})
	testenv.Produce(t, f.brokers, orderCreated(t, "order-c"))
	got = f.waitEffects(t, 3, 15*time.Second)
	if fmt.Sprint(got) != "[order-a order-b order-c]" || calls.Load() != 1 {
		t.Fatalf("after restart effects = %v with %d handler calls, want order-c alone handled", got, calls.Load())
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

	f.run(t, func(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
		if msg.Subject == "order-rejected" {
			return consumer.Poison(errors.New("amount exceeds the provider's limit"))
		}
		return recordEffect(ctx, tx, msg)
	})
	if got := f.waitEffects(t, 1, 15*time.Second); fmt.Sprint(got) != "[order-good]" {
		t.Fatalf("effects = %v, want [order-good]", got)
	}
	dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 3, 10*time.Second)
	if len(dlq) != 3 {
		t.Fatalf("dead-letter topic holds %d records, want 3", len(dlq))
	}
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
// backoff; the record is neither skipped nor overtaken by the next one.
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
	f.run(t, func(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
		attempts.Add(1)
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
			return err
		}
		return recordEffect(ctx, tx, msg)
	})
	testenv.Produce(t, f.brokers, orderCreated(t, "order-1"))
	testenv.Produce(t, f.brokers, orderCreated(t, "order-2"))

	deadline := time.Now().Add(15 * time.Second)
	for attempts.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := attempts.Load(); n < 3 {
		t.Fatalf("handler attempted %d times while the table was locked, want retries", n)
	}
	var applied int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM processed_events`).Scan(&applied); err != nil || applied != 0 {
		t.Fatalf("%d events recorded as processed while the table is locked (%v)", applied, err)
	}
	_ = blocker.Rollback(ctx) // the outage ends

	got := f.waitEffects(t, 2, 15*time.Second)
	if fmt.Sprint(got) != "[order-1 order-2]" {
		t.Fatalf("effects = %v, want [order-1 order-2] in order", got)
	}
	if dlq := testenv.Records(t, f.brokers, events.DeadLetterTopic(events.TopicOrderCreated, group), 0, 500*time.Millisecond); len(dlq) != 0 {
		t.Fatalf("a transient failure sent %d records to the dead-letter topic", len(dlq))
	}
}
