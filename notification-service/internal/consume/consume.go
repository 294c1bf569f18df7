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

// handle records the notification and sends it inside the consumer's transaction: if the
// send fails, the record rolls back and the event is retried; if the commit fails after a
// send, the retry sends again with the same Message-ID. One email per order and kind.
func (h notifier) handle(ctx context.Context, tx pgx.Tx, msg consumer.Message) error {
	n, ok := notification.For(msg.Event)
	if !ok {
		return consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if _, err := uuid.Parse(n.OrderID); err != nil {
		return consumer.Poison(fmt.Errorf("order id %q is not a UUID", n.OrderID))
	}
	has, err := h.store.Lock(ctx, tx, n.OrderID)
	if err != nil {
		return err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	now := h.now().UTC()
	n.ID, n.CauseEventID, n.CreatedAt, n.SentAt, n.Status = id.String(), msg.ID, now, now, notification.Sent
	if by, ok := n.Kind.SuppressedBy(); ok && slices.Contains(has, by) {
		n.Status, n.SentAt = notification.Suppressed, time.Time{}
	}
	fresh, err := h.store.Claim(ctx, tx, n)
	if err != nil {
		return err
	}
	if !fresh {
		msg.Log.Info("customer already notified; nothing to send", "kind", n.Kind)
		return nil
	}
	if n.Status == notification.Suppressed {
		msg.Log.Info("notification suppressed: the order was cancelled", "kind", n.Kind)
		return nil
	}
	err = h.sender.Send(ctx, mail.Message{
		From: h.from, To: n.Recipient, Subject: n.Subject, Body: n.Body, MessageID: n.MessageID, Date: now,
	})
	if err != nil {
		return fmt.Errorf("send %s email: %w", n.Kind, err)
	}
	msg.Log.Info("customer notified", "kind", n.Kind, "message_id", n.MessageID)
	return nil
}
