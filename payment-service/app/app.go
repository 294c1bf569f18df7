// Package app wires payment-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/httpapi"
	"github.com/orderflow/payment-service/internal/postgres"
	"github.com/orderflow/payment-service/internal/simulator"
)

// Config is everything payment-service reads from its environment.
type Config struct {
	config.Base
	ProviderLatency       time.Duration // how long each simulated charge takes
	ProviderTransientRate float64       // share of simulated charges that fail transiently
	// PaymentDeadline is how long after an order's creation a charge failing
	// transiently is retried; then the provider's records decide.
	PaymentDeadline time.Duration
}

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		Base:                  config.ReadBase(env, services.Payment.Addr(), services.Payment.DefaultDatabaseURL()),
		ProviderLatency:       env.Duration("PROVIDER_LATENCY", 0, 0, time.Minute),
		ProviderTransientRate: env.Float("PROVIDER_TRANSIENT_FAILURE_RATE", 0, 0, 1),
		PaymentDeadline:       env.Duration("PAYMENT_DEADLINE", 10*time.Minute, time.Second, 7*24*time.Hour),
	}
	return cfg, env.Settings(), env.Err()
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	stack, err := platform.Boot(ctx, services.Payment, cfg.Base, stdout, migrations.Payments)
	if err != nil {
		return err
	}
	defer stack.Close()

	store := postgres.NewStore(stack.Pool)
	if err := postgres.RegisterMetrics(stack.Registerer, stack.Pool); err != nil {
		return err
	}
	if err := simulator.Migrate(ctx, stack.Pool); err != nil {
		return err
	}
	provider := simulator.New(stack.Pool, cfg.ProviderLatency, cfg.ProviderTransientRate)
	go hangOnSignal(ctx, stack.Log, provider)
	orders, err := stack.Consumer(consume.Handlers(store, provider, cfg.PaymentDeadline))
	if err != nil {
		return err
	}
	api := httpapi.New(stack.Log, store, provider, stack.Ready, stack.Verifier)
	return stack.Serve(ctx, api, []platform.Worker{orders.Run}, []platform.Worker{stack.Relay().Run})
}

// hangOnSignal makes the simulated provider hang on SIGUSR1 and answer again on SIGUSR2,
// until ctx ends: a provider that goes silent, for the chaos run and for trying it by hand
// (kill -USR1 <pid>).
func hangOnSignal(ctx context.Context, log *slog.Logger, provider *simulator.Simulator) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(signals)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-signals:
			if sig == syscall.SIGUSR1 {
				provider.Hang()
				log.Warn("simulated provider: hanging, answering nothing until SIGUSR2")
			} else {
				provider.Answer()
				log.Warn("simulated provider: answering again")
			}
		}
	}
}
