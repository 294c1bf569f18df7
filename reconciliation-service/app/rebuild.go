package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/IBM/sarama"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/migrations"
	"github.com/orderflow/reconciliation-service/internal/consume"
	"github.com/orderflow/reconciliation-service/internal/postgres"
	"github.com/orderflow/reconciliation-service/internal/provider"
)

// rebuildBatch is how many records of a replay one transaction applies.
const rebuildBatch = 500

// Rebuild is `reconciliation-service rebuild`, run while the service is stopped: it drops
// the read model, replays every topic the service reads from the oldest record the
// cluster keeps (order.state from the start, it being compacted and kept for ever; the
// event topics from the start of their retention, the rebuild horizon: an order that ended
// before the oldest event kept is taken as settled) to their ends, reads
// the provider's records over the horizon and the dead-letter topics, sweeps once, and
// commits the topics' ends as its group's offsets, so the service, started again, goes on
// from where the replay ended. It prints what it rebuilt.
func Rebuild(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, _, err := ReadConfig(getenv)
	if err != nil {
		return err
	}
	svc := services.Reconciliation
	pool, err := platform.OpenPool(ctx, cfg.DatabaseURL, migrations.Reconciliation)
	if err != nil {
		return err
	}
	defer pool.Close()
	conf := cfg.Kafka.Config(svc.Name + "-rebuild")
	conf.Consumer.Return.Errors = true // a failed offset commit is the command's error, not a log line
	client, err := sarama.NewClient(cfg.KafkaBrokers, conf)
	if err != nil {
		return fmt.Errorf("kafka at KAFKA_BROKERS %v: %w", cfg.KafkaBrokers, err)
	}
	defer client.Close()

	started := time.Now()
	store := postgres.NewStore(pool)
	if err := store.Reset(ctx); err != nil {
		return fmt.Errorf("drop the read model: %w", err)
	}
	ends := map[string]map[int32]int64{}
	applied, skipped := 0, 0
	var horizon time.Time // the oldest event the event topics still keep
	for _, topic := range svc.Consumes {
		var recs []postgres.Record
		flush := func() error {
			err := store.ApplyAll(ctx, recs)
			recs = recs[:0]
			return err
		}
		end, err := kafka.ReadAll(ctx, client, topic, 5*time.Second, func(m *sarama.ConsumerMessage) error {
			env, err := kafka.Envelope(m)
			if err != nil {
				skipped++ // poison: the live service dead-lettered it too
				return nil
			}
			ev, err := kafka.Event(env)
			if err != nil || !events.IsUUID(ev.Subject()) {
				skipped++
				return nil
			}
			if !events.IsEntityTopic(topic) && (horizon.IsZero() || env.Time.Before(horizon)) {
				horizon = env.Time
			}
			recs = append(recs, postgres.Record{Env: env, Event: ev})
			applied++
			if len(recs) == rebuildBatch {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			return fmt.Errorf("replay %s: %w", topic, err)
		}
		ends[topic] = end
	}

	records, closeRecords, err := providerRecords(cfg)
	if err != nil {
		return err
	}
	defer closeRecords()
	if records != nil {
		watch := &consume.ProviderWatch{Records: records, Store: store, Horizon: cfg.TopicRetention}
		if err := watch.All(ctx); err != nil {
			return fmt.Errorf("the provider's records: %w", err)
		}
	}
	dead := &consume.DeadLetterWatch{Client: client, Store: store}
	if err := dead.Look(ctx); err != nil {
		return fmt.Errorf("the dead letters: %w", err)
	}
	// An order that ended before the horizon has its payment and emails beyond what the
	// topics keep: it is taken as settled, not reported for facts no longer there.
	if !horizon.IsZero() {
		if err := store.SettleEnded(ctx, horizon); err != nil {
			return err
		}
	}
	sweep := &consume.Sweeper{Store: store, Grace: cfg.Grace}
	if err := sweep.All(ctx); err != nil {
		return err
	}
	if err := commitOffsets(client, svc.Group, ends); err != nil {
		return err
	}
	counts, _, err := store.Open(ctx)
	if err != nil {
		return err
	}
	open := 0
	for _, n := range counts {
		open += n
	}
	fmt.Fprintf(stdout, "%s: rebuilt in %.1f s from %d records of %d topics (%d skipped as poison); %d open mismatches %v\n",
		svc.Name, time.Since(started).Seconds(), applied, len(ends), skipped, open, counts)
	return nil
}

// providerRecords is the provider's records the configuration names (nil: none), and
// what closes them.
func providerRecords(cfg Config) (provider.Records, func(), error) {
	switch cfg.Provider {
	case ProviderSimulator:
		pool, err := platform.OtherPool("PROVIDER_LEDGER_URL", cfg.LedgerURL)
		if err != nil {
			return nil, nil, err
		}
		return provider.NewLedger(pool), pool.Close, nil
	case ProviderStripe:
		return provider.NewStripe(cfg.Stripe), func() {}, nil
	}
	return nil, func() {}, nil
}

// commitOffsets commits ends as group's offsets, as a consumer outside any generation
// (the group must have no members: the service stopped).
func commitOffsets(client sarama.Client, group string, ends map[string]map[int32]int64) error {
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	if err != nil {
		return fmt.Errorf("offsets of group %s: %w", group, err)
	}
	var poms []sarama.PartitionOffsetManager
	for topic, parts := range ends {
		for p, end := range parts {
			pom, err := om.ManagePartition(topic, p)
			if err != nil {
				return fmt.Errorf("offsets of group %s on %s/%d: %w", group, topic, p, err)
			}
			pom.MarkOffset(end, "")  // forward only,
			pom.ResetOffset(end, "") // back only: together, to end whatever was committed
			poms = append(poms, pom)
		}
	}
	om.Commit()
	for _, pom := range poms {
		pom.AsyncClose()
	}
	// Closing the manager commits what is left and releases every partition at once, which
	// ends their error channels (buffered: Consumer.Return.Errors).
	errs := []error{om.Close()}
	for _, pom := range poms {
		for err := range pom.Errors() {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("offsets of group %s: %w", group, err)
	}
	return nil
}
