// Package app wires notification-service together. main calls Run; tests call it too.
package app

import (
	"context"
	"io"
	"log/slog"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/migrations"
	"github.com/orderflow/notification-service/internal/consume"
	"github.com/orderflow/notification-service/internal/httpapi"
	"github.com/orderflow/notification-service/internal/mail"
	"github.com/orderflow/notification-service/internal/postgres"
)

// Name is the service's name in logs and Kafka client ids.
const Name = "notification-service"

// Config is everything notification-service reads from its environment.
type Config struct {
	platform.Base
	SMTPAddr string // empty: emails go to the log
	MailFrom string
}

// ReadConfig reads the configuration once; the error names every bad setting in one line.
func ReadConfig(getenv func(string) string) (Config, []string, error) {
	env := platform.NewEnv(getenv)
	cfg := Config{
		Base:     platform.ReadBase(env, ":8082", "postgres://postgres@127.0.0.1:55432/notifications?sslmode=disable"),
		SMTPAddr: env.Addr("SMTP_ADDR", ""),
		MailFrom: env.String("MAIL_FROM", "orderflow <no-reply@orderflow.local>"),
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

	consumed := []string{events.TopicPaymentCompleted, events.TopicPaymentFailed}
	topics := append(events.Topics(), consumer.DeadLetterTopics(consume.Group, consumed...)...)
	stack, err := platform.Open(ctx, Name, cfg.Base, migrations.Notifications, topics)
	if err != nil {
		return err
	}
	defer stack.Close()
	client, err := stack.NewConsumerClient(cfg.KafkaBrokers)
	if err != nil {
		return err
	}

	store := postgres.NewStore(stack.Pool)
	var sender consume.Sender = mail.Log{Log: log}
	if cfg.SMTPAddr != "" {
		sender = mail.SMTP{Addr: cfg.SMTPAddr}
	}
	log.Info("email delivery", slog.String("smtp_addr", cfg.SMTPAddr), slog.Bool("log_only", cfg.SMTPAddr == ""))
	payments := &consumer.Runner{
		Group: consume.Group, Client: client, Pool: stack.Pool, DeadLetters: stack.Producer,
		Handlers: consume.Handlers(store, sender, cfg.MailFrom), Log: log,
	}
	api := httpapi.New(log, store, stack.Ready)

	return platform.Serve(ctx, log, ln, api, cfg.ShutdownTimeout, []platform.Worker{payments.Run}, nil)
}
