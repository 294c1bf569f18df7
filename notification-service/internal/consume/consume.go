// Package consume emails customers about payment outcomes and cancellations.
package consume

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/notification-service/internal/mail"
	"github.com/orderflow/notification-service/internal/notification"
	"github.com/orderflow/notification-service/internal/postgres"
)

// Group is notification-service's consumer group, independent of order-service's.
const Group = "notification-service"

// Sender delivers an email.
type Sender interface {
	Send(ctx context.Context, msg mail.Message) error
}

// Handlers returns the handler of each topic notification-service consumes.
func Handlers(store *postgres.Store, sender Sender, from string) map[string]consumer.Handler {
	n := notifier{store: store, sender: sender, from: from, now: time.Now}
	return map[string]consumer.Handler{
		events.TopicPaymentCompleted: n.handle,
		events.TopicPaymentFailed:    n.handle,
		events.TopicOrderCancelled:   n.handle,
		events.TopicPaymentRefunded:  n.handle,
	}
}

type notifier struct {
	store  *postgres.Store
	sender Sender
	from   string
	now    func() time.Time
}

// handle decides the notification an event calls for and sends it outside any
// transaction; the returned Apply records it. An order already notified of this kind is
// left alone. If the record is lost after a send (a crash, a failed commit), the retry
// sends again with the same Message-ID, which mail clients show once; the unique
// (order, kind) row keeps one record of it.
func (h notifier) handle(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
	n, ok := notification.For(msg.Event)
	if !ok {
		return nil, consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if _, err := uuid.Parse(n.OrderID); err != nil {
		return nil, consumer.Poison(fmt.Errorf("order id %q is not a UUID", n.OrderID))
	}
	has, err := h.store.Kinds(ctx, n.OrderID)
	if err != nil {
		return nil, err
	}
	if slices.Contains(has, n.Kind) {
		msg.Log.Info("customer already notified; nothing to send", "kind", n.Kind)
		return nil, nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := h.now().UTC()
	n.ID, n.CauseEventID, n.CreatedAt, n.SentAt, n.Status = id.String(), msg.ID, now, now, notification.Sent
	if by, ok := n.Kind.SuppressedBy(); ok && slices.Contains(has, by) {
		n.Status, n.SentAt = notification.Suppressed, time.Time{}
	}
	if n.Status == notification.Sent {
		err = h.sender.Send(ctx, mail.Message{
			From: h.from, To: n.Recipient, Subject: n.Subject, Body: n.Body, MessageID: n.MessageID, Date: now,
		})
		if err != nil {
			return nil, fmt.Errorf("send %s email: %w", n.Kind, err)
		}
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		fresh, err := h.store.Record(ctx, tx, n)
		switch {
		case err != nil:
			return err
		case !fresh:
			msg.Log.Info("customer already notified", "kind", n.Kind)
		case n.Status == notification.Suppressed:
			msg.Log.Info("notification suppressed: the order was cancelled", "kind", n.Kind)
		default:
			msg.Log.Info("customer notified", "kind", n.Kind, "message_id", n.MessageID)
		}
		return nil
	}, nil
}
