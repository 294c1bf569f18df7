-- +goose Up
CREATE TABLE orders (
    id             uuid        PRIMARY KEY,
    customer_id    uuid        NOT NULL,
    customer_email text        NOT NULL,
    currency       char(3)     NOT NULL,
    items          jsonb       NOT NULL,
    total_cents    bigint      NOT NULL CHECK (total_cents > 0),
    payment_method text        NOT NULL,
    status         text        NOT NULL
        CHECK (status IN ('PENDING_PAYMENT', 'CONFIRMED', 'PAYMENT_FAILED', 'CANCELLED')),
    failure_reason text,
    correlation_id text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX orders_customer_id ON orders (customer_id, id);

-- Every status change with the event that caused it, so an order's story can be told.
CREATE TABLE order_history (
    id             bigserial   PRIMARY KEY,
    order_id       uuid        NOT NULL REFERENCES orders (id),
    from_status    text,
    to_status      text        NOT NULL,
    cause_event_id text        NOT NULL,
    reason         text,
    at             timestamptz NOT NULL
);
CREATE INDEX order_history_order_id ON order_history (order_id, id);

-- +goose Down
DROP TABLE order_history;
DROP TABLE orders;
