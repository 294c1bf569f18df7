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
	"github.com/orderflow/reconciliation-service/internal/provider"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// The payment providers whose records reconciliation reads: payment-service's
// PAYMENT_PROVIDER, or none.
const (
	ProviderSimulator = "simulator" // its ledger, at PROVIDER_LEDGER_URL
	ProviderStripe    = "stripe"    // Stripe's list API, with STRIPE_API_KEY (a restricted key that may read PaymentIntents is enough)
	ProviderNone      = "none"      // no provider records: charge_without_payment and completed_without_charge are not watched
)

// Config is everything reconciliation-service reads from its environment.
type Config struct {
	config.Base
	Grace reconcile.Grace
	Every time.Duration

	Provider  string
	LedgerURL string
	Stripe    provider.StripeConfig
}

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		Base: config.ReadBase(env, services.Reconciliation),
		Grace: reconcile.Grace{
			Settle:          env.Duration("RECONCILE_GRACE", 2*time.Minute, time.Second, 24*time.Hour),
			PaymentDeadline: env.Duration("PAYMENT_DEADLINE", 10*time.Minute, time.Second, 7*24*time.Hour),
		},
		Every:    env.Duration("RECONCILE_EVERY", 5*time.Second, 100*time.Millisecond, 10*time.Minute),
		Provider: env.OneOf("PAYMENT_PROVIDER", ProviderSimulator, ProviderSimulator, ProviderStripe, ProviderNone),
	}
	switch cfg.Provider {
	case ProviderSimulator:
		cfg.LedgerURL = env.PostgresURL("PROVIDER_LEDGER_URL", services.Payment.DefaultDatabaseURL())
	case ProviderStripe:
		cfg.Stripe = provider.StripeConfig{
			APIKey:  env.Secret("STRIPE_API_KEY"),
			BaseURL: env.URL("STRIPE_API_BASE", ""),
			Timeout: env.Duration("STRIPE_TIMEOUT", 10*time.Second, 100*time.Millisecond, time.Minute),
		}
	}
	cfg.Grace.Provider = cfg.Provider != ProviderNone
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
	// The read model's statements have the effect of one however often a record comes
	// (the timeline's row is keyed by the event; the facts keep the highest version and
	// the furthest payment): no inbox rows (TestABatchIsItsRecordsOneByOne redelivers a
	// whole batch).
	facts.Idempotent = true
	sweep := &consume.Sweeper{Store: store, Grace: cfg.Grace, Every: cfg.Every, Log: stack.Log}
	if err := sweep.Register(stack.Registerer); err != nil {
		return err
	}
	dead := &consume.DeadLetterWatch{Client: stack.Kafka, Store: store, Every: cfg.Every, Log: stack.Log}
	workers := []platform.Worker{facts.Run, sweep.Run, dead.Run}
	records, closeRecords, err := providerRecords(cfg)
	if err != nil {
		return err
	}
	defer closeRecords()
	if records != nil {
		watch := &consume.ProviderWatch{Records: records, Store: store, Every: cfg.Every, Horizon: cfg.TopicRetention, Log: stack.Log}
		workers = append(workers, watch.Run)
	}
	api := httpapi.New(stack.Log, store, stack.Ready, stack.Verifier)
	return stack.Serve(ctx, api, workers, nil)
}
