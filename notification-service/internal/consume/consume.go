// Package consume emails customers about payment outcomes and cancellations.
package consume

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/tracing"
	"github.com/orderflow/notification-service/internal/mail"
	"github.com/orderflow/notification-service/internal/notification"
	"github.com/orderflow/notification-service/internal/postgres"
)

// Sender delivers an email.
type Sender interface {
	Send(ctx context.Context, msg mail.Message) error
}

// Handlers returns the handler of each topic notification-service consumes.
func Handlers(store *postgres.Store, sender Sender, from string) map[string]consumer.Handler {
	n := notifier{store: store, sender: sender, from: from, now: time.Now,
		records: consumer.NewStatementSet(recordStatement, record.emits, recorded)}
	return map[string]consumer.Handler{
		events.TopicPaymentCompleted: n.handle,
		events.TopicPaymentFailed:    n.handle,
		events.TopicOrderCancelled:   n.handle,
		events.TopicPaymentRefunded:  n.handle,
	}
}

type notifier struct {
	store   *postgres.Store
	sender  Sender
	from    string
	now     func() time.Time
	records consumer.Set
}

// handle decides the notification an event calls for and sends it outside any
// transaction; the returned Apply records it. An order already notified of this kind is
// left alone. If the record is lost after a send (a crash, a failed commit), the retry
// sends again with the same Message-ID, which mail clients show once; the unique
// (order, kind) row keeps one record of it.
func (h notifier) handle(ctx context.Context, msg consumer.Message) (consumer.Apply, error) {
	n, ok := notification.For(msg.Event)
	if !ok {
		return consumer.Apply{}, consumer.Poison(fmt.Errorf("unexpected event type %s on %s", msg.Type, msg.Topic))
	}
	if !events.IsUUID(n.OrderID) {
		return consumer.Apply{}, consumer.Poison(fmt.Errorf("order id %q is not a UUID", n.OrderID))
	}
	has, err := h.store.Kinds(ctx, n.OrderID)
	if err != nil {
		return consumer.Apply{}, err
	}
	if slices.Contains(has, n.Kind) {
		msg.Log.Info("customer already notified; nothing to send", "kind", n.Kind)
		return consumer.Apply{}, nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return consumer.Apply{}, err
	}
	now := h.now().UTC()
	n.ID, n.CauseEventID, n.CreatedAt, n.SentAt, n.Status = id.String(), msg.ID, now, now, notification.Sent
	if by, ok := n.Kind.SuppressedBy(); ok && slices.Contains(has, by) {
		n.Status, n.SentAt = notification.Suppressed, time.Time{}
	}
	r := record{n: n, log: msg.Log}
	if n.Status == notification.Sent {
		env, err := events.New(n.SentEvent(), msg.Meta(), n.SentAt)
		if err != nil {
			return consumer.Apply{}, consumer.Poison(err)
		}
		r.sent = &env
		sctx, span := tracing.Start(ctx, "send email", trace.SpanKindClient, tracing.OrderID(n.OrderID),
			attribute.String("kind", string(n.Kind)), attribute.String("message_id", n.MessageID))
		err = h.sender.Send(sctx, mail.Message{
			From: h.from, To: n.Recipient, Subject: n.Subject, Body: n.Body, MessageID: n.MessageID, Date: now,
		})
		tracing.End(span, err)
		if err != nil {
			return consumer.Apply{}, fmt.Errorf("send %s email: %w", n.Kind, err)
		}
	}
	return consumer.Row(h.records, r), nil
}

// record is a notification to record, with its notification.sent when an email went
// out (nil when it was suppressed). A batch's are recorded in one statement with their
// inbox rows and events (consumer.NewStatementSet).
type record struct {
	n    notification.Notification
	sent *events.Envelope
	log  *slog.Logger
}

func recordStatement(rows []record, first int, fresh string) (string, []any) {
	ns := make([]notification.Notification, len(rows))
	for i, r := range rows {
		ns[i] = r.n
	}
	return postgres.RecordStatement(ns, first, fresh)
}

func (r record) emits() []events.Envelope {
	if r.sent == nil {
		return nil
	}
	return []events.Envelope{*r.sent}
}

// recorded logs each notification's outcome once its statement committed.
func recorded(rows []record, recorded []bool) {
	for i, r := range rows {
		switch n := r.n; {
		case !recorded[i]: // the inbox had its event, or the order a notification of its kind
			r.log.Info("notification not recorded: its event was seen before, or the customer was notified already", "kind", n.Kind)
		case n.Status == notification.Suppressed:
			r.log.Info("notification suppressed: the order was cancelled", "kind", n.Kind)
		default:
			r.log.Info("customer notified", "kind", n.Kind, "message_id", n.MessageID)
		}
	}
}
