-- +goose Up
CREATE TABLE payments (
    id             uuid        PRIMARY KEY,
    order_id       uuid        NOT NULL UNIQUE,
    customer_id    uuid        NOT NULL,
    customer_email text        NOT NULL,
    amount_cents   bigint      NOT NULL,
    currency       char(3)     NOT NULL,
    status         text        NOT NULL CHECK (status IN ('COMPLETED', 'FAILED')),
    failure_reason text,
    charge_id      text,
    cause_event_id text        NOT NULL,
    created_at     timestamptz NOT NULL
);

-- The payment simulator's own ledger: what the provider did, keyed by the idempotency
-- key (the order id). It stands for the provider's side, so it is written outside the
-- consumer's transaction, as a real provider's would be.
CREATE TABLE provider_charges (
    idempotency_key text        PRIMARY KEY,
    charge_id       text        NOT NULL UNIQUE,
    amount_cents    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    payment_method  text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    decline_code    text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE provider_charges;
DROP TABLE payments;
