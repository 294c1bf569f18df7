// Package postgres stores sent notifications in the notifications database.
package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/coalesce"
	"github.com/orderflow/notification-service/internal/notification"
)

// Store is the notifications database.
type Store struct {
	pool  *pgxpool.Pool
	kinds *coalesce.Batcher[string, []notification.Kind]
}

// NewStore returns a store on pool. A look-up of the kinds an order has had waits up to
// linger for others to share its statement (the consumer group's CONSUMER_LINGER: the
// records it looks up for may wait).
func NewStore(pool *pgxpool.Pool, linger time.Duration) *Store {
	s := &Store{pool: pool}
	s.kinds = coalesce.New(s.kindsAll, coalesce.Options{Max: maxKinds, Linger: linger})
	return s
}

// maxKinds is the most orders one read of their kinds asks about.
const maxKinds = 256

// Kinds returns the kinds of notification the order has had. The orders asked about at
// the same time are read together, in one statement.
func (s *Store) Kinds(ctx context.Context, orderID string) ([]notification.Kind, error) {
	kinds, err := s.kinds.Do(ctx, orderID)
	if err != nil {
		return nil, fmt.Errorf("notifications of order %s: %w", orderID, err)
	}
	return kinds, nil
}

// kindsAll reads the kinds of notification each of orders has had.
func (s *Store) kindsAll(ctx context.Context, orders []string) ([][]notification.Kind, error) {
	rows, _ := s.pool.Query(ctx, `SELECT order_id::text, kind FROM notifications WHERE order_id = ANY($1::uuid[])`, orders)
	byOrder := map[string][]notification.Kind{}
	var id string
	var kind notification.Kind
	if _, err := pgx.ForEachRow(rows, []any{&id, &kind}, func() error {
		byOrder[id] = append(byOrder[id], kind)
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([][]notification.Kind, len(orders))
	for i, o := range orders {
		out[i] = byOrder[strings.ToLower(o)]
	}
	return out, nil
}

// RecordStatement is the statement that records notifications ns (SENT or SUPPRESSED),
// except those whose order already has a notification of their kind, its parameters
// numbered from first on, and their values. It returns the tag of each notification it
// recorded: its index in ns. The unique (order_id, kind) constraint makes this hold under
// any concurrency: a second record waits for the first and then finds it. With fresh,
// the name of a relation of the caller's statement with an int column tag, it records
// only the notifications whose index fresh holds (consumer.NewStatementSet).
func RecordStatement(ns []notification.Notification, first int, fresh string) (string, []any) {
	n := len(ns)
	ids, orders, kinds, recipients, subjects, bodies := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	messageIDs, statuses, causes := make([]string, n), make([]string, n), make([]string, n)
	created, sent := make([]time.Time, n), make([]*time.Time, n)
	for i, x := range ns {
		ids[i], orders[i], kinds[i], recipients[i], subjects[i], bodies[i] = x.ID, x.OrderID, string(x.Kind), x.Recipient, x.Subject, x.Body
		messageIDs[i], statuses[i], causes[i], created[i], sent[i] = x.MessageID, x.Status, x.CauseEventID, x.CreatedAt, sentAt(x)
	}
	p := make([]any, 11)
	for i := range p {
		p[i] = first + i
	}
	guard := ""
	if fresh != "" {
		guard = "WHERE (n.i - 1)::int IN (SELECT tag FROM " + fresh + ")"
	}
	return fmt.Sprintf(`
		INSERT INTO notifications (id, order_id, kind, recipient, subject, body, message_id, status,
			cause_event_id, created_at, sent_at)
		SELECT n.id, n.order_id, n.kind, n.recipient, n.subject, n.body, n.message_id, n.status,
			n.cause_event_id, n.created_at, n.sent_at
		FROM unnest($%d::uuid[], $%d::uuid[], $%d::text[], $%d::text[], $%d::text[], $%d::text[], $%d::text[], $%d::text[],
			$%d::text[], $%d::timestamptz[], $%d::timestamptz[]) WITH ORDINALITY
			AS n(id, order_id, kind, recipient, subject, body, message_id, status, cause_event_id, created_at, sent_at, i)
		`, p...) + guard + fmt.Sprintf(`
		ORDER BY 2, 3
		ON CONFLICT (order_id, kind) DO NOTHING
		RETURNING (array_position($%d::uuid[], id) - 1)::int AS tag`, first),
		[]any{ids, orders, kinds, recipients, subjects, bodies, messageIDs, statuses, causes, created, sent}
}

func sentAt(n notification.Notification) *time.Time {
	if n.SentAt.IsZero() {
		return nil
	}
	return &n.SentAt
}

// ByOrder returns an order's notifications, oldest first.
func (s *Store) ByOrder(ctx context.Context, orderID string) ([]notification.Notification, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT id::text, order_id::text, kind, recipient, subject, body, message_id, status, cause_event_id, created_at, sent_at
		FROM notifications WHERE order_id = $1 ORDER BY created_at`, orderID)
	ns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (n notification.Notification, err error) {
		var sentAt *time.Time
		err = r.Scan(&n.ID, &n.OrderID, &n.Kind, &n.Recipient, &n.Subject, &n.Body, &n.MessageID, &n.Status,
			&n.CauseEventID, &n.CreatedAt, &sentAt)
		n.CreatedAt = n.CreatedAt.UTC()
		if sentAt != nil {
			n.SentAt = sentAt.UTC()
		}
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("notifications of order %s: %w", orderID, err)
	}
	return ns, nil
}
