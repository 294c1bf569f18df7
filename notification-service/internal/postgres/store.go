// Package postgres stores sent notifications in the notifications database.
package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/notification-service/internal/notification"
)

// Store is the notifications database.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Kinds returns the kinds of notification the order has had.
func (s *Store) Kinds(ctx context.Context, orderID string) ([]notification.Kind, error) {
	rows, _ := s.pool.Query(ctx, `SELECT kind FROM notifications WHERE order_id = $1`, orderID)
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[notification.Kind])
	if err != nil {
		return nil, fmt.Errorf("notifications of order %s: %w", orderID, err)
	}
	return kinds, nil
}

// Record writes n (SENT or SUPPRESSED), in tx, unless the order already has a notification
// of its kind; it reports whether n is new. The unique (order_id, kind) constraint makes
// this hold under any concurrency: a second record waits for the first and then finds it.
func (s *Store) Record(ctx context.Context, tx pgx.Tx, n notification.Notification) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO notifications (id, order_id, kind, recipient, subject, body, message_id, status,
			cause_event_id, created_at, sent_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (order_id, kind) DO NOTHING`,
		n.ID, n.OrderID, n.Kind, n.Recipient, n.Subject, n.Body, n.MessageID, n.Status, n.CauseEventID, n.CreatedAt, sentAt(n))
	if err != nil {
		return false, fmt.Errorf("record notification %s of order %s: %w", n.Kind, n.OrderID, err)
	}
	return tag.RowsAffected() == 1, nil
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
