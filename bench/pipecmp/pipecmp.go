// Package pipecmp is orderflow's order flow end to end as a team would build it from
// Watermill's parts, for the bench to load beside orderflow on the same machine,
// PostgreSQL server and broker: POST /orders writes the order and its order.created in one
// transaction through Watermill's SQL publisher behind a Forwarder; a Forwarder per
// database moves the events to Kafka; a Router's handlers, on Kafka subscribers of their
// own consumer groups, charge (payment.completed written with the payment, the same way),
// confirm the order and record its notification. Watermill's parts run at their documented
// defaults, with the Router's Recoverer and Retry middleware, as its documentation sets
// them up.
//
// What it leaves out, which orderflow does: bearer tokens, idempotency keys, admission
// control, the order's history, an inbox against redelivery (the payment's primary key
// stands in), dead letters, declines, refunds, reconciliation and the entity topic.
package pipecmp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/pgcluster"
)

// Config is where the flow runs: its HTTP address, its three databases, the broker, and
// the prefix of its topics. It travels to the flow's process as environment variables.
type Config struct {
	HTTPAddr                              string
	OrdersDB, PaymentsDB, NotificationsDB string
	Brokers                               []string
	Topics                                string // prefix of the flow's topics
}

// The variables Config travels in.
var envKeys = []string{"PIPECMP_HTTP_ADDR", "PIPECMP_ORDERS_DB", "PIPECMP_PAYMENTS_DB", "PIPECMP_NOTIFICATIONS_DB", "PIPECMP_BROKERS", "PIPECMP_TOPICS"}

// Env is c as environment variables, for FromEnv in another process.
func (c Config) Env() []string {
	vals := []string{c.HTTPAddr, c.OrdersDB, c.PaymentsDB, c.NotificationsDB, strings.Join(c.Brokers, ","), c.Topics}
	out := make([]string, len(envKeys))
	for i, k := range envKeys {
		out[i] = k + "=" + vals[i]
	}
	return out
}

// FromEnv reads the Config that Env wrote.
func FromEnv(getenv func(string) string) (Config, error) {
	for _, k := range envKeys {
		if getenv(k) == "" {
			return Config{}, fmt.Errorf("%s is not set", k)
		}
	}
	return Config{HTTPAddr: getenv(envKeys[0]), OrdersDB: getenv(envKeys[1]), PaymentsDB: getenv(envKeys[2]),
		NotificationsDB: getenv(envKeys[3]), Brokers: strings.Split(getenv(envKeys[4]), ","), Topics: getenv(envKeys[5])}, nil
}

// Databases names the flow's databases as the server knows them.
func (c Config) Databases() []string {
	var out []string
	for _, u := range []string{c.OrdersDB, c.PaymentsDB, c.NotificationsDB} {
		if p, err := url.Parse(u); err == nil {
			out = append(out, strings.TrimPrefix(p.Path, "/"))
		}
	}
	return out
}

// forwarderTopic is the table-backed topic the Forwarders read, in each database.
const forwarderTopic = "forwarder_topic"

var schemas = map[string]string{
	"orders": `CREATE TABLE orders (
		id uuid PRIMARY KEY, customer_email text NOT NULL, items jsonb NOT NULL, total_cents bigint NOT NULL,
		currency text NOT NULL, payment_method text NOT NULL, status text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
	"payments": `CREATE TABLE payments (
		order_id uuid PRIMARY KEY, amount_cents bigint NOT NULL, currency text NOT NULL, status text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`,
	"notifications": `CREATE TABLE notifications (
		order_id uuid NOT NULL, kind text NOT NULL, sent_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (order_id, kind))`,
}

// Prepare makes a flow's databases (named after stamp) on the server at adminURL, with
// their tables and the Forwarders' tables, and its topics on brokers with partitions each.
func Prepare(ctx context.Context, adminURL string, brokers []string, partitions int, stamp string) (Config, error) {
	c := Config{Brokers: brokers, Topics: "pipecmp." + stamp + "."}
	u, err := url.Parse(adminURL)
	if err != nil {
		return c, err
	}
	for _, db := range []struct {
		name string
		url  *string
	}{{"orders", &c.OrdersDB}, {"payments", &c.PaymentsDB}, {"notifications", &c.NotificationsDB}} {
		name := "pipecmp_" + db.name + "_" + stamp
		if err := pgcluster.CreateDatabases(ctx, adminURL, name); err != nil {
			return c, err
		}
		u.Path = "/" + name
		*db.url = u.String()
		if err := prepareDB(ctx, *db.url, schemas[db.name], db.name != "notifications"); err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
	}
	err = kafka.EnsureTopics(brokers, kafka.Config("pipecmp"), kafka.TopicSpec{Partitions: int32(partitions)},
		c.Topics+"order.created", c.Topics+"payment.completed")
	return c, err
}

func prepareDB(ctx context.Context, dbURL, schema string, forwards bool) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, schema); err != nil {
		return err
	}
	if !forwards {
		return nil
	}
	sub, err := sqlSubscriber(pool)
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(forwarderTopic)
}

func sqlSubscriber(pool *pgxpool.Pool) (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(wsql.BeginnerFromPgx(pool), wsql.SubscriberConfig{
		SchemaAdapter: wsql.DefaultPostgreSQLSchema{}, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
	}, watermill.NopLogger{})
}

// publishInTx publishes msgs to topic inside tx, through the Forwarder's table.
func publishInTx(tx pgx.Tx, topic string, msgs ...*message.Message) error {
	sqlPub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	return forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: forwarderTopic}).Publish(topic, msgs...)
}

type item struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

type orderRequest struct {
	CustomerEmail string `json:"customer_email"`
	Currency      string `json:"currency"`
	Items         []item `json:"items"`
	PaymentMethod string `json:"payment_method"`
}

// orderEvent is order.created's and payment.completed's payload alike.
type orderEvent struct {
	OrderID       uuid.UUID `json:"order_id"`
	CustomerEmail string    `json:"customer_email"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	PaymentMethod string    `json:"payment_method,omitempty"`
}

// flow is a running flow's pools.
type flow struct {
	c                              Config
	orders, payments, notification *pgxpool.Pool
}

// Run runs the flow until ctx is done: the HTTP API, the Forwarders and the Router.
func Run(ctx context.Context, c Config) error {
	f := flow{c: c}
	var err error
	for _, p := range []struct {
		pool **pgxpool.Pool
		url  string
	}{{&f.orders, c.OrdersDB}, {&f.payments, c.PaymentsDB}, {&f.notification, c.NotificationsDB}} {
		if *p.pool, err = pgxpool.New(ctx, p.url); err != nil {
			return err
		}
		defer (*p.pool).Close()
	}
	logger := watermill.NopLogger{}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(middleware.Retry{MaxRetries: 3, InitialInterval: 100 * time.Millisecond, Logger: logger}.Middleware, middleware.Recoverer)
	for _, h := range []struct {
		name, group, topic string
		fn                 message.NoPublishHandlerFunc
	}{
		{"charge", "pipecmp-payment", "order.created", f.charge},
		{"confirm", "pipecmp-order", "payment.completed", f.confirm},
		{"notify", "pipecmp-notification", "payment.completed", f.notify},
	} {
		sub, err := kafkaSubscriber(c.Brokers, h.group)
		if err != nil {
			return err
		}
		router.AddNoPublisherHandler(h.name, c.Topics+h.topic, sub, h.fn)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 4)
	running := []chan struct{}{router.Running()}
	for _, pool := range []*pgxpool.Pool{f.orders, f.payments} {
		fwd, err := newForwarder(pool, c.Brokers)
		if err != nil {
			return err
		}
		running = append(running, fwd.Running())
		wg.Go(func() { errs <- fwd.Run(ctx) })
		defer fwd.Close()
	}
	wg.Go(func() { errs <- router.Run(ctx) })
	defer router.Close()

	ln, err := net.Listen("tcp", c.HTTPAddr)
	if err != nil {
		return err
	}
	var ready sync.WaitGroup
	ready.Go(func() {
		for _, r := range running {
			<-r
		}
	})
	srv := &http.Server{Handler: f.routes(&ready), ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() { errs <- srv.Serve(ln) })
	defer srv.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

func kafkaSubscriber(brokers []string, group string) (*wkafka.Subscriber, error) {
	cfg := wkafka.DefaultSaramaSubscriberConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest // the topics are new: nothing before the first order is missed
	return wkafka.NewSubscriber(wkafka.SubscriberConfig{Brokers: brokers, Unmarshaler: wkafka.DefaultMarshaler{},
		ConsumerGroup: group, OverwriteSaramaConfig: cfg}, watermill.NopLogger{})
}

func newForwarder(pool *pgxpool.Pool, brokers []string) (*forwarder.Forwarder, error) {
	sub, err := sqlSubscriber(pool)
	if err != nil {
		return nil, err
	}
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{Brokers: brokers, Marshaler: wkafka.DefaultMarshaler{}}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return forwarder.NewForwarder(sub, pub, watermill.NopLogger{}, forwarder.Config{ForwarderTopic: forwarderTopic})
}

// routes is the flow's HTTP API: POST /orders, and GET /readyz once the Forwarders and
// the Router run.
func (f flow) routes(ready *sync.WaitGroup) http.Handler {
	started := make(chan struct{})
	go func() { ready.Wait(); close(started) }()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-started:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("POST /orders", f.placeOrder)
	return mux
}

func (f flow) placeOrder(w http.ResponseWriter, r *http.Request) {
	var req orderRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ev := orderEvent{OrderID: uuid.New(), CustomerEmail: req.CustomerEmail, Currency: req.Currency, PaymentMethod: req.PaymentMethod}
	for _, it := range req.Items {
		if it.Quantity <= 0 || it.UnitPriceCents < 0 {
			http.Error(w, "an item's quantity must be positive, its price not negative", http.StatusUnprocessableEntity)
			return
		}
		ev.TotalCents += it.Quantity * it.UnitPriceCents
	}
	if ev.CustomerEmail == "" || len(ev.Currency) != 3 || ev.PaymentMethod == "" || len(req.Items) == 0 {
		http.Error(w, "customer_email, currency, payment_method and items are required", http.StatusUnprocessableEntity)
		return
	}
	items, _ := json.Marshal(req.Items)
	payload, _ := json.Marshal(ev)
	err := pgx.BeginFunc(r.Context(), f.orders, func(tx pgx.Tx) error {
		if _, err := tx.Exec(r.Context(), `INSERT INTO orders (id, customer_email, items, total_cents, currency, payment_method, status)
			VALUES ($1, $2, $3, $4, $5, $6, 'PENDING_PAYMENT')`, ev.OrderID, ev.CustomerEmail, items, ev.TotalCents, ev.Currency, ev.PaymentMethod); err != nil {
			return err
		}
		return publishInTx(tx, f.c.Topics+"order.created", message.NewMessage(watermill.NewUUID(), payload))
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"id": ev.OrderID.String(), "status": "PENDING_PAYMENT"})
}

// charge takes the payment of an order once (the payment's key is the order's) from an
// instant provider and publishes payment.completed with it.
func (f flow) charge(msg *message.Message) error {
	var ev orderEvent
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return nil // a record that is not an order: nothing to charge
	}
	ctx := msg.Context()
	return pgx.BeginFunc(ctx, f.payments, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO payments (order_id, amount_cents, currency, status) VALUES ($1, $2, $3, 'COMPLETED')
			ON CONFLICT (order_id) DO NOTHING`, ev.OrderID, ev.TotalCents, ev.Currency)
		if err != nil || tag.RowsAffected() == 0 {
			return err // charged before: a redelivery
		}
		ev.PaymentMethod = ""
		payload, _ := json.Marshal(ev)
		return publishInTx(tx, f.c.Topics+"payment.completed", message.NewMessage(watermill.NewUUID(), payload))
	})
}

// confirm marks the order paid.
func (f flow) confirm(msg *message.Message) error {
	var ev orderEvent
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return nil
	}
	_, err := f.orders.Exec(msg.Context(), `UPDATE orders SET status = 'CONFIRMED', updated_at = now()
		WHERE id = $1 AND status = 'PENDING_PAYMENT'`, ev.OrderID)
	return err
}

// notify records the order's confirmation email once; like orderflow's bench stack,
// which has no SMTP server, it sends nothing.
func (f flow) notify(msg *message.Message) error {
	var ev orderEvent
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return nil
	}
	_, err := f.notification.Exec(msg.Context(), `INSERT INTO notifications (order_id, kind) VALUES ($1, 'order_confirmed')
		ON CONFLICT DO NOTHING`, ev.OrderID)
	return err
}
