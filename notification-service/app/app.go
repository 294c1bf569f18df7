// Package app wires notification-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"log/slog"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/migrations"
	"github.com/orderflow/notification-service/internal/consume"
	"github.com/orderflow/notification-service/internal/httpapi"
	"github.com/orderflow/notification-service/internal/mail"
	"github.com/orderflow/notification-service/internal/postgres"
)

// Config is everything notification-service reads from its environment.
type Config struct {
	config.Base
	SMTPAddr string // empty: emails go to the log
	MailFrom string
}

// ReadConfig reads the configuration once, and says what it read; the error names every
// bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []config.Setting, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		Base:     config.ReadBase(env, services.Notification),
		SMTPAddr: env.Addr("SMTP_ADDR", ""),
		MailFrom: env.String("MAIL_FROM", "orderflow <no-reply@orderflow.local>"),
	}
	return cfg, env.Settings(), env.Err()
}

// Run serves until ctx is cancelled, then shuts down in order.
func Run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	stack, err := platform.Boot(ctx, services.Notification, cfg.Base, stdout, migrations.Notifications)
	if err != nil {
		return err
	}
	defer stack.Close()

	var sender consume.Sender = mail.Log{Log: stack.Log}
	if cfg.SMTPAddr != "" {
		sender = mail.SMTP{Addr: cfg.SMTPAddr}
	}
	stack.Log.Info("email delivery", slog.String("smtp_addr", cfg.SMTPAddr), slog.Bool("log_only", cfg.SMTPAddr == ""))
	store := postgres.NewStore(stack.Pool, cfg.ConsumerLinger)
	if err := postgres.RegisterMetrics(stack.Registerer, stack.Pool); err != nil {
		return err
	}
	payments, err := stack.Consumer(consume.Handlers(store, sender, cfg.MailFrom))
	if err != nil {
		return err
	}
	api := httpapi.New(stack.Log, store, stack.Ready, stack.Verifier)
	return stack.Serve(ctx, api, []platform.Worker{payments.Run}, []platform.Worker{stack.Relay().Run})
}
