// Package platform boots and runs an orderflow service: its logger, its database pool
// with the migrations applied, its Kafka clients and topics, and the order in which it
// serves and shuts down.
package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on PPROF_ADDR
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/pguuid"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/common-events/tracing"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/migrations"
)

// RunFunc is a service's run: it serves until ctx is cancelled.
type RunFunc func(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error

// Main runs service svc as a process: SIGINT or SIGTERM starts the graceful shutdown, and
// a failure is one line on stderr. It returns the exit code. With the argument
// kafka-setup, Main sets up the cluster for the service instead (SetupKafka).
func Main(svc services.Service, run RunFunc) int {
	service := svc.Name
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args := os.Args[1:]; {
	case len(args) == 1 && args[0] == "kafka-setup":
		if err := SetupKafka(svc, os.Getenv, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "%s kafka-setup: %v\n", service, err)
			return 1
		}
		return 0
	case len(args) > 0:
		fmt.Fprintf(os.Stderr, "usage: %s (serve, configured by its environment) | %s kafka-setup\n", service, service)
		return 2
	}
	if err := run(ctx, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		return 1
	}
	return 0
}

// NewLogger returns the service's JSON logger; every line carries the service name, and a
// line logged with a context that carries a span its trace_id and span_id.
func NewLogger(w io.Writer, service string, level slog.Level) *slog.Logger {
	return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))).With("service", service)
}

// Stack is the infrastructure a service runs on.
type Stack struct {
	Identity services.Service
	Config   config.Base
	Log      *slog.Logger
	Pool     *pgxpool.Pool
	Kafka    sarama.Client       // metadata, readiness
	Producer sarama.SyncProducer // the outbox relay and dead-lettering
	Verifier *auth.Verifier      // checks the API's bearer tokens against Config.Auth
	// Metrics is the service's Prometheus registry, served at /metrics; Registerer adds
	// the service's own metrics to it.
	Metrics    *metrics.Registry
	Registerer prometheus.Registerer
	// Tracing makes the service's spans and exports them as Config.Tracing says; Tracer
	// starts them.
	Tracing *tracing.Provider
	Tracer  trace.Tracer

	outboxMetrics   *outbox.Metrics
	waker           *outbox.Waker
	consumerMetrics *consumer.Metrics
	listener        net.Listener
	consumerClients []sarama.Client
	readiness       atomic.Pointer[readiness] // what Ready answers; nil before the first check
	routes          map[string]web.RatePolicy
}

// Boot prepares a service: it binds the HTTP port (so a port in use fails first and
// clearly), connects to its database and migrates it with schema, makes sure the topics
// and the dead-letter topics of its consumer group exist, and opens the Kafka clients.
// On error everything opened so far is closed again.
func Boot(ctx context.Context, svc services.Service, cfg config.Base, stdout io.Writer, schema fs.FS) (_ *Stack, err error) {
	service, groups := svc.Name, svc.Groups()
	// GOGC and GOMEMLIMIT: with Go's own default, 100, the collector took a large share
	// of each service's CPU under load. The services collect a third as often, and their
	// soft memory limit keeps a burst's peak where Go's default had it
	// (docs/performance.md, "Garbage collection").
	debug.SetGCPercent(cfg.GCPercent)
	debug.SetMemoryLimit(cfg.MemoryLimit)
	s := &Stack{Identity: svc, Config: cfg, Log: NewLogger(stdout, service, cfg.LogLevel), Verifier: auth.NewVerifier(cfg.Auth, nil)}
	if cfg.LogLevel <= slog.LevelDebug { // the Kafka client's own account of its connections, sessions and retries
		sarama.Logger = slog.NewLogLogger(s.Log.With("logger", "sarama").Handler(), slog.LevelDebug)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	if s.Tracing, err = tracing.New(service, cfg.Tracing, s.Log); err != nil {
		return nil, err
	}
	s.Tracer = s.Tracing.Tracer()
	if s.Pool, err = openPool(ctx, cfg.DatabaseURL, schema); err != nil {
		return nil, err
	}
	if s.Metrics, err = metrics.New(service); err != nil {
		return nil, err
	}
	s.waker = outbox.NewWaker(s.Pool, outbox.WakeEvery)
	s.Registerer = s.Metrics.Registerer(service)
	if err = metrics.Pool(s.Registerer, s.Pool); err != nil {
		return nil, err
	}
	if s.outboxMetrics, err = outbox.NewMetrics(s.Registerer, s.Pool, service); err != nil {
		return nil, err
	}
	if s.consumerMetrics, err = consumer.NewMetrics(s.Registerer); err != nil {
		return nil, err
	}
	// The topics it writes, reads and dead-letters to, and no other: on a cluster with
	// ACLs it may not even see the rest.
	topics := kafka.Topics(kafka.Permissions(service, groups))
	if err = kafka.EnsureTopics(cfg.KafkaBrokers, cfg.Kafka.Config(service), kafka.TopicSpec{Partitions: int32(cfg.TopicPartitions), Retention: cfg.TopicRetention}, topics...); err != nil {
		return nil, fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	if s.Kafka, err = sarama.NewClient(cfg.KafkaBrokers, cfg.Kafka.Config(service)); err != nil {
		return nil, fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	if s.Producer, err = sarama.NewSyncProducer(cfg.KafkaBrokers, cfg.Kafka.Config(service)); err != nil {
		return nil, fmt.Errorf("kafka producer at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	return s, nil
}

// OtherPool is a small pool on a database that is not the service's own (name says
// which setting gave url): no migration, guarded against a silent server like the
// service's own, and connecting on first use, so that database being away at start is
// a failed read later rather than a failed start.
func OtherPool(name, url string) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pcfg.MaxConns = 2
	guardSilence(pcfg)
	pcfg.AfterConnect = pguuid.AfterConnect
	return pgxpool.NewWithConfig(context.Background(), pcfg)
}

// OpenPool connects to the service's database at url and migrates it with schema, as
// Boot does: for a command of the service's that runs without the rest of the stack.
func OpenPool(ctx context.Context, url string, schema fs.FS) (*pgxpool.Pool, error) {
	return openPool(ctx, url, schema)
}

func openPool(ctx context.Context, url string, schema fs.FS) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if pcfg.MaxConns < 10 {
		pcfg.MaxConns = 10
	}
	guardSilence(pcfg)
	pcfg.AfterConnect = pguuid.AfterConnect
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database at DATABASE_URL %s:%d/%s: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database, err)
	}
	if err := migrations.UpPool(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Consumer returns a runner for the service's consumer group with its own Kafka client,
// as sarama asks: one client per consumer group. handlers has the handler of each topic
// the group reads, and no other (services.Service.CheckHandlers).
func (s *Stack) Consumer(handlers map[string]consumer.Handler) (*consumer.Runner, error) {
	group := s.Identity.Group
	topics := slices.Collect(maps.Keys(handlers))
	if err := s.Identity.CheckHandlers(topics); err != nil {
		return nil, err
	}
	kc := s.Config.Kafka.Config(s.Identity.Name)
	if linger := s.Config.ConsumerLinger; linger > 0 {
		// Records that may wait for their commit may wait for their fetch: the broker
		// answers once it has fetchMin bytes or the linger passed, not with each record.
		kc.Consumer.Fetch.Min = fetchMin
		kc.Consumer.MaxWaitTime = max(linger, time.Millisecond) // the least sarama takes
	}
	c, err := sarama.NewClient(s.Config.KafkaBrokers, kc)
	if err != nil {
		return nil, fmt.Errorf("kafka consumer client: %w", err)
	}
	s.consumerClients = append(s.consumerClients, c)
	if err := s.consumerMetrics.Watch(group, topics, c); err != nil {
		return nil, err
	}
	return &consumer.Runner{
		Group: group, Client: c, Pool: s.Pool, DeadLetters: s.Producer, Handlers: handlers, Log: s.Log,
		Concurrency: s.Config.ConsumerConcurrency, HandlerTimeout: s.Config.HandlerTimeout, Linger: s.Config.ConsumerLinger,
		Metrics: s.consumerMetrics, Tracer: s.Tracer,
		Waker: s.waker, WakeSoon: s.Identity.EmitsOffTheWay,
	}, nil
}

// fetchMin is the least a lingering group's fetch waits for, unless its linger passes
// first: a few hundred records.
const fetchMin = 64 << 10

// Waker wakes the outbox relay after a commit that stored events (outbox.Waker): the
// consumers' runners use it, and so should whatever else writes the outbox. Serve runs it.
func (s *Stack) Waker() *outbox.Waker { return s.waker }

// Relay returns the outbox relay of the service's database.
func (s *Stack) Relay() *outbox.Relay {
	return &outbox.Relay{Pool: s.Pool, Producer: s.Producer, Log: s.Log, Metrics: s.outboxMetrics, Tracer: s.Tracer, Waker: s.waker}
}

// Limits are the API's admission limits: Config's, with MaxInFlight 0 meaning two
// requests per connection of the database pool — each holds one for part of its time,
// and more would only queue for them (of the numbers measured under overload, two per
// connection accepted the most with the lowest tail; CHANGELOG.md) — a client's share 0
// meaning a quarter of that, and MaxQueued 0 ten per working place: a burst of that many
// at an idle service is served.
func (s *Stack) Limits() web.Limits {
	c := s.Config
	working := c.MaxInFlight
	if working == 0 {
		working = 2 * int(s.Pool.Config().MaxConns)
	}
	clientWorking := c.ClientInFlight
	if clientWorking == 0 {
		clientWorking = max(1, working/4)
	}
	queue := c.MaxQueued
	if queue == 0 {
		queue = 10 * working
	}
	return web.Limits{
		Working: working, ClientWorking: clientWorking, Waiting: c.MaxWaiting, ClientWaiting: c.ClientWaiting,
		Queue: queue, QueueWait: c.QueueWait,
		Rate:   web.RatePolicy{Name: "default", Rate: c.RateLimit, Burst: c.RateBurst},
		Routes: s.routes,
		Exempt: []string{metrics.Path, web.HealthPath, web.ReadyPath},
		Probes: web.RatePolicy{Name: "probes", Rate: c.ProbeRate, Burst: max(1, int(2*c.ProbeRate))},
	}
}

// LimitRoute gives the route method path (its pattern, "/orders/:id") a rate policy of
// its own per client in place of HTTP_RATE_LIMIT's: order creation, say.
func (s *Stack) LimitRoute(method, path string, p web.RatePolicy) {
	if s.routes == nil {
		s.routes = map[string]web.RatePolicy{}
	}
	s.routes[method+" "+path] = p
}

// Ready reports whether the database and the broker answered the last readiness check,
// which Serve runs before serving and then every readyEvery in the background: a probe
// never asks them itself, so a flood of probes costs them nothing. Before the first check
// it reports not ready.
func (s *Stack) Ready(context.Context) error {
	if r := s.readiness.Load(); r != nil {
		return r.err
	}
	return errors.New("readiness not checked yet")
}

// readiness is what a readiness check found: nil, or the dependency that did not answer.
type readiness struct{ err error }

const (
	readyEvery   = time.Second     // how often the readiness is checked
	readyTimeout = 2 * time.Second // how long each dependency has to answer
	// firstReading bounds the readiness check and the metrics' readings before serving.
	firstReading = 3 * time.Second
)

// checkReady asks the database and the broker, both at once and each within
// readyTimeout, whether they answer.
func (s *Stack) checkReady(ctx context.Context) *readiness {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var broker error
	var wg sync.WaitGroup
	wg.Go(func() { broker = kafka.Ping(ctx, s.Kafka) })
	db := s.Pool.Ping(ctx)
	wg.Wait()
	switch {
	case db != nil:
		return &readiness{&web.NotReady{Dependency: "database", Err: db}}
	case broker != nil:
		return &readiness{&web.NotReady{Dependency: "broker", Err: broker}}
	}
	return &readiness{}
}

// watchReady checks the readiness every readyEvery until ctx is done; a check cut short
// by shutdown is not kept.
func (s *Stack) watchReady(ctx context.Context) error {
	return Every(ctx, readyEvery, func(ctx context.Context) {
		if r := s.checkReady(ctx); ctx.Err() == nil {
			s.readiness.Store(r)
		}
	})
}

// Every is a Worker that runs do every d, the first time d from now, until ctx is done.
func Every(ctx context.Context, d time.Duration, do func(context.Context)) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			do(ctx)
		}
	}
}

// Close releases the listener, the consumer clients, the producer (flushing it), the
// Kafka client, the spans not yet exported (5 s at most) and the pool, in that order.
func (s *Stack) Close() {
	if s.listener != nil {
		_ = s.listener.Close()
	}
	for _, c := range s.consumerClients {
		_ = c.Close()
	}
	if s.Producer != nil {
		_ = s.Producer.Close()
	}
	if s.Kafka != nil {
		_ = s.Kafka.Close()
	}
	if s.Tracing != nil {
		_ = s.Tracing.Shutdown(context.Background())
	}
	if s.Pool != nil {
		s.Pool.Close()
	}
}

// Worker is a long-running part of a service, such as a consumer group or a relay.
// It returns when ctx is done, or earlier with an error that stops the service.
type Worker func(ctx context.Context) error

// Serve runs the HTTP API, with its spans, its metrics and GET /metrics, and the workers
// until ctx is done or one of them fails, then
// stops them in order: first the API and the consumers (front), so no new work comes in
// and in-flight records finish and commit, then the relays (back), so what the front
// wrote is still published. The caller closes the Stack afterwards.
func (s *Stack) Serve(ctx context.Context, api *echo.Echo, front, back []Worker) error {
	api.Use(web.Traced(s.Tracer, metrics.Path, web.HealthPath, web.ReadyPath))
	s.Metrics.Serve(api) // refusals below are counted and timed like any answer
	api.Use(web.Identify(s.Verifier), web.Admit(s.Limits()))
	frontCtx, stopFront := context.WithCancel(ctx)
	defer stopFront()
	backCtx, stopBack := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBack()

	errc := make(chan error, len(front)+len(back)+1)
	var frontWG, backWG sync.WaitGroup
	start := func(wg *sync.WaitGroup, c context.Context, w Worker) {
		wg.Go(func() {
			if err := w(c); err != nil {
				errc <- err
			}
		})
	}
	// What /metrics and /readyz answer is read in the background, with the back workers
	// (stopped before the pool closes), and read once before anything else starts, so
	// the first scrape and the first probe find it; a first reading that fails or takes
	// longer than firstReading does not stop the service: it serves what it has.
	start(&backWG, backCtx, s.Metrics.Run)
	first, firstDone := context.WithTimeout(ctx, firstReading)
	s.readiness.Store(s.checkReady(first))
	s.Metrics.Wait(first)
	firstDone()
	start(&backWG, backCtx, s.watchReady)
	start(&backWG, backCtx, s.waker.Run)
	for _, w := range front {
		start(&frontWG, frontCtx, w)
	}
	for _, w := range back {
		start(&backWG, backCtx, w)
	}
	if s.Config.PprofAddr != "" {
		// Profiling on its own port, never on the API's: for measuring, off by default.
		pln, err := net.Listen("tcp", s.Config.PprofAddr)
		if err != nil {
			return fmt.Errorf("listen on PPROF_ADDR %s: %w", s.Config.PprofAddr, err)
		}
		psrv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		defer psrv.Close()
		go func() { _ = psrv.Serve(pln) }()
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: s.Config.ReadTimeout}
	frontWG.Go(func() {
		if err := srv.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	s.Log.Info("serving", "http_addr", s.listener.Addr().String())

	var failed error
	select {
	case <-ctx.Done():
		s.Log.Info("shutting down")
	case failed = <-errc:
		s.Log.Error("a component failed; shutting down", "err", failed)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Config.ShutdownTimeout)
	defer cancel()
	stopFront()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	frontWG.Wait()
	stopBack()
	backWG.Wait()
	s.Log.Info("stopped")
	return failed
}
