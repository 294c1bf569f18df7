-- +goose Up
-- A timeline row's summary is written once and read back whole, never queried: kept as
-- the JSON text written (json) rather than parsed into jsonb. Rewrites the table once.
ALTER TABLE timeline ALTER COLUMN summary TYPE json USING summary::json;

-- +goose Down
ALTER TABLE timeline ALTER COLUMN summary TYPE jsonb USING summary::jsonb;
