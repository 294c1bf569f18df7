-- +goose Up
-- Cancelled orders: a completed payment is refunded (REFUNDED, with the provider's refund
-- id); an order cancelled before it was charged gets a CANCELLED row, so a late
-- order.created finds it and never charges.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('COMPLETED', 'FAILED', 'REFUNDED', 'CANCELLED'));
ALTER TABLE payments ADD COLUMN refund_id text, ADD COLUMN refunded_at timestamptz;

-- The simulator's ledger of refunds, keyed by idempotency key (the order id); one full
-- refund per charge at most.
CREATE TABLE provider_refunds (
    idempotency_key text        PRIMARY KEY,
    refund_id       text        NOT NULL UNIQUE,
    charge_id       text        NOT NULL UNIQUE REFERENCES provider_charges (charge_id),
    amount_cents    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE provider_refunds;
ALTER TABLE payments DROP COLUMN refunded_at, DROP COLUMN refund_id;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('COMPLETED', 'FAILED'));
