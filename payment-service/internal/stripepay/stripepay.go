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
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stripe/stripe-go/v82"

	"github.com/orderflow/common-events/events"
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
// same scripts and scenarios run on either provider: tok_chargeDeclined is the card that
// attaches and is declined when charged (pm_card_chargeCustomerFail), as the simulator's
// decline comes at the charge. Any other value is passed as it is (a pm_… of the
// customer's).
var PaymentMethods = map[string]string{
	"tok_visa":                            "pm_card_visa",
	"tok_mastercard":                      "pm_card_mastercard",
	"tok_chargeDeclined":                  "pm_card_chargeCustomerFail",
	"tok_chargeDeclinedInsufficientFunds": "pm_card_visa_chargeDeclinedInsufficientFunds",
}

func paymentMethod(token string) string {
	if pm, ok := PaymentMethods[token]; ok {
		return pm
	}
	return token
}

// The Idempotency-Keys of an order's calls: one per kind of call, each derived from the
// order id. (Cancelling an intent, in Lookup, takes none.)
func createKey(key string) string  { return "orderflow-intent-" + key }
func confirmKey(key string) string { return "orderflow-confirm-" + key }
func refundKey(key string) string  { return "orderflow-refund-" + key }

// Charge creates the order's PaymentIntent and confirms it; asked again, it takes the
// intent recorded and confirms it only if it still waits for that, else answers what it
// became — so a retry never leans on Stripe's idempotency keys, which expire after 24 h
// (and which a stand-in may ignore). A succeeded intent is a completed charge (its ID the
// intent's); a card error is a decline; an intent waiting for 3-D Secure or processing is
// payment.ErrPending.
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
	} else {
		pi, err := p.client.V1PaymentIntents.Retrieve(ctx, id, nil)
		if err != nil {
			return payment.Charge{}, failure(err)
		}
		if pi.Status != stripe.PaymentIntentStatusRequiresConfirmation {
			return outcome(pi, nil) // confirmed before: what it became
		}
	}
	params := &stripe.PaymentIntentConfirmParams{OffSession: stripe.Bool(true)}
	params.SetIdempotencyKey(confirmKey(req.IdempotencyKey))
	pi, err := p.client.V1PaymentIntents.Confirm(ctx, id, params)
	return outcome(pi, err)
}

// Refund refunds the order's intent (the charge's ID) in full. What is refunded already
// counts — a retry never refunds twice, whatever became of the key — and only the rest
// is refunded: after a partial refund from Stripe's dashboard, the remainder.
func (p *Provider) Refund(ctx context.Context, req payment.RefundRequest) (payment.Refund, error) {
	last, refunded, err := p.refunds(ctx, req.ChargeID, req.IdempotencyKey)
	if err != nil {
		return payment.Refund{}, err
	}
	if refunded >= req.AmountCents {
		return payment.Refund{ID: last}, nil
	}
	params := &stripe.RefundCreateParams{PaymentIntent: stripe.String(req.ChargeID), Amount: stripe.Int64(req.AmountCents - refunded),
		Metadata: map[string]string{"order_id": req.IdempotencyKey}}
	key := refundKey(req.IdempotencyKey)
	if refunded > 0 { // the rest: another request than a refund in full
		key += fmt.Sprintf("-rest-%d", req.AmountCents-refunded)
	}
	params.SetIdempotencyKey(key)
	r, err := p.client.V1Refunds.Create(ctx, params)
	if err != nil {
		return payment.Refund{}, refundFailure(err)
	}
	return payment.Refund{ID: r.ID}, nil
}

// refunds is what has been refunded of intent, through refunds that went through or are
// under way: one's id — the order's own (metadata[order_id] is order) if it has one, so a
// retry answers what the first attempt did, else the newest — and their sum.
func (p *Provider) refunds(ctx context.Context, intent, order string) (id string, sum int64, err error) {
	ours := false
	for r, err := range p.client.V1Refunds.List(ctx, &stripe.RefundListParams{PaymentIntent: stripe.String(intent)}) {
		if err != nil {
			return "", 0, refundFailure(err)
		}
		if r.PaymentIntent == nil || r.PaymentIntent.ID != intent || r.Status == stripe.RefundStatusFailed || r.Status == stripe.RefundStatusCanceled {
			continue
		}
		sum += r.Amount
		switch {
		case order != "" && r.Metadata["order_id"] == order && !ours:
			id, ours = r.ID, true
		case id == "": // the list is newest first
			id = r.ID
		}
	}
	return id, sum, nil
}

// refundFailure maps a refund's error: a charge already refunded, unknown or not
// refundable is never retried.
func refundFailure(err error) error {
	var se *stripe.Error
	if errors.As(err, &se) && (se.Code == stripe.ErrorCodeChargeAlreadyRefunded || se.Code == stripe.ErrorCodeResourceMissing || se.Type == stripe.ErrorTypeInvalidRequest) {
		return fmt.Errorf("%w: %s", payment.ErrNotRefundable, message(se))
	}
	return failure(err)
}

// Lookup returns what Stripe holds for the order: its recorded intent as it stands, or
// none when no intent was recorded (then none was ever confirmed). It decides: an intent
// still waiting — for confirmation, or for the customer's authentication — is cancelled
// first, so it can never be charged after Lookup said nothing was.
func (p *Provider) Lookup(ctx context.Context, key string) (payment.Charge, bool, error) {
	id, err := p.recorded(ctx, key)
	if err != nil || id == "" {
		return payment.Charge{}, false, err
	}
	pi, err := p.client.V1PaymentIntents.Retrieve(ctx, id, nil)
	if err != nil {
		return payment.Charge{}, false, failure(err)
	}
	if pi.Status == stripe.PaymentIntentStatusRequiresConfirmation || pi.Status == stripe.PaymentIntentStatusRequiresAction {
		// No Idempotency-Key: Stripe would replay a first 500 under it for 24 hours, and
		// the payment would stay undecided that long; the retrieve before makes asking
		// again harmless (a cancelled intent is read as such).
		if pi, err = p.client.V1PaymentIntents.Cancel(ctx, id, nil); err != nil {
			// It may have moved on meanwhile (authenticated, say): asked again, the
			// lookup reads what it became.
			return payment.Charge{}, false, failure(err)
		}
	}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		return payment.Charge{ID: pi.ID, Succeeded: true}, true, nil
	case stripe.PaymentIntentStatusRequiresPaymentMethod, stripe.PaymentIntentStatusCanceled:
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
		code := declineCode(se)
		return payment.Charge{ID: intentOf(se), DeclineCode: Reason(code), ProviderCode: code}, nil
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
		return payment.Charge{ID: pi.ID, DeclineCode: Reason(code), ProviderCode: code}, nil
	case stripe.PaymentIntentStatusCanceled:
		return payment.Charge{ID: pi.ID}, nil // called off by a lookup: never charged
	}
	// requires_action (3-D Secure), processing: the outcome comes later, by webhook;
	// past the deadline Lookup decides.
	return payment.Charge{}, fmt.Errorf("%w: PaymentIntent %s is %s", payment.ErrPending, pi.ID, pi.Status)
}

// Reason is the payment.failed reason of Stripe's decline or error code: orderflow's
// contract names few reasons (the AsyncAPI document's enum), Stripe many; each of
// Stripe's maps to the one that tells the customer what to do, and the code itself is
// the charge's ProviderCode, in payment-service's log.
func Reason(code string) string {
	switch code {
	case "":
		return ""
	case "insufficient_funds":
		return events.ReasonInsufficientFunds
	case "incorrect_number", "invalid_number", "expired_card", "incorrect_cvc", "invalid_cvc", "invalid_expiry_month",
		"invalid_expiry_year", "card_not_supported", "currency_not_supported", "invalid_account", "payment_method_unactivated":
		return events.ReasonInvalidPaymentMethod
	}
	return events.ReasonCardDeclined
}

// failure maps an error that is not a decline. Stripe's Stripe-Should-Retry header, when
// it answers one, says whether asking again can help; its Retry-After, how long to wait.
func failure(err error) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return fmt.Errorf("%w: %v", payment.ErrTransient, err) // the connection: timed out, refused, cut
	}
	var retry time.Duration
	var shouldRetry string
	if se.LastResponse != nil {
		shouldRetry = se.LastResponse.Header.Get("Stripe-Should-Retry")
		if secs, err := strconv.Atoi(se.LastResponse.Header.Get("Retry-After")); err == nil && secs > 0 {
			retry = time.Duration(secs) * time.Second
		}
	}
	switch {
	case se.Type == stripe.ErrorTypeIdempotency:
		return fmt.Errorf("%w: %s", payment.ErrIdempotencyMismatch, message(se))
	case shouldRetry == "false":
		return fmt.Errorf("%w: Stripe says asking again will not help: %s", payment.ErrRejected, message(se))
	case shouldRetry == "true" || se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500 || se.Type == stripe.ErrorTypeAPI:
		return retryAfter{fmt.Errorf("%w: %s", payment.ErrTransient, message(se)), retry}
	}
	// An invalid request is a bug here, not Stripe's trouble; retried, it fails the same
	// way until the payment deadline, when the lookup decides.
	return fmt.Errorf("%w: Stripe refused the request: %s", payment.ErrTransient, message(se))
}

// retryAfter is a transient failure with the least wait Stripe asked for before the next
// attempt (Retry-After); the consumer's runner honours it (RetryAfter).
type retryAfter struct {
	error
	after time.Duration
}

func (e retryAfter) Unwrap() error             { return e.error }
func (e retryAfter) RetryAfter() time.Duration { return e.after }

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
