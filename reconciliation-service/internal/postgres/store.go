// Package postgres is reconciliation-service's read model: what each service said about
// each order, its timeline, and the open mismatches.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/reconciliation-service/internal/provider"
	"github.com/orderflow/reconciliation-service/internal/reconcile"
)

// Store is the reconciliation database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Reset drops the read model, and the inbox of what was applied to it, for a rebuild.
func (s *Store) Reset(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `TRUNCATE order_facts, timeline, mismatches, provider_listed, dead_letters, processed_events`)
	return err
}

// SettleEnded marks settled the orders that ended before horizon (a rebuild's: the oldest
// event its topics keep).
func (s *Store) SettleEnded(ctx context.Context, horizon time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE order_facts SET settled = true
		WHERE status IN ('CONFIRMED', 'PAYMENT_FAILED', 'CANCELLED') AND changed_at < $1`, horizon)
	return err
}

// ApplyAll applies the records of a replay, in one transaction.
func (s *Store) ApplyAll(ctx context.Context, recs []Record) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.ApplyBatch(ctx, tx, recs) })
}

// askedFor is whether the provider was asked about charge (a parameter) already: it was
// if its list showed that charge, or it was asked about the same charge before.
func askedFor(charge string) string {
	return fmt.Sprintf(`coalesce(order_facts.provider_charge = %[1]s OR (order_facts.provider_asked AND order_facts.charge_id = %[1]s), false)`, charge)
}

// Read is an order's facts as a sweep read them, and the version of their row they were
// read from: a fact written since makes it another.
type Read struct {
	reconcile.Facts
	Row string // the row's xmin
}

// Unsettled returns the facts of up to limit orders the sweep has not found settled, in
// order id order after the order after ("": from the first), with
// the provider's charge, whether the provider was asked about the payment's charge, and
// its dead letters.
func (s *Store) Unsettled(ctx context.Context, after string, limit int) ([]Read, error) {
	rows, _ := s.pool.Query(ctx, `SELECT f.xmin::text, f.order_id::text, coalesce(status, ''), version, coalesce(failure_reason, ''),
			placed_at, changed_at, coalesce(payment, ''), coalesce(charge_id, ''), coalesce(refund_id, ''),
			payment_at, refunded_at, emails, coalesce(provider_charge, ''), provider_charged_at,
			provider_asked,
			coalesce((SELECT jsonb_agg(jsonb_build_object('topic', d.topic, 'partition', d.partition, 'offset', d."offset", 'at', d.at))
				FROM dead_letters d WHERE d.order_id = f.order_id), '[]')
		FROM order_facts f WHERE NOT settled AND f.order_id > coalesce(nullif($1, '')::uuid, '00000000-0000-0000-0000-000000000000')
		ORDER BY f.order_id LIMIT $2`, after, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Read, error) {
		var read Read
		f := &read.Facts
		var placed, changed, paid, refunded, charged *time.Time
		var emails map[string]time.Time
		var dead []struct {
			Topic     string    `json:"topic"`
			Partition int32     `json:"partition"`
			Offset    int64     `json:"offset"`
			At        time.Time `json:"at"`
		}
		err := r.Scan(&read.Row, &f.OrderID, &f.Status, &f.Version, &f.FailureReason, &placed, &changed, &f.Payment, &f.ChargeID,
			&f.RefundID, &paid, &refunded, &emails, &f.ProviderCharge, &charged, &f.ProviderAsked, &dead)
		f.PlacedAt, f.ChangedAt, f.PaymentAt, f.RefundedAt, f.ProviderChargedAt = at(placed), at(changed), at(paid), at(refunded), at(charged)
		f.Emails = emails
		for _, d := range dead {
			f.DeadLetters = append(f.DeadLetters, reconcile.DeadLetter{Topic: d.Topic, Partition: d.Partition, Offset: d.Offset, At: d.At.UTC()})
		}
		return read, err
	})
}

// ListedUntil is how far the provider's records were read (ok false: not yet).
func (s *Store) ListedUntil(ctx context.Context) (until time.Time, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT listed_until FROM provider_listed`).Scan(&until)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	return until.UTC(), err == nil, err
}

// ProviderCharges records the provider's charges, read up to until (zero: not a listing,
// which leaves how far the list was read alone), in one transaction:
// each becomes its order's provider charge (an order no service told of yet gets a row of
// its own) and joins its timeline; an order whose provider charge is news is looked at
// again.
func (s *Store) ProviderCharges(ctx context.Context, charges []provider.Charge, until time.Time) error {
	// One statement for them all: an order's row takes its last charge listed (as one
	// update after another would leave it), the timeline every charge.
	n := len(charges)
	orders, ids, ats := make([]string, n), make([]string, n), make([]time.Time, n)
	last := make([]bool, n)
	seen := make(map[string]bool, n)
	for i := n - 1; i >= 0; i-- {
		c := charges[i]
		orders[i], ids[i], ats[i] = c.OrderID, c.ChargeID, c.At
		k := strings.ToLower(c.OrderID)
		last[i], seen[k] = !seen[k], true
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if n > 0 {
			if _, err := tx.Exec(ctx, `WITH c AS (
					SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bool[]) AS c(order_id, charge_id, at, last)
				),
				facts AS (
					INSERT INTO order_facts (order_id, provider_charge, provider_charged_at)
					SELECT order_id, charge_id, at FROM c WHERE last ORDER BY order_id
					ON CONFLICT (order_id) DO UPDATE SET provider_charge = EXCLUDED.provider_charge,
						provider_charged_at = EXCLUDED.provider_charged_at, settled = false,
						provider_asked = coalesce(order_facts.provider_asked OR order_facts.charge_id = EXCLUDED.provider_charge, false)
					WHERE order_facts.provider_charge IS DISTINCT FROM EXCLUDED.provider_charge)
				INSERT INTO timeline (event_id, order_id, at, source, event_type, summary)
				SELECT 'provider/' || charge_id, order_id, at, 'payment-provider', 'provider.charge', json_build_object('charge_id', charge_id)
				FROM c
				ON CONFLICT (event_id) DO NOTHING`, orders, ids, ats, last); err != nil {
				return fmt.Errorf("%d provider charges: %w", n, err)
			}
		}
		if until.IsZero() {
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO provider_listed (listed_until) VALUES ($1)
			ON CONFLICT (only_row) DO UPDATE SET listed_until = greatest(provider_listed.listed_until, $1)`, until)
		return err
	})
}

// Unasked is a paid order whose charge the provider was not asked about yet.
type Unasked struct{ OrderID, ChargeID string }

// Unasked returns up to limit paid orders, paid before before, whose charge the
// provider's list has not shown: to be looked up.
func (s *Store) Unasked(ctx context.Context, before time.Time, limit int) ([]Unasked, error) {
	rows, _ := s.pool.Query(ctx, `SELECT order_id::text, coalesce(charge_id, '') FROM order_facts
		WHERE NOT provider_asked AND payment IN ('COMPLETED', 'REFUNDED') AND payment_at < $1
		ORDER BY payment_at LIMIT $2`, before, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (u Unasked, err error) {
		err = r.Scan(&u.OrderID, &u.ChargeID)
		return u, err
	})
}

// Asked records what the provider answered about u's charge: its charge (found), or
// none; an answer about a charge the order no longer names is dropped.
func (s *Store) Asked(ctx context.Context, u Unasked, c provider.Charge, found bool) error {
	if found {
		if err := s.ProviderCharges(ctx, []provider.Charge{c}, time.Time{}); err != nil {
			return err
		}
	}
	_, err := s.pool.Exec(ctx, `UPDATE order_facts SET provider_asked = true, settled = false
		WHERE order_id = $1 AND charge_id IS NOT DISTINCT FROM nullif($2, '')`, u.OrderID, u.ChargeID)
	return err
}

// DeadLetter is a record about an order in a dead-letter topic.
type DeadLetter struct {
	OrderID string
	reconcile.DeadLetter
}

// DeadLetters replaces the dead letters held with those found now, in one transaction;
// an order whose dead letters changed (one came, one was replayed) is looked at again.
func (s *Store) DeadLetters(ctx context.Context, found []DeadLetter) error {
	type key struct {
		topic     string
		partition int32
		offset    int64
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT topic, partition, "offset", order_id::text FROM dead_letters`)
		held := map[key]string{}
		var k key
		var order string
		if _, err := pgx.ForEachRow(rows, []any{&k.topic, &k.partition, &k.offset, &order}, func() error {
			held[k] = order
			return nil
		}); err != nil {
			return err
		}
		var changed []string
		for _, d := range found {
			k := key{d.Topic, d.Partition, d.Offset}
			if _, ok := held[k]; ok {
				delete(held, k)
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO dead_letters (topic, partition, "offset", order_id, at) VALUES ($1, $2, $3, $4, $5)`,
				d.Topic, d.Partition, d.Offset, d.OrderID, d.At); err != nil {
				return err
			}
			changed = append(changed, d.OrderID)
		}
		for k, order := range held { // replayed, or gone with the topic's retention
			if _, err := tx.Exec(ctx, `DELETE FROM dead_letters WHERE topic = $1 AND partition = $2 AND "offset" = $3`,
				k.topic, k.partition, k.offset); err != nil {
				return err
			}
			changed = append(changed, order)
		}
		slices.Sort(changed)
		_, err := tx.Exec(ctx, `INSERT INTO order_facts (order_id) SELECT unnest($1::uuid[])
			ON CONFLICT (order_id) DO UPDATE SET settled = false`, slices.Compact(changed))
		return err
	})
}

func at(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// Found records what a sweep found for orders: their open mismatches replace those held,
// and the orders read as settled are settled — unless a fact about them came since they
// were read (their row is then another version, stays unsettled, and the next sweep looks).
func (s *Store) Found(ctx context.Context, orders []string, ms []reconcile.Mismatch, settled []Read) error {
	ids, seen := make([]string, len(settled)), make([]string, len(settled))
	for i, r := range settled {
		ids[i], seen[i] = r.OrderID, r.Row
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM mismatches WHERE order_id = ANY($1::uuid[])`, orders); err != nil {
			return err
		}
		for _, m := range ms {
			facts, _ := json.Marshal(m.Facts)
			if _, err := tx.Exec(ctx, `INSERT INTO mismatches (kind, order_id, since, facts) VALUES ($1, $2, $3, $4)`,
				m.Kind, m.OrderID, m.Since, facts); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE order_facts f SET settled = true FROM unnest($1::uuid[], $2::text[]) AS r(id, seen)
			WHERE f.order_id = r.id AND f.xmin::text = r.seen`, ids, seen)
		return err
	})
}

// Mismatch is an open mismatch as stored.
type Mismatch = reconcile.Mismatch

// Mismatches returns up to limit open mismatches of kind (empty: any), in (kind, order)
// order, after the keyset cursor (kind, orderID) (empty: from the first).
func (s *Store) Mismatches(ctx context.Context, kind string, afterKind, afterOrder string, limit int) ([]Mismatch, error) {
	rows, _ := s.pool.Query(ctx, `SELECT kind, order_id::text, since, facts FROM mismatches
		WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR (kind, order_id) > ($2, nullif($3, '')::uuid))
		ORDER BY kind, order_id LIMIT $4`, kind, afterKind, afterOrder, limit)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mismatch, error) {
		var m Mismatch
		var kind string
		err := r.Scan(&kind, &m.OrderID, &m.Since, &m.Facts)
		m.Kind, m.Since = reconcile.Kind(kind), m.Since.UTC()
		return m, err
	})
}

// Open counts the open mismatches of each kind and says since when the oldest holds.
func (s *Store) Open(ctx context.Context) (map[reconcile.Kind]int, map[reconcile.Kind]time.Time, error) {
	counts, oldest := map[reconcile.Kind]int{}, map[reconcile.Kind]time.Time{}
	rows, _ := s.pool.Query(ctx, `SELECT kind, count(*), min(since) FROM mismatches GROUP BY kind`)
	defer rows.Close()
	for rows.Next() {
		var kind string
		var n int
		var since time.Time
		if err := rows.Scan(&kind, &n, &since); err != nil {
			return nil, nil, err
		}
		counts[reconcile.Kind(kind)], oldest[reconcile.Kind(kind)] = n, since
	}
	return counts, oldest, rows.Err()
}

// Said is one thing a service said about an order.
type Said struct {
	At        time.Time
	Source    string
	EventType string
	EventID   string
	Summary   map[string]any
}

// Timeline returns what every service said about the order, in time order.
func (s *Store) Timeline(ctx context.Context, orderID string) ([]Said, error) {
	rows, _ := s.pool.Query(ctx, `SELECT at, source, event_type, event_id, summary FROM timeline WHERE order_id = $1 ORDER BY at, event_id`, orderID)
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Said, error) {
		var x Said
		err := r.Scan(&x.At, &x.Source, &x.EventType, &x.EventID, &x.Summary)
		x.At = x.At.UTC()
		return x, err
	})
}
