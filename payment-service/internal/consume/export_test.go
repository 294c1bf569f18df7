package consume

import (
	"context"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/payment-service/internal/payment"
)

// RecordCharges records the provider's answers ps, each with its outcome event, as one
// batch of the runner's would, in tx, and returns the events it emitted.
func RecordCharges(ctx context.Context, tx pgx.Tx, ps []payment.Payment, envs []events.Envelope) ([]events.Envelope, error) {
	set := chargedSet{}.set()
	applies := make([]consumer.Apply, len(ps))
	for i := range ps {
		applies[i] = consumer.Row(set, charged{payment: ps[i], event: envs[i], log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}
	return consumer.RunBatch(ctx, tx, applies...)
}
