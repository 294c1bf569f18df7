-- +goose Up
-- What each service has said about each order: one row per order, upserted from
-- order.state (the highest version wins), payment.* and notification.sent. Everything in
-- it can be rebuilt by replaying those topics.
CREATE TABLE order_facts (
    order_id       uuid        PRIMARY KEY,
    status         text,
    version        bigint      NOT NULL DEFAULT 0,
    failure_reason text,
    placed_at      timestamptz,
    changed_at     timestamptz,
    payment        text,
    charge_id      text,
    refund_id      text,
    payment_at     timestamptz,
    refunded_at    timestamptz,
    emails         jsonb       NOT NULL DEFAULT '{}',  -- kind → when it was sent
    -- settled: no mismatch and nothing more to come; the sweep skips the order until a
    -- new fact about it comes.
    settled        boolean     NOT NULL DEFAULT false
);
CREATE INDEX order_facts_unsettled ON order_facts (order_id) WHERE NOT settled;

-- Everything every service said about an order, in the order it was said: the timeline
-- support reads. One row per event, whatever its redeliveries.
CREATE TABLE timeline (
    event_id   text        PRIMARY KEY,
    order_id   uuid        NOT NULL,
    at         timestamptz NOT NULL,
    source     text        NOT NULL,
    event_type text        NOT NULL,
    summary    jsonb       NOT NULL
);
CREATE INDEX timeline_order ON timeline (order_id, at);

-- The open mismatches, as the last sweep found them.
CREATE TABLE mismatches (
    kind     text        NOT NULL,
    order_id uuid        NOT NULL,
    since    timestamptz NOT NULL,
    facts    jsonb       NOT NULL,
    PRIMARY KEY (kind, order_id)
);
CREATE INDEX mismatches_order ON mismatches (order_id);

-- +goose Down
DROP TABLE mismatches;
DROP TABLE timeline;
DROP TABLE order_facts;
