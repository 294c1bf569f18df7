-- +goose Up
-- The orders still waiting for payment, oldest first: what the oldest-pending metric reads
-- at every scrape, without scanning the orders that are settled (nearly all of them).
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING_PAYMENT';

-- +goose Down
DROP INDEX orders_pending;
