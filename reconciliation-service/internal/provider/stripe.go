package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// StripeConfig is how to reach Stripe.
type StripeConfig struct {
	APIKey string // a secret key (sk_test_… for test mode)
	// BaseURL is the API's address: empty for Stripe itself, or a stand-in's
	// (localstripe).
	BaseURL string
	// Timeout bounds each call to Stripe; default 10 s.
	Timeout time.Duration
}

// Stripe is Records on Stripe's PaymentIntents: a charge is a succeeded intent that
// payment-service created for an order (its metadata[order_id]), under the intent's id,
// which is what payment.completed carries as charge_id.
type Stripe struct {
	client *stripe.Client
}

var _ Records = (*Stripe)(nil)

// NewStripe returns Stripe's records, read through the official client as
// payment-service charges through it. The client never retries by itself: a failed
// listing fails the pass, and the next pass asks again.
func NewStripe(cfg StripeConfig) *Stripe {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Timeout: timeout},
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	if cfg.BaseURL != "" {
		bc.URL = stripe.String(cfg.BaseURL)
	}
	return &Stripe{client: stripe.NewClient(cfg.APIKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))}
}

// Charges lists the intents created in [from, to), every page of them. Stripe's created
// is in whole seconds, so the window is widened to them — from down, to up — and an
// intent created in the window's first or last second is never missed; the caller
// upserts, so what overlapping windows both report is harmless.
func (s *Stripe) Charges(ctx context.Context, from, to time.Time) ([]Charge, error) {
	gte, lt := from.Unix(), to.Unix()
	if to.Nanosecond() != 0 {
		lt++
	}
	params := &stripe.PaymentIntentListParams{CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: gte, LesserThan: lt}}
	params.Limit = stripe.Int64(100) // Stripe's largest page
	var charges []Charge
	for pi, err := range s.client.V1PaymentIntents.List(ctx, params) {
		if err != nil {
			return nil, fmt.Errorf("stripe: list payment intents: %w", err)
		}
		// The window is checked here as well: a stand-in may list beyond it.
		if pi.Created < gte || pi.Created >= lt {
			continue
		}
		if c, ok := charged(pi); ok {
			charges = append(charges, c)
		}
	}
	return charges, nil
}

// Lookup retrieves the intent payment.completed named: a charge of the order's if it
// succeeded and was made for it.
func (s *Stripe) Lookup(ctx context.Context, orderID, chargeID string) (Charge, bool, error) {
	if !strings.HasPrefix(chargeID, "pi_") {
		return Charge{}, false, nil // not an intent's id: Stripe holds no such charge
	}
	pi, err := s.client.V1PaymentIntents.Retrieve(ctx, chargeID, nil)
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound {
		return Charge{}, false, nil
	}
	if err != nil {
		return Charge{}, false, fmt.Errorf("stripe: retrieve payment intent %s: %w", chargeID, err)
	}
	c, ok := charged(pi)
	return c, ok && c.OrderID == strings.ToLower(orderID), nil
}

// charged is the charge a succeeded intent made for an order.
func charged(pi *stripe.PaymentIntent) (Charge, bool) {
	if pi.Status != stripe.PaymentIntentStatusSucceeded {
		return Charge{}, false
	}
	return normalize(Charge{OrderID: pi.Metadata["order_id"], ChargeID: pi.ID, At: time.Unix(pi.Created, 0).UTC()})
}
