package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/deadletter"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/provider"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// ProviderLag is how far behind now the provider's records are read: a charge the
// provider is still writing, or one stamped by a clock a little behind ours, is read by
// the next look rather than missed.
const ProviderLag = 2 * time.Second

// ProviderWatch reads the provider's records, every Every, from where the last look
// ended (the first from Horizon ago: the rebuild horizon) to ProviderLag ago.
type ProviderWatch struct {
	Records provider.Records
	Store   *postgres.Store
	Every   time.Duration
	Horizon time.Duration
	Log     *slog.Logger
}

// Run looks until ctx ends.
func (w *ProviderWatch) Run(ctx context.Context) error {
	return every(ctx, w.Every, w.Log, "provider records", w.Look)
}

// Look reads the provider's charges made since the last look.
func (w *ProviderWatch) Look(ctx context.Context) error {
	to := time.Now().Add(-ProviderLag)
	from, ok, err := w.Store.ListedUntil(ctx)
	if err != nil {
		return err
	}
	if !ok {
		from = to.Add(-w.Horizon)
	}
	if !to.After(from) {
		return nil
	}
	charges, err := w.Records.Charges(ctx, from, to)
	if err != nil {
		return err
	}
	if err := w.Store.ProviderCharges(ctx, charges, to); err != nil {
		return err
	}
	_, err = w.lookUp(ctx, to)
	return err
}

// lookupBatch bounds the charges one look asks the provider about one by one.
const lookupBatch = 100

// lookUp asks the provider, one by one, about the charges of paid orders that its list
// did not show (paid before the list was read to): a charge that succeeded after the
// window that listed it, or none at all. It says how many it asked about.
func (w *ProviderWatch) lookUp(ctx context.Context, listed time.Time) (int, error) {
	unasked, err := w.Store.Unasked(ctx, listed, lookupBatch)
	if err != nil {
		return 0, err
	}
	for _, u := range unasked {
		c, found, err := w.Records.Lookup(ctx, u.OrderID, u.ChargeID)
		if err != nil {
			return 0, err
		}
		if err := w.Store.Asked(ctx, u, c, found); err != nil {
			return 0, err
		}
	}
	return len(unasked), nil
}

// All is Look, then every lookup it leaves: what a rebuild does once.
func (w *ProviderWatch) All(ctx context.Context) error {
	if err := w.Look(ctx); err != nil {
		return err
	}
	for {
		to, _, err := w.Store.ListedUntil(ctx)
		if err != nil {
			return err
		}
		n, err := w.lookUp(ctx, to)
		if err != nil || n < lookupBatch {
			return err
		}
	}
}

// DeadLetterWatch looks, every Every, at every dead-letter topic of every service's
// group, and keeps the records about an order that the dead-letter tool's ledger does
// not say were replayed.
type DeadLetterWatch struct {
	Client sarama.Client
	Store  *postgres.Store
	Every  time.Duration
	Log    *slog.Logger
}

// Run looks until ctx ends.
func (w *DeadLetterWatch) Run(ctx context.Context) error {
	return every(ctx, w.Every, w.Log, "dead letters", w.Look)
}

// Look reads the dead-letter topics and the ledger once.
func (w *DeadLetterWatch) Look(ctx context.Context) error {
	tool := &deadletter.Tool{Client: w.Client}
	replayed, err := tool.Replayed(ctx)
	if err != nil {
		return err
	}
	var found []postgres.DeadLetter
	for _, svc := range services.All() {
		for _, topic := range svc.DeadLetterTopics() {
			recs, err := tool.Records(ctx, topic, deadletter.All)
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				continue // none made yet: no dead letter either
			}
			if err != nil {
				return fmt.Errorf("%s: %w", topic, err)
			}
			for _, r := range recs {
				if replayed[r.ID()] {
					continue
				}
				if d, ok := deadLetterOf(r); ok {
					found = append(found, d)
				}
			}
		}
	}
	return w.Store.DeadLetters(ctx, found)
}

// deadLetterOf is the order a dead letter is about (its key, the order id as every topic
// keys it) and when it was dead-lettered; a record with no order id as its key is about
// no order reconciliation could name.
func deadLetterOf(r deadletter.Record) (postgres.DeadLetter, bool) {
	order := strings.ToLower(string(r.Key))
	if !events.IsUUID(order) {
		return postgres.DeadLetter{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, r.Headers[consumer.HeaderDLQTime])
	if err != nil {
		at = time.Now()
	}
	return postgres.DeadLetter{OrderID: order, DeadLetter: reconcile.DeadLetter{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, At: at.UTC()}}, true
}

// every runs look every d until ctx ends, logging what fails.
func every(ctx context.Context, d time.Duration, log *slog.Logger, what string, look func(context.Context) error) error {
	return platform.Every(ctx, d, func(ctx context.Context) {
		if err := look(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reconciliation: "+what, "err", err)
		}
	})
}
