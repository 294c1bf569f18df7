-- +goose Up
-- The PaymentIntent made for each order, recorded before it is confirmed: a lookup then
-- finds what Stripe holds by its id, never by a search that lags, and "none recorded"
-- really means nothing was ever confirmed. The adapter's own schema, migrated apart from
-- payment-service's.
CREATE TABLE stripe_intents (
    idempotency_key text        PRIMARY KEY,
    intent_id       text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- A webhook names the intent: which order is it?
CREATE INDEX stripe_intents_intent ON stripe_intents (intent_id);

-- +goose Down
DROP TABLE stripe_intents;
