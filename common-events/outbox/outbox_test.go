package outbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(context.Background(), pool, migrations.Orders); err != nil {
		t.Fatal(err)
	}
	return pool
}

func orderEvent(t *testing.T, i int) events.Envelope {
	t.Helper()
	ev := events.OrderCreated{
		OrderID: fmt.Sprintf("order-%03d", i), CustomerID: "c", CustomerEmail: "a@b.c",
		Items:      []events.Item{{SKU: "S", Quantity: 1, UnitPriceCents: 100}},
		TotalCents: 100, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: time.Now(),
	}
	env, err := events.New(ev, events.Meta{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// insert stores envs in one transaction and wakes the relay once it committed, as every
// writer does.
func insert(t *testing.T, pool *pgxpool.Pool, envs ...events.Envelope) {
	t.Helper()
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, envs...) }); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Wake(ctx, pool); err != nil {
		t.Fatal(err)
	}
}

func startRelay(t *testing.T, pool *pgxpool.Pool, brokers []string) {
	t.Helper()
	p, err := sarama.NewSyncProducer(brokers, testenv.KafkaConfig("relay-test"))
	if err != nil {
		t.Fatal(err)
	}
	r := &outbox.Relay{Pool: pool, Producer: p, Log: quietLog(), PollInterval: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait(); p.Close() })
}

func outboxRows(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitEmpty(t *testing.T, pool *pgxpool.Pool, within time.Duration) {
	t.Helper()
	if !testenv.Eventually(within, 20*time.Millisecond, func() bool { return outboxRows(t, pool) == 0 }) {
		t.Fatalf("outbox still holds %d rows after %s", outboxRows(t, pool), within)
	}
}

// withTopic opens a fresh database and a broker with the order.created topic.
func withTopic(t *testing.T, partitions int32) (*pgxpool.Pool, []string) {
	t.Helper()
	pool := openDB(t)
	b := testenv.Kafka(t)
	if err := kafka.EnsureTopics(b.Addrs, testenv.KafkaConfig("t"), kafka.TopicSpec{Partitions: partitions}, events.TopicOrderCreated); err != nil {
		t.Fatal(err)
	}
	return pool, b.Addrs
}

func TestRelayPublishesCommittedRowsInOrderAndDeletesThem(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	ctx := context.Background()
	startRelay(t, pool, brokers)

	var envs []events.Envelope
	for i := range 20 {
		envs = append(envs, orderEvent(t, i))
	}
	insert(t, pool, envs[:10]...)
	insert(t, pool, envs[10:]...)

	// A rolled-back transaction publishes nothing.
	rolledBack := orderEvent(t, 99)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, rolledBack); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)

	// The poll interval is 5 s: delivery within 2 s proves LISTEN/NOTIFY woke the relay.
	got := testenv.Records(t, brokers, events.TopicOrderCreated, 20, 2*time.Second)
	if len(got) != 20 {
		t.Fatalf("published %d records, want 20", len(got))
	}
	for i, m := range got {
		if id := testenv.Header(m, events.HeaderID); id != envs[i].ID {
			t.Errorf("record %d has ce_id %s, want %s (id order)", i, id, envs[i].ID)
		}
		if string(m.Key) != envs[i].Subject {
			t.Errorf("record %d key = %s, want %s", i, m.Key, envs[i].Subject)
		}
		env, err := kafka.Envelope(m)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if _, err := events.Decode(env); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	waitEmpty(t, pool, 2*time.Second)
}

func TestOnlyOneRelayPublishes(t *testing.T) {
	pool, brokers := withTopic(t, 3)
	for range 3 {
		startRelay(t, pool, brokers)
	}
	const n = 300
	for i := range n / 10 {
		var envs []events.Envelope
		for j := range 10 {
			envs = append(envs, orderEvent(t, i*10+j))
		}
		insert(t, pool, envs...)
	}
	waitEmpty(t, pool, 10*time.Second)
	got := testenv.Records(t, brokers, events.TopicOrderCreated, n, 5*time.Second)
	seen := map[string]int{}
	for _, m := range got {
		seen[testenv.Header(m, events.HeaderID)]++
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("three relays published %d records (%d distinct), want %d exactly once", len(got), len(seen), n)
	}
}

// The dual-write window: rows committed while the broker is down stay in the outbox and
// are published once it is back; none is lost.
func TestRelaySurvivesBrokerOutage(t *testing.T) {
	pool := openDB(t)
	b := testenv.RestartableKafka(t)
	addrs := b.Addrs
	if err := kafka.EnsureTopics(addrs, testenv.KafkaConfig("t"), kafka.TopicSpec{Partitions: 2}, events.TopicOrderCreated); err != nil {
		t.Fatal(err)
	}
	startRelay(t, pool, addrs)

	insert(t, pool, orderEvent(t, 0))
	waitEmpty(t, pool, 5*time.Second)

	b.Stop()
	for i := 1; i <= 10; i++ {
		insert(t, pool, orderEvent(t, i))
	}
	time.Sleep(time.Second)
	if n := outboxRows(t, pool); n != 10 {
		t.Fatalf("outbox holds %d rows while the broker is down, want 10", n)
	}

	b.Start()
	waitEmpty(t, pool, 20*time.Second)
	got := testenv.Records(t, addrs, events.TopicOrderCreated, 11, 5*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		seen[string(m.Key)] = true
	}
	for i := 0; i <= 10; i++ {
		if !seen[fmt.Sprintf("order-%03d", i)] {
			t.Errorf("order-%03d was lost", i)
		}
	}
}

// The relay's connection dies (a database restart or failover looks like this): it
// reconnects, takes the lead again and publishes what was committed meanwhile.
func TestRelaySurvivesLosingItsDatabaseConnection(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	ctx := context.Background()
	startRelay(t, pool, brokers)
	insert(t, pool, orderEvent(t, 0))
	waitEmpty(t, pool, 5*time.Second)

	var killed int
	err := pool.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d lock-holding connections (%v), want the relay's one", killed, err)
	}
	insert(t, pool, orderEvent(t, 1), orderEvent(t, 2))
	waitEmpty(t, pool, 15*time.Second)
	if got := testenv.Records(t, brokers, events.TopicOrderCreated, 3, 5*time.Second); len(got) != 3 {
		t.Fatalf("published %d records, want 3", len(got))
	}
}

// A writer joins its events to its change's statement (Rows.SQL): only the events of the
// changes that took place are stored, each bound for its kind's topic, and a wake-up
// after the commit gets them out at once, not at the next poll.
func TestRowsJoinTheirChangeAndAWakeUpSendsThem(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	ctx := context.Background()
	startRelay(t, pool, brokers) // polls every 5 s
	time.Sleep(300 * time.Millisecond)

	var rows outbox.Rows
	var envs []events.Envelope
	for i := range 3 {
		envs = append(envs, orderEvent(t, i))
		rows.Add(i, envs[i])
	}
	insert, args := rows.SQL(2, "change")
	var stored int
	// The change: tags 0 and 2 took place, 1 did not.
	if err := pool.QueryRow(ctx, `
		WITH change AS (SELECT g AS tag FROM generate_series(0, 2) AS g WHERE g <> $1),
		ins AS (`+insert+`)
		SELECT count(*) FROM ins`, append([]any{1}, args...)...).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 2 {
		t.Fatalf("stored %d events, want the 2 of the changes that took place", stored)
	}
	if err := outbox.Wake(ctx, pool); err != nil {
		t.Fatal(err)
	}
	got := testenv.Records(t, brokers, events.TopicOrderCreated, 2, 2*time.Second)
	if len(got) != 2 {
		t.Fatalf("published %d records within 2s of the wake-up, want 2", len(got))
	}
	for i, want := range []events.Envelope{envs[0], envs[2]} {
		if id := testenv.Header(got[i], events.HeaderID); id != want.ID {
			t.Errorf("record %d is %s, want %s", i, id, want.ID)
		}
	}
}

func TestABlackholedLeaderIsReplaced(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	proxied, proxy := testenv.ProxiedPool(t, pool)
	runRelay(t, proxied, brokers) // the leader, through the proxy
	insert(t, pool, orderEvent(t, 0))
	waitEmpty(t, pool, 5*time.Second)
	runRelay(t, pool, brokers) // waits for the lead

	proxy.Blackhole()
	start := time.Now()
	insert(t, pool, orderEvent(t, 1))
	waitEmpty(t, pool, 30*time.Second)
	t.Logf("published %s after the leader went silent (LeaderSilence %s)", time.Since(start).Round(100*time.Millisecond), outbox.LeaderSilence)
	if got := testenv.Records(t, brokers, events.TopicOrderCreated, 2, 5*time.Second); len(got) != 2 {
		t.Errorf("published %d records, want 2", len(got))
	}
}

// A relay whose every connection went silent — the one it leads on, and those it dials
// meanwhile — leads again once the server answers: its wait for a connection, and each of
// its statements, has a deadline. It used to wait for ever on a connection the blackhole
// had swallowed, and the service's events stayed in the outbox until it was restarted.
func TestABlackholedRelayLeadsAgainOnceTheServerAnswers(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	proxied, proxy := testenv.ProxiedPool(t, pool)
	runRelay(t, proxied, brokers)
	insert(t, pool, orderEvent(t, 0))
	waitEmpty(t, pool, 5*time.Second)

	proxy.Blackhole()
	time.Sleep(8 * time.Second) // the leader gives up, and asks the silence for a connection
	proxy.Restore()
	start := time.Now()
	insert(t, pool, orderEvent(t, 1))
	waitEmpty(t, pool, 30*time.Second)
	t.Logf("published %s after the server answered again", time.Since(start).Round(100*time.Millisecond))
}

// A relay whose way to the broker went silent — the connections it had, and those it
// dialed meanwhile, swallowed by the blackhole for good — publishes again soon after the
// broker answers, with the services' Kafka settings: a request that gets no answer is
// given up after the client's read timeout, and the next one dials afresh: each silent
// connection holds a request for a whole read timeout, one after the other.
func TestARelayWhoseBrokerWentSilentPublishesAgainOnceItAnswers(t *testing.T) {
	pool := openDB(t)
	b, proxy := testenv.ProxiedKafka(t)
	conf := kafka.Config("relay-test")
	if err := kafka.EnsureTopics(b.Addrs, conf, kafka.TopicSpec{Partitions: 1}, events.TopicOrderCreated); err != nil {
		t.Fatal(err)
	}
	runRelayWith(t, pool, b.Addrs, conf)
	insert(t, pool, orderEvent(t, 0))
	waitEmpty(t, pool, 5*time.Second)

	proxy.Blackhole()
	insert(t, pool, orderEvent(t, 1)) // its publication goes into the silence
	time.Sleep(3 * time.Second)
	proxy.Restore()
	start := time.Now()
	// The request under way, given up at the read timeout, then its retry on a fresh
	// connection: within 20 s, which sarama's 30 s read timeout does not allow.
	waitEmpty(t, pool, 20*time.Second)
	t.Logf("published %s after the broker answered again (read timeout %s)", time.Since(start).Round(100*time.Millisecond), conf.Net.ReadTimeout)
}

// runRelay runs a relay on pool that polls every second, until the test ends.
func runRelay(t *testing.T, pool *pgxpool.Pool, brokers []string) {
	t.Helper()
	runRelayWith(t, pool, brokers, testenv.KafkaConfig("relay-test"))
}

// runRelayWith is runRelay with a producer of conf.
func runRelayWith(t *testing.T, pool *pgxpool.Pool, brokers []string, conf *sarama.Config) {
	t.Helper()
	runRelayAs(t, &outbox.Relay{Pool: pool, PollInterval: time.Second}, brokers, conf)
}

// runRelayAs runs r, with a producer of conf on brokers and a quiet log, until the test
// ends.
func runRelayAs(t *testing.T, r *outbox.Relay, brokers []string, conf *sarama.Config) {
	t.Helper()
	producer, err := sarama.NewSyncProducer(brokers, conf)
	if err != nil {
		t.Fatal(err)
	}
	r.Producer, r.Log = producer, quietLog()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); producer.Close() })
}

// runWakers runs ws until the test ends.
func runWakers(t *testing.T, ws ...*outbox.Waker) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { _ = w.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// While a process's relay leads, its writers' wake-ups go to it directly: the rows go out
// at once, and the database hears no NOTIFY. A writer whose relay does not lead (another
// process's Waker) notifies, and the leader hears it.
func TestALeadingRelayIsWokenWithoutANotify(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	ctx := context.Background()
	listener, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Release()
	if _, err := listener.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		t.Fatal(err)
	}
	notified := func(within time.Duration) bool {
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		_, err := listener.Conn().WaitForNotification(wctx)
		return err == nil
	}

	here, elsewhere := outbox.NewWaker(pool, outbox.WakeEvery), outbox.NewWaker(pool, outbox.WakeEvery)
	runWakers(t, here, elsewhere)
	// It polls once a minute: within the test, only a wake-up sends a row.
	runRelayAs(t, &outbox.Relay{Pool: pool, PollInterval: time.Minute, Waker: here}, brokers, testenv.KafkaConfig("relay-test"))

	write := func(w *outbox.Waker, i int) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, orderEvent(t, i)) }); err != nil {
			t.Fatal(err)
		}
		w.Wake()
	}
	// Leading, it has read the outbox once and waits: a row written before it led may
	// have notified, the next ones must not.
	write(elsewhere, 0)
	waitEmpty(t, pool, 5*time.Second)
	for notified(200 * time.Millisecond) {
	}
	for i := 1; i <= 3; i++ {
		write(here, i)
		waitEmpty(t, pool, time.Second)
		if notified(100 * time.Millisecond) {
			t.Fatalf("wake-up %d of the leader's own process sent a NOTIFY", i)
		}
	}
	write(elsewhere, 4)
	if !notified(time.Second) {
		t.Fatal("a wake-up from a process whose relay does not lead sent no NOTIFY")
	}
	waitEmpty(t, pool, time.Second)
	if got := testenv.Records(t, brokers, events.TopicOrderCreated, 5, 5*time.Second); len(got) != 5 {
		t.Errorf("published %d records, want 5", len(got))
	}
}

// Events that may wait (WakeSoon) go out with the next round a writer wakes the leading
// relay for, or Soon later when none does, instead of taking a round each: under a light
// load every round is a statement of its own.
func TestEventsThatMayWaitShareTheRelaysNextRound(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	ctx := context.Background()
	// The relay's pool keeps its statements: a round is one that reads the outbox.
	relayPool, sent := testenv.TracedPool(t, pool)
	rounds := func() int { return sent.Count("SELECT id, topic, key, headers, payload") }
	waker := outbox.NewWaker(pool, outbox.WakeEvery)
	waker.MayWait = time.Second // longer than the test's writes take, however slow the machine
	runWakers(t, waker)
	// It polls once a minute: within the test, only a wake-up sends a row.
	runRelayAs(t, &outbox.Relay{Pool: relayPool, PollInterval: time.Minute, Waker: waker}, brokers, testenv.KafkaConfig("relay-test"))

	write := func(i int, wake func()) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Write(ctx, tx, orderEvent(t, i)) }); err != nil {
			t.Fatal(err)
		}
		wake()
	}
	write(0, waker.Wake) // a NOTIFY while the relay does not lead yet
	waitEmpty(t, pool, 5*time.Second)

	// Alone, it waits, then goes out within MayWait (and its row is deleted within the
	// relay's 50 ms).
	write(1, waker.WakeSoon)
	time.Sleep(200 * time.Millisecond)
	if n := outboxRows(t, pool); n != 1 {
		t.Errorf("a row that may wait was published at once (%d rows in the outbox 200 ms later, want 1)", n)
	}
	waitEmpty(t, pool, 3*time.Second)

	// Four that may wait take no round; with one that may not, one round publishes the
	// five, the next deletes them.
	before := rounds()
	for i := 2; i < 6; i++ {
		write(i, waker.WakeSoon)
	}
	if n := rounds() - before; n != 0 {
		t.Errorf("the relay took %d rounds for 4 rows that may wait; want none before a row that may not", n)
	}
	write(6, waker.Wake)
	waitEmpty(t, pool, time.Second)
	if n := rounds() - before; n != 2 {
		t.Errorf("the relay took %d rounds for 5 rows, 4 of which could wait for the fifth; want 2", n)
	}
	if got := testenv.Records(t, brokers, events.TopicOrderCreated, 7, 5*time.Second); len(got) != 7 {
		t.Errorf("published %d records, want 7", len(got))
	}
}

// The relay's commits (the deletes of rows published) do not wait for the WAL's flush: a
// delete lost to a crash of the server republishes rows, which consumers absorb. Its
// session turns synchronous_commit off before it reads the outbox.
func TestTheRelaysDeletesDoNotWaitForTheFlush(t *testing.T) {
	pool, brokers := withTopic(t, 1)
	traced, sent := testenv.TracedPool(t, pool)
	startRelay(t, traced, brokers)
	insert(t, pool, orderEvent(t, 1))
	waitEmpty(t, pool, 10*time.Second)
	statements := sent.All()
	set, read := -1, -1
	for i, sql := range statements {
		if set < 0 && sql == "SET synchronous_commit = off" {
			set = i
		}
		if read < 0 && strings.Contains(sql, "DELETE FROM outbox") {
			read = i
		}
	}
	if set < 0 || read < 0 || set > read {
		t.Errorf("statements %q: want SET synchronous_commit = off before the first read of the outbox", statements)
	}
}
