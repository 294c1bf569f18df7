-- +goose Up
-- The simulator's ledger: what the provider did, keyed by the idempotency key (the order
-- id). It stands for the provider's own records, so it is written outside the consumer's
-- transaction, as a real provider's would be, and it is the simulator's alone: none of
-- payment-service's own migrations touch it. (IF NOT EXISTS: databases made before the
-- ledger moved here have it already.)
CREATE TABLE IF NOT EXISTS provider_charges (
    idempotency_key text        PRIMARY KEY,
    charge_id       text        NOT NULL UNIQUE,
    amount_cents    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    payment_method  text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    decline_code    text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Its refunds, keyed by idempotency key (the order id); one full refund per charge at most.
CREATE TABLE IF NOT EXISTS provider_refunds (
    idempotency_key text        PRIMARY KEY,
    refund_id       text        NOT NULL UNIQUE,
    charge_id       text        NOT NULL UNIQUE REFERENCES provider_charges (charge_id),
    amount_cents    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE provider_refunds;
DROP TABLE provider_charges;
