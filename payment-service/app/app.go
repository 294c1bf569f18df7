// Package app wires payment-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"time"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/httpapi"
	"github.com/orderflow/payment-service/internal/postgres"
	"github.com/orderflow/payment-service/internal/simulator"
)

// Name is the service's name in logs, event sources and Kafka client ids.
const Name = "payment-service"

// Config is everything payment-service reads from its environment.
type Config struct {
	platform.Base
	ProviderLatency       time.Duration // how long each simulated charge takes
	ProviderTransientRate float64       // share of simulated charges that fail transiently
}

// ReadConfig reads the configuration once; the error names every bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []string, error) {
	env := platform.NewEnv(getenv)
	cfg := Config{
		Base:                  platform.ReadBase(env, ":8081", "postgres://postgres@127.0.0.1:55432/payments?sslmode=disable"),
		ProviderLatency:       env.Duration("PROVIDER_LATENCY", 0, 0, time.Minute),
		ProviderTransientRate: env.Float("PROVIDER_TRANSIENT_FAILURE_RATE", 0, 0, 0.99),
	}
	return cfg, env.Names(), env.Err()
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	log := platform.NewLogger(stdout, Name, cfg.LogLevel)
	ln, err := platform.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer ln.Close()

	topics := append(events.Topics(), consumer.DeadLetterTopics(consume.Group, events.TopicOrderCreated)...)
	stack, err := platform.Open(ctx, Name, cfg.Base, migrations.Payments, topics)
	if err != nil {
		return err
	}
	defer stack.Close()
	client, err := stack.NewConsumerClient(cfg.KafkaBrokers)
	if err != nil {
		return err
	}

	store := postgres.NewStore(stack.Pool)
	provider := simulator.New(stack.Pool, cfg.ProviderLatency, cfg.ProviderTransientRate)
	orders := &consumer.Runner{
		Group: consume.Group, Client: client, Pool: stack.Pool, DeadLetters: stack.Producer,
		Handlers: consume.Handlers(store, provider), Log: log,
	}
	relay := &outbox.Relay{Pool: stack.Pool, Producer: stack.Producer, Log: log}
	api := httpapi.New(log, store, stack.Ready)

	return platform.Serve(ctx, log, ln, api, cfg.ShutdownTimeout,
		[]platform.Worker{orders.Run}, []platform.Worker{relay.Run})
}
