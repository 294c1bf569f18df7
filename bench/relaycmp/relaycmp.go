// Package relaycmp moves the same events from PostgreSQL to the same broker with this
// project's outbox relay and with Watermill's SQL Forwarder (watermill-sql +
// watermill-kafka at their documented defaults), side by side in one run, and measures
// events/s and commit→published latency for each.
//
// Published means seen by a consumer reading the destination topic, for both sides alike.
package relaycmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/pgcluster"
	"github.com/orderflow/migrations"
)

// Result is one relay's figures, from two phases: live (the relay runs while the events
// are written: commit→published latency) and backlog (the events are all written first,
// then the relay starts: how fast it drains, which the writer cannot limit).
type Result struct {
	Name         string
	Events       int // delivered in the live phase (of Written)
	Written      int
	Seconds      float64
	EventsPerSec float64 // live phase: first commit → last seen
	P50, P99     time.Duration
	Drained      int     // delivered in the backlog phase (of Written)
	DrainPerSec  float64 // backlog phase: relay start → last seen
}

// TxSize is how many events each writing transaction holds, on both sides.
const TxSize = 100

// Compare relays n events with each relay in turn, each against its own fresh database on
// the server at adminURL and its own topic on brokers. A side that has not delivered
// everything within limit is reported with what it delivered by then.
func Compare(ctx context.Context, adminURL string, brokers []string, n int, limit time.Duration, log *slog.Logger) (ours, peer Result, err error) {
	stamp := time.Now().UnixNano()
	for _, c := range []struct {
		res  *Result
		side side
		name string
	}{{&ours, ourRelay{log: log}, "ours"}, {&peer, watermillForwarder{}, "watermill"}} {
		live, err := runSide(ctx, adminURL, brokers, n, limit, fmt.Sprintf("relaycmp_%s_live_%d", c.name, stamp), c.side, false)
		if err != nil {
			return ours, peer, fmt.Errorf("%s: %w", c.side.name(), err)
		}
		backlog, err := runSide(ctx, adminURL, brokers, n, limit, fmt.Sprintf("relaycmp_%s_backlog_%d", c.name, stamp), c.side, true)
		if err != nil {
			return ours, peer, fmt.Errorf("%s: %w", c.side.name(), err)
		}
		live.Drained, live.DrainPerSec = backlog.Events, backlog.EventsPerSec
		*c.res = live
	}
	return ours, peer, nil
}

// side is one relay under test.
type side interface {
	name() string
	// idHeader names the record header carrying the event id on the destination topic.
	idHeader() string
	// prepare creates what the writers need (tables).
	prepare(ctx context.Context, pool *pgxpool.Pool) error
	// start sets the relay up on pool, relaying to topic, and runs it until ctx is done.
	start(ctx context.Context, pool *pgxpool.Pool, brokers []string, topic string) (stop func(), err error)
	// write stores the events in one transaction, as the relay's writers do.
	write(ctx context.Context, tx pgx.Tx, topic string, envs []events.Envelope) error
	// committed runs after each writing transaction committed.
	committed(ctx context.Context, pool *pgxpool.Pool)
}

func runSide(ctx context.Context, adminURL string, brokers []string, n int, limit time.Duration, db string, s side, backlog bool) (Result, error) {
	res := Result{Name: s.name(), Written: n}
	var stops []func()
	if err := pgcluster.CreateDatabases(ctx, adminURL, db); err != nil {
		return res, err
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return res, err
	}
	u.Path = "/" + db
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		return res, err
	}
	defer pool.Close()
	topic := strings.ReplaceAll(db, "_", ".")
	if err := kafka.EnsureTopics(brokers, kafka.Config("relaycmp"), kafka.TopicSpec{Partitions: 6}, topic); err != nil {
		return res, err
	}

	seen, stopWatch, err := watch(brokers, topic, s.idHeader())
	if err != nil {
		return res, err
	}
	defer stopWatch()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := func() error {
		stop, err := s.start(rctx, pool, brokers, topic)
		if err != nil {
			return err
		}
		stops = append(stops, stop)
		return nil
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	if err := s.prepare(ctx, pool); err != nil {
		return res, err
	}
	if !backlog {
		if err := start(); err != nil {
			return res, err
		}
	}

	committed := make(map[string]time.Time, n)
	now := time.Now()
	var first time.Time
	for i := 0; i < n; i += TxSize {
		envs := make([]events.Envelope, 0, TxSize)
		for j := i; j < min(i+TxSize, n); j++ {
			env, err := newEvent(j, now)
			if err != nil {
				return res, err
			}
			envs = append(envs, env)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return s.write(ctx, tx, topic, envs) }); err != nil {
			return res, err
		}
		s.committed(ctx, pool)
		at := time.Now()
		if first.IsZero() {
			first = at
		}
		for _, e := range envs {
			committed[e.ID] = at
		}
	}

	if backlog {
		first = time.Now() // the relay starts now, with everything already written
		if err := start(); err != nil {
			return res, err
		}
	}
	deadline := first.Add(limit)
	var got map[string]time.Time
	for {
		got = seen()
		if len(got) >= n || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var lats []time.Duration
	var last time.Time
	for id, at := range got {
		c, ok := committed[id]
		if !ok {
			continue
		}
		lats = append(lats, at.Sub(c))
		if at.After(last) {
			last = at
		}
	}
	res.Events = len(lats)
	if res.Events == 0 {
		return res, errors.New("delivered nothing")
	}
	res.Seconds = last.Sub(first).Seconds()
	res.EventsPerSec = float64(res.Events) / res.Seconds
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	res.P50 = lats[len(lats)/2]
	res.P99 = lats[min(len(lats)-1, len(lats)*99/100)]
	return res, nil
}

func newEvent(i int, now time.Time) (events.Envelope, error) {
	return events.New(events.OrderCreated{
		OrderID: fmt.Sprintf("order-%07d", i), CustomerID: issuer.Customer,
		CustomerEmail: "bench@example.com", Items: []events.Item{{SKU: "BOOK-42", Quantity: 2, UnitPriceCents: 1999}},
		TotalCents: 3998, Currency: "EUR", PaymentMethod: "tok_visa", CreatedAt: now,
	}, events.Meta{}, now)
}

// watch reads every partition of topic from the start and records when each event id
// (from header idHeader) was first seen.
func watch(brokers []string, topic, idHeader string) (seen func() map[string]time.Time, stop func(), err error) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Consumer.Fetch.Default = 4 << 20
	c, err := sarama.NewConsumer(brokers, cfg)
	if err != nil {
		return nil, nil, err
	}
	parts, err := c.Partitions(topic)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	var mu sync.Mutex
	got := map[string]time.Time{}
	var wg sync.WaitGroup
	var pcs []sarama.PartitionConsumer
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		pcs = append(pcs, pc)
		wg.Go(func() {
			for m := range pc.Messages() {
				at := time.Now()
				for _, h := range m.Headers {
					if string(h.Key) == idHeader {
						mu.Lock()
						if _, dup := got[string(h.Value)]; !dup {
							got[string(h.Value)] = at
						}
						mu.Unlock()
					}
				}
			}
		})
	}
	seen = func() map[string]time.Time {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]time.Time, len(got))
		for k, v := range got {
			out[k] = v
		}
		return out
	}
	stop = func() {
		for _, pc := range pcs {
			pc.AsyncClose()
		}
		wg.Wait()
		c.Close()
	}
	return seen, stop, nil
}

// ourRelay is common-events/outbox.
type ourRelay struct{ log *slog.Logger }

func (ourRelay) name() string     { return "orderflow outbox relay" }
func (ourRelay) idHeader() string { return events.HeaderID }

func (ourRelay) prepare(ctx context.Context, pool *pgxpool.Pool) error {
	return migrations.UpPool(ctx, pool, migrations.Orders)
}

func (r ourRelay) start(ctx context.Context, pool *pgxpool.Pool, brokers []string, _ string) (func(), error) {
	p, err := sarama.NewSyncProducer(brokers, kafka.Config("relaycmp"))
	if err != nil {
		return nil, err
	}
	relay := &outbox.Relay{Pool: pool, Producer: p, Log: r.log}
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	wg.Go(func() { _ = relay.Run(rctx) })
	return func() { cancel(); wg.Wait(); p.Close() }, nil
}

// write stores the events in one multi-row statement, one round trip, as Watermill's
// publisher sends its rows in one multi-row INSERT: the writers cost the same on both
// sides.
func (ourRelay) write(ctx context.Context, tx pgx.Tx, topic string, envs []events.Envelope) error {
	rows := outbox.Rows{Topic: topic}
	for i, env := range envs {
		rows.Add(i, env)
	}
	sql, args := rows.SQL(1, "")
	_, err := tx.Exec(ctx, sql, args...)
	return err
}

// committed wakes the relay, as every writer does after its commit.
func (ourRelay) committed(ctx context.Context, pool *pgxpool.Pool) { _ = outbox.Wake(ctx, pool) }

// watermillForwarder is Watermill's SQL Forwarder: messages are written to a PostgreSQL
// table through a forwarder-wrapped SQL publisher inside the caller's transaction, and a
// Forwarder (SQL subscriber in, Kafka publisher out) moves them, all at documented defaults.
type watermillForwarder struct{}

func (watermillForwarder) name() string     { return "Watermill SQL Forwarder" }
func (watermillForwarder) idHeader() string { return wkafka.UUIDHeaderKey }

func newSubscriber(pool *pgxpool.Pool) (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
	}, watermill.NopLogger{})
}

// prepare creates the forwarder's tables, as its subscriber does on subscribing.
func (watermillForwarder) prepare(_ context.Context, pool *pgxpool.Pool) error {
	sub, err := newSubscriber(pool)
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(forwarderTopic)
}

func (watermillForwarder) start(ctx context.Context, pool *pgxpool.Pool, brokers []string, _ string) (func(), error) {
	logger := watermill.NopLogger{}
	sub, err := newSubscriber(pool)
	if err != nil {
		return nil, err
	}
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{Brokers: brokers, Marshaler: wkafka.DefaultMarshaler{}}, logger)
	if err != nil {
		return nil, err
	}
	fwd, err := forwarder.NewForwarder(sub, pub, logger, forwarder.Config{ForwarderTopic: forwarderTopic})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = fwd.Run(ctx) })
	select {
	case <-fwd.Running():
	case <-time.After(30 * time.Second):
		return nil, errors.New("forwarder did not start within 30s")
	}
	return func() { _ = fwd.Close(); wg.Wait(); _ = pub.Close(); _ = sub.Close() }, nil
}

const forwarderTopic = "forwarder_topic"

// committed does nothing: Watermill's subscriber polls.
func (watermillForwarder) committed(context.Context, *pgxpool.Pool) {}

func (watermillForwarder) write(_ context.Context, tx pgx.Tx, topic string, envs []events.Envelope) error {
	sqlPub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: forwarderTopic})
	msgs := make([]*message.Message, len(envs))
	for i, env := range envs {
		m := message.NewMessage(env.ID, env.Data)
		for _, h := range env.Headers() {
			m.Metadata.Set(h.Key, string(h.Value))
		}
		msgs[i] = m
	}
	return pub.Publish(topic, msgs...)
}
