// Package app wires reconciliation-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/migrations"
	"github.com/orderflow/reconciliation-service/internal/consume"
	"github.com/orderflow/reconciliation-service/internal/httpapi"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// Config is everything reconciliation-service reads from its environment.
type Config struct {
	config.Base
	Grace reconcile.Grace
	Every time.Duration
}

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		Base: config.ReadBase(env, services.Reconciliation.Addr(), services.Reconciliation.DefaultDatabaseURL()),
		Grace: reconcile.Grace{
			Settle:          env.Duration("RECONCILE_GRACE", 2*time.Minute, time.Second, 24*time.Hour),
			PaymentDeadline: env.Duration("PAYMENT_DEADLINE", 10*time.Minute, time.Second, 7*24*time.Hour),
		},
		Every: env.Duration("RECONCILE_EVERY", 5*time.Second, 100*time.Millisecond, 10*time.Minute),
	}
	return cfg, env.Settings(), env.Err()
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	stack, err := platform.Boot(ctx, services.Reconciliation, cfg.Base, stdout, migrations.Reconciliation)
	if err != nil {
		return err
	}
	defer stack.Close()

	store := postgres.NewStore(stack.Pool)
	facts, err := stack.Consumer(consume.Handlers(store))
	if err != nil {
		return err
	}
	sweep := &consume.Sweeper{Store: store, Grace: cfg.Grace, Every: cfg.Every, Log: stack.Log}
	if err := sweep.Register(stack.Registerer); err != nil {
		return err
	}
	api := httpapi.New(stack.Log, store, stack.Ready, stack.Verifier)
	return stack.Serve(ctx, api, []platform.Worker{facts.Run, sweep.Run}, nil)
}
