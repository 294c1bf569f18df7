// Package consume keeps the read model: every record of the topics reconciliation reads
// becomes a fact about its order, in the record's transaction. The group keeps no inbox
// (consumer.Runner.Idempotent): a record that comes again changes nothing.
package consume

import (
	"context"
	"fmt"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/reconciliation-service/internal/postgres"
)

// Handlers returns the handler of each topic reconciliation-service reads: every record
// a row of one Set, so a batch's records are applied in two statements.
func Handlers(store *postgres.Store) map[string]consumer.Handler {
	facts := consumer.NewSet(func(ctx context.Context, tx consumer.Tx, recs []postgres.Record) error {
		return store.ApplyBatch(ctx, tx, recs)
	})
	handlers := map[string]consumer.Handler{}
	for _, topic := range services.Reconciliation.Consumes {
		handlers[topic] = func(_ context.Context, msg consumer.Message) (consumer.Apply, error) {
			if !events.IsUUID(msg.Subject) {
				return consumer.Apply{}, consumer.Poison(fmt.Errorf("order id %q is not a UUID", msg.Subject))
			}
			return consumer.Row(facts, postgres.Record{Env: msg.Envelope, Event: msg.Event}), nil
		}
	}
	return handlers
}
