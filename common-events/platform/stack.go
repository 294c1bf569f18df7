package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/migrations"
)

// NewLogger returns the service's JSON logger; every line carries the service name.
func NewLogger(w io.Writer, service string, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("service", service)
}

// Stack is the infrastructure a service runs on.
type Stack struct {
	Service  string
	Pool     *pgxpool.Pool
	Kafka    sarama.Client       // metadata, readiness, topic creation
	Producer sarama.SyncProducer // the outbox relay and dead-lettering

	consumerClients []sarama.Client
}

// Open connects to the database and migrates it, makes sure the topics exist and opens
// the Kafka clients. On error everything opened so far is closed again.
func Open(ctx context.Context, service string, cfg Base, schema fs.FS, topics []string) (_ *Stack, err error) {
	s := &Stack{Service: service}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.Pool, err = openPool(ctx, cfg.DatabaseURL, schema); err != nil {
		return nil, err
	}
	if err = kafka.EnsureTopics(cfg.KafkaBrokers, service, int32(cfg.TopicPartitions), topics...); err != nil {
		return nil, fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	if s.Kafka, err = sarama.NewClient(cfg.KafkaBrokers, kafka.Config(service)); err != nil {
		return nil, fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	if s.Producer, err = sarama.NewSyncProducer(cfg.KafkaBrokers, kafka.Config(service)); err != nil {
		return nil, fmt.Errorf("kafka producer at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	return s, nil
}

func openPool(ctx context.Context, url string, schema fs.FS) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if pcfg.MaxConns < 10 {
		pcfg.MaxConns = 10
	}
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
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if err := migrations.Up(ctx, db, schema); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// NewConsumerClient opens the client a consumer group uses: one per group, as sarama asks.
func (s *Stack) NewConsumerClient(brokers []string) (sarama.Client, error) {
	c, err := sarama.NewClient(brokers, kafka.Config(s.Service))
	if err != nil {
		return nil, fmt.Errorf("kafka consumer client: %w", err)
	}
	s.consumerClients = append(s.consumerClients, c)
	return c, nil
}

// Ready reports whether the database and the broker answer.
func (s *Stack) Ready(ctx context.Context) error {
	if err := s.Pool.Ping(ctx); err != nil {
		return fmt.Errorf("database: %w", err)
	}
	return kafka.Ping(ctx, s.Kafka)
}

// Close releases the consumer clients, the producer (flushing it), the Kafka client and
// the pool, in that order.
func (s *Stack) Close() {
	for _, c := range s.consumerClients {
		_ = c.Close()
	}
	if s.Producer != nil {
		_ = s.Producer.Close()
	}
	if s.Kafka != nil {
		_ = s.Kafka.Close()
	}
	if s.Pool != nil {
		s.Pool.Close()
	}
}

// Worker is a long-running part of a service, such as a consumer group or a relay.
// It returns when ctx is done, or earlier with an error that stops the service.
type Worker func(ctx context.Context) error

// Serve runs the HTTP server and the workers until ctx is done or one of them fails, then
// stops them in order: first the HTTP server and the consumers (front), so no new work
// comes in and in-flight records finish and commit, then the relays (back), so what the
// front wrote is still published. The caller closes the Stack afterwards.
func Serve(ctx context.Context, log *slog.Logger, ln net.Listener, e *echo.Echo, timeout time.Duration, front, back []Worker) error {
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
	for _, w := range front {
		start(&frontWG, frontCtx, w)
	}
	for _, w := range back {
		start(&backWG, backCtx, w)
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	frontWG.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	})
	log.Info("serving", "http_addr", ln.Addr().String())

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case failed = <-errc:
		log.Error("a component failed; shutting down", "err", failed)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	stopFront()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	frontWG.Wait()
	stopBack()
	backWG.Wait()
	log.Info("stopped")
	return failed
}
