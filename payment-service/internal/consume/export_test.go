package consume

import (
	"context"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/payment-service/internal/payment"
	"github.com/orderflow/payment-service/internal/postgres"
)

// RecordCharges records the provider's answers ps, each with its outcome event, as one
// batch of the runner's would, in tx, and returns the events it emitted.
func RecordCharges(ctx context.Context, tx pgx.Tx, store *postgres.Store, ps []payment.Payment, envs []events.Envelope) ([]events.Envelope, error) {
	rows := make([]charged, len(ps))
	for i := range ps {
		rows[i] = charged{payment: ps[i], event: envs[i], log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	return consumer.Func(func(ctx context.Context, tx consumer.Tx) error {
		return chargedSet{store: store}.apply(ctx, tx, rows)
	}).Run(ctx, tx)
}
