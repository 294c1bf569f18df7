// Package app wires order-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/consume"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/postgres"
)

// Name is the service's name in logs, event sources and Kafka client ids.
const Name = "order-service"

// Config is everything order-service reads from its environment.
type Config struct {
	platform.Base
}

// ReadConfig reads the configuration once; the error names every bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []string, error) {
	env := platform.NewEnv(getenv)
	cfg := Config{Base: platform.ReadBase(env, ":8080", "postgres://postgres@127.0.0.1:55432/orders?sslmode=disable")}
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

	consumed := []string{events.TopicPaymentCompleted, events.TopicPaymentFailed}
	topics := append(events.Topics(), consumer.DeadLetterTopics(consume.Group, consumed...)...)
	stack, err := platform.Open(ctx, Name, cfg.Base, migrations.Orders, topics)
	if err != nil {
		return err
	}
	defer stack.Close()
	client, err := stack.NewConsumerClient(cfg.KafkaBrokers)
	if err != nil {
		return err
	}

	store := postgres.NewStore(stack.Pool)
	payments := &consumer.Runner{
		Group: consume.Group, Client: client, Pool: stack.Pool, DeadLetters: stack.Producer,
		Handlers: consume.Handlers(store), Log: log,
	}
	relay := &outbox.Relay{Pool: stack.Pool, Producer: stack.Producer, Log: log}
	api := httpapi.New(log, store, stack.Ready)

	return platform.Serve(ctx, log, ln, api, cfg.ShutdownTimeout,
		[]platform.Worker{payments.Run}, []platform.Worker{relay.Run})
}
