package notification_test

import (
	"strings"
	"testing"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/notification-service/internal/notification"
)

func TestMoney(t *testing.T) {
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{4348, "EUR", "43.48 EUR"},
		{5, "USD", "0.05 USD"},
		{100, "GBP", "1.00 GBP"},
		{4348, "JPY", "4348 JPY"},
		{12345, "KWD", "12.345 KWD"},
	}
	for _, tt := range tests {
		if got := notification.Money(tt.minor, tt.currency); got != tt.want {
			t.Errorf("Money(%d, %s) = %q, want %q", tt.minor, tt.currency, got, tt.want)
		}
	}
}

func TestForPaymentOutcomes(t *testing.T) {
	const id = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	ok, found := notification.For(events.PaymentCompleted{OrderID: id, CustomerEmail: "ada@example.com", AmountCents: 4348, Currency: "EUR"})
	if !found || ok.Kind != notification.OrderConfirmed || ok.Recipient != "ada@example.com" ||
		!strings.Contains(ok.Body, "43.48 EUR") || ok.MessageID != "<"+id+".order_confirmed@orderflow.local>" {
		t.Errorf("confirmation = %+v", ok)
	}
	failed, found := notification.For(events.PaymentFailed{OrderID: id, CustomerEmail: "ada@example.com", AmountCents: 4348, Currency: "EUR", Reason: "insufficient_funds"})
	if !found || failed.Kind != notification.PaymentFailed || !strings.Contains(failed.Body, "insufficient_funds") ||
		failed.MessageID == ok.MessageID {
		t.Errorf("failure = %+v", failed)
	}
	if _, found := notification.For(events.OrderCreated{OrderID: id}); found {
		t.Error("order.created must not notify: the customer hears when payment is settled")
	}
}
