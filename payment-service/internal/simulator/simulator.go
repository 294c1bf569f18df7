// Package simulator is a payment provider that behaves like a real one for Stripe-style
// test tokens, with a persistent ledger of the charges it made, configurable latency and
// a configurable rate of transient failures.
package simulator

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/coalesce"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/migrations"
	"github.com/orderflow/payment-service/internal/payment"
)

// Test tokens.
const (
	TokenVisa                     = "tok_visa"
	TokenMastercard               = "tok_mastercard"
	TokenDeclined                 = "tok_chargeDeclined"
	TokenDeclinedNoFunds          = "tok_chargeDeclinedInsufficientFunds"
	outcomeSucceeded, outcomeFail = "succeeded", "failed"
)

// Simulator is the default payment.Provider. Its ledger (provider_charges) stands for the
// provider's own records: it is written outside the caller's transaction, as a real
// provider's would be, so a crash after charging cannot undo the charge, and the
// idempotency key makes the retry after such a crash return the same charge.
type Simulator struct {
	pool          *pgxpool.Pool
	latency       time.Duration
	transientRate float64
	// answered, while the provider hangs, is closed when it answers again.
	answered atomic.Pointer[chan struct{}]
	// charges writes the ledger: the charges made at the same time in one statement.
	charges *coalesce.Batcher[ledgerCharge, ledgerCharge]
}

var _ payment.Provider = (*Simulator)(nil)

//go:embed schema/*.sql
var schemaFiles embed.FS

// Migrate makes sure of the simulator's ledger in the database of pool: its own schema,
// apart from payment-service's migrations, as a real provider's records are apart from
// the service's (its versions in simulator_db_version). Call it before New.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return migrations.UpOwn(ctx, pool, schemaFiles, "schema", "simulator_db_version")
}

// New returns a simulator whose every charge takes latency and fails transiently with
// probability transientRate (0 to 1).
func New(pool *pgxpool.Pool, latency time.Duration, transientRate float64) *Simulator {
	s := &Simulator{pool: pool, latency: latency, transientRate: transientRate}
	s.charges = coalesce.New(s.chargeAll, coalesce.Options{Max: maxCharges, Alone: coalesce.ByRow})
	return s
}

// Hang makes the provider hang, as one that takes requests and answers none: every
// charge, refund and lookup waits, before it reaches the ledger, until Answer or its
// context ends (then it fails transiently, nothing done). The chaos run's fault.
func (s *Simulator) Hang() {
	ch := make(chan struct{})
	s.answered.CompareAndSwap(nil, &ch)
}

// Answer ends a Hang: the requests waiting go on.
func (s *Simulator) Answer() {
	if ch := s.answered.Swap(nil); ch != nil {
		close(*ch)
	}
}

// hung waits while the provider hangs.
func (s *Simulator) hung(ctx context.Context) error {
	ch := s.answered.Load()
	if ch == nil {
		return nil
	}
	select {
	case <-*ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the provider did not answer: %w", payment.ErrTransient, ctx.Err())
	}
}

// Charge charges req once per idempotency key.
func (s *Simulator) Charge(ctx context.Context, req payment.ChargeRequest) (payment.Charge, error) {
	if err := s.hung(ctx); err != nil {
		return payment.Charge{}, err
	}
	// Half the latency is the request travelling to the provider, half the answer
	// travelling back: a crash in the second half leaves a charge the caller never heard of.
	if err := wait(ctx, s.latency/2); err != nil {
		return payment.Charge{}, err
	}
	if s.transientRate > 0 && rand.Float64() < s.transientRate {
		return payment.Charge{}, fmt.Errorf("%w: simulated outage", payment.ErrTransient)
	}

	outcome, decline := outcomeSucceeded, ""
	switch req.PaymentMethod {
	case TokenVisa, TokenMastercard:
	case TokenDeclined:
		outcome, decline = outcomeFail, events.ReasonCardDeclined
	case TokenDeclinedNoFunds:
		outcome, decline = outcomeFail, events.ReasonInsufficientFunds
	default:
		outcome, decline = outcomeFail, events.ReasonInvalidPaymentMethod
	}
	chargeID := "ch_" + strings.ReplaceAll(events.NewID(time.Now()), "-", "")

	if err := plant(ctx, s.pool); err != nil {
		return payment.Charge{}, err
	}
	got, err := s.charges.Do(ctx, ledgerCharge{key: req.IdempotencyKey, chargeID: chargeID, amount: req.AmountCents,
		currency: req.Currency, method: req.PaymentMethod, outcome: outcome, decline: decline})
	if err != nil {
		return payment.Charge{}, fmt.Errorf("%w: ledger: %w", payment.ErrTransient, err)
	}
	if !got.found {
		// A concurrent first charge with this key has not committed yet: ask again.
		return payment.Charge{}, fmt.Errorf("%w: concurrent charge with the same key", payment.ErrTransient)
	}
	if got.amount != req.AmountCents || got.currency != req.Currency || got.method != req.PaymentMethod {
		return payment.Charge{}, fmt.Errorf("%w: key %s", payment.ErrIdempotencyMismatch, req.IdempotencyKey)
	}
	c := payment.Charge{ID: got.chargeID, DeclineCode: got.decline, Succeeded: got.outcome == outcomeSucceeded}
	if err := wait(ctx, s.latency-s.latency/2); err != nil {
		return payment.Charge{}, err
	}
	return c, nil
}

// ledgerCharge is a charge for the ledger, and what the ledger holds under its key.
type ledgerCharge struct {
	key, chargeID, currency, method, outcome, decline string
	amount                                            int64
	found                                             bool
}

// maxCharges is the most charges one ledger statement writes.
const maxCharges = 128

// chargeAll writes the charges made at the same time in one statement, each unless the
// ledger holds its key already, and returns what the ledger holds under each key (found
// false: a charge under that key not committed yet).
func (s *Simulator) chargeAll(ctx context.Context, cs []ledgerCharge) ([]ledgerCharge, error) {
	n := len(cs)
	keys, ids, amounts, currencies := make([]string, n), make([]string, n), make([]int64, n), make([]string, n)
	methods, outcomes, declines := make([]string, n), make([]string, n), make([]string, n)
	for i, c := range cs {
		keys[i], ids[i], amounts[i], currencies[i] = c.key, c.chargeID, c.amount, c.currency
		methods[i], outcomes[i], declines[i] = c.method, c.outcome, c.decline
	}
	// The charges already made are found through a scalar subquery: one plan kept for
	// every batch (docs/performance.md, "Plans made once").
	rows, _ := s.pool.Query(ctx, `
		WITH ins AS (
			INSERT INTO provider_charges (idempotency_key, charge_id, amount_cents, currency, payment_method, outcome, decline_code)
			SELECT k, id, a, c, m, o, nullif(d, '')
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS r(k, id, a, c, m, o, d)
			ORDER BY k
			`+onChargeConflict+`
			RETURNING idempotency_key, charge_id, outcome, coalesce(decline_code, ''), amount_cents, currency, payment_method
		)
		SELECT * FROM ins
		UNION ALL
		SELECT idempotency_key, charge_id, outcome, coalesce(decline_code, ''), amount_cents, currency, payment_method
		FROM provider_charges WHERE idempotency_key = ANY(((SELECT $1::text[]))::text[]) AND idempotency_key NOT IN (SELECT idempotency_key FROM ins)`,
		keys, ids, amounts, currencies, methods, outcomes, declines)
	held, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c ledgerCharge, err error) {
		err = r.Scan(&c.key, &c.chargeID, &c.outcome, &c.decline, &c.amount, &c.currency, &c.method)
		c.found = true
		return c, err
	})
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]ledgerCharge, len(held))
	for _, c := range held {
		byKey[c.key] = c
	}
	out := make([]ledgerCharge, n)
	for i, c := range cs {
		out[i] = byKey[c.key]
	}
	return out, nil
}

// Lookup reads the ledger for the charge under key. It is not subject to the simulated
// outage: that stands for charging failing (the card network), while the provider's
// records still answer.
func (s *Simulator) Lookup(ctx context.Context, key string) (payment.Charge, bool, error) {
	if err := s.hung(ctx); err != nil {
		return payment.Charge{}, false, err
	}
	var c payment.Charge
	var outcome string
	err := s.pool.QueryRow(ctx, `SELECT charge_id, outcome, coalesce(decline_code, '') FROM provider_charges WHERE idempotency_key = $1`,
		key).Scan(&c.ID, &outcome, &c.DeclineCode)
	if errors.Is(err, pgx.ErrNoRows) {
		return payment.Charge{}, false, nil
	}
	if err != nil {
		return payment.Charge{}, false, fmt.Errorf("%w: ledger: %w", payment.ErrTransient, err)
	}
	c.Succeeded = outcome == outcomeSucceeded
	return c, true, nil
}

// Refund pays a successful charge back in full, once per idempotency key and once per
// charge, with the same latency and transient failures as a charge.
func (s *Simulator) Refund(ctx context.Context, req payment.RefundRequest) (payment.Refund, error) {
	if err := s.hung(ctx); err != nil {
		return payment.Refund{}, err
	}
	if err := wait(ctx, s.latency/2); err != nil {
		return payment.Refund{}, err
	}
	if s.transientRate > 0 && rand.Float64() < s.transientRate {
		return payment.Refund{}, fmt.Errorf("%w: simulated outage", payment.ErrTransient)
	}
	var r payment.Refund
	var chargeID, currency string
	var amount int64
	err := s.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO provider_refunds (idempotency_key, refund_id, charge_id, amount_cents, currency)
			SELECT $1, $2, charge_id, amount_cents, currency FROM provider_charges
			WHERE charge_id = $3 AND outcome = 'succeeded'
			ON CONFLICT DO NOTHING
			RETURNING refund_id, charge_id, amount_cents, currency
		)
		SELECT * FROM ins
		UNION ALL
		SELECT refund_id, charge_id, amount_cents, currency
		FROM provider_refunds WHERE idempotency_key = $1 AND NOT EXISTS (SELECT 1 FROM ins)`,
		req.IdempotencyKey, "re_"+strings.ReplaceAll(events.NewID(time.Now()), "-", ""), req.ChargeID,
	).Scan(&r.ID, &chargeID, &amount, &currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return payment.Refund{}, s.whyNoRefund(ctx, req)
	}
	if err != nil {
		return payment.Refund{}, fmt.Errorf("%w: ledger: %w", payment.ErrTransient, err)
	}
	if chargeID != req.ChargeID || amount != req.AmountCents || currency != req.Currency {
		return payment.Refund{}, fmt.Errorf("%w: refund key %s", payment.ErrIdempotencyMismatch, req.IdempotencyKey)
	}
	if err := wait(ctx, s.latency-s.latency/2); err != nil {
		return payment.Refund{}, err
	}
	return r, nil
}

// whyNoRefund explains a refund that wrote nothing and found nothing under its key. A
// refund under the same key that committed meanwhile (the statement's snapshot predates
// it) is not another key's: the caller asks again and gets it.
func (s *Simulator) whyNoRefund(ctx context.Context, req payment.RefundRequest) error {
	var refundable, refunded bool
	err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM provider_charges WHERE charge_id = $1 AND outcome = 'succeeded'),
			EXISTS (SELECT 1 FROM provider_refunds WHERE charge_id = $1 AND idempotency_key <> $2)`,
		req.ChargeID, req.IdempotencyKey).Scan(&refundable, &refunded)
	switch {
	case err != nil:
		return fmt.Errorf("%w: ledger: %w", payment.ErrTransient, err)
	case !refundable:
		return fmt.Errorf("%w: no successful charge %s", payment.ErrNotRefundable, req.ChargeID)
	case refunded:
		return fmt.Errorf("%w: charge %s was refunded under another key", payment.ErrNotRefundable, req.ChargeID)
	}
	// A concurrent refund with this key has not committed yet: ask again.
	return fmt.Errorf("%w: concurrent refund with the same key", payment.ErrTransient)
}

func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", payment.ErrTransient, ctx.Err())
	}
}

// LedgerEntry is one charge in the simulator's ledger.
type LedgerEntry struct {
	IdempotencyKey string
	ChargeID       string
	AmountCents    int64
	Currency       string
	Outcome        string
	DeclineCode    string
	CreatedAt      time.Time
}

// Ledger returns the charges made under an idempotency key: what the provider would
// show on its dashboard. More than one would be a double charge.
func (s *Simulator) Ledger(ctx context.Context, key string) ([]LedgerEntry, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT idempotency_key, charge_id, amount_cents, currency, outcome, coalesce(decline_code, ''), created_at
		FROM provider_charges WHERE idempotency_key = $1 ORDER BY created_at`, key)
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e LedgerEntry, err error) {
		err = r.Scan(&e.IdempotencyKey, &e.ChargeID, &e.AmountCents, &e.Currency, &e.Outcome, &e.DeclineCode, &e.CreatedAt)
		e.CreatedAt = e.CreatedAt.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger of %s: %w", key, err)
	}
	return es, nil
}

// RefundEntry is one refund in the simulator's ledger.
type RefundEntry struct {
	IdempotencyKey string
	RefundID       string
	ChargeID       string
	AmountCents    int64
	Currency       string
	CreatedAt      time.Time
}

// Refunds returns the refunds made under an idempotency key. More than one would be a
// double refund.
func (s *Simulator) Refunds(ctx context.Context, key string) ([]RefundEntry, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT idempotency_key, refund_id, charge_id, amount_cents, currency, created_at
		FROM provider_refunds WHERE idempotency_key = $1 ORDER BY created_at`, key)
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (e RefundEntry, err error) {
		err = r.Scan(&e.IdempotencyKey, &e.RefundID, &e.ChargeID, &e.AmountCents, &e.Currency, &e.CreatedAt)
		e.CreatedAt = e.CreatedAt.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("refunds of %s: %w", key, err)
	}
	return es, nil
}
