// Package app wires payment-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/consume"
	"github.com/orderflow/payment-service/internal/httpapi"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
	"github.com/orderflow/payment-service/internal/simulator"
	"github.com/orderflow/payment-service/internal/stripepay"
)

// Config is everything payment-service reads from its environment.
type Config struct {
	config.Base
	// Provider is who charges: ProviderSimulator (the default) or ProviderStripe.
	Provider string
	// Stripe is how to reach Stripe, with ProviderStripe; WebhookSecrets verify its
	// webhooks (none: POST /webhooks/stripe is not served).
	Stripe                stripepay.Config
	WebhookSecrets        []string
	ProviderLatency       time.Duration // how long each simulated charge takes
	ProviderTransientRate float64       // share of simulated charges that fail transiently
	// PaymentDeadline is how long after an order's creation a charge failing
	// transiently is retried; then the provider's records decide.
	PaymentDeadline time.Duration
}

// The payment providers.
const (
	ProviderSimulator = "simulator" // payment-service's own stand-in, its ledger in the payments database
	ProviderStripe    = "stripe"    // Stripe's PaymentIntents API, or a stand-in at STRIPE_API_BASE
)

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		Base:                  config.ReadBase(env, services.Payment),
		ProviderLatency:       env.Duration("PROVIDER_LATENCY", 0, 0, time.Minute),
		ProviderTransientRate: env.Float("PROVIDER_TRANSIENT_FAILURE_RATE", 0, 0, 1),
		PaymentDeadline:       env.Duration("PAYMENT_DEADLINE", 10*time.Minute, time.Second, 7*24*time.Hour),
		Provider:              env.OneOf("PAYMENT_PROVIDER", ProviderSimulator, ProviderSimulator, ProviderStripe),
	}
	if cfg.Provider == ProviderStripe {
		cfg.Stripe = stripepay.Config{
			APIKey:  env.Secret("STRIPE_API_KEY"),
			BaseURL: env.URL("STRIPE_API_BASE", ""),
			Timeout: env.Duration("STRIPE_TIMEOUT", 10*time.Second, 100*time.Millisecond, time.Minute),
		}
		for _, s := range strings.Split(env.String("STRIPE_WEBHOOK_SECRET", ""), ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.WebhookSecrets = append(cfg.WebhookSecrets, s)
			}
		}
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
	settler := consume.Settler{Store: store, Pool: stack.Pool, Waker: stack.Waker(), Log: stack.Log}
	var provider payment.Provider
	var ledger httpapi.Ledger // the simulator's alone
	var hook *stripepay.Webhook
	switch cfg.Provider {
	case ProviderStripe:
		if err := stripepay.Migrate(ctx, stack.Pool); err != nil {
			return err
		}
		sp := stripepay.New(cfg.Stripe, stack.Pool)
		provider = sp
		if len(cfg.WebhookSecrets) > 0 {
			hook = &stripepay.Webhook{Provider: sp, Secrets: cfg.WebhookSecrets, Log: stack.Log, Settle: settler}
		}
	default:
		if err := simulator.Migrate(ctx, stack.Pool); err != nil {
			return err
		}
		sim := simulator.New(stack.Pool, cfg.ProviderLatency, cfg.ProviderTransientRate)
		go hangOnSignal(ctx, stack.Log, sim)
		provider, ledger = sim, sim
	}
	stack.Log.Info("payment provider", "provider", cfg.Provider, "stripe_api_base", cfg.Stripe.BaseURL, "stripe_webhooks", hook != nil)
	orders, err := stack.Consumer(consume.Handlers(provider, cfg.PaymentDeadline, settler))
	if err != nil {
		return err
	}
	api := httpapi.New(stack.Log, store, ledger, stack.Ready, stack.Verifier)
	if hook != nil { // signed by Stripe: no bearer token, the admission limits as for any route
		api.POST(stripepay.WebhookPath, hook.Handle)
	}
	sweep := &consume.Sweeper{Settle: settler, Provider: provider, Deadline: cfg.PaymentDeadline, Log: stack.Log}
	return stack.Serve(ctx, api, []platform.Worker{orders.Run, sweep.Run}, []platform.Worker{stack.Relay().Run})
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
