-- +goose Up
-- Idempotency-Key on POST /orders: the key, a hash of the request it was first used
-- with, and the response to replay. Written in the same transaction as the order.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash text        NOT NULL,
    status       int         NOT NULL,
    response     bytea       NOT NULL,
    order_id     uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- +goose Down
DROP TABLE idempotency_keys;
