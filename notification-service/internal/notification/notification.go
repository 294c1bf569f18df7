// Package notification is what the customer is told, and when.
package notification

import (
	"fmt"
	"strings"
	"time"

	"github.com/orderflow/common-events/events"
)

// Kind of notification; an order gets at most one of each.
type Kind string

const (
	OrderConfirmed  Kind = "order_confirmed"
	PaymentFailed   Kind = "payment_failed"
	OrderCancelled  Kind = "order_cancelled"
	PaymentRefunded Kind = "payment_refunded"
)

// SuppressedBy names the kind whose presence makes a notification of this kind wrong to send:
// an order the customer cancelled is never announced as confirmed, even when the
// payment went through before the cancellation reached payment (it is then refunded).
func (k Kind) SuppressedBy() (Kind, bool) {
	if k == OrderConfirmed {
		return OrderCancelled, true
	}
	return "", false
}

// Status of a notification.
const (
	Sent = "SENT"
	// Suppressed: decided against, as SuppressedBy says; no email went out.
	Suppressed = "SUPPRESSED"
)

// Notification is one email to a customer about an order.
type Notification struct {
	ID           string
	OrderID      string
	Kind         Kind
	Recipient    string
	Subject      string
	Body         string
	MessageID    string
	Status       string // Sent or Suppressed
	CauseEventID string
	CreatedAt    time.Time
	SentAt       time.Time
}

// SentEvent is the notification.sent payload of n, sent: the recipient's domain only.
func (n Notification) SentEvent() events.NotificationSent {
	domain := n.Recipient[strings.LastIndexByte(n.Recipient, '@')+1:]
	return events.NotificationSent{OrderID: n.OrderID, Kind: string(n.Kind), MessageID: n.MessageID, RecipientDomain: domain, SentAt: n.SentAt}
}

// For returns the notification an event calls for, or false when it calls for none.
// The Message-ID depends only on the order and the kind, so an email sent again after a
// crash carries the same Message-ID and mail clients show it once.
func For(ev events.Event) (Notification, bool) {
	switch e := ev.(type) {
	case events.PaymentCompleted:
		return Notification{
			OrderID: e.OrderID, Kind: OrderConfirmed, Recipient: e.CustomerEmail, MessageID: messageID(e.OrderID, OrderConfirmed),
			Subject: fmt.Sprintf("Your order %s is confirmed", short(e.OrderID)),
			Body: fmt.Sprintf("Thank you for your order.\r\n\r\nWe received your payment of %s and your order %s is confirmed.\r\n",
				Money(e.AmountCents, e.Currency), e.OrderID),
		}, true
	case events.PaymentFailed:
		return Notification{
			OrderID: e.OrderID, Kind: PaymentFailed, Recipient: e.CustomerEmail, MessageID: messageID(e.OrderID, PaymentFailed),
			Subject: fmt.Sprintf("Payment for your order %s failed", short(e.OrderID)),
			Body: fmt.Sprintf("We could not charge %s for your order %s.\r\n\r\nReason: %s.\r\n\r\nNothing was charged. Please place the order again with another payment method.\r\n",
				Money(e.AmountCents, e.Currency), e.OrderID, reasonText(e.Reason)),
		}, true
	case events.OrderCancelled:
		return Notification{
			OrderID: e.OrderID, Kind: OrderCancelled, Recipient: e.CustomerEmail, MessageID: messageID(e.OrderID, OrderCancelled),
			Subject: fmt.Sprintf("Your order %s is cancelled", short(e.OrderID)),
			Body: fmt.Sprintf("Your order %s of %s is cancelled, as you asked.\r\n\r\nIf any payment went through, it will be refunded in full; we will write again when it is.\r\n",
				e.OrderID, Money(e.TotalCents, e.Currency)),
		}, true
	case events.PaymentRefunded:
		return Notification{
			OrderID: e.OrderID, Kind: PaymentRefunded, Recipient: e.CustomerEmail, MessageID: messageID(e.OrderID, PaymentRefunded),
			Subject: fmt.Sprintf("Your order %s is cancelled and refunded", short(e.OrderID)),
			Body: fmt.Sprintf("Your order %s is cancelled and refunded.\r\n\r\nWe paid back %s to your payment method (refund %s).\r\n",
				e.OrderID, Money(e.AmountCents, e.Currency), e.RefundID),
		}, true
	}
	return Notification{}, false
}

func messageID(orderID string, kind Kind) string {
	return fmt.Sprintf("<%s.%s@orderflow.local>", orderID, kind)
}

func short(orderID string) string {
	if len(orderID) > 8 {
		return orderID[len(orderID)-8:]
	}
	return orderID
}

func reasonText(code string) string {
	switch code {
	case events.ReasonCardDeclined:
		return "your card was declined (card_declined)"
	case events.ReasonInsufficientFunds:
		return "insufficient funds (insufficient_funds)"
	case events.ReasonInvalidPaymentMethod:
		return "the payment method is not valid (invalid_payment_method)"
	case events.ReasonProviderUnavailable:
		return "our payment provider could not be reached in time; you were not charged (provider_unavailable)"
	case events.ReasonProviderRejected:
		return "our payment provider could not take the payment; you were not charged (provider_rejected)"
	case events.ReasonDeclined:
		return "the payment was declined (declined)"
	}
	return code
}

// Money formats minor units with the currency's decimals: 4348 EUR → "43.48 EUR".
func Money(minor int64, currency string) string {
	decimals := 2
	switch currency {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF":
		decimals = 0
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		decimals = 3
	}
	if decimals == 0 {
		return fmt.Sprintf("%d %s", minor, currency)
	}
	s := fmt.Sprintf("%0*d", decimals+1, minor)
	return strings.Join([]string{s[:len(s)-decimals], s[len(s)-decimals:]}, ".") + " " + currency
}
