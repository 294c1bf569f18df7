// Package stripepay is payment.Provider on Stripe's PaymentIntents API, through the
// official client (stripe-go).
//
// A charge is two idempotent steps: the PaymentIntent is created (unconfirmed), its id
// recorded in the adapter's own table, then it is confirmed off-session. Every mutating
// call carries an Idempotency-Key derived from the order id, so a retry or a redelivery
// gets Stripe's first answer back; and since nothing is confirmed before its intent is
// recorded, Lookup finds what Stripe holds by that id — never by the Search API, which
// lags by up to a minute — and an order with no intent recorded was never charged.
package stripepay

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v82"

	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/payment"
)

//go:embed schema/*.sql
var schemaFiles embed.FS

// Migrate makes sure of the adapter's table of intents in the database of pool (its
// versions in stripepay_db_version). Call it before New.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrations.UpOwn(ctx, pool, schemaFiles, "schema", "stripepay_db_version")
}

// Config is how to reach Stripe.
type Config struct {
	APIKey string // a secret key (sk_test_… for test mode)
	// BaseURL is the API's address: empty for Stripe itself, or a stand-in's
	// (stripe-mock, localstripe).
	BaseURL string
	// Timeout bounds each call to Stripe; default 10 s.
	Timeout time.Duration
	// HTTPClient, when set, makes the calls (its Timeout then is the bound).
	HTTPClient *http.Client
}

// Provider charges and refunds through Stripe.
type Provider struct {
	client *stripe.Client
	pool   *pgxpool.Pool
}

var _ payment.Provider = (*Provider)(nil)

// New returns the provider: its intents are recorded in pool's database (Migrate).
// The client never retries by itself: a failure is payment.ErrTransient, and the
// consumer's runner retries with its backoff, within the payment deadline.
func New(cfg Config, pool *pgxpool.Pool) *Provider {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: timeout}
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        hc,
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	if cfg.BaseURL != "" {
		bc.URL = stripe.String(cfg.BaseURL)
	}
	return &Provider{client: stripe.NewClient(cfg.APIKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc))), pool: pool}
}

// PaymentMethods maps the simulator's test tokens to Stripe's test PaymentMethods, so the
// same scripts and scenarios run on either provider. Any other value is passed as it is
// (a pm_… of the customer's).
var PaymentMethods = map[string]string{
	"tok_visa":                            "pm_card_visa",
	"tok_mastercard":                      "pm_card_mastercard",
	"tok_chargeDeclined":                  "pm_card_chargeDeclined",
	"tok_chargeDeclinedInsufficientFunds": "pm_card_chargeDeclinedInsufficientFunds",
}

func paymentMethod(token string) string {
	if pm, ok := PaymentMethods[token]; ok {
		return pm
	}
	return token
}

// The Idempotency-Keys of an order's calls: one per kind of call, each derived from the
// order id.
func createKey(key string) string  { return "orderflow-intent-" + key }
func confirmKey(key string) string { return "orderflow-confirm-" + key }
func refundKey(key string) string  { return "orderflow-refund-" + key }

// Charge creates the order's PaymentIntent, or takes the one recorded, and confirms it.
// A succeeded intent is a completed charge (its ID the intent's); a card error is a
// decline with Stripe's decline code.
func (p *Provider) Charge(ctx context.Context, req payment.ChargeRequest) (payment.Charge, error) {
	id, err := p.recorded(ctx, req.IdempotencyKey)
	if err != nil {
		return payment.Charge{}, err
	}
	if id == "" {
		params := &stripe.PaymentIntentCreateParams{
			Amount:             stripe.Int64(req.AmountCents),
			Currency:           stripe.String(strings.ToLower(req.Currency)),
			PaymentMethod:      stripe.String(paymentMethod(req.PaymentMethod)),
			PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
			Metadata:           map[string]string{"order_id": req.IdempotencyKey},
		}
		params.SetIdempotencyKey(createKey(req.IdempotencyKey))
		pi, err := p.client.V1PaymentIntents.Create(ctx, params)
		if err != nil {
			return outcome(nil, err)
		}
		if id, err = p.record(ctx, req.IdempotencyKey, pi.ID); err != nil {
			return payment.Charge{}, err
		}
	}
	params := &stripe.PaymentIntentConfirmParams{OffSession: stripe.Bool(true)}
	params.SetIdempotencyKey(confirmKey(req.IdempotencyKey))
	pi, err := p.client.V1PaymentIntents.Confirm(ctx, id, params)
	return outcome(pi, err)
}

// Refund refunds the order's intent (the charge's ID) in full.
func (p *Provider) Refund(ctx context.Context, req payment.RefundRequest) (payment.Refund, error) {
	params := &stripe.RefundCreateParams{PaymentIntent: stripe.String(req.ChargeID), Amount: stripe.Int64(req.AmountCents)}
	params.SetIdempotencyKey(refundKey(req.IdempotencyKey))
	r, err := p.client.V1Refunds.Create(ctx, params)
	var se *stripe.Error
	switch {
	case errors.As(err, &se) && (se.Code == stripe.ErrorCodeChargeAlreadyRefunded || se.Code == stripe.ErrorCodeResourceMissing || se.Type == stripe.ErrorTypeInvalidRequest):
		return payment.Refund{}, fmt.Errorf("%w: %s", payment.ErrNotRefundable, message(se))
	case err != nil:
		return payment.Refund{}, failure(err)
	}
	return payment.Refund{ID: r.ID}, nil
}

// Lookup returns what Stripe holds for the order: its recorded intent as it stands, or
// none when no intent was recorded (then none was ever confirmed).
func (p *Provider) Lookup(ctx context.Context, key string) (payment.Charge, bool, error) {
	id, err := p.recorded(ctx, key)
	if err != nil || id == "" {
		return payment.Charge{}, false, err
	}
	pi, err := p.client.V1PaymentIntents.Retrieve(ctx, id, nil)
	if err != nil {
		return payment.Charge{}, false, failure(err)
	}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		return payment.Charge{ID: pi.ID, Succeeded: true}, true, nil
	case stripe.PaymentIntentStatusRequiresPaymentMethod, stripe.PaymentIntentStatusRequiresConfirmation, stripe.PaymentIntentStatusCanceled:
		// Created, and not (or no longer) charging: nothing was charged.
		return payment.Charge{}, false, nil
	}
	return payment.Charge{}, false, fmt.Errorf("%w: the order's PaymentIntent %s is %s", payment.ErrTransient, pi.ID, pi.Status)
}

// outcome maps Stripe's answer to a confirm (or the create before it).
func outcome(pi *stripe.PaymentIntent, err error) (payment.Charge, error) {
	var se *stripe.Error
	switch {
	case errors.As(err, &se) && (se.Type == stripe.ErrorTypeCard || se.DeclineCode != "" || se.Code == stripe.ErrorCodeCardDeclined):
		// A decline is an answer, whatever the error's type says: Stripe gives card_error,
		// a stand-in (localstripe) invalid_request_error with the code card_declined.
		return payment.Charge{ID: intentOf(se), DeclineCode: declineCode(se)}, nil
	case err != nil:
		return payment.Charge{}, failure(err)
	}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		return payment.Charge{ID: pi.ID, Succeeded: true}, nil
	case stripe.PaymentIntentStatusRequiresPaymentMethod:
		// Confirmed and refused: the last payment error says why.
		code := ""
		if pi.LastPaymentError != nil {
			code = declineCode(pi.LastPaymentError)
		}
		return payment.Charge{ID: pi.ID, DeclineCode: code}, nil
	}
	// requires_action (3-D Secure), processing: the outcome comes later. Until webhooks
	// settle it, the runner asks again, and past the deadline Lookup decides.
	return payment.Charge{}, fmt.Errorf("%w: PaymentIntent %s is %s", payment.ErrTransient, pi.ID, pi.Status)
}

// failure maps an error that is not a decline.
func failure(err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		switch {
		case se.Type == stripe.ErrorTypeIdempotency:
			return fmt.Errorf("%w: %s", payment.ErrIdempotencyMismatch, message(se))
		case se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500 || se.Type == stripe.ErrorTypeAPI:
			return fmt.Errorf("%w: %s", payment.ErrTransient, message(se))
		}
		// An invalid request is a bug here, not Stripe's trouble; retried, it fails the
		// same way until the payment deadline, when the lookup decides.
		return fmt.Errorf("%w: Stripe refused the request: %s", payment.ErrTransient, message(se))
	}
	return fmt.Errorf("%w: %v", payment.ErrTransient, err) // the connection: timed out, refused, cut
}

func intentOf(se *stripe.Error) string {
	if se.PaymentIntent != nil {
		return se.PaymentIntent.ID
	}
	return ""
}

// declineCode is why a card was declined: Stripe's decline code, else its error code.
func declineCode(se *stripe.Error) string {
	if se.DeclineCode != "" {
		return string(se.DeclineCode)
	}
	return string(se.Code)
}

func message(se *stripe.Error) string {
	return fmt.Sprintf("%s %s (%d): %s", se.Type, se.Code, se.HTTPStatusCode, se.Msg)
}

// recorded is the intent recorded for the order, or "".
func (p *Provider) recorded(ctx context.Context, key string) (string, error) {
	var id string
	err := p.pool.QueryRow(ctx, `SELECT intent_id FROM stripe_intents WHERE idempotency_key = $1`, key).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w: the intents table: %v", payment.ErrTransient, err)
	}
	return id, nil
}

// record keeps intent as the order's, unless one is recorded already (a concurrent
// attempt, which got the same intent through the same Idempotency-Key), and returns the
// order's.
func (p *Provider) record(ctx context.Context, key, intent string) (string, error) {
	var id string
	err := p.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO stripe_intents (idempotency_key, intent_id) VALUES ($1, $2)
			ON CONFLICT (idempotency_key) DO NOTHING RETURNING intent_id
		)
		SELECT intent_id FROM ins UNION ALL SELECT intent_id FROM stripe_intents WHERE idempotency_key = $1 LIMIT 1`,
		key, intent).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("%w: recording PaymentIntent %s: %v", payment.ErrTransient, intent, err)
	}
	return id, nil
}
