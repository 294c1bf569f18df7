-- +goose Up
-- An outbox row's headers are written once and read once, by the relay, never queried:
-- kept as the JSON text the writer wrote (json) rather than parsed into jsonb, PostgreSQL
-- neither parses and sorts them on the way in nor prints them again on the way out.
-- A shared migration's version is above every service's, and no service's takes it
-- (migrations_test.go).
ALTER TABLE outbox ALTER COLUMN headers TYPE json USING headers::json;

-- +goose Down
ALTER TABLE outbox ALTER COLUMN headers TYPE jsonb USING headers::jsonb;
