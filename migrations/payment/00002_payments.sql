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

-- +goose Down
DROP TABLE payments;
