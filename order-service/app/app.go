// Package app wires order-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/consume"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/postgres"
)

// Name is the service's name in logs, event sources and Kafka client ids.
const Name = "order-service"

// wakeEvery is how often, at most, placed orders wake the outbox relay: a burst of orders
// shares one NOTIFY and one relay round, and an order waits at most this long for it.
const wakeEvery = 5 * time.Millisecond

// Config is everything order-service reads from its environment.
type Config struct {
	config.Base
	// OrderRate is each customer's rate limit on placing orders (ORDER_RATE_LIMIT a
	// second, ORDER_RATE_BURST at once), apart from HTTP_RATE_LIMIT's for the rest.
	OrderRate web.RatePolicy
}

// ReadConfig reads the configuration once; the error names every bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []string, error) {
	env := config.NewEnv(getenv)
	cfg := Config{Base: config.ReadBase(env, ":8080", "postgres://postgres@127.0.0.1:55432/orders?sslmode=disable")}
	cfg.OrderRate = web.RatePolicy{Name: "orders", Rate: env.Float("ORDER_RATE_LIMIT", 10, 0, 1e6), Burst: env.Int("ORDER_RATE_BURST", 50, 1, 1e6)}
	return cfg, env.Names(), env.Err()
}

// Consumes maps the service's consumer group to the topics it reads.
func Consumes() map[string][]string {
	return map[string][]string{consume.Group: {events.TopicPaymentCompleted, events.TopicPaymentFailed}}
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	stack, err := platform.Boot(ctx, Name, cfg.Base, stdout, migrations.Orders, Consumes())
	if err != nil {
		return err
	}
	defer stack.Close()

	store := postgres.NewStore(stack.Pool)
	if err := postgres.RegisterMetrics(stack.Registerer, stack.Pool); err != nil {
		return err
	}
	waker := outbox.NewWaker(stack.Pool, wakeEvery)
	store.WakeWith(waker)
	handlers, err := consume.Handlers(store, stack.Registerer)
	if err != nil {
		return err
	}
	payments, err := stack.Consumer(consume.Group, handlers)
	if err != nil {
		return err
	}
	changes := postgres.NewChanges(stack.Pool, stack.Log)
	api := httpapi.New(stack.Log, store, changes, stack.Ready, stack.Verifier)
	stack.LimitRoute(http.MethodPost, "/orders", cfg.OrderRate)
	prune := func(ctx context.Context) error { // idempotency keys live 24 h
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if n, err := store.PruneIdempotencyKeys(ctx); err != nil && ctx.Err() == nil {
				stack.Log.Warn("pruning idempotency keys failed", "err", err)
			} else if n > 0 {
				stack.Log.Info("idempotency keys pruned", "count", n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
	return stack.Serve(ctx, api, []platform.Worker{payments.Run, changes.Run, prune}, []platform.Worker{stack.Relay().Run, waker.Run})
}
