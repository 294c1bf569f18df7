-- +goose Up
CREATE TABLE notifications (
    id             uuid        PRIMARY KEY,
    order_id       uuid        NOT NULL,
    kind           text        NOT NULL,
    recipient      text        NOT NULL,
    subject        text        NOT NULL,
    body           text        NOT NULL,
    message_id     text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('SENT')),
    cause_event_id text        NOT NULL,
    created_at     timestamptz NOT NULL,
    sent_at        timestamptz,
    -- at most one email of each kind per order, whatever is redelivered
    UNIQUE (order_id, kind)
);

-- +goose Down
DROP TABLE notifications;
