// Package provider reads the payment provider's own records: the charges it made, each
// for an order, as the provider lists them — the simulator's ledger, or Stripe's list API.
// Reconciliation holds them against what payment-service said, so a charge no payment
// tells of (an answer lost after the provider charged) and a payment.completed the
// provider holds no charge for are both found.
package provider

import (
	"context"
	"strings"
	"time"

	"github.com/orderflow/common-events/events"
)

// Charge is one successful charge in the provider's records.
type Charge struct {
	OrderID  string // the order it was made for (the idempotency key, or Stripe's metadata[order_id])
	ChargeID string // the provider's id, as payment.completed carries it
	At       time.Time
}

// Records lists the provider's successful charges.
type Records interface {
	// Charges returns every charge the provider made in [from, to) for an order that has
	// succeeded by now, in no particular order. A charge made for no order (not
	// orderflow's) is left out.
	Charges(ctx context.Context, from, to time.Time) ([]Charge, error)
	// Lookup returns the provider's successful charge for the order, asked by the id
	// payment.completed gave it (chargeID), if it holds one: a charge that succeeded well
	// after it was made (3-D Secure, a retried confirmation) is no longer in the window
	// Charges was asked for.
	Lookup(ctx context.Context, orderID, chargeID string) (Charge, bool, error)
}

// normalize is c with its order id as orderflow writes it (lower case), or false for a
// charge made for no order.
func normalize(c Charge) (Charge, bool) {
	c.OrderID = strings.ToLower(c.OrderID)
	return c, events.IsUUID(c.OrderID)
}
