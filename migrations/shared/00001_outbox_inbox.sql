-- The event plumbing every service database carries (common-events outbox and consumer).

-- +goose Up
-- Events waiting to be published. A row is inserted in the same transaction as the
-- business change it describes and deleted once the broker acknowledged it.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    headers    jsonb       NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The inbox: events a consumer group has applied, written in the same transaction as the
-- effect, so a redelivered event is recognised and skipped.
CREATE TABLE processed_events (
    consumer_group text        NOT NULL,
    event_id       text        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);

-- +goose Down
DROP TABLE processed_events;
DROP TABLE outbox;
