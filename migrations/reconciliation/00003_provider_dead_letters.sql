-- +goose Up
-- What the payment provider's own records say: its charge for the order, if it holds one,
-- and whether it was asked about the charge payment-service named (provider_asked: found
-- in its list, or looked up).
ALTER TABLE order_facts ADD COLUMN provider_charge text, ADD COLUMN provider_charged_at timestamptz,
    ADD COLUMN provider_asked boolean NOT NULL DEFAULT false;
-- The paid orders whose charge the provider's list did not show: to be looked up.
CREATE INDEX order_facts_unasked ON order_facts (payment_at)
    WHERE NOT provider_asked AND payment IN ('COMPLETED', 'REFUNDED');

-- How far the provider's records were read: every charge it made before listed_until is
-- in order_facts. One row.
CREATE TABLE provider_listed (
    only_row     boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    listed_until timestamptz NOT NULL
);

-- The records about orders in the dead-letter topics, not replayed, as the last look at
-- the topics found them.
CREATE TABLE dead_letters (
    topic     text        NOT NULL,
    partition integer     NOT NULL,
    "offset"  bigint      NOT NULL,
    order_id  uuid        NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX dead_letters_order ON dead_letters (order_id);

-- +goose Down
DROP TABLE dead_letters;
DROP TABLE provider_listed;
DROP INDEX order_facts_unasked;
ALTER TABLE order_facts DROP COLUMN provider_charge, DROP COLUMN provider_charged_at, DROP COLUMN provider_asked;
