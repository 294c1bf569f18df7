package consume_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/migrations"
	"github.com/orderflow/notification-service/internal/consume"
	"github.com/orderflow/notification-service/internal/mail"
	"github.com/orderflow/notification-service/internal/postgres"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// A cancelled order is never announced as confirmed, even when its payment completed
// before payment-service heard of the cancellation: the customer hears "cancelled", then
// "cancelled and refunded". An order that was not cancelled is confirmed as usual.
func TestCancelledOrderIsNeverConfirmed(t *testing.T) {
	ctx := context.Background()
	pool := testenv.Pool(t)
	if err := migrations.UpPool(ctx, pool, migrations.Notifications); err != nil {
		t.Fatal(err)
	}
	server := testenv.SMTP(t)
	handlers := consume.Handlers(postgres.NewStore(pool, 0), mail.SMTP{Addr: server.Addr}, "orderflow <orders@orderflow.local>")
	deliver := func(topic string, ev events.Event) {
		t.Helper()
		env, err := events.New(ev, events.Meta{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		msg := consumer.Message{Envelope: env, Event: ev, Topic: topic, Log: slog.New(slog.NewJSONHandler(t.Output(), nil))}
		apply, err := handlers[topic](ctx, msg)
		if err == nil {
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := apply.Run(ctx, tx); return err })
		}
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
	}
	const customer = issuer.Customer
	now := time.Now()
	completed := func(id, email string) events.PaymentCompleted {
		return events.PaymentCompleted{OrderID: id, PaymentID: "p-" + id, ChargeID: "ch_1", CustomerID: customer,
			CustomerEmail: email, AmountCents: 3998, Currency: "EUR", CompletedAt: now}
	}

	cancelledID, keptID := events.NewID(now), events.NewID(now.Add(time.Millisecond))
	deliver(events.TopicOrderCancelled, events.OrderCancelled{OrderID: cancelledID, CustomerID: customer,
		CustomerEmail: "cancel@example.com", TotalCents: 3998, Currency: "EUR", CancelledAt: now})
	deliver(events.TopicPaymentCompleted, completed(cancelledID, "cancel@example.com"))
	deliver(events.TopicPaymentRefunded, events.PaymentRefunded{OrderID: cancelledID, PaymentID: "p-" + cancelledID,
		ChargeID: "ch_1", RefundID: "re_1", CustomerID: customer, CustomerEmail: "cancel@example.com",
		AmountCents: 3998, Currency: "EUR", RefundedAt: now})
	deliver(events.TopicPaymentCompleted, completed(keptID, "kept@example.com"))

	var subjects []string
	for _, e := range server.To("cancel@example.com") {
		subjects = append(subjects, e.Subject)
	}
	short := cancelledID[len(cancelledID)-8:]
	want := []string{"Your order " + short + " is cancelled", "Your order " + short + " is cancelled and refunded"}
	if len(subjects) != 2 || subjects[0] != want[0] || subjects[1] != want[1] {
		t.Errorf("cancelled order's emails = %q, want %q", subjects, want)
	}
	ns, err := postgres.NewStore(pool, 0).ByOrder(ctx, cancelledID)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, n := range ns {
		kinds = append(kinds, string(n.Kind)+":"+n.Status)
	}
	if got := strings.Join(kinds, ","); got != "order_cancelled:SENT,order_confirmed:SUPPRESSED,payment_refunded:SENT" {
		t.Errorf("notifications = %s, want the confirmation recorded as suppressed", got)
	}
	if kept := server.To("kept@example.com"); len(kept) != 1 || kept[0].Subject != "Your order "+keptID[len(keptID)-8:]+" is confirmed" {
		t.Errorf("other order's emails = %+v, want one confirmation", kept)
	}
	// Each email sent says so on notification.sent, with the recipient's domain alone;
	// the one suppressed does not.
	rows, _ := pool.Query(ctx, `SELECT topic, convert_from(payload, 'UTF8')::jsonb->>'kind', convert_from(payload, 'UTF8')::jsonb->>'recipient_domain' FROM outbox WHERE key = $1 ORDER BY id`, cancelledID)
	sent, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var topic, kind, domain string
		err := r.Scan(&topic, &kind, &domain)
		return topic + " " + kind + " " + domain, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"notification.sent order_cancelled example.com", "notification.sent payment_refunded example.com"}; !slices.Equal(sent, want) {
		t.Errorf("outbox = %q, want %q", sent, want)
	}
}
