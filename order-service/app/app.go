// Package app wires order-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/migrations"
	"github.com/orderflow/order-service/internal/consume"
	"github.com/orderflow/order-service/internal/httpapi"
	"github.com/orderflow/order-service/internal/orders"
	"github.com/orderflow/order-service/internal/postgres"
)

// Config is everything order-service reads from its environment.
type Config struct {
	config.Base
	// OrderRate is each customer's rate limit on placing orders (ORDER_RATE_LIMIT a
	// second, ORDER_RATE_BURST at once), apart from HTTP_RATE_LIMIT's for the rest.
	OrderRate web.RatePolicy
}

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{Base: config.ReadBase(env, services.Order)}
	cfg.OrderRate = web.RatePolicy{Name: "orders", Rate: env.Float("ORDER_RATE_LIMIT", 10, 0, 1e6), Burst: env.Int("ORDER_RATE_BURST", 50, 1, 1e6)}
	return cfg, env.Settings(), env.Err()
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	stack, err := platform.Boot(ctx, services.Order, cfg.Base, stdout, migrations.Orders)
	if err != nil {
		return err
	}
	defer stack.Close()

	store := postgres.NewStore(stack.Pool)
	if err := postgres.RegisterMetrics(stack.Registerer, stack.Pool); err != nil {
		return err
	}
	handlers, err := consume.Handlers(store, stack.Registerer)
	if err != nil {
		return err
	}
	payments, err := stack.Consumer(handlers)
	if err != nil {
		return err
	}
	changes := postgres.NewChanges(stack.Pool, stack.Log)
	api := httpapi.New(stack.Log, orders.New(store, stack.Waker()), changes, stack.Ready, stack.Verifier)
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
	return stack.Serve(ctx, api, []platform.Worker{payments.Run, changes.Run, prune}, []platform.Worker{stack.Relay().Run})
}
