-- +goose Up
-- An order's facts are updated again as each of its records comes, most of the updates
-- (its status, its emails) in columns no index holds: with room left on each page, such
-- an update is written beside the row (HOT), without a new entry in every index.
ALTER TABLE order_facts SET (fillfactor = 50);

-- +goose Down
ALTER TABLE order_facts RESET (fillfactor);
